// What an optimizer sees of a training run: groups of trainable float32 values, and per
// step the directional derivatives along regenerable perturbations (or a dense estimate
// when the engine has transformed it). The built-in ZO-SGD lives here; optimizer
// plugins are adapted to the same protocol by PluginHost.

/// A contiguous array of trainable values (the fp32 master copy), updated in place.
public struct ParameterGroup {
    public var name: String
    public var values: UnsafeMutablePointer<Float>
    public var count: Int

    public init(name: String, values: UnsafeMutablePointer<Float>, count: Int) {
        self.name = name
        self.values = values
        self.count = count
    }
}

/// What an optimizer is told about one trainable group before the run: its name and
/// count, its logical shape (row-major, the last dim fastest; the product is `count`)
/// and the model tensors its values belong to. A new token's embedding is (dim); a
/// matrix's block scales are (rows, scales per row); a vector (dim).
public struct GroupLayout: Equatable, Sendable {
    public var name: String
    public var count: Int
    /// Dims, outermost first; [count] when the group is a plain vector.
    public var shape: [Int]
    /// Tensors ("blk.0.attn_q.weight") the group covers; empty for a new token's row.
    public var tensors: [String]

    public init(name: String, count: Int, shape: [Int]? = nil, tensors: [String] = []) {
        self.name = name
        self.count = count
        self.shape = shape ?? [count]
        self.tensors = tensors
    }
}

/// One perturbation direction of a step and what the losses said about it.
public struct Direction: Equatable, Sendable {
    /// Regenerates z for every group: `Perturbation` with (seed, group index, index).
    public var seed: UInt64
    /// The directional derivative estimate d (after clipping, when the run clips).
    public var derivative: Float
    /// Loss at θ + ε·s⊙z.
    public var lossPlus: Float
    /// Loss at θ − ε·s⊙z; NaN for the one-sided estimator.
    public var lossMinus: Float

    public init(seed: UInt64, derivative: Float, lossPlus: Float, lossMinus: Float) {
        self.seed = seed
        self.derivative = derivative
        self.lossPlus = lossPlus
        self.lossMinus = lossMinus
    }
}

/// Everything an optimizer step gets.
///
/// The gradient estimate is g = (1/n) Σⱼ dⱼ · s ⊙ zⱼ over the n directions, where s is the
/// optimizer's own perturbation scale (1 unless it provides one). When `dense` is set the
/// engine has already formed (and transformed) g: use it instead of the directions.
public struct StepContext {
    /// 1-based step number.
    public var step: Int
    public var learningRate: Float
    public var epsilon: Float
    public var directions: [Direction]
    /// Loss at θ itself, when the optimizer asked for it (`needsUnperturbedLoss`).
    public var unperturbedLoss: Float?
    /// Per group: the dense gradient estimate, when the engine formed it.
    public var dense: [UnsafePointer<Float>]?
    /// The run's last step number (0: unknown).
    public var totalSteps = 0
    /// The rate the learning-rate schedule scales (`learningRate` is its value at this
    /// step; the same when the run has no schedule). nil: the same as `learningRate`.
    public var baseLearningRate: Float?
    /// The first step this process runs after resuming from a checkpoint.
    public var firstAfterResume = false
    /// Per group, the rate to apply instead of `learningRate` when the trained sets have
    /// their own rates (schedule included); nil: `learningRate` for every group. Only the
    /// built-in ZO-SGD reads it: a run with per-group rates refuses optimizer plugins.
    public var groupLearningRates: [Float]?
    /// A sparse perturbation's factor per (direction, group): 0 for a group the direction
    /// left unperturbed (its z was 0), 1/π for one it perturbed (`PerturbationSubset`); the
    /// estimate is then (1/n) Σⱼ dⱼ · wⱼ,g · zⱼ. nil: every group perturbed, factor 1. Only the
    /// built-in ZO-SGD reads it: a sparse run refuses optimizer plugins.
    public var groupEstimateScales: [[Float]]?

