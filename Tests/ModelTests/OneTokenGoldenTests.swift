import Foundation
import GGUF
import Model
import Quant
import TestSupport
import Testing

/// Generation's path (one token per pass with the KV cache, the integer kernels on x rounded
/// to 8 bits where a format has them) against llama.cpp's one-token pass on the same file
/// (`nll_one_token` of the goldens, n_batch = n_ubatch = 1), and against float64.
///
/// Bounds, per text, on the mean NLL, shaped as ForwardGoldenTests' for the batched path:
/// within 0.06 nats of llama.cpp's one-token pass, or within llama.cpp's one-token distance
/// from float64 plus 0.005 where that is larger; and no further from float64 than llama.cpp's
/// one-token pass is plus 0.01, or 0.02 (four times the float path's bound): 8-bit
/// activations move the NLL of these models by up to a few hundredths of a nat, llama.cpp's
/// as much as ours (tiny-q5_0: 0.02–0.034).
@Suite struct OneTokenGoldenTests {
    /// Per-position NLL of `ids` decoded one token at a time, and the llama.cpp reference.
    static func oneTokenNLL(_ model: LlamaModel, _ ids: [Int32]) throws -> [Double] {
        let state = RunState(config: model.config, capacity: 1, contextLength: ids.count, cacheSlots: 1)
        #expect(state.scratch.integerKernels)
        var row = [Float](repeating: 0, count: model.config.vocabSize)
        var nll = [Double]()
        for p in 0..<(ids.count - 1) {
            let batch = Batch(tokens: [ids[p]], spans: [SequenceSpan(start: 0, count: 1, position: p, cacheSlot: 0)])
            try model.validate(batch, state)
            model.forward(batch, state)
            row.withUnsafeMutableBufferPointer { model.logits(state, token: 0, into: $0.baseAddress!) }
            let top = Double(row.max()!)
            let logSum = top + log(row.reduce(0.0) { $0 + exp(Double($1) - top) })
            nll.append(logSum - Double(row[Int(ids[p + 1])]))
        }
        return nll
    }

    static func check(modelPath: String, goldenName: String) throws {
        let model = try LlamaModel(path: modelPath)
        let url = URL(fileURLWithPath: Repository.golden("llamacpp-\(goldenName).json"))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let golden = try LogitsGolden(model: goldenName)
        let texts = json["logits"] as! [[String: Any]]
        for (t, f64) in zip(texts, golden.float64) {
            guard let one = (t["nll_one_token"] as? [NSNumber])?.map(\.doubleValue) else { continue }
            let batched = (t["nll_batched"] as! [NSNumber]).map(\.doubleValue)
            let ids = f64.ids
            let ours = try oneTokenNLL(model, ids)
            let n = Double(ours.count)
            func mean(_ v: [Double]) -> Double { v.prefix(ours.count).reduce(0, +) / n }
            let vsCpp = abs(mean(ours) - mean(one))
            let cppPaths = abs(mean(batched) - mean(one))
            let vs64 = abs(mean(ours) - mean(f64.nll))
            let cppVs64 = abs(mean(one) - mean(f64.nll))
            print("[\(goldenName)] \(f64.name) one token at a time: |mean NLL diff| vs llama.cpp one-token \(String(format: "%.5f", vsCpp)), vs float64 \(String(format: "%.5f", vs64)); llama.cpp one-token vs float64 \(String(format: "%.5f", cppVs64)), vs its batched \(String(format: "%.5f", cppPaths))")
            #expect(vsCpp <= max(Tolerance.meanNLLVsLlamaCpp, cppVs64 + 0.005), "\(goldenName) \(f64.name)")
            #expect(vs64 <= max(4 * Tolerance.meanNLLVsFloat64, cppVs64 + 0.01), "\(goldenName) \(f64.name)")
        }
    }

    @Test(arguments: ["tiny-q4_0", "tiny-q4_1", "tiny-mixed", "tiny-qwen2", "tiny-gemma3",
                      "tiny-q4_k_m", "tiny-q5_k_m", "tiny-q3_k_m", "tiny-q2_k", "tiny-q5_0"])
    func tinyModelOneTokenAgreesWithLlamaCpp(_ name: String) throws {
        try Self.check(modelPath: Repository.path("models/\(name).gguf"), goldenName: name)
    }

    @Test(.enabled(if: ReferenceModel.enabled, "reference model not fetched; run scripts/setup"))
    func referenceModelOneTokenAgreesWithLlamaCpp() throws {
        try Self.check(modelPath: ReferenceModel.path, goldenName: "SmolLM2-135M-Instruct.Q4_1")
    }
}
