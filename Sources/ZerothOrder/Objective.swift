// The pieces a zeroth-order step is made of: a set of trainable values, and an
// objective that measures the loss at perturbed points θ + sign·ε·s⊙T(z(seed)).

import GGUF
import Model

/// The trainable values of a method, as groups of float32 master copies.
public protocol TrainableSet: AnyObject {
    var groups: [ParameterGroup] { get }
    /// Brings values back into their valid range after an update (e.g. QZO keeps each
    /// scale's sign and a magnitude floor). Returns how many values it changed.
    @discardableResult func constrain() -> Int
    /// Per group, the tensor (unit) it belongs to, numbered 0..<T in group order: what a
    /// sparse perturbation chooses among (`PerturbationSubset`). Default: each group its own.
    var perturbationUnits: [Int] { get }
}

extension TrainableSet {
    public var perturbationUnits: [Int] { Array(groups.indices) }
}

/// One point at which a step measures the loss: θ + sign · ε · s ⊙ T(z(seed)), or θ
/// itself when `seed` is nil.
public struct PerturbedPoint: Equatable, Sendable {
    public var seed: UInt64?
    public var sign: Float

    public init(seed: UInt64?, sign: Float) {
        self.seed = seed
        self.sign = sign
    }

    public static let unperturbed = PerturbedPoint(seed: nil, sign: 0)
}

/// A step's loss at one point: per-token NLLs summed over micro-batches, then divided.
public typealias LossSum = EvaluationResult

/// How a perturbation is shaped before it is applied: the optimizer's per-value scale s
/// (HiZOO), then an optional transform T of z (e.g. projection onto a subspace).
public struct PerturbationShape {
    /// Per group, s (nil: 1).
    public var scales: [UnsafePointer<Float>?]
    /// Applied to z of one group in place before scaling, when set.
    public var transform: ((_ group: Int, _ z: UnsafeMutablePointer<Float>, _ count: Int) -> Void)?
    /// The optimizer's own perturbations p (ABI 1.1's perturbation hook), when it chooses
    /// them: p for (seed, group), used instead of T(z); nil for a seed it has none for.
    public var provided: ((_ seed: UInt64, _ group: Int) -> UnsafePointer<Float>?)?
    /// Per group, its own ε when the trained sets perturb by different amounts (empty: the
    /// run's ε for every group).
    public var groupEpsilons: [Float] = []
    /// Whether the direction with this seed perturbs this group (a sparse perturbation);
    /// nil: every group. A group it does not perturb gets z = 0, and no z is generated.
    public var perturbs: ((_ seed: UInt64, _ group: Int) -> Bool)?

    public init(scales: [UnsafePointer<Float>?], transform: ((Int, UnsafeMutablePointer<Float>, Int) -> Void)? = nil) {
        self.scales = scales
        self.transform = transform
    }

    /// The perturbation size of `group`: its own ε, else the run's `epsilon`.
    @inlinable
    public func epsilon(_ epsilon: Float, group: Int) -> Float {
        groupEpsilons.isEmpty ? epsilon : groupEpsilons[group]
    }

    /// values += alpha · s ⊙ T(z(seed, group)); nothing for a group `perturbs` leaves out.
    public func apply(alpha: Float, seed: UInt64, group: Int, to values: UnsafeMutablePointer<Float>, count: Int) {
        if let perturbs, !perturbs(seed, group) { return }
        if let p = provided?(seed, group) {
            let s = scales.indices.contains(group) ? scales[group] : nil
            if let s {
                for i in 0..<count { values[i] += alpha * s[i] * p[i] }
            } else {
                for i in 0..<count { values[i] += alpha * p[i] }
            }
        } else if let transform {
            var z = [Float](repeating: 0, count: count)
            z.withUnsafeMutableBufferPointer { zp in
                Perturbation.fill(seed: seed, group: UInt32(group), start: 0, count: count, into: zp.baseAddress!)
                transform(group, zp.baseAddress!, count)
                let s = scales.indices.contains(group) ? scales[group] : nil
                for i in 0..<count { values[i] += alpha * (s?[i] ?? 1) * zp[i] }
            }
        } else {
            Perturbation.addScaled(alpha: alpha, seed: seed, group: UInt32(group), to: values, count: count,
                                   scale: scales.indices.contains(group) ? scales[group] : nil)
        }
    }
}

/// Measures the training loss at perturbed points of its trainable set.
public protocol Objective: AnyObject {
    var parameters: TrainableSet { get }
    /// Adds each point's per-token losses over `examples` to `sums[point]`, one token at a
    /// time in example order, so a batch split into micro-batches that carry the same `sums`
    /// gives the same bits as the whole batch. θ is unchanged afterwards (bit for bit:
    /// implementations perturb copies, or restore exactly).
    func accumulateLosses(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                          examples: [Example], into sums: inout [LossSum]) throws(TrainingError)
    /// Tokens one forward pass may hold (points × examples' tokens must fit).
    var passCapacity: Int { get }
}

extension Objective {
    /// Loss sums over `examples` at each point, in order.
    public func lossSums(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                         examples: [Example]) throws(TrainingError) -> [LossSum] {
        var sums = [LossSum](repeating: LossSum(), count: points.count)
        try accumulateLosses(at: points, epsilon: epsilon, shape: shape, examples: examples, into: &sums)
        return sums
    }
}

public enum TrainingError: Error, CustomStringConvertible {
    case model(ModelError)
    case file(GGUFError)
    case optimizer(OptimizerError)
    case invalidSetting(String)
    /// The loss became NaN or infinite at `step`; the parameters of the step before are kept.
    case nonFiniteLoss(step: Int, loss: Double)
    /// The update at `step` made a parameter NaN or infinite; the parameters of the step before are kept.
    case nonFiniteUpdate(step: Int)
    case newToken(String)
    case adapter(path: String, message: String)
    case checkpoint(path: String, message: String)
    case interrupted(step: Int)
    /// A data-parallel run's ranks disagree or one of them failed (every rank throws the same).
    case distributed(String)
    /// Another rank stopped answering (only this rank knows; the run must be aborted).
    case rankLost(String)

    public var description: String {
        switch self {
        case .model(let e): return e.description
        case .file(let e): return e.description
        case .optimizer(let e): return e.description
        case .invalidSetting(let s): return s
        case .nonFiniteLoss(let step, let loss):
            return "the loss became \(loss) at step \(step); training stopped and the parameters from step \(step - 1) were kept (try a smaller --lr or --eps)"
        case .nonFiniteUpdate(let step):
            return "the update at step \(step) made parameters infinite or NaN; training stopped and the parameters from step \(step - 1) were kept (try a smaller --lr)"
        case .newToken(let s): return s
        case .adapter(let path, let message): return "\(path): \(message)"
        case .checkpoint(let path, let message): return "\(path): \(message)"
        case .interrupted(let step): return "interrupted at step \(step)"
        case .distributed(let s): return s
        case .rankLost(let s): return s
        }
    }
}