    public init(step: Int, learningRate: Float, epsilon: Float, directions: [Direction],
                unperturbedLoss: Float? = nil, dense: [UnsafePointer<Float>]? = nil) {
        self.step = step
        self.learningRate = learningRate
        self.epsilon = epsilon
        self.directions = directions
        self.unperturbedLoss = unperturbedLoss
        self.dense = dense
    }
}

public struct OptimizerError: Error, Equatable, CustomStringConvertible {
    /// The optimizer (or plugin) that failed.
    public var optimizer: String
    public var message: String

    public init(optimizer: String, message: String) {
        self.optimizer = optimizer
        self.message = message
    }

    public var description: String { "optimizer \(optimizer): \(message)" }
}

/// A zeroth-order optimizer: updates the groups in place from a step's estimate.
public protocol Optimizer: AnyObject {
    var name: String { get }
    /// Whether the step needs the loss at θ itself (one more forward pass), as HiZOO does.
    var needsUnperturbedLoss: Bool { get }
    /// Per-value scale s of the perturbation for `group` (HiZOO's Σ^−½), or nil for 1.
    /// Valid until the next `step`.
    func perturbationScale(group: Int) -> UnsafePointer<Float>?
    /// Updates `groups` in place. On error the values must be unchanged.
    func step(_ context: StepContext, _ groups: [ParameterGroup]) throws(OptimizerError)
    /// Bytes of optimizer state (moments, Hessian estimates), for the memory planner.
    var stateByteCount: Int { get }
    /// The state, for checkpoints.
    func saveState() throws(OptimizerError) -> [UInt8]
    /// Restores a state saved by the same optimizer with the same groups and options.
    func loadState(_ bytes: [UInt8]) throws(OptimizerError)
    /// Whether the optimizer chooses the step's perturbations itself (`perturbation`);
    /// otherwise the engine applies z from `Perturbation`.
    var providesPerturbation: Bool { get }
    /// Writes `count` values of the perturbation p of direction `direction` (seed `seed`)
    /// at `step` for `group`, which the engine applies instead of z (p then also defines
    /// the step's estimate). Only called when `providesPerturbation`; throws when the
    /// optimizer's answer is unusable (non-finite, wrong count).
    func perturbation(step: Int, seed: UInt64, direction: Int, group: Int, count: Int,
                      into out: UnsafeMutablePointer<Float>) throws(OptimizerError)
}

extension Optimizer {
    public var providesPerturbation: Bool { false }

    /// z itself (what the engine applies for an optimizer without its own perturbations).
    public func perturbation(step: Int, seed: UInt64, direction: Int, group: Int, count: Int,
                             into out: UnsafeMutablePointer<Float>) throws(OptimizerError) {
        Perturbation.fill(seed: seed, group: UInt32(group), start: 0, count: count, into: out)
    }
}

/// ZO-SGD (MeZO): θ ← θ − η (g + λθ), optionally with momentum on g.
public final class ZOSGD: Optimizer {
    public let name = "zo-sgd"
    public let needsUnperturbedLoss = false
    public let momentum: Float
    public let weightDecay: Float
    private var velocity: [[Float]]

    /// `momentum` and `weightDecay` in [0, 1) (`make(groupSizes:options:)` checks them).
    public init(groupSizes: [Int], momentum: Float = 0, weightDecay: Float = 0) {
        self.momentum = momentum
        self.weightDecay = weightDecay
        velocity = momentum > 0 ? groupSizes.map { [Float](repeating: 0, count: $0) } : []
    }

