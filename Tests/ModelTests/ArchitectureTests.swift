import Foundation
import GGUF
import Model
import Quant
import TestSupport
import Testing

/// A copy of a tiny model with its metadata edited and some tensors replaced, written to a
/// temporary file: the crafted bad inputs of the load-time checks.
func craftedModel(from name: String, _ tag: String, metadata edit: (inout GGUFMetadata) -> Void = { _ in },
                  tensors replace: [String: (GGUFTensorInfo, [UInt8]) -> (shape: [Int], bytes: [UInt8])] = [:]) throws -> String {
    let source = try GGUFFile(path: Repository.path("models/\(name).gguf"))
    var metadata = source.metadata
    edit(&metadata)
    var writer = GGUFWriter(metadata: metadata)
    for t in source.tensors {
        let bytes = [UInt8](source.bytes(of: t))
        if let f = replace[t.name] {
            let (shape, new) = f(t, bytes)
            writer.addTensor(name: t.name, type: t.type, shape: shape, source: .bytes(new))
        } else {
            writer.addTensor(name: t.name, type: t.type, shape: t.shape, source: .bytes(bytes))
        }
    }
    let path = makeTemporaryDirectory("crafted") + "/\(tag).gguf"
    try writer.write(to: path)
    return path
}

/// The message of the error loading `path` throws (nil when it loads).
func loadError(_ path: String) -> String? {
    do {
        _ = try LlamaModel(path: path)
        return nil
    } catch {
        return error.description
    }
}

/// Float32 bytes of `values`.
func floatBytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

@Suite struct ArchitectureTests {
    /// Each bad hyperparameter is refused at load with its key and value named.
    @Test(arguments: [
        ("tiny-qwen2", "qwen2.rope.freq_base", GGUFValue.float32(0), "'qwen2.rope.freq_base' = 0.0"),
        ("tiny-qwen2", "qwen2.rope.freq_base", GGUFValue.float32(-10000), "'qwen2.rope.freq_base' = -10000.0"),
        ("tiny-qwen2", "qwen2.rope.freq_base", GGUFValue.float32(.nan), "'qwen2.rope.freq_base' = nan"),
        ("tiny-gemma3", "gemma3.attention.layer_norm_rms_epsilon", GGUFValue.float32(.nan), "'gemma3.attention.layer_norm_rms_epsilon' = nan"),
        ("tiny-qwen2", "qwen2.attention.layer_norm_rms_epsilon", GGUFValue.float32(-1e-6), "'qwen2.attention.layer_norm_rms_epsilon' = -1e-06"),
        ("tiny-qwen2", "qwen2.attention.head_count", GGUFValue.uint32(6), "'qwen2.attention.head_count' = 6 is invalid: must divide qwen2.embedding_length = 64"),
        ("tiny-qwen2", "qwen2.attention.head_count_kv", GGUFValue.uint32(3), "'qwen2.attention.head_count_kv' = 3 is invalid: must divide qwen2.attention.head_count = 4"),
        ("tiny-gemma3", "gemma3.attention.sliding_window", GGUFValue.uint32(0), "'gemma3.attention.sliding_window' = 0 is invalid"),
        ("tiny-qwen2", "qwen2.vocab_size", GGUFValue.uint32(1000), "'qwen2.vocab_size' = 1000 is invalid: token_embd.weight has"),
        ("tiny-qwen2", "qwen2.block_count", GGUFValue.string("2"), "'qwen2.block_count' has a value of type string, expected an integer"),
        ("tiny-gemma3", "gemma3.rope.freq_base", GGUFValue.string("1e6"), "'gemma3.rope.freq_base' has a value of type string, expected a number"),
        ("tiny-qwen2", "general.architecture", GGUFValue.string("phi3"), "architecture 'phi3' is not supported (supported: llama, qwen2, gemma3)"),
    ])
    func badHyperparameterIsRefused(_ model: String, _ key: String, _ value: GGUFValue, _ message: String) throws {
        let path = try craftedModel(from: model, "bad") { $0[key] = value }
        let error = loadError(path)
        #expect(error?.contains(message) == true, "\(key) = \(value): \(error ?? "loaded")")
    }

