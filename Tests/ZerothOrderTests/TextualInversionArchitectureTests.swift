// Textual inversion on every architecture of the tiny models (llama, Qwen2 with its own
// output.weight, Gemma 3 with its √dim input scale), and the units the new rows train in.

import Foundation
import Model
import Quant
import TestSupport
import Testing
import ZerothOrder

@Suite struct TextualInversionArchitectureTests {
    static let models = ["tiny-q4_1", "tiny-qwen2", "tiny-gemma3", "tiny-mixed"]

    @Test("training lowers the loss on each architecture, at the default relative lr and ε", arguments: models)
    func trainingLowersTheLoss(name: String) throws {
        let (_, before, after) = try trainTextualInversion(try tinyModel(name), steps: 40, batch: 6, learningRate: 0.75, seed: 1)
        #expect(after < before - 0.01, "\(name): loss \(before) → \(after)")
    }

    @Test("the trained values are the rows in units of the init row's RMS", arguments: models)
    func unitsOfTheInitRow(name: String) throws {
        let model = try tinyModel(name)
        let rows = try NewTokenRows(model: model, tokens: ["<x>"], initToken: " the")
        let dim = model.config.dim
        // The init row, read through gguf-independent arithmetic: float64 RMS of the row as
        // the model dequantizes it; φ has RMS 1 and ρ·φ gives the row back to rounding.
        let initRow = FloatBuffer(count: dim)
        model.embedding(Int(rows.initTokenID), into: initRow.pointer)
        let rms = (initRow.array.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(dim)).squareRoot()
        #expect(abs(Double(rows.unit) - rms) <= 1e-6 * rms)
        let phi = rows.values.array
        let phiRMS = (phi.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(dim)).squareRoot()
        #expect(abs(phiRMS - 1) < 1e-5)
        for (j, v) in rows.embeddings().enumerated() {
            #expect(abs(v - initRow[j]) <= 2 * initRow[j].ulp, "value \(j): \(v) vs \(initRow[j])")
        }
    }

    @Test("a perturbed point moves the embedding by ρ·ε·z")
    func perturbationIsRelative() throws {
        for name in ["tiny-q4_1", "tiny-gemma3"] {
            let model = try tinyModel(name)
            let (ti, data) = try textualInversion(model, points: 2)
            let dim = model.config.dim
            let eps: Float = 1e-2
            // The loss difference of ±ε along z is ρ·ε·(∇θ L · z)·2 to first order: the same
            // directional derivative measured on θ with an absolute step ρ·ε.
            let shape = PerturbationShape(scales: [nil])
            let relative = try ti.lossSums(at: [PerturbedPoint(seed: 9, sign: 1), PerturbedPoint(seed: 9, sign: -1)],
                                           epsilon: eps, shape: shape, examples: data)
            // The same two points written out as absolute embeddings, through the evaluator.
            let theta = ti.rows.embeddings()
            var plus = theta, minus = theta
            for j in 0..<dim {
                let z = Perturbation.value(seed: 9, group: 0, index: UInt64(j))
                plus[j] = ti.rows.unit * (ti.values[j] + eps * z)
                minus[j] = ti.rows.unit * (ti.values[j] - eps * z)
            }
            let evaluator = ti.evaluator
            let lp = try plus.withUnsafeBufferPointer { try evaluator.evaluate(data, extra: ti.extraTokens($0.baseAddress!)) }
            let lm = try minus.withUnsafeBufferPointer { try evaluator.evaluate(data, extra: ti.extraTokens($0.baseAddress!)) }
            #expect(relative[0].tokens == lp.tokens && abs(relative[0].nll - lp.nll) < 1e-5, "\(name): \(relative[0].nll) vs \(lp.nll)")
            #expect(abs(relative[1].nll - lm.nll) < 1e-5, "\(name): \(relative[1].nll) vs \(lm.nll)")
        }
    }

    @Test("a new token given twice is refused, naming it")
    func duplicateNewToken() throws {
        let model = try tinyModel("tiny-gemma3")
        #expect(throws: TrainingError.self) { try NewTokenRows(model: model, tokens: ["<x>", "<x>"], initToken: " the") }
        do {
            _ = try NewTokenRows(model: model, tokens: ["<x>", "<x>"], initToken: " the")
        } catch {
            #expect(error.description.contains("\"<x>\"") && !error.description.contains("\n"), "\(error)")
        }
    }
}
