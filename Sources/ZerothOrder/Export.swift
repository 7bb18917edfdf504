// Export: a complete GGUF model with an adapter baked in, in the base model's own block
// formats, for llama.cpp or any GGUF runtime:
//   QZO scales replace each tuned block's d (and m), rounded to half precision; the
//     4-bit codes are copied unchanged;
//   new tokens join the vocabulary as user-defined tokens (llama.cpp matches those in any
//     text, before SentencePiece or BPE sees it, so each is one token in both) and their
//     learned rows are quantized into token_embd's format (Q8_0, Q5_0, Q4_K, ...) and
//     appended; on a model with its own output.weight the same rows (the new tokens'
//     output rows are tied to their input rows, see TextualInversion.swift) are appended
//     to it in its format.

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

        if extra > 0 && adapter.newTokenOutput != nil && model.outputIsTied {
            throw .adapter(path: path, message: "the adapter's new tokens keep the init token's output row, which a model with a tied output matrix cannot hold")
        }
        if extra > 0 {
            try addNewTokenEntries(adapter.newTokens, rows: model.config.vocabSize, to: &metadata, path: path)
        }
        metadata["edge_finetune.exported.method"] = .string(adapter.method.joined(separator: ","))
        metadata["edge_finetune.exported.base_sha256"] = .string(adapter.baseSHA256)
        writer.metadata = metadata

        for t in file.tensors {
            let source = file.bytes(of: t)
            if extra > 0 && t.name == "token_embd.weight" {
                try addTensorWithNewRows(t, source: source, rows: adapter.embeddings, count: extra, dim: dim, to: &writer, path: path)
            } else if extra > 0 && t.name == "output.weight" && !model.outputIsTied {
                if let o = adapter.newTokenOutput {
                    addTensorWithCopiedRows(t, source: source, row: Int(o.initToken), count: extra, to: &writer)
                } else {
                    try addTensorWithNewRows(t, source: source, rows: adapter.embeddings, count: extra, dim: dim, to: &writer, path: path)
                }
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
        if extra > 0 {
            changes.append("\(extra) new token(s) appended to the vocabulary and token_embd" + (model.outputIsTied ? "" : " and output.weight"))
        }
        if !adapter.scales.isEmpty { changes.append("block scales of \(adapter.scales.count) tensors replaced (half precision)") }
        return changes.joined(separator: "; ")
    }

    /// The adapter as the exported file will hold it: QZO scales rounded to half precision
    /// and new rows rounded through the embedding's block format, so evaluating it gives
    /// the exported model's numbers. (On a model with its own output.weight the file's
    /// output rows are rounded through that tensor's format instead, Q8_0 on Qwen2.5-0.5B,
    /// finer than token_embd's; evaluate the exported file itself for its exact numbers.)
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
                    bytes.withUnsafeMutableBytes { quantizeRowAnyFormat(type, e.baseAddress! + i * dim, count: dim, into: $0.baseAddress!) }
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

    // MARK: - New tokens (textual inversion)

    /// Appends `tokens` to the vocabulary of `metadata` as user-defined tokens (type 4, score
    /// 0) after `rows` entries: a vocabulary shorter than the embedding (rows without a
    /// token) is first padded with unused "[PADn]" entries, as the model's loader pads it,
    /// so that the new tokens' ids are their rows.
    static func addNewTokenEntries(_ tokens: [String], rows: Int, to metadata: inout GGUFMetadata,
                                   path: String) throws(TrainingError) {
        guard let existing = metadata.strings("tokenizer.ggml.tokens") else {
            throw .adapter(path: path, message: "the model has no tokenizer.ggml.tokens; new tokens cannot be added to its vocabulary")
        }
        guard existing.count <= rows else {
            throw .adapter(path: path, message: "the model's vocabulary has \(existing.count) tokens but token_embd has \(rows) rows")
        }
        let padding = (existing.count..<rows).map { "[PAD\($0)]" }
        let all = existing + padding + tokens
        metadata["tokenizer.ggml.tokens"] = .array(.string(all))
        if let types = metadata.ints("tokenizer.ggml.token_type") {
            metadata["tokenizer.ggml.token_type"] = .array(.int32(types.map { Int32($0) }
                + Array(repeating: TokenType.unused.rawValue, count: padding.count)
                + Array(repeating: TokenType.userDefined.rawValue, count: tokens.count)))
        }
        if let scores = metadata.floats("tokenizer.ggml.scores") {
            metadata["tokenizer.ggml.scores"] = .array(.float32(scores + Array(repeating: 0, count: padding.count + tokens.count)))
        }
        if let arch = metadata.string("general.architecture"), metadata.int("\(arch).vocab_size") != nil {
            metadata["\(arch).vocab_size"] = .uint32(UInt32(all.count))
        }
    }

    /// Adds tensor `t` (token_embd or output.weight, (dim, rows)) with `count` new rows
    /// quantized into its own block format and appended after the file's rows.
    static func addTensorWithNewRows(_ t: GGUFTensorInfo, source: UnsafeRawBufferPointer, rows: [Float], count: Int, dim: Int,
                                     to writer: inout GGUFWriter, path: String) throws(TrainingError) {
        let type = t.type
        guard t.shape.count == 2, t.shape[0] == dim, let rowBytes = type.rowBytes(dim), canQuantizeRow(type, count: dim) else {
            throw .adapter(path: path, message: "cannot append new token rows to \(t.name): its format \(type.name) (rows of \(t.shape.first ?? 0)) has no row quantizer here (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K, F16, BF16, F32 have)")
        }
        guard rows.count == count * dim, rows.allSatisfy(\.isFinite) else {
            throw .adapter(path: path, message: "the adapter's textual_inversion.embedding has \(rows.count) values, not \(count) finite rows of \(dim)")
        }
        writer.addTensor(name: t.name, type: type, shape: [dim, t.shape[1] + count], source: .generate { out in
            out.copyMemory(from: source)
            rows.withUnsafeBufferPointer { e in
                for i in 0..<count {
                    quantizeRowAnyFormat(type, e.baseAddress! + i * dim, count: dim, into: out.baseAddress! + source.count + i * rowBytes)
                }
            }
        })
    }

    /// Adds tensor `t` with `count` copies of its own row `row` appended, byte for byte (the
    /// init token's output row, for new tokens whose output rows are not trained).
    static func addTensorWithCopiedRows(_ t: GGUFTensorInfo, source: UnsafeRawBufferPointer, row: Int, count: Int,
                                        to writer: inout GGUFWriter) {
        let rowBytes = source.count / t.shape[1]
        writer.addTensor(name: t.name, type: t.type, shape: [t.shape[0], t.shape[1] + count], source: .generate { out in
            out.copyMemory(from: source)
            for i in 0..<count {
                (out.baseAddress! + source.count + i * rowBytes).copyMemory(from: source.baseAddress! + row * rowBytes, byteCount: rowBytes)
            }
        })
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
