import Foundation
import GGUF
import Model
import Quant
import TestSupport
import Testing
import ZerothOrder

@Suite struct QZOTests {
    let texts = ["the cat sat on the mat and looked at the door", "a dog ran to the park in the morning",
                 "we walked past the river after lunch", "the house was quiet at night"]

    func setup(_ name: String, points: Int = 2, offsets: Bool = false) throws -> (LlamaModel, QuantScales, [Example]) {
        let model = try tinyModel(name)
        let qzo = try QuantScales(model: model, patterns: ["blk.*"], trainOffsets: offsets, microBatchTokens: 128,
                                  maxPoints: points, contextLength: 64)
        return (model, qzo, try examples(texts, model.tokenizer))
    }

    /// At r = 1 the unperturbed loss is the model's own loss: the overrides reproduce the file.
    @Test(arguments: ["tiny-q4_0", "tiny-q4_1"]) func unperturbedEqualsTheModel(_ name: String) throws {
        let (model, qzo, data) = try setup(name)
        let ours = try qzo.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0]
        let reference = try Evaluator(model: model, capacity: 128, contextLength: 64).evaluate(data)
        #expect(ours.tokens == reference.tokens)
        #expect(abs(ours.nll - reference.nll) < 1e-5, "\(ours.nll) vs \(reference.nll)")
    }

    /// Perturbing is evaluated block by block on scratch scales: θ and the file are untouched.
    @Test func perturbationLeavesParametersUntouched() throws {
        let (model, qzo, data) = try setup("tiny-q4_0", offsets: false)
        let before = qzo.groups.map { Array(UnsafeBufferPointer(start: $0.values, count: $0.count)) }
        let sums = try qzo.lossSums(at: [PerturbedPoint(seed: 1, sign: 1), PerturbedPoint(seed: 1, sign: -1)], epsilon: 0.05,
                                    shape: PerturbationShape(scales: qzo.groups.map { _ in nil }), examples: data)
        #expect(sums[0].nll != sums[1].nll)
        #expect(qzo.groups.map { Array(UnsafeBufferPointer(start: $0.values, count: $0.count)) } == before)
        #expect(model.scaleOverrides.isEmpty)
    }

    /// The sign of every scale is kept and its magnitude stays above the floor, whatever the update.
    @Test func constraintKeepsSignsAndAFloor() throws {
        let (model, qzo, _) = try setup("tiny-q4_0")
        for g in qzo.groups {
            for i in 0..<g.count { g.values[i] = i % 3 == 0 ? -0.7 : (i % 3 == 1 ? 0 : 1.3) }
        }
        let changed = qzo.constrain()
        #expect(changed > 0)
        for (i, t) in qzo.targets.enumerated() {
            var original = [Float](repeating: 0, count: t.blocks)
            readBlockScales(t.tensor.info.type, model.file.bytes(of: t.tensor.info).baseAddress!, blocks: t.blocks, d: &original)
            let tuned = qzo.tunedScales(i).d
            for b in 0..<t.blocks where original[b] != 0 {
                #expect(tuned[b].sign == original[b].sign, "\(t.tensor.name) block \(b)")
                #expect(abs(tuned[b]) >= qzo.minimumRatio * abs(original[b]) * 0.999)
            }
        }
        // Q4_0 scales of real weights carry both signs.
        let signs = qzo.targets.indices.flatMap { qzo.tunedScales($0).d }.map { $0 < 0 }
        #expect(signs.contains(true) && signs.contains(false))
    }

    /// QZO training lowers the training loss; clipping bounds every derivative.
    @Test func trainingLowersTheLossWithClipping() throws {
        let (_, qzo, data) = try setup("tiny-q4_1", offsets: true)
        var settings = TrainingSettings()
        settings.steps = 40
        settings.batchSize = 4
        settings.learningRate = 0.05
        settings.epsilon = 1e-2
        settings.clip = 2
        let trainer = try Trainer(objective: qzo, optimizer: ZOSGD(groupSizes: qzo.groups.map(\.count)), settings: settings, train: data)
        let before = try qzo.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0].nll
        var derivatives = [Float]()
        while !trainer.isFinished { derivatives += try trainer.runStep().derivatives }
        let after = try qzo.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0].nll
        #expect(after < before, "\(before) → \(after)")
        #expect(derivatives.allSatisfy { abs($0) <= 2 })
        #expect(derivatives.contains { abs($0) == 2 }, "some derivative should hit the clip at C = 2")
    }

    /// Export writes the tuned scales (half precision) into a model that evaluates as reported.
    @Test func exportedModelGivesTheRoundedNLL() throws {
        let (model, qzo, data) = try setup("tiny-q4_1", offsets: true)
        for g in qzo.groups { for i in 0..<g.count { g.values[i] = 1 + 0.01 * Float(i % 7) } }
        let identity = Adapter.identity(of: model)
        var adapter = Adapter(method: ["qzo"], baseName: identity.name, baseSHA256: identity.sha256)
        for (i, t) in qzo.targets.enumerated() {
            let tuned = qzo.tunedScales(i)
            adapter.scales[t.tensor.name] = tuned.d
            adapter.offsets[t.tensor.name] = tuned.m
        }
        let dir = makeTemporaryDirectory("export")
        try adapter.write(to: dir + "/a.gguf", dim: model.config.dim)
        let read = try Adapter.read(path: dir + "/a.gguf", for: model)
        #expect(read.scales == adapter.scales)
        try Export.write(model: model, adapter: read, to: dir + "/exported.gguf")
        let exported = try LlamaModel(path: dir + "/exported.gguf")
        let viaFile = try Evaluator(model: exported, capacity: 128, contextLength: 64).evaluate(data).nll
        let applied = try AppliedAdapter(Export.rounded(read, for: model), model: model)
        let viaAdapter = try Evaluator(model: model, capacity: 128, contextLength: 64).evaluate(data).nll
        _ = applied
        #expect(abs(viaFile - viaAdapter) < 1e-6, "\(viaFile) vs \(viaAdapter)")
        // Codes are untouched: only the scale bytes differ.
        let a = model.file, b = exported.file
        for t in a.tensors where t.type == .q4_1 {
            let x = a.bytes(of: t), y = b.bytes(named: t.name)!
            for block in stride(from: 0, to: x.count, by: 20) {
                #expect(Array(x[(block + 4)..<(block + 20)]) == Array(y[(block + 4)..<(block + 20)]))
            }
        }
        // An adapter for another model is refused.
        let other = try tinyModel("tiny-q4_0")
        #expect(throws: TrainingError.self) { try Adapter.read(path: dir + "/a.gguf", for: other) }
    }
}
