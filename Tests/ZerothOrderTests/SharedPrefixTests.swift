// A textual-inversion step that runs each example's positions before its first new token
// once for all points (`sharePrefix`) gives each point the loss sum of the unshared pass
// (every point a whole sequence), on every architecture of the tiny models, and trains.

import Foundation
import Model
import Quant
import TestSupport
import Testing
import ZerothOrder

@Suite struct SharedPrefixTests {
    static let models = ["tiny-q4_1", "tiny-qwen2", "tiny-gemma3"]

    /// The training sentences and the edge cases: a new token first (nothing to share),
    /// none at all (everything shared), two of them, one at the end.
    static let texts = sentences + [
        "<x> opened the window before the rain came down on the town",
        "nothing new in this line at all, just words about the weather",
        "the <x> and the <x> stood side by side",
        "at the very end of this long line we find the <x>",
    ]

    func objective(_ model: LlamaModel, points: Int, microBatchTokens: Int) throws -> (TextualInversion, [Example]) {
        let ti = try TextualInversion(model: model, newTokens: ["<x>"], initToken: " the", microBatchTokens: microBatchTokens,
                                      maxPoints: points, contextLength: 64)
        return (ti, try examples(Self.texts, ti.tokenizer))
    }

    func sums(_ ti: TextualInversion, share: Bool, _ points: [PerturbedPoint], _ data: [Example]) throws -> [LossSum] {
        ti.sharePrefix = share
        return try ti.lossSums(at: points, epsilon: 1e-2, shape: PerturbationShape(scales: [nil]), examples: data)
    }

    @Test("each point's loss sum is the unshared pass's, within float32 rounding", arguments: models)
    func lossSumsAgree(name: String) throws {
        let model = try tinyModel(name)
        let plusMinus = [PerturbedPoint(seed: 9, sign: 1), PerturbedPoint(seed: 9, sign: -1)]
        // ±εz; the same with HiZOO's unperturbed point; two identical points (the shared
        // keys must then give exactly the whole sequence's states).
        let cases: [[PerturbedPoint]] = [plusMinus, [.unperturbed] + plusMinus, [.unperturbed, .unperturbed]]
        for points in cases {
            // A pass of many examples, and passes so small that examples spill into several.
            for microBatchTokens in [256, 24] {
                let (ti, data) = try objective(model, points: points.count, microBatchTokens: microBatchTokens)
                let unshared = try sums(ti, share: false, points, data)
                let shared = try sums(ti, share: true, points, data)
                for p in points.indices {
                    #expect(shared[p].tokens == unshared[p].tokens)
                    let a = shared[p].totalNLL, b = unshared[p].totalNLL
                    #expect(abs(a - b) <= 1e-5 * abs(b), "\(name), \(points.count) points, pass \(microBatchTokens): point \(p): \(a) vs \(b)")
                }
                // The two points differ (the comparison is not between equal numbers by construction).
                if points == plusMinus { #expect(unshared[0].totalNLL != unshared[1].totalNLL) }
            }
        }
    }

    /// `data` with soft targets (distillation): at every scored position the `k` most likely
    /// next tokens of `model` with the new rows at `ti`'s current values, renormalized, as
    /// `Distillation.attachTeacher` forms them. The new token's id is among them wherever the
    /// model ranks it high (its row starts as " the"'s).
    func withSoftTargets(_ data: [Example], _ ti: TextualInversion, _ model: LlamaModel, k: Int = 8) throws -> [Example] {
        let state = RunState(config: model.config, capacity: data.map(\.tokens.count).max()!, contextLength: 64)
        let extra = ti.currentExtraTokens()
        return try data.map { e in
            var e = e
            let batch = Batch(sequences: [e.tokens])
            try model.validate(batch, state, extra: extra)
            model.forward(batch, state, extra: extra)
            e.soft = model.topTokens(batch, state, targets: e.targets, k: k, extra: extra)
            return e
        }
    }

    @Test("soft targets (distillation): each point's sum is the unshared pass's", arguments: models)
    func softTargetSumsAgree(name: String) throws {
        let model = try tinyModel(name)
        let plusMinus = [PerturbedPoint(seed: 9, sign: 1), PerturbedPoint(seed: 9, sign: -1)]
        for points in [plusMinus, [.unperturbed] + plusMinus] {
            for microBatchTokens in [256, 24] {
                let (ti, plain) = try objective(model, points: points.count, microBatchTokens: microBatchTokens)
                let data = try withSoftTargets(plain, ti, model)
                // The soft path is the one measured: its sums are not the hard targets' sums,
                // and the new token is a soft target somewhere (its logit enters the sum).
                let newID = Int32(ti.firstID)
                #expect(data.contains { $0.soft?.contains { $0?.ids.contains(newID) == true } == true }, "\(name): the new token is never a soft target")
                let unshared = try sums(ti, share: false, points, data)
                let hard = try sums(ti, share: false, points, plain)
                #expect(abs(unshared[0].totalNLL - hard[0].totalNLL) > 1e-3 * hard[0].totalNLL)
                let shared = try sums(ti, share: true, points, data)
                for p in points.indices {
                    #expect(shared[p].tokens == unshared[p].tokens)
                    let a = shared[p].totalNLL, b = unshared[p].totalNLL
                    #expect(abs(a - b) <= 1e-5 * abs(b), "\(name), \(points.count) points, pass \(microBatchTokens): point \(p): \(a) vs \(b)")
                }
                #expect(unshared[0].totalNLL != unshared[1].totalNLL)
            }
        }
    }

    @Test("the shared pass scores each point through the evaluator's independent path", arguments: models)
    func agreesWithTheEvaluator(name: String) throws {
        let model = try tinyModel(name)
        let (ti, data) = try objective(model, points: 2, microBatchTokens: 256)
        let eps: Float = 1e-2
        let shared = try sums(ti, share: true, [PerturbedPoint(seed: 5, sign: 1), PerturbedPoint(seed: 5, sign: -1)], data)
        let dim = model.config.dim
        for (p, sign) in [Float(1), -1].enumerated() {
            var rows = [Float](repeating: 0, count: dim)
            for j in 0..<dim {
                rows[j] = ti.rows.unit * (ti.values[j] + sign * eps * Perturbation.value(seed: 5, group: 0, index: UInt64(j)))
            }
            let evaluator = ti.evaluator
            let e = try rows.withUnsafeBufferPointer { try evaluator.evaluate(data, extra: ti.extraTokens($0.baseAddress!)) }
            #expect(e.tokens == shared[p].tokens)
            #expect(abs(e.nll - shared[p].nll) <= 1e-5 * e.nll, "\(name) point \(p): \(shared[p].nll) vs \(e.nll)")
        }
    }

    @Test("training with the shared prefix lowers the loss", arguments: models)
    func trainingLowersTheLoss(name: String) throws {
        let model = try tinyModel(name)
        let (ti, data) = try objective(model, points: 2, microBatchTokens: 128)
        ti.sharePrefix = true
        let (before, after) = try train(ti, data, steps: 40, batch: 6, learningRate: 0.75, seed: 1)
        #expect(after < before - 0.01, "\(name): loss \(before) → \(after)")
    }
}
