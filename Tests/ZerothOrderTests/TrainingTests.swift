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

/// An optimizer that records each step's directions and leaves θ as it is.
final class DirectionRecorder: Optimizer {
    var directions: [[Direction]] = []
    var name: String { "direction-recorder" }
    var needsUnperturbedLoss: Bool { false }
    func perturbationScale(group: Int) -> UnsafePointer<Float>? { nil }
    func step(_ context: StepContext, _ groups: [ParameterGroup]) throws(OptimizerError) { directions.append(context.directions) }
    var stateByteCount: Int { 0 }
    func saveState() throws(OptimizerError) -> [UInt8] { [] }
    func loadState(_ bytes: [UInt8]) throws(OptimizerError) {}
}

@Suite struct TrainingTests {
    /// The trainer's two-sided estimate d(ε) = (L(θ+εz) − L(θ−εz)) / 2ε is the directional
    /// derivative D = ∇L·z plus a truncation error aε² + bε⁴ + … (a = L‴/6 along z), plus
    /// the rounding of the two losses divided by 2ε. So the differences of estimates at ε,
    /// ε/2, ε/4 shrink 4× (r below → 1/4; a first-order error gives 1/2), and d(ε) is an
    /// independent reference for D within its truncation error.
    ///
    /// Where this can be seen: L is a mean of float32 per-token losses (10.7 nats here).
    /// Measured at ε ≤ 2.5e-3 (truncation under 1e-5), two points' losses differ from their
    /// exact difference by at most 0.4 u·L (u = 2⁻²⁴), sharing on or off; the test allows
    /// ρ = 2u·L, so an estimate's rounding is at most ρ/2ε: 6e-5 at ε = 1e-2. The
    /// truncation term at 1e-2 is 3e-4 (a ≈ −2.7 in this direction), and d(1e-2) − d(2e-2)
    /// is 8e-4. At the ε of 1e-3 once used here the bound is 6.4e-4 and a·ε² only 3e-6:
    /// the test then compared rounding with rounding. Above ε ≈ 4e-2 the ε⁴ term (b/a ≈ −45)
    /// moves r off 1/4 (by 7% with ε = 4e-2; 0.1 is allowed), so ε is 4e-2, 2e-2 and 1e-2.
    ///
    /// The reference is Richardson's extrapolation (4c(h) − c(2h)) / 3 of central differences
    /// c measured here at h = 1.5e-2 and 3e-2 (other points than the trainer's): D within
    /// 4|b|h⁴ (2.4e-5; 1e-4 allowed) and its rounding, (4ρ/2h + ρ/4h) / 3.
    @Test(arguments: [false, true])
    func twoSidedEstimateIsADirectionalDerivative(sharePrefix: Bool) throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        ti.sharePrefix = sharePrefix
        let shape = PerturbationShape(scales: [nil])

        // The trainer's estimate: one step on all the data with an optimizer that only records it.
        func estimate(_ eps: Float) throws -> Direction {
            var settings = TrainingSettings()
            settings.steps = 1
            settings.batchSize = data.count
            settings.microBatchSize = data.count
            settings.epsilon = eps
            settings.seed = 11
            let recorder = DirectionRecorder()
            try Trainer(objective: ti, optimizer: recorder, settings: settings, train: data).runStep()
            return try #require(recorder.directions.first?.first)
        }
        let epsilons: [Float] = [4e-2, 2e-2, 1e-2]
        let estimates = try epsilons.map(estimate)
        let seed = estimates[0].seed
        #expect(estimates.allSatisfy { $0.seed == seed }, "the same direction at every ε")
        let d = estimates.map { Double($0.derivative) }
        let mean = try ti.lossSums(at: [.unperturbed], epsilon: 0, shape: shape, examples: data)[0].nll
        let rho = 2 * Double(Float.ulpOfOne) / 2 * mean
        let rounding = epsilons.map { rho / (2 * Double($0)) }
        let report = "sharing \(sharePrefix): ε \(epsilons): d \(d), rounding bounds \(rounding)"

        // The order: the differences must stand above their rounding, and shrink 4×.
        let wide = d[0] - d[1], narrow = d[1] - d[2]
        let wideBound = rounding[0] + rounding[1], narrowBound = rounding[1] + rounding[2]
        #expect(abs(wide) > 10 * wideBound && abs(narrow) > 5 * narrowBound, "\(report)")
        let r = narrow / wide
        let allowed = 0.1 + (narrowBound + 0.25 * wideBound) / abs(wide)
        #expect(abs(r - 0.25) <= allowed, "r = \(r) (1/4 ± \(allowed)); \(report)")

        // The value, against the reference: d(1e-2) is off by its truncation error, which is
        // (d(2e-2) − d(1e-2)) / 3 for an ε² error (2× allowed), and by both roundings.
        func central(_ h: Float) throws -> Double {
            let s = try ti.lossSums(at: [PerturbedPoint(seed: seed, sign: 1), PerturbedPoint(seed: seed, sign: -1)],
                                    epsilon: h, shape: shape, examples: data)
            return (s[0].nll - s[1].nll) / (2 * Double(h))
        }
        let h: Float = 1.5e-2
        let reference = (4 * (try central(h)) - (try central(2 * h))) / 3
        let referenceBound = (4 * rho / (2 * Double(h)) + rho / (4 * Double(h))) / 3 + 1e-4
        #expect(abs(reference) > 1e-2, "the loss must depend on the new token")
        let off = abs(d[2] - reference), bound = 2 * abs(narrow) / 3 + rounding[2] + referenceBound
        #expect(off <= bound, "d(1e-2) − D = \(d[2] - reference) (bound \(bound)), D ≈ \(reference); \(report)")

        // The points are evaluated on copies: θ itself is unchanged.
        let before = ti.values.array
        _ = try central(1e-2)
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
