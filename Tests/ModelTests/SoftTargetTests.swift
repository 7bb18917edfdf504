import Foundation
import Model
import Quant
import TestSupport
import Testing

@Suite struct SoftTargetTests {
    /// Cross-entropy to a one-hot target is the NLL of that token; to the model's own top
    /// tokens it is the model's entropy over them (the KL divergence to itself is ~0).
    @Test(arguments: ["tiny-q4_0", "tiny-mixed"]) func crossEntropyAgreesWithNLL(_ name: String) throws {
        let model = try LlamaModel(path: Repository.path("models/\(name).gguf"))
        let ids = model.tokenizer.encode("the cat sat on the mat and looked at the door")
        let batch = Batch(sequences: [ids])
        let state = RunState(config: model.config, capacity: ids.count, contextLength: ids.count)
        model.forward(batch, state)
        let targets = Array(ids.dropFirst()) + [-1]
        let scratch = OutputScratch(dim: model.config.dim, capacity: 64)
        let nll = model.negativeLogLikelihoods(batch, state, targets: targets, scratch: scratch)
        let oneHot = targets.map { $0 >= 0 ? SoftTarget(ids: [$0], probabilities: [1]) : nil }
        let ce = model.crossEntropies(batch, state, soft: oneHot, scratch: scratch)
        for t in 0..<(ids.count - 1) { #expect(abs(nll[t] - ce[t]) < 1e-4, "position \(t): \(nll[t]) vs \(ce[t])") }

        let own = model.topTokens(batch, state, targets: targets, k: model.config.vocabSize, weights: nil)
        let selfCE = model.crossEntropies(batch, state, soft: own, scratch: scratch)
        for t in 0..<(ids.count - 1) {
            let entropy = own[t]!.entropy
            #expect(abs(Double(selfCE[t]) - entropy) < 1e-3, "position \(t): cross-entropy \(selfCE[t]), entropy \(entropy)")
        }
    }
}
