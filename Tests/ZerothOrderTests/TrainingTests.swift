import Foundation
import GGUF
import Model
import Quant
import TestSupport
import Testing
import ZerothOrder

/// Examples from texts, tokenized with `tokenizer`.
func examples(_ texts: [String], _ tokenizer: Tokenizer) throws -> [Example] {
    try texts.enumerated().map { i, t in
        try Dataset.example(["text": t], path: "memory", line: i + 1, tokenizer: tokenizer, maxLength: 256)
    }
}

let sentences = [
    "the cat sat on the <x> and looked at the door",
    "a dog ran to the <x> in the morning",
    "we walked past the <x> after lunch",
    "the <x> was quiet at night",
    "she painted the <x> blue last summer",
    "they found the <x> under the old tree",
]

func tinyModel(_ name: String = "tiny-q4_1") throws -> LlamaModel {
    try LlamaModel(path: Repository.path("models/\(name).gguf"))
}

func textualInversion(_ model: LlamaModel, points: Int = 2) throws -> (TextualInversion, [Example]) {
    let ti = try TextualInversion(model: model, newTokens: ["<x>"], initToken: " the", microBatchTokens: 128,
                                  maxPoints: points, contextLength: 64)
    return (ti, try examples(sentences, ti.tokenizer))
}

/// Trains one new token of `model` on `sentences` with ZO-SGD (batch = micro-batch); returns
/// the trained values and the training loss before and after.
func trainTextualInversion(_ model: LlamaModel, steps: Int, batch: Int, learningRate: Float, epsilon: Float = 1e-2,
                           seed: UInt64) throws -> (values: [Float], before: Double, after: Double) {
    let (ti, data) = try textualInversion(model)
    let (before, after) = try train(ti, data, steps: steps, batch: batch, learningRate: learningRate, epsilon: epsilon, seed: seed)
    return (ti.values.array, before, after)
}

/// Trains `ti` on `data` with ZO-SGD (batch = micro-batch); the loss on `data` before and after.
func train(_ ti: TextualInversion, _ data: [Example], steps: Int, batch: Int, learningRate: Float, epsilon: Float = 1e-2,
           seed: UInt64) throws -> (before: Double, after: Double) {
    var settings = TrainingSettings()
    settings.steps = steps
    settings.batchSize = batch
    settings.microBatchSize = batch
    settings.learningRate = learningRate
    settings.epsilon = epsilon
    settings.seed = seed
    let trainer = try Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [ti.model.config.dim]), settings: settings, train: data)
    let loss = { () throws -> Double in
        try ti.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0].nll
    }
    let before = try loss()
    while !trainer.isFinished { try trainer.runStep() }
    return (before, try loss())
}

