import Foundation
import Model
import Quant
import TestSupport
import Testing

/// The forward pass's paths agree with each other: one token at a time with the KV cache,
/// a prompt in chunks, and several sequences in one batch all give the logits of one
/// whole-sequence pass. Sequences are longer than attention's query block (64), so the
/// blocked causal attention, the few-query path and the cached path are all exercised;
/// tiny-gemma3's 8-token window and two rotary bases run through each of them too.
@Suite struct FastPathTests {
    static let model = try! LlamaModel(path: Repository.path("models/tiny-q4_1.gguf"))
    static let models = ["tiny-q4_1": model, "tiny-gemma3": try! LlamaModel(path: Repository.path("models/tiny-gemma3.gguf")),
                         "tiny-qwen2": try! LlamaModel(path: Repository.path("models/tiny-qwen2.gguf"))]

    static func tokens(_ count: Int, seed: Int, model: LlamaModel = model) -> [Int32] {
        (0..<count).map { Int32((seed + $0 * 7919) % model.config.vocabSize) }
    }

    /// Logits (vocab) of every position of `ids`, from one batched pass.
    static func batchedLogits(_ ids: [Int32], model: LlamaModel = model) -> [[Float]] {
        let state = RunState(config: model.config, capacity: ids.count, contextLength: ids.count)
        state.scratch.integerKernels = false
        model.forward(Batch(sequences: [ids]), state)
        return (0..<ids.count).map { t in
            var row = [Float](repeating: 0, count: model.config.vocabSize)
            row.withUnsafeMutableBufferPointer { model.logits(state, token: t, into: $0.baseAddress!) }
            return row
        }
    }

    static func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()!
    }

    @Test(arguments: ["tiny-q4_1", "tiny-gemma3", "tiny-qwen2"], [1, 37])
    func cachedChunksEqualOnePass(_ name: String, _ chunk: Int) throws {
        let m = Self.models[name]!
        let ids = Self.tokens(150, seed: 5, model: m)
        let reference = Self.batchedLogits(ids, model: m)
        let state = RunState(config: m.config, capacity: chunk, contextLength: ids.count, cacheSlots: 1)
        // Float x on the one-token path too: this compares the paths, not 8-bit rounding
        // (that is bounded in QuantTests' IntegerDotTests and checked against llama.cpp's
        // one-token pass in OneTokenGoldenTests).
        state.scratch.integerKernels = false
        var row = [Float](repeating: 0, count: m.config.vocabSize)
        var position = 0
        var worst: Float = 0
        while position < ids.count {
            let count = min(chunk, ids.count - position)
            let batch = Batch(tokens: Array(ids[position..<(position + count)]),
                              spans: [SequenceSpan(start: 0, count: count, position: position, cacheSlot: 0)])
            try m.validate(batch, state)
            m.forward(batch, state)
            for t in 0..<count {
                row.withUnsafeMutableBufferPointer { m.logits(state, token: t, into: $0.baseAddress!) }
                worst = max(worst, Self.maxDifference(row, reference[position + t]))
            }
            position += count
        }
        #expect(worst < 1e-3, "\(name), chunks of \(chunk): max |logit diff| \(worst)")
    }

    @Test(arguments: ["tiny-q4_1", "tiny-gemma3"])
    func batchOfSequencesEqualsSeparatePasses(_ name: String) throws {
        let m = Self.models[name]!
        let sequences = [Self.tokens(70, seed: 1, model: m), Self.tokens(5, seed: 2, model: m), Self.tokens(130, seed: 3, model: m)]
        let total = sequences.reduce(0) { $0 + $1.count }
        let state = RunState(config: m.config, capacity: total, contextLength: 130)
        state.scratch.integerKernels = false   // as batchedLogits
        let batch = Batch(sequences: sequences)
        try m.validate(batch, state)
        m.forward(batch, state)
        var row = [Float](repeating: 0, count: m.config.vocabSize)
        var worst: Float = 0
        for (s, span) in zip(sequences, batch.spans) {
            let reference = Self.batchedLogits(s, model: m)
            for t in 0..<span.count {
                row.withUnsafeMutableBufferPointer { m.logits(state, token: span.start + t, into: $0.baseAddress!) }
                worst = max(worst, Self.maxDifference(row, reference[t]))
            }
        }
        #expect(worst < 1e-3, "\(name): max |logit diff| \(worst)")
    }

    /// The tiled, threaded NLL head equals a log-softmax of the one-position logits.
    @Test func negativeLogLikelihoodsEqualLogSoftmax() throws {
        let m = Self.model
        let ids = Self.tokens(100, seed: 9)
        let state = RunState(config: m.config, capacity: ids.count, contextLength: ids.count)
        state.scratch.integerKernels = false   // the one-position logits on float x, as the NLL head's
        let batch = Batch(sequences: [ids])
        m.forward(batch, state)
        let targets = Array(ids.dropFirst()) + [-1]
        // A small tile and capacity: several tiles per thread, several chunks of rows.
        let nll = m.negativeLogLikelihoods(batch, state, targets: targets,
                                           scratch: OutputScratch(dim: m.config.dim, capacity: 33, tileRows: 50))
        var row = [Float](repeating: 0, count: m.config.vocabSize)
        for t in 0..<(ids.count - 1) {
            row.withUnsafeMutableBufferPointer { m.logits(state, token: t, into: $0.baseAddress!) }
            let top = Double(row.max()!)
            let logSum = top + log(row.reduce(0.0) { $0 + exp(Double($1) - top) })
            let expected = logSum - Double(row[Int(targets[t])])
            #expect(abs(Double(nll[t]) - expected) < 1e-4, "position \(t): \(nll[t]) vs \(expected)")
        }
        #expect(nll.last!.isNaN)
    }
}