    /// The built-in ZO-SGD configured by `name=value` options (momentum, weight_decay), each
    /// refused outside [0, 1) as the zo-sgd plugin refuses it.
    public static func make(groupSizes: [Int], options: [String]) throws(OptimizerError) -> ZOSGD {
        var momentum: Float = 0
        var weightDecay: Float = 0
        for o in options {
            let parts = o.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let value = Float(parts[1]), value.isFinite else {
                throw OptimizerError(optimizer: "zo-sgd", message: "option '\(o)': expected name=number (options: momentum, weight_decay)")
            }
            guard parts[0] == "momentum" || parts[0] == "weight_decay" else {
                throw OptimizerError(optimizer: "zo-sgd", message: "no option '\(parts[0])' (options: momentum, weight_decay)")
            }
            guard value >= 0 && value < 1 else {
                throw OptimizerError(optimizer: "zo-sgd", message: "\(parts[0]) must be in [0, 1), got \(parts[1])")
            }
            if parts[0] == "momentum" { momentum = value } else { weightDecay = value }
        }
        return ZOSGD(groupSizes: groupSizes, momentum: momentum, weightDecay: weightDecay)
    }

    public func perturbationScale(group: Int) -> UnsafePointer<Float>? { nil }

    public var stateByteCount: Int { velocity.reduce(0) { $0 + 4 * $1.count } }

    public func step(_ c: StepContext, _ groups: [ParameterGroup]) throws(OptimizerError) {
        try checkFinite(c, name: name)
        for (g, group) in groups.enumerated() {
            let n = group.count
            var estimate = [Float](repeating: 0, count: n)
            gradientEstimate(c, group: g, count: n, into: &estimate)
            let v = group.values
            let rate = c.groupLearningRates?[g] ?? c.learningRate
            if momentum > 0 {
                for i in 0..<n {
                    velocity[g][i] = momentum * velocity[g][i] + estimate[i]
                    v[i] -= rate * (velocity[g][i] + weightDecay * v[i])
                }
            } else {
                for i in 0..<n { v[i] -= rate * (estimate[i] + weightDecay * v[i]) }
            }
        }
    }

    public func saveState() throws(OptimizerError) -> [UInt8] {
        velocity.flatMap { $0 }.withUnsafeBytes { Array($0) }
    }

    public func loadState(_ bytes: [UInt8]) throws(OptimizerError) {
        guard bytes.count == stateByteCount else {
            throw OptimizerError(optimizer: name, message: "saved state has \(bytes.count) bytes, expected \(stateByteCount)")
        }
        var offset = 0
        for g in velocity.indices {
            let n = velocity[g].count
            velocity[g] = bytes.withUnsafeBytes { raw in
                (0..<n).map { raw.loadUnaligned(fromByteOffset: offset + 4 * $0, as: Float.self) }
            }
            offset += 4 * n
        }
    }
}

/// Refuses a step whose inputs are not finite, before anything is written.
func checkFinite(_ c: StepContext, name: String) throws(OptimizerError) {
    for d in c.directions where !d.derivative.isFinite {
        throw OptimizerError(optimizer: name, message: "the directional derivative is \(d.derivative) at step \(c.step); parameters left unchanged")
    }
    guard c.learningRate.isFinite, c.epsilon.isFinite, c.groupLearningRates?.allSatisfy(\.isFinite) ?? true else {
        throw OptimizerError(optimizer: name, message: "learning rate \(c.learningRate) or epsilon \(c.epsilon) is not finite")
    }
}

/// g for one group: the dense estimate when given, else (1/n) Σⱼ dⱼ zⱼ regenerated from the
/// seeds (with a sparse perturbation's factors wⱼ,g when the context has them).
public func gradientEstimate(_ c: StepContext, group: Int, count: Int, scale: UnsafePointer<Float>? = nil,
                             into out: UnsafeMutablePointer<Float>) {
    if let dense = c.dense {
        out.update(from: dense[group], count: count)
        return
    }
    out.initialize(repeating: 0, count: count)
    let n = Float(max(1, c.directions.count))
    for (j, d) in c.directions.enumerated() {
        // A sparse direction has z = 0 on a group it left out (w = 0) and d · z / π on one it
        // perturbed (w = 1/π); a dense one has w = 1, and x · 1 is x exactly.
        let w = c.groupEstimateScales?[j][group] ?? 1
        if w != 0 { Perturbation.addScaled(alpha: d.derivative / n * w, seed: d.seed, group: UInt32(group), to: out, count: count, scale: scale) }
    }
}
