// The training loop: each step draws a batch, measures the loss at perturbed points,
// turns the losses into directional derivatives (two-sided SPSA or the one-sided
// n-direction estimator), lets the optimizer update θ, and keeps θ valid.
//
// Everything a step does is a function of (run seed, step number): the batch (epochs of
// seeded shuffles), the direction seeds, and so the result. Same seed, same data, same
// flags: the same parameters, bit for bit — and a resumed run continues exactly.

import Model
import Quant

public enum EstimatorKind: String, Sendable, CaseIterable {
    /// d = (L(θ+εz) − L(θ−εz)) / 2ε per direction.
    case twoSided = "two-sided"
    /// d = (L(θ+εz) − L(θ)) / ε per direction, one shared L(θ).
    case oneSided = "one-sided"
}

public struct TrainingSettings: Sendable {
    public var steps = 1000
    /// Examples per step.
    public var batchSize = 8
    /// Examples per forward pass group (the loss is summed over micro-batches).
    public var microBatchSize = 8
    public var learningRate: Float = 3e-3
    public var epsilon: Float = 1e-3
    /// Perturbation directions per step (q).
    public var directions = 1
    public var estimator = EstimatorKind.twoSided
    /// Directional-derivative clipping bound C (QZO's DDC); nil: no clipping.
    public var clip: Float?
    public var seed: UInt64 = 0
    /// Evaluate on held-out data every this many steps (0: only at the start and end).
    public var evalEvery = 50
    /// The learning-rate schedule over `steps`: its kind, warm-up steps and floor.
    public var lrSchedule = LearningRateSchedule.Kind.constant
    public var warmup = 0
    public var lrMinRatio = 0.0
    /// Per trainable group, its own base learning rate and ε, when the trained sets differ
    /// (QZO's scales and new tokens' rows); nil: `learningRate` and `epsilon` for all. Only
    /// the built-in ZO-SGD takes per-group rates (`TrainingRun` refuses them with a plugin).
    public var groupLearningRates: [Float]?
    public var groupEpsilons: [Float]?
    /// The fraction of the trained tensors each direction perturbs (`PerturbationSubset`);
    /// 1: all of them, the dense z.
    public var perturbFraction = 1.0
    /// A trust region: no step moves a group by more than this fraction of the group's norm
    /// before the step (a larger update is scaled down onto that radius, its direction kept);
    /// 0: unbounded. Unlike the derivative bound `clip`, it is in units of the group's own
    /// norm, whatever the rate, the optimizer or the file.
    public var maxUpdate = 0.0

    public init() {}

    /// What is wrong with `maxUpdate` = `value`, if anything (one line naming the flag).
    public static func maxUpdateProblem(_ value: Double) -> String? {
        value >= 0 && value.isFinite ? nil : "--max-update must be 0 (unbounded) or a positive fraction of a group's norm (got \(value))"
    }

    /// The schedule the rates follow.
    public var schedule: LearningRateSchedule {
        LearningRateSchedule(kind: lrSchedule, warmup: warmup, minRatio: lrMinRatio, totalSteps: steps)
    }

    /// The rates of step `s` per group, as ZO-SGD applies them to the derivative measured
    /// with the run's ε: η_g·f(s)·ε/ε_g, so that group g steps by η_g·f(s)·(L₊ − L₋)/(2ε_g)·z,
    /// SGD at its own rate on the loss's slope at its own ε. nil without per-group rates.
    public func groupRates(step s: Int) -> [Float]? {
        guard let rates = groupLearningRates else { return nil }
        let f = schedule.factor(step: s)
        return rates.indices.map { g in
            let e = groupEpsilons?[g] ?? epsilon
            return Float(Double(rates[g]) * f * (Double(epsilon) / Double(e)))
        }
    }

    /// Points per step: the perturbed points the loss is measured at.
    public func pointCount(needsUnperturbed: Bool) -> Int {
        switch estimator {
        case .twoSided: 2 * directions + (needsUnperturbed ? 1 : 0)
        case .oneSided: directions + 1
        }
    }
}

