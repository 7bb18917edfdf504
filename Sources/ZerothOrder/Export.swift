// Export: a complete GGUF model with an adapter baked in, in the base model's own block
// formats, for llama.cpp or any GGUF runtime:
//   QZO scales replace each tuned block's d (and m), rounded to half precision; the
//     4-bit codes are copied unchanged;
//   new tokens join the vocabulary as user-defined tokens (llama.cpp matches those in any
//     text) and their learned rows are quantized into token_embd's format and appended.

import GGUF
import Model
import Quant

public enum Export {
    /// Writes `model` with `adapter` applied to `path`. Returns what changed.
    @discardableResult
    public static func write(model: LlamaModel, adapter: Adapter, to path: String) throws(TrainingError) -> String {
        let file = model.file
        var metadata = file.metadata
        var writer = GGUFWriter()
        let extra = adapter.newTokens.count
        let dim = model.config.dim

        if extra > 0 {
            guard model.outputIsTied else {
                throw .adapter(path: path, message: "exporting new tokens needs a model with a tied output matrix")
            }
            guard let tokens = metadata.strings("tokenizer.ggml.tokens") else {
                throw .adapter(path: path, message: "the model has no tokenizer.ggml.tokens")
            }
            metadata["tokenizer.ggml.tokens"] = .array(.string(tokens + adapter.newTokens))
            if let types = metadata.ints("tokenizer.ggml.token_type") {
                metadata["tokenizer.ggml.token_type"] = .array(.int32(types.map { Int32($0) } + Array(repeating: 4, count: extra)))
            }
            if let scores = metadata.floats("tokenizer.ggml.scores") {
                metadata["tokenizer.ggml.scores"] = .array(.float32(scores + Array(repeating: 0, count: extra)))
            }
            if metadata.int("llama.vocab_size") != nil {
                metadata["llama.vocab_size"] = .uint32(UInt32(tokens.count + extra))
            }
        }
        metadata["edge_finetune.exported.method"] = .string(adapter.method.joined(separator: ","))
        metadata["edge_finetune.exported.base_sha256"] = .string(adapter.baseSHA256)
        writer.metadata = metadata

        for t in file.tensors {
            let source = file.bytes(of: t)
            if t.name == "token_embd.weight" && extra > 0 {
                // The base rows as they are, then the new rows quantized to the same type.
                let type = t.type
                let rowBytes = type.rowBytes(dim)!
                let embeddings = adapter.embeddings
                writer.addTensor(name: t.name, type: type, shape: [dim, t.shape[1] + extra], source: .generate { out in
                    out.copyMemory(from: source)
                    embeddings.withUnsafeBufferPointer { e in
                        for i in 0..<extra {
                            quantizeRow(type, e.baseAddress! + i * dim, count: dim, into: out.baseAddress! + source.count + i * rowBytes)
                        }
                    }
                })
            } else if let d = adapter.scales[t.name], adapter.subBlocks[t.name] != nil {
                writer.addTensor(name: t.name, type: t.type, shape: t.shape,
                                 source: subBlockScaledTensor(t.type, source, s: d, m: adapter.offsets[t.name]))
            } else if let d = adapter.scales[t.name] {
                let m = adapter.offsets[t.name]
                let type = t.type
                writer.addTensor(name: t.name, type: t.type, shape: t.shape, source: .generate { out in
                    out.copyMemory(from: source)
                    d.withUnsafeBufferPointer { dp in
                        if let m {
                            m.withUnsafeBufferPointer { mp in
                                writeBlockScales(type, out.baseAddress!, blocks: dp.count, d: dp.baseAddress!, m: mp.baseAddress!)
                            }
                        } else {
                            writeBlockScales(type, out.baseAddress!, blocks: dp.count, d: dp.baseAddress!)
                        }
                    }
                })
            } else {
                writer.addTensor(name: t.name, type: t.type, shape: t.shape, source: .view(source))
            }
        }
        do { try writer.write(to: path) } catch { throw .file(error) }
        var changes = [String]()
        if extra > 0 { changes.append("\(extra) new token(s) appended to the vocabulary and token_embd") }
        if !adapter.scales.isEmpty { changes.append("block scales of \(adapter.scales.count) tensors replaced (half precision)") }
        return changes.joined(separator: "; ")
    }

    /// The adapter as the exported file will hold it: QZO scales rounded to half precision
    /// and new rows rounded through the embedding's block format, so evaluating it gives
    /// the exported model's numbers.
    public static func rounded(_ adapter: Adapter, for model: LlamaModel) -> Adapter {
        var a = adapter
        for (name, d) in a.scales where a.subBlocks[name] == nil { a.scales[name] = d.map { Float(Float16($0)) } }
        for (name, m) in a.offsets where a.subBlocks[name] == nil { a.offsets[name] = m.map { Float(Float16($0)) } }
        for name in a.subBlocks.keys {
            guard let type = model.file.tensor(named: name)?.type, var s = a.scales[name] else { continue }
            (a.scales[name], a.offsets[name]) = roundedSubBlockScales(type, s: &s, m: a.offsets[name])
        }
        if !a.embeddings.isEmpty {
            let type = model.tokenEmbedding.info.type
            let dim = model.config.dim
            let rowBytes = type.rowBytes(dim)!
            var bytes = [UInt8](repeating: 0, count: rowBytes)
            var row = [Float](repeating: 0, count: dim)
            for i in 0..<a.newTokens.count {
                a.embeddings.withUnsafeBufferPointer { e in
                    bytes.withUnsafeMutableBytes { quantizeRow(type, e.baseAddress! + i * dim, count: dim, into: $0.baseAddress!) }
                }
                bytes.withUnsafeBytes { b in
                    row.withUnsafeMutableBufferPointer { r in
                        dequantizeRowGeneric(type, b.baseAddress!, count: dim, into: r.baseAddress!)
                    }
                }
                for j in 0..<dim { a.embeddings[i * dim + j] = row[j] }
            }
        }
        return a
    }

    // MARK: - K-quant sub-block scales

    /// A K-quant tensor's bytes with its sub-block scales `s` (and mins `m`) re-encoded into
    /// each super-block's d, dmin and integer scales (llama.cpp's encoding; lossy); the codes
    /// are copied unchanged.
    static func subBlockScaledTensor(_ type: GGMLType, _ source: UnsafeRawBufferPointer, s: [Float], m: [Float]?) -> GGUFWriter.Source {
        .generate { out in
            out.copyMemory(from: source)
            let blocks = source.count / type.bytesPerBlock
            s.withUnsafeBufferPointer { sp in
                if let m {
                    m.withUnsafeBufferPointer { mp in
                        writeSubBlockScales(type, out.baseAddress!, blocks: blocks, s: sp.baseAddress!, m: mp.baseAddress!)
                    }
                } else {
                    writeSubBlockScales(type, out.baseAddress!, blocks: blocks, s: sp.baseAddress!, m: nil)
                }
            }
        }
    }

    /// The sub-block scales and mins the exported file will hold for `s` and `m`.
    static func roundedSubBlockScales(_ type: GGMLType, s: inout [Float], m: [Float]?) -> ([Float], [Float]?) {
        let blocks = s.count / type.subBlocks!.count
        var mins = m ?? []
        s.withUnsafeMutableBufferPointer { sp in
            mins.withUnsafeMutableBufferPointer { mp in
                roundSubBlockScales(type, blocks: blocks, s: sp.baseAddress!, m: m == nil ? nil : mp.baseAddress!)
            }
        }
        return (s, m == nil ? nil : mins)
    }
}