    @Test func missingKeyIsNamed() throws {
        let path = try craftedModel(from: "tiny-gemma3", "missing") { $0["gemma3.attention.sliding_window"] = nil }
        #expect(loadError(path)?.contains("has no 'gemma3.attention.sliding_window'") == true)
    }

    /// A tokenizer with more tokens than the embedding has rows is refused, naming both.
    @Test func vocabularyLargerThanEmbeddingIsRefused() throws {
        let source = try LlamaModel(path: Repository.path("models/tiny-qwen2.gguf"))
        let rows = source.config.vocabSize - 10
        func truncate(_ t: GGUFTensorInfo, _ bytes: [UInt8]) -> (shape: [Int], bytes: [UInt8]) {
            ([t.shape[0], rows], Array(bytes.prefix(rows * t.type.rowBytes(t.shape[0])!)))
        }
        let path = try craftedModel(from: "tiny-qwen2", "short", tensors: ["token_embd.weight": truncate, "output.weight": truncate])
        let error = loadError(path)
        #expect(error?.contains("'tokenizer.ggml.tokens' = \(rows + 10) tokens is invalid: more than the \(rows) rows") == true,
                "\(error ?? "loaded")")
    }

    /// NaN or infinite norms, biases and block scales are found at load. `scaleByte`: where
    /// the block's Float16 d sits (ggml-common.h's block_q* layouts).
    @Test(arguments: [
        ("tiny-gemma3", "blk.3.post_ffw_norm.weight", "element 5", 0),
        ("tiny-qwen2", "blk.1.attn_k.bias", "element 5", 0),
        ("tiny-qwen2", "blk.0.attn_v.weight", "element 5", 0),                 // an F32 matrix
        ("tiny-qwen2", "token_embd.weight", "the scale of block 5", 0),        // Q8_0
        ("tiny-gemma3", "blk.1.ffn_gate.weight", "the scale of block 5", 0),   // Q4_0
        ("tiny-q4_k_m", "blk.0.attn_q.weight", "the scale of block 5", 0),     // Q4_K: d, dmin, scales, qs
        ("tiny-q4_k_m", "token_embd.weight", "the scale of block 5", 208),     // Q6_K: ql, qh, scales, d
        ("tiny-q2_k", "blk.0.attn_k.weight", "the scale of block 5", 82),      // Q2_K: scales, qs, d, dmin
        ("tiny-q3_k_m", "blk.0.attn_k.weight", "the scale of block 5", 108),   // Q3_K: hmask, qs, scales, d
        ("tiny-q5_0", "blk.0.attn_q.weight", "the scale of block 5", 0),       // Q5_0: d, qh, qs
    ])
    func nonFiniteWeightIsRefused(_ model: String, _ tensor: String, _ position: String, _ scaleByte: Int) throws {
        let path = try craftedModel(from: model, "nan", tensors: [tensor: { t, bytes in
            var b = bytes
            if t.type == .f32 {
                b.replaceSubrange(20..<24, with: floatBytes([.nan]))
            } else {
                let o = 5 * t.type.bytesPerBlock + scaleByte          // the block's Float16 d (or dmin): +infinity
                b[o] = 0x00
                b[o + 1] = 0x7C
            }
            return (t.shape, b)
        }])
        let error = loadError(path)
        #expect(error?.contains("tensor '\(tensor)' holds") == true && error?.contains(position) == true, "\(error ?? "loaded")")
    }

    /// An embedding padded beyond the vocabulary: the padding rows are never sampled, and
    /// added tokens are numbered after the last row.
    @Test func paddedVocabularyRowsAreNeverSampled() throws {
        let source = try LlamaModel(path: Repository.path("models/tiny-qwen2.gguf"))
        let tokens = source.config.vocabSize
        let pad = 24
        // Padding rows copy rows 0..<24 with their scales times ±50: some of them get the largest logits.
        func padded(_ t: GGUFTensorInfo, _ bytes: [UInt8]) -> (shape: [Int], bytes: [UInt8]) {
            let rowBytes = t.type.rowBytes(t.shape[0])!
            var extra = Array(bytes.prefix(pad * rowBytes))
            for block in 0..<(extra.count / t.type.bytesPerBlock) {
                let o = block * t.type.bytesPerBlock
                let d = Float(Float16(bitPattern: UInt16(extra[o]) | UInt16(extra[o + 1]) << 8)) * (block % 2 == 0 ? 50 : -50)
                let bits = Float16(d).bitPattern
                extra[o] = UInt8(bits & 0xFF)
                extra[o + 1] = UInt8(bits >> 8)
            }
            return ([t.shape[0], tokens + pad], bytes + extra)
        }
        let path = try craftedModel(from: "tiny-qwen2", "padded", tensors: ["token_embd.weight": padded, "output.weight": padded])
        let m = try LlamaModel(path: path)
        #expect(m.config.vocabSize == tokens + pad)
        #expect(m.paddingRows == tokens..<(tokens + pad))

        // The padding rows would win without the mask.
        let prompt = m.tokenizer.encode("The morning was cold", addSpecial: false, parseSpecial: false)
        let state = RunState(config: m.config, capacity: prompt.count, contextLength: prompt.count)
        m.forward(Batch(sequences: [prompt]), state)
        var row = [Float](repeating: 0, count: m.config.vocabSize)
        row.withUnsafeMutableBufferPointer { m.logits(state, token: prompt.count - 1, into: $0.baseAddress!) }
        let best = row.indices.max { row[$0] < row[$1] }!
        #expect(m.paddingRows.contains(best), "a padding row should have the largest logit for this test to mean something")

        for sampling in [SamplingOptions(temperature: 0), SamplingOptions(temperature: 1, topK: 0, topP: 1, seed: 3)] {
            let generator = Generator(model: m, contextLength: prompt.count + 32, promptCapacity: prompt.count)
            let out = try generator.generate(prompt: prompt, maxTokens: 32, sampling: sampling) { _ in true }
            #expect(!out.isEmpty && out.allSatisfy { !m.paddingRows.contains(Int($0)) }, "\(out)")
        }

        // New tokens come after the embedding's rows, not after the file's tokens.
        let withNew = try LlamaModel(path: path, addedTokens: ["<concept>"])
        #expect(withNew.tokenizer.id(of: "<concept>") == Int32(tokens + pad))
        #expect(withNew.tokenizer.encode("a <concept>", addSpecial: false, parseSpecial: true).last == Int32(tokens + pad))
    }

    /// The tanh-GELU gate against its scalar twin (the definition with tanh, in double) on
    /// awkward sizes and over the range where GELU bends and where it saturates.
    @Test(arguments: [1, 15, 16, 17, 100, 1029])
    func geluTanhMatchesGeneric(_ count: Int) {
        var rng = SplitMix64(state: UInt64(count))
        let gate = (0..<count).map { _ in Float.random(in: -12...12, using: &rng) }
        let up = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
        var fast = gate, slow = gate
        fast.withUnsafeMutableBufferPointer { geluTanhMultiply($0.baseAddress!, up, count: count) }
        slow.withUnsafeMutableBufferPointer { geluTanhMultiplyGeneric($0.baseAddress!, up, count: count) }
        for i in 0..<count {
            #expect(abs(fast[i] - slow[i]) <= 2e-6 * max(1, abs(slow[i])), "gelu(\(gate[i])) · \(up[i]): \(fast[i]) vs \(slow[i])")
        }
    }
}