/// What one step did.
public struct StepRecord: Sendable {
    public var step: Int
    /// Mean of the losses at the step's points (≈ L(θ) on the batch).
    public var loss: Double
    public var derivatives: [Float]
    /// Held-out NLL after this step, when evaluated.
    public var evalLoss: Double?
    public var seconds: Double
    /// The schedule's factor f at this step (the rates are the base rates times it).
    public var rateFactor: Double = 1
    /// The learning rate of this step: the schedule's value of `TrainingSettings.learningRate`.
    public var learningRate: Float = 0
    /// Groups whose update `TrainingSettings.maxUpdate` scaled down at this step.
    public var boundedGroups = 0
}

public final class Trainer {
    public let objective: Objective
    public let optimizer: Optimizer
    public let settings: TrainingSettings
    public let train: [Example]
    public let subspace: SubspaceGradient?
    /// Held-out NLL at the current parameters.
    public let evaluate: (() throws(TrainingError) -> Double)?
    /// The next step to run (1-based).
    public private(set) var step = 1
    /// The ranks sharing each step's micro-batches (one process unless set).
    public var collective: Collective = SingleProcess()
    /// Set by `restore`: the next step is the first after a resume.
    private var resumed = false
    /// Which tensors each direction perturbs, when not all (`settings.perturbFraction` < 1).
    public let subset: PerturbationSubset?