@Suite struct TrainingTests {
    /// The two-sided estimate converges as ε shrinks: it measures a directional derivative.
    @Test func twoSidedEstimateIsADirectionalDerivative() throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        let shape = PerturbationShape(scales: [nil])
        func derivative(_ eps: Float) throws -> Double {
            let s = try ti.lossSums(at: [PerturbedPoint(seed: 11, sign: 1), PerturbedPoint(seed: 11, sign: -1)],
                                    epsilon: eps, shape: shape, examples: data)
            return (s[0].nll - s[1].nll) / (2 * Double(eps))
        }
        // Central differences: the error shrinks as ε², so d(ε) and d(ε/2) approach each other 4× faster than ε.
        let d1 = try derivative(4e-3)
        let d2 = try derivative(2e-3)
        let d3 = try derivative(1e-3)
        #expect(abs(d3) > 1e-3, "the loss must depend on the new token")
        #expect(abs(d2 - d3) < 0.4 * abs(d1 - d2), "d(0.004) = \(d1), d(0.002) = \(d2), d(0.001) = \(d3)")
        #expect(abs(d2 - d3) <= 0.02 * abs(d3))
        // The points are evaluated on copies: θ itself is unchanged.
        let before = ti.values.array
        _ = try derivative(1e-2)
        #expect(ti.values.array == before)
    }

    /// Dual forward: all points in one batch give the same losses as one point per pass.
    @Test func dualForwardEqualsSeparatePasses() throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model, points: 3)
        let shape = PerturbationShape(scales: [nil])
        let points = [PerturbedPoint(seed: 5, sign: 1), PerturbedPoint(seed: 5, sign: -1), .unperturbed]
        let together = try ti.lossSums(at: points, epsilon: 0.05, shape: shape, examples: data)
        for (i, p) in points.enumerated() {
            let alone = try ti.lossSums(at: [p], epsilon: 0.05, shape: shape, examples: data)[0]
            #expect(alone.tokens == together[i].tokens)
            #expect(abs(alone.nll - together[i].nll) < 1e-5, "point \(i): \(alone.nll) vs \(together[i].nll)")
        }
    }

    /// Training lowers the loss, and the same seed gives the same parameters bit for bit.
    @Test func trainingIsDeterministicAndLowersTheLoss() throws {
        let a = try trainTextualInversion(try tinyModel(), steps: 60, batch: 4, learningRate: 0.05, seed: 3)
        let b = try trainTextualInversion(try tinyModel(), steps: 60, batch: 4, learningRate: 0.05, seed: 3)
        #expect(a.values == b.values, "same seed, same parameters")
        #expect(a.after < a.before, "loss \(a.before) → \(a.after)")
    }

    /// The same run on one thread gives the same parameters bit for bit: no product's
    /// rounding depends on how the work is split between threads.
    @Test func trainingDoesNotDependOnTheThreadCount() throws {
        func run(threads: Int) throws -> [Float] {
            let saved = Parallel.threadCount
            Parallel.threadCount = threads
            defer { Parallel.threadCount = saved }
            return try trainTextualInversion(try tinyModel(), steps: 20, batch: 6, learningRate: 0.5, seed: 4).values
        }
        let two = try run(threads: 2)
        let one = try run(threads: 1)
        #expect(two == one, "largest difference \(zip(two, one).map { abs($0 - $1) }.max() ?? 0)")
    }

    /// The loss of a batch does not depend on how it is split into micro-batches: the sums
    /// run token by token in the same order, so only the per-token losses could differ, and
    /// those only by float32 rounding (OpenBLAS picks its small-matrix kernels, which round
    /// differently, for the smallest products).
    @Test(arguments: [1, 2, 3])
    func microBatchesGiveTheSameLoss(micro: Int) throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        let shape = PerturbationShape(scales: [nil])
        let points = [PerturbedPoint(seed: 9, sign: 1), PerturbedPoint(seed: 9, sign: -1)]
        let whole = try ti.lossSums(at: points, epsilon: 0.01, shape: shape, examples: data)
        var parts = [LossSum](repeating: LossSum(), count: 2)
        for chunk in stride(from: 0, to: data.count, by: micro) {
            try ti.accumulateLosses(at: points, epsilon: 0.01, shape: shape,
                                    examples: Array(data[chunk..<min(chunk + micro, data.count)]), into: &parts)
        }
        #expect(whole.map(\.tokens) == parts.map(\.tokens))
        for i in 0..<2 {
            #expect(abs(whole[i].totalNLL - parts[i].totalNLL) <= 1e-7 * whole[i].totalNLL, "\(whole[i]) vs \(parts[i])")
        }
    }

    /// A NaN update is refused and θ stays at its last good value.
    @Test func nonFiniteStepKeepsTheLastGoodParameters() throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        var settings = TrainingSettings()
        settings.steps = 5
        settings.batchSize = 2
        settings.learningRate = .greatestFiniteMagnitude
        let trainer = try Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [model.config.dim]), settings: settings, train: data)
        let before = ti.values.array
        var failed = false
        for _ in 0..<5 {
            do { try trainer.runStep() } catch {
                switch error {
                case .nonFiniteLoss, .nonFiniteUpdate: break
                default: Issue.record("unexpected \(error)"); return
                }
                failed = true
                break
            }
        }
        #expect(failed)
        #expect(ti.values.array.allSatisfy { $0.isFinite })
        #expect(ti.values.array != before || trainer.step == 1)
    }

    /// Bad textual-inversion setups are refused with errors that say what to do.
    @Test func badNewTokensAreRefused() throws {
        let model = try tinyModel()
        #expect(throws: TrainingError.self) {
            try TextualInversion(model: model, newTokens: ["<|im_start|>"], initToken: " the", microBatchTokens: 64, maxPoints: 2, contextLength: 64)
        }
        do {
            _ = try TextualInversion(model: model, newTokens: ["<x>"], initToken: " a completely different phrase",
                                     microBatchTokens: 64, maxPoints: 2, contextLength: 64)
            Issue.record("a multi-token init word must be refused")
        } catch {
            #expect(error.description.contains("tokens"), "\(error)")
        }
    }
}
