import TestSupport
import ZerothOrder

/// The training-run setup the option tests share: a tiny model on the Paris sentences,
/// batch 4 in one pass, QZO's relative rate and ε, C = 100, seed 3.
func tinyRunOptions(model: String, method: TrainingMethod) -> TrainingRunOptions {
    var o = TrainingRunOptions(modelPath: Repository.path("models/" + model),
                               dataPath: Repository.path("examples/paris/train.jsonl"), method: method)
    o.settings.batchSize = 4
    o.settings.microBatchSize = 4
    o.settings.learningRate = 3e-3
    o.settings.epsilon = 1e-3
    o.settings.clip = 100
    o.settings.seed = 3
    return o
}

/// Runs `o` to its last step with `optimizer` (the built-in ZO-SGD when nil).
func runToEnd(_ o: TrainingRunOptions, optimizer: (([GroupLayout]) throws -> Optimizer)? = nil) throws -> TrainingRun {
    let r = try TrainingRun(o, makeOptimizer: optimizer ?? { try ZOSGD.make(groupSizes: $0.map(\.count), options: []) }, note: { _ in })
    while !r.isFinished { _ = try r.step() }
    return r
}

/// Every trained value's bits, group by group.
func parameterBits(_ r: TrainingRun) -> [[UInt32]] {
    r.trainer.groups.map { g in (0..<g.count).map { g.values[$0].bitPattern } }
}
