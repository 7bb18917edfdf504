import Foundation
import Model
import PluginHost
import Testing
import TestSupport
import ZerothOrder

/// The embedding subspace with an optimizer plugin: the engine hands the plugin its dense
/// estimate (in span(B)), so the shipped zo-sgd plugin takes the built-in ZO-SGD's steps,
/// inside the subspace.
@Suite struct EmbeddingSubspacePluginTests {
    func run(_ optimizer: Optimizer, _ model: LlamaModel, rank: Int) throws -> (start: [Float], end: [Float], basis: [Float]) {
        let ti = try TextualInversion(model: model, newTokens: ["<x>"], initToken: " the", microBatchTokens: 128,
                                      maxPoints: 2, contextLength: 64)
        let texts = ["the cat sat on the <x> and looked at the door", "a dog ran to the <x> in the morning",
                     "the <x> was quiet at night", "they found the <x> under the old tree"]
        let data = try texts.enumerated().map { i, t in
            try Dataset.example(["text": t], path: "memory", line: i + 1, tokenizer: ti.tokenizer, maxLength: 64)
        }
        var settings = TrainingSettings()
        settings.steps = 5
        settings.batchSize = 2
        settings.microBatchSize = 2
        settings.learningRate = 0.5
        settings.epsilon = 1e-2
        settings.seed = 5
        let b = try EmbeddingBasis.principalDirections(of: model, rank: rank)
        let start = ti.values.array
        let t = try Trainer(objective: ti, optimizer: optimizer, settings: settings, train: data,
                            subspace: SubspaceGradient(groups: 1, fixedBasis: b.basis, rank: rank, dim: ti.dim))
        while !t.isFinished { try t.runStep() }
        return (start, ti.values.array, b.basis)
    }

    @Test func zoSGDPluginStepsInsideTheSubspaceAsTheBuiltInDoes() throws {
        let model = try LlamaModel(path: Repository.path("models/tiny-q4_1.gguf"))
        let dim = model.config.dim, rank = 8
        let plugin = try PluginHost.loadOptimizer(TestPlugins.shipped("zo-sgd"), options: ["momentum=0.9"], groups: [(name: "<x>", count: dim)])
        let viaPlugin = try run(plugin, model, rank: rank)
        let builtIn = try run(ZOSGD(groupSizes: [dim], momentum: 0.9), model, rank: rank)
        let moved = zip(viaPlugin.end, viaPlugin.start).map { Double($0 - $1) }
        let norm = moved.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(norm > 0)
        for i in 0..<dim { #expect(abs(viaPlugin.end[i] - builtIn.end[i]) <= 1e-5 * max(1, abs(builtIn.end[i])), "index \(i)") }
        // In span(B): what is left after projecting on B's rows.
        var outside = moved
        for r in 0..<rank {
            let c = (0..<dim).reduce(0.0) { $0 + Double(viaPlugin.basis[r * dim + $1]) * moved[$1] }
            for i in 0..<dim { outside[i] -= c * Double(viaPlugin.basis[r * dim + i]) }
        }
        #expect(outside.reduce(0) { $0 + $1 * $1 }.squareRoot() < 1e-4 * norm)
    }
}
