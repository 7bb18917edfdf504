// `edge-finetune inspect`: what a GGUF file holds and what it takes to run.

import ArgumentParser
import Foundation
import GGUF
import Model
import Quant

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a GGUF model's architecture, tokenizer, tensors and the memory it needs.")

    @Argument(help: "Path of the GGUF file.")
    var path: String

    @Flag(name: .long, help: "Print one JSON object instead of text (a NaN or infinite number is null).")
    var json = false

    @Option(name: .long, help: "Context length for the memory estimate of generation.")
    var context = 2048

    func validate() throws {
        guard (1...(1 << 30)).contains(context) else { throw ValidationError("--context must be in 1...\(1 << 30) (got \(context))") }
    }

    func run() throws {
        let file = try GGUFFile(path: path)
        let m = file.metadata
        let arch = m.string("general.architecture") ?? "(none)"

        // Model-level view when the architecture is one we run.
        var config: LlamaConfig?
        var modelError: String?
        var tokenizerLine = "none"
        var tokenCount = 0
        var chat: String?
        do {
            let model = try LlamaModel(file: file)
            config = model.config
            tokenCount = model.tokenizer.count
            let v = model.tokenizer.vocabulary
            tokenizerLine = model.tokenizer.isSentencePiece
                ? "\(v.model) (SentencePiece), \(tokenCount) tokens"
                : "\(v.model) (BPE, pre-tokenizer \(v.pre ?? "default")), \(tokenCount) tokens, \(v.merges.count) merges"
            let tokenizer = model.tokenizer
            chat = (try? ChatTemplate(template: m.string("tokenizer.chat_template"), hasToken: { tokenizer.id(of: $0) != nil }))
                .map { $0.format.displayName }
        } catch {
            modelError = "\(error)"
        }

        let byType = file.bytesByType
        let weightBytes = file.tensors.reduce(0) { $0 + $1.byteCount }
        var generationBytes: Int?
        var evalBytes: Int?
        if let c = config {
            let ctx = min(context, c.contextLength)
            generationBytes = file.fileSize + RunState.estimatedBytes(config: c, capacity: 512, contextLength: ctx, cacheSlots: 1)
                + 4 * c.vocabSize
            evalBytes = file.fileSize + RunState.estimatedBytes(config: c, capacity: 512, contextLength: 512)
                + OutputScratch.estimatedBytes(dim: c.dim, capacity: 256)
        }

        if json {
            var object: [String: Any] = [
                "path": path, "file_bytes": file.fileSize, "gguf_version": Int(file.version),
                "architecture": arch, "name": m.string("general.name") ?? "",
                "tensor_count": file.tensors.count, "weight_bytes": weightBytes,
                "alignment": file.alignment, "data_offset": file.dataOffset,
                "metadata_keys": file.metadata.count,
                "bytes_by_type": Dictionary(uniqueKeysWithValues: byType.map { ($0.type.name, ["count": $0.count, "bytes": $0.bytes]) }),
                "bytes_per_weight": Dictionary(uniqueKeysWithValues: byType.map { ($0.type.name, bytesPerWeight($0.type)) }),
                "unsupported_types": byType.filter { !$0.type.isSupportedForCompute }.map(\.type.name),
                "tensors": file.tensors.map { ["name": $0.name, "type": $0.type.name, "shape": $0.shape, "bytes": $0.byteCount] },
            ]
            if let c = config {
                object["hyperparameters"] = [
                    "layers": c.layerCount, "dim": c.dim, "heads": c.headCount, "kv_heads": c.kvHeadCount,
                    "head_dim": c.headDim, "ffn_dim": c.ffnDim, "vocab": c.vocabSize, "context_length": c.contextLength,
                    "rope_base": Double(c.ropeBase), "rms_eps": Double(c.rmsEps),
                ]
                object["tokenizer"] = ["model": m.string("tokenizer.ggml.model") ?? "", "pre": m.string("tokenizer.ggml.pre") ?? "",
                                       "tokens": tokenCount, "chat_template": chat ?? NSNull()] as [String: Any]
                object["memory_estimate_bytes"] = ["generation": generationBytes!, "generation_context": min(context, c.contextLength),
                                                   "eval_512_tokens": evalBytes!]
            }
            if let modelError { object["unsupported"] = modelError }
            print(jsonText(object))
            return
        }

        print("\(path)  (\(megabytes(file.fileSize)), GGUF v\(file.version), \(file.metadata.count) metadata keys)")
        var summary: [[String]] = [["architecture", arch], ["name", m.string("general.name") ?? "(none)"]]
        if let c = config {
            summary.append(["hyperparameters", "\(c.layerCount) layers, width \(c.dim), \(c.headCount) heads (\(c.kvHeadCount) KV, \(c.headDim) wide), feed-forward \(c.ffnDim), vocabulary \(c.vocabSize), context \(c.contextLength), rope base \(c.ropeBase), rms eps \(c.rmsEps)"])
            summary.append(["tokenizer", tokenizerLine + (chat.map { ", chat template \($0)" } ?? "")])
        } else if let modelError {
            summary.append(["runnable", "no: \(modelError)"])
        }
        let typeText = byType.map {
            "\($0.count) \($0.type.name) (\(megabytes($0.bytes)), \(fixed(bytesPerWeight($0.type), 4)) bytes/weight\($0.type.isSupportedForCompute ? "" : ", not supported"))"
        }.joined(separator: ", ")
        summary.append(["tensors", "\(file.tensors.count): \(typeText)"])
        if let g = generationBytes, let e = evalBytes, let c = config {
            summary.append(["memory to run", "about \(megabytes(g)) to generate with a \(min(context, c.contextLength))-token context; \(megabytes(e)) to evaluate 512-token passes (weights mapped from the file: \(megabytes(file.fileSize)))"])
        }
        print(table(summary))
        print("")
        var rows = [["tensor", "type", "shape", "bytes"]]
        for t in file.tensors {
            rows.append([t.name, t.type.name, t.shape.map(String.init).joined(separator: " x "), String(t.byteCount)])
        }
        print(table(rows))
    }
}

/// Bytes per weight of a type: its block's bytes over its weights (Q4_K: 144 / 256 = 0.5625).
func bytesPerWeight(_ type: GGMLType) -> Double {
    type.blockSize > 0 ? Double(type.bytesPerBlock) / Double(type.blockSize) : 0
}