    public init(objective: Objective, optimizer: Optimizer, settings: TrainingSettings, train: [Example],
                subspace: SubspaceGradient? = nil, evaluate: (() throws(TrainingError) -> Double)? = nil) throws(TrainingError) {
        guard !train.isEmpty else { throw .invalidSetting("no training examples") }
        guard settings.steps >= 0, settings.batchSize >= 1, settings.microBatchSize >= 1, settings.directions >= 1 else {
            throw .invalidSetting("steps, batch size, micro-batch size and directions must be positive")
        }
        guard settings.epsilon > 0, settings.epsilon.isFinite, settings.learningRate.isFinite else {
            throw .invalidSetting("epsilon must be positive and the learning rate finite")
        }
        if let problem = settings.schedule.problem { throw .invalidSetting(problem) }
        if let problem = TrainingSettings.maxUpdateProblem(settings.maxUpdate) { throw .invalidSetting(problem) }
        let count = objective.parameters.groups.count
        for (name, values) in [("learning rates", settings.groupLearningRates), ("epsilons", settings.groupEpsilons)] {
            guard let values else { continue }
            guard values.count == count, values.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw .invalidSetting("per-group \(name): expected \(count) finite values of at least 0, got \(values)")
            }
        }
        if let e = settings.groupEpsilons, e.contains(0) { throw .invalidSetting("a group's epsilon is 0; epsilon must be positive") }
        if settings.perturbFraction != 1 {
            subset = try PerturbationSubset(fraction: settings.perturbFraction, unitOfGroup: objective.parameters.perturbationUnits)
            // Only ZO-SGD forms its estimate with the subset's factors; a plugin regenerates z
            // from the seeds for every group (ABI 1.1) and would update along a z never applied.
            guard optimizer is ZOSGD else {
                throw .invalidSetting("--perturb-fraction \(settings.perturbFraction) needs the built-in zo-sgd: optimizer \(optimizer.name) regenerates z for every tensor from the step's seeds, not the sparse z the engine applied")
            }
        } else {
            subset = nil
        }
        self.objective = objective
        self.optimizer = optimizer
        self.settings = settings
        self.train = train
        self.subspace = subspace
        self.evaluate = evaluate
    }

    /// The run's state after the last completed step.
    public func checkpoint(identity: [String: String]) throws(TrainingError) -> Checkpoint {
        let groups = objective.parameters.groups
        let optimizerState: [UInt8]
        do { optimizerState = try optimizer.saveState() } catch { throw .optimizer(error) }
        return Checkpoint(step: step, identity: identity, groups: groups, optimizerState: optimizerState,
                          subspaceState: subspace?.saveState() ?? [])
    }

    /// Restores the optimizer and the subspace from `checkpoint` (loaded into this trainer's
    /// groups, so θ is already in place) and continues at its step.
    public func restore(_ checkpoint: Checkpoint) throws(TrainingError) {
        let groups = objective.parameters.groups
        guard checkpoint.groups.count == groups.count,
              zip(checkpoint.groups, groups).allSatisfy({ $0.values == $1.values && $0.count == $1.count }) else {
            throw .invalidSetting("the checkpoint was not loaded into this run's trainable values")
        }
        do { try optimizer.loadState(checkpoint.optimizerState) } catch { throw .optimizer(error) }
        if let subspace { try subspace.loadState(checkpoint.subspaceState) }
        step = checkpoint.step
        resumed = true
    }

    /// The trainable groups, for loading a checkpoint into.
    public var groups: [ParameterGroup] { objective.parameters.groups }

    public var isFinished: Bool { step > settings.steps }

    // MARK: - Data order

    /// Indices of the examples of step `s`: a stream of epochs, each a seeded shuffle.
    public func batchIndices(step s: Int) -> [Int] {
        let n = train.count
        let first = (s - 1) * settings.batchSize
        var out = [Int]()
        var epochCache: (Int, [Int])?
        for position in first..<(first + settings.batchSize) {
            let epoch = position / n
            if epochCache?.0 != epoch {
                var order = Array(0..<n)
                var rng = SeededGenerator(seed: settings.seed ^ (UInt64(epoch) &* 0xD6E8_FEB8_6659_FD93) ^ 0x5EED)
                for i in stride(from: n - 1, to: 0, by: -1) {
                    order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
                }
                epochCache = (epoch, order)
            }
            out.append(epochCache!.1[position % n])
        }
        return out
    }

    // MARK: - One step

    /// The largest per-value perturbation scale accepted from an optimizer: beyond it ε·s
    /// stops being a small perturbation (ε = 1e-3 moves a value by 1000).
    public static let maximumPerturbationScale: Float = 1e6

    /// Refuses a step whose optimizer-provided scales are not finite, positive and at most
    /// `maximumPerturbationScale`, before any value is perturbed.
    private func checkPerturbationScales(_ scales: [UnsafePointer<Float>?], _ groups: [ParameterGroup], step s: Int) throws(TrainingError) {
        for (g, scale) in scales.enumerated() {
            guard let scale else { continue }
            for i in 0..<groups[g].count {
                let v = scale[i]
                guard v.isFinite, v > 0, v <= Self.maximumPerturbationScale else {
                    throw .optimizer(OptimizerError(optimizer: optimizer.name, message: "the perturbation scale of group '\(groups[g].name)' is \(v) at index \(i), step \(s); a scale must be finite, positive and at most \(Self.maximumPerturbationScale); parameters left unchanged"))
                }
            }
        }
    }

    /// Runs the next step. On a non-finite loss or update, θ is left as it was before the step.
    @discardableResult
    public func runStep() throws(TrainingError) -> StepRecord {
        let clock = ContinuousClock()
        let start = clock.now
        let s = step
        let groups = objective.parameters.groups
        let q = settings.directions
        let seeds = (0..<q).map { Perturbation.directionSeed(runSeed: settings.seed, step: s, direction: $0) }

        // The perturbation's shape: the optimizer's scale, and the subspace when perturbing inside it.
        var shape = PerturbationShape(scales: groups.indices.map { optimizer.perturbationScale(group: $0) })
        shape.groupEpsilons = settings.groupEpsilons ?? []
        try checkPerturbationScales(shape.scales, groups, step: s)
        if let subspace, subspace.transformsPerturbation {
            shape.transform = { g, z, n in subspace.shapePerturbation(group: g, z, count: n) }
        }
        // A sparse perturbation: each direction's tensors, from its seed (so the two points and
        // the update agree, and a resumed run regenerates them).
        let perturbed = subset.map { subset in seeds.map { subset.perturbedGroups(seed: $0) } }
        if let perturbed {
            let table = Dictionary(seeds.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            shape.perturbs = { seed, g in table[seed].map { perturbed[$0][g] } ?? true }
        }
        // An optimizer that chooses its own directions: p for every (direction, group), asked
        // for (and checked) before anything is perturbed, used for the + and − points alike.
        var provided = [[UnsafeMutablePointer<Float>]]()   // (directions) -> (groups) -> (count)
        defer { provided.joined().forEach { $0.deallocate() } }
        if optimizer.providesPerturbation {
            if subspace != nil {
                throw .invalidSetting("optimizer \(optimizer.name) chooses its own perturbations (a perturbation hook); the subspace gradient transforms the engine's z and cannot be combined with it")
            }
            for (j, seed) in seeds.enumerated() {
                var row = [UnsafeMutablePointer<Float>]()
                for (g, group) in groups.enumerated() {
                    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, group.count))
                    p.initialize(repeating: 0, count: group.count)
                    row.append(p)
                    do { try optimizer.perturbation(step: s, seed: seed, direction: j, group: g, count: group.count, into: p) } catch {
                        provided.append(row)
                        throw .optimizer(error)
                    }
                    if let i = (0..<group.count).first(where: { !p[$0].isFinite }) {
                        provided.append(row)
                        throw .optimizer(OptimizerError(optimizer: optimizer.name, message: "its perturbation for group '\(group.name)' is \(p[i]) at index \(i), step \(s); parameters left unchanged"))
                    }
                }
                provided.append(row)
            }
            let table = Dictionary(seeds.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            let pointers = provided
            shape.provided = { seed, g in table[seed].map { UnsafePointer(pointers[$0][g]) } }
        }

        // Points and their losses, summed over micro-batches.
        var points = [PerturbedPoint]()
        switch settings.estimator {
        case .twoSided:
            for seed in seeds { points += [PerturbedPoint(seed: seed, sign: 1), PerturbedPoint(seed: seed, sign: -1)] }
            if optimizer.needsUnperturbedLoss { points.append(.unperturbed) }
        case .oneSided:
            points.append(.unperturbed)
            for seed in seeds { points.append(PerturbedPoint(seed: seed, sign: 1)) }
        }
        // Each micro-batch's sums start from zero wherever it runs (this rank measures its
        // share of them) and are added in micro-batch order: the same bits on any number of ranks.
        let batch = batchIndices(step: s).map { train[$0] }
        let m = settings.microBatchSize
        let measure = { (u: Int) throws(TrainingError) -> [LossSum] in
            let micro = Array(batch[(u * m)..<min(batch.count, u * m + m)])
            return try self.objective.lossSums(at: points, epsilon: self.settings.epsilon, shape: shape, examples: micro)
        }
        let units = try collective.gatherLossSums(units: (batch.count + m - 1) / m, width: points.count, step: s, measure)
        let sums = combineInOrder(units, width: points.count)
        let losses = sums.map(\.nll)
        let meanLoss = losses.reduce(0, +) / Double(losses.count)
        guard losses.allSatisfy({ $0.isFinite }) else {
            throw .nonFiniteLoss(step: s, loss: losses.first { !$0.isFinite } ?? .nan)
        }

        // Directional derivatives, clipped when asked (QZO's DDC).
        let eps = Double(settings.epsilon)
        var directions = [Direction]()
        var unperturbed: Float?
        switch settings.estimator {
        case .twoSided:
            for (j, seed) in seeds.enumerated() {
                let plus = losses[2 * j], minus = losses[2 * j + 1]
                directions.append(Direction(seed: seed, derivative: clipped(Float((plus - minus) / (2 * eps))),
                                            lossPlus: Float(plus), lossMinus: Float(minus)))
            }
            if optimizer.needsUnperturbedLoss { unperturbed = Float(losses[2 * q]) }
        case .oneSided:
            let zero = losses[0]
            unperturbed = Float(zero)
            for (j, seed) in seeds.enumerated() {
                let plus = losses[1 + j]
                directions.append(Direction(seed: seed, derivative: clipped(Float((plus - zero) / eps)),
                                            lossPlus: Float(plus), lossMinus: .nan))
            }
        }

        // A dense estimate when the engine shapes it (subspace), else seeds and derivatives.
        // The rate is the schedule's value at this step; the base is what it scales.
        let rateFactor = settings.schedule.factor(step: s)
        let rate = settings.schedule.rate(step: s, base: settings.learningRate)
        var context = StepContext(step: s, learningRate: rate, epsilon: settings.epsilon,
                                  directions: directions, unperturbedLoss: unperturbed)
        context.totalSteps = settings.steps
        context.baseLearningRate = settings.learningRate
        context.groupLearningRates = settings.groupRates(step: s)
        context.firstAfterResume = resumed
        if let perturbed, let scale = subset?.estimateScale {
            context.groupEstimateScales = perturbed.map { row in row.map { $0 ? scale : 0 } }
        }
        var denseBuffers = [[Float]]()
        if let subspace, subspace.isActive {
            for (g, group) in groups.enumerated() {
                var v = [Float](repeating: 0, count: group.count)
                for (j, d) in directions.enumerated() {
                    let w = context.groupEstimateScales?[j][g] ?? 1
                    if w != 0 { shape.apply(alpha: d.derivative / Float(q) * w, seed: d.seed, group: g, to: &v, count: group.count) }
                }
                if subspace.mode == .projectEstimate { subspace.project(group: g, &v, count: group.count) }
                denseBuffers.append(v)
            }
        }

        // Update, keeping a copy of θ to fall back on.
        let backup = groups.map { Array(UnsafeBufferPointer(start: $0.values, count: $0.count)) }
        do {
            if denseBuffers.isEmpty {
                try optimizer.step(context, groups)
            } else {
                try withPointers(denseBuffers) { pointers throws(OptimizerError) in
                    context.dense = pointers
                    try optimizer.step(context, groups)
                }
            }
        } catch {
            restore(groups, from: backup)
            throw .optimizer(error)
        }
        let bounded = settings.maxUpdate > 0 ? boundUpdates(groups, from: backup) : 0
        objective.parameters.constrain()
        for group in groups where !(0..<group.count).allSatisfy({ group.values[$0].isFinite }) {
            restore(groups, from: backup)
            throw .nonFiniteUpdate(step: s)
        }
        subspace?.record(step: s, groups: groups)
        resumed = false

        var record = StepRecord(step: s, loss: meanLoss, derivatives: directions.map(\.derivative), evalLoss: nil,
                                seconds: 0, rateFactor: rateFactor, learningRate: rate)
        record.boundedGroups = bounded
        if let evaluate, settings.evalEvery > 0, s % settings.evalEvery == 0 || s == settings.steps {
            record.evalLoss = try evaluate()
        }
        step += 1
        let elapsed = clock.now - start
        record.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return record
    }

    private func clipped(_ d: Float) -> Float {
        guard let c = settings.clip else { return d }
        return min(max(d, -c), c)
    }

    /// Scales each group's update θ − θ₀ down to `maxUpdate`·‖θ₀‖ where it is longer, keeping
    /// its direction; returns how many groups it scaled. A group at 0 has no radius and is
    /// left as the optimizer moved it. (An optimizer's own state, such as momentum, keeps the
    /// update it computed.)
    private func boundUpdates(_ groups: [ParameterGroup], from backup: [[Float]]) -> Int {
        var bounded = 0
        for (g, group) in groups.enumerated() {
            var norm = 0.0, moved = 0.0
            for i in 0..<group.count {
                let before = Double(backup[g][i]), delta = Double(group.values[i]) - before
                norm += before * before
                moved += delta * delta
            }
            let radius = settings.maxUpdate * norm.squareRoot()
            guard radius > 0, moved.squareRoot() > radius else { continue }
            let f = radius / moved.squareRoot()
            for i in 0..<group.count {
                let before = Double(backup[g][i])
                group.values[i] = Float(before + (Double(group.values[i]) - before) * f)
            }
            bounded += 1
        }
        return bounded
    }

    private func restore(_ groups: [ParameterGroup], from backup: [[Float]]) {
        for (g, group) in groups.enumerated() {
            backup[g].withUnsafeBufferPointer { group.values.update(from: $0.baseAddress!, count: group.count) }
        }
    }
}

/// Calls `body` with stable pointers to each array's storage.
func withPointers<E: Error>(_ arrays: [[Float]], _ body: ([UnsafePointer<Float>]) throws(E) -> Void) throws(E) {
    var pointers = [UnsafePointer<Float>]()
    var storage = [UnsafeMutablePointer<Float>]()
    for a in arrays {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, a.count))
        p.initialize(from: a, count: a.count)
        storage.append(p)
        pointers.append(UnsafePointer(p))
    }
    defer { storage.forEach { $0.deallocate() } }
    try body(pointers)
}
