// Adapters: what a training run learned, as a small GGUF file that names the base model
// it belongs to (its name and the SHA-256 of its tensor data) and is refused by any other.
//
// Keys (besides general.*):
//   edge_finetune.adapter.method           "textual-inversion", "qzo", or both joined by ","
//   edge_finetune.base_model.name          general.name of the base model
//   edge_finetune.base_model.sha256        SHA-256 of the base model's tensor data
//   edge_finetune.textual_inversion.tokens the new tokens' texts, in id order
//   edge_finetune.textual_inversion.output "init" when the new tokens' output rows are the
//                                          init token's (id in ...output_init_token); absent: tied
//   edge_finetune.training                 the run's settings, as JSON text, with "step" (the
//                                          step the adapter was taken at) and "held_out_nll"
// Tensors:
//   textual_inversion.embedding            F32 (dim, tokens): one row per new token
//   <tensor>.qzo_d / <tensor>.qzo_m        F32 (blocks): tuned block scales of <tensor> (for a
//                                          K-quant: its super-blocks' d / dmin)
//   <tensor>.qzo_sub_d / <tensor>.qzo_sub_m F32 (sub-blocks, blocks): a K-quant's tuned effective
//                                          sub-block scales d·sc_k / mins dmin·mn_k

import Foundation
import GGUF
import Model
import Quant

public struct Adapter {
    public var method: [String]
    public var baseName: String
    public var baseSHA256: String
    /// Textual inversion: the new tokens and their rows ((count, dim) row-major).
    public var newTokens: [String] = []
    public var embeddings: [Float] = []
    /// The new tokens' output rows when not tied to `embeddings`: the mode ("init") and the
    /// init token's id.
    public var newTokenOutput: (mode: String, initToken: Int32)?
    /// QZO: tuned block scales by tensor name.
    public var scales: [String: [Float]] = [:]
    public var offsets: [String: [Float]] = [:]
    /// K-quant tensors whose `scales` and `offsets` are per sub-block (block by block), and
    /// their sub-blocks per block.
    public var subBlocks: [String: Int] = [:]
    /// QZO scales computed tensor by tensor as the file is written, so that writing does not
    /// hold a copy of every tuned scale: name, block count, and the tuned (d, m) of the tensor.
    public var scaleProducers: [(name: String, blocks: Int, perBlock: Int, hasOffsets: Bool, tuned: () -> (d: [Float], m: [Float]?))] = []
    public var training: String = ""

    public init(method: [String], baseName: String, baseSHA256: String) {
        self.method = method
        self.baseName = baseName
        self.baseSHA256 = baseSHA256
    }

    /// The identity of a base model: its name and the digest of its tensor data.
    public static func identity(of model: LlamaModel) -> (name: String, sha256: String) {
        (model.file.metadata.string("general.name") ?? "", model.file.tensorDataSHA256())
    }

    public func write(to path: String, dim: Int) throws(TrainingError) {
        var w = GGUFWriter()
        w.metadata["general.architecture"] = .string("llama")
        w.metadata["general.type"] = .string("adapter")
        w.metadata["general.name"] = .string("\(baseName) adapter")
        w.metadata["edge_finetune.adapter.method"] = .string(method.joined(separator: ","))
        w.metadata["edge_finetune.base_model.name"] = .string(baseName)
        w.metadata["edge_finetune.base_model.sha256"] = .string(baseSHA256)
        if !newTokens.isEmpty {
            w.metadata["edge_finetune.textual_inversion.tokens"] = .array(.string(newTokens))
            w.addTensor(name: "textual_inversion.embedding", shape: [dim, newTokens.count], floats: embeddings)
            if let o = newTokenOutput {
                w.metadata["edge_finetune.textual_inversion.output"] = .string(o.mode)
                w.metadata["edge_finetune.textual_inversion.output_init_token"] = .int32(o.initToken)
            }
        }
        var entries = scales.keys.map { name in (name: name, write: { (w: inout GGUFWriter) in
            let sub = subBlocks[name] != nil
            let d = scales[name]!, shape = subBlocks[name].map { [$0, d.count / $0] } ?? [d.count]
            w.addTensor(name: name + (sub ? ".qzo_sub_d" : ".qzo_d"), shape: shape, floats: d)
            if let m = offsets[name] { w.addTensor(name: name + (sub ? ".qzo_sub_m" : ".qzo_m"), shape: shape, floats: m) }
        }) }
        for p in scaleProducers {
            let sub = p.perBlock > 1
            let shape = sub ? [p.perBlock, p.blocks] : [p.blocks]
            entries.append((name: p.name, write: { (w: inout GGUFWriter) in
                w.addTensor(name: p.name + (sub ? ".qzo_sub_d" : ".qzo_d"), type: .f32, shape: shape, source: .generate { out in
                    p.tuned().d.withUnsafeBytes { out.copyMemory(from: $0) }
                })
                if p.hasOffsets {
                    w.addTensor(name: p.name + (sub ? ".qzo_sub_m" : ".qzo_m"), type: .f32, shape: shape, source: .generate { out in
                        p.tuned().m!.withUnsafeBytes { out.copyMemory(from: $0) }
                    })
                }
            }))
        }
        for e in entries.sorted(by: { $0.name < $1.name }) { e.write(&w) }
        if !training.isEmpty { w.metadata["edge_finetune.training"] = .string(training) }
        do { try w.write(to: path) } catch { throw .file(error) }
    }

    /// The new tokens an adapter file adds, read before the model is loaded (so the model
    /// can be loaded with them: one tokenizer in memory).
    public static func newTokens(atPath path: String) throws(TrainingError) -> [String] {
        let tokens: [String]
        do { tokens = try GGUFFile(path: path).metadata.strings("edge_finetune.textual_inversion.tokens") ?? [] } catch {
            throw .file(error)
        }
        try checkTokens(tokens, path: path)
        return tokens
    }

    /// The methods an adapter may name.
    public static let methods: Set<String> = ["textual-inversion", "qzo"]

    /// New tokens must be non-empty and distinct.
    static func checkTokens(_ tokens: [String], path: String) throws(TrainingError) {
        var seen = Set<String>()
        for (i, t) in tokens.enumerated() {
            guard !t.isEmpty else { throw .adapter(path: path, message: "new token \(i + 1) of \(tokens.count) is empty") }
            guard seen.insert(t).inserted else { throw .adapter(path: path, message: "the new token \"\(t)\" appears twice") }
        }
    }

    /// The step and held-out NLL an adapter file records (see `edge_finetune.training`), if
    /// the file exists and records both.
    public static func recordedEvaluation(atPath path: String) -> (step: Int, heldOutNLL: Double)? {
        guard FileManager.default.fileExists(atPath: path),
              let text = try? GGUFFile(path: path).metadata.string("edge_finetune.training"),
              let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let step = json["step"] as? Int, let nll = json["held_out_nll"] as? Double else { return nil }
        return (step, nll)
    }

    /// Reads an adapter and checks it belongs to `model`.
    public static func read(path: String, for model: LlamaModel) throws(TrainingError) -> Adapter {
        let file: GGUFFile
        do { file = try GGUFFile(path: path) } catch { throw .file(error) }
        let m = file.metadata
        guard let method = m.string("edge_finetune.adapter.method"), let sha = m.string("edge_finetune.base_model.sha256") else {
            throw .adapter(path: path, message: "not an EdgeFinetune adapter (no edge_finetune.adapter.method / base_model.sha256 keys)")
        }
        let baseName = m.string("edge_finetune.base_model.name") ?? ""
        let mine = identity(of: model)
        guard sha == mine.sha256 else {
            throw .adapter(path: path, message: "this adapter was trained on the model '\(baseName)' (tensor SHA-256 \(sha.prefix(16))…), not on '\(mine.name)' (\(mine.sha256.prefix(16))…); use it with the model it was trained on")
        }
        // One validation for every command that reads an adapter (eval, generate, export):
        // known methods, each with the tensors it needs, distinct non-empty tokens, finite values.
        let methods = method.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !methods.isEmpty, methods.allSatisfy(Self.methods.contains), Set(methods).count == methods.count else {
            throw .adapter(path: path, message: "unknown method '\(method)' (edge_finetune.adapter.method must be textual-inversion, qzo, or both joined by ',')")
        }
        let tokenList = m.strings("edge_finetune.textual_inversion.tokens")
        guard methods.contains("textual-inversion") == (tokenList != nil) else {
            throw .adapter(path: path, message: methods.contains("textual-inversion")
                ? "the method is textual inversion but there is no edge_finetune.textual_inversion.tokens"
                : "the adapter has new tokens but its method '\(method)' is not textual inversion")
        }
        if let tokenList {
            guard !tokenList.isEmpty else { throw .adapter(path: path, message: "edge_finetune.textual_inversion.tokens is empty") }
            try checkTokens(tokenList, path: path)
            for t in tokenList {
                if let id = model.tokenizer.id(of: t), Int(id) < model.config.vocabSize {
                    throw .adapter(path: path, message: "the new token \"\(t)\" is already in the base model's vocabulary (id \(id))")
                }
            }
        }
        let hasScales = file.tensors.contains { Self.scaleSuffix(of: $0.name) != nil }
        guard methods.contains("qzo") == hasScales else {
            throw .adapter(path: path, message: methods.contains("qzo")
                ? "the method is qzo but the adapter has no <tensor>.qzo_d scales"
                : "the adapter has tuned scales but its method '\(method)' is not qzo")
        }
        var adapter = Adapter(method: methods, baseName: baseName, baseSHA256: sha)
        adapter.training = m.string("edge_finetune.training") ?? ""
        let dim = model.config.dim
        func floats(_ t: GGUFTensorInfo) throws(TrainingError) -> [Float] {
            guard t.type == .f32 else { throw .adapter(path: path, message: "tensor '\(t.name)' must be F32, it is \(t.type)") }
            let bytes = file.bytes(of: t)
            let values = (0..<t.elementCount).map { bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
            if let i = values.firstIndex(where: { !$0.isFinite }) {
                throw .adapter(path: path, message: "tensor '\(t.name)' holds \(values[i]) at index \(i); every value must be finite")
            }
            return values
        }
        if let tokens = m.strings("edge_finetune.textual_inversion.tokens") {
            guard let t = file.tensor(named: "textual_inversion.embedding"), t.shape == [dim, tokens.count] else {
                throw .adapter(path: path, message: "textual_inversion.embedding is missing or not of shape [\(dim), \(tokens.count)]")
            }
            adapter.newTokens = tokens
            adapter.embeddings = try floats(t)
            if let mode = m.string("edge_finetune.textual_inversion.output") {
                guard mode == NewTokenOutputRow.initToken.rawValue, let id = m.int("edge_finetune.textual_inversion.output_init_token"),
                      id >= 0, id < model.config.vocabSize else {
                    throw .adapter(path: path, message: "edge_finetune.textual_inversion.output is '\(mode)' with output_init_token \(m.int("edge_finetune.textual_inversion.output_init_token").map(String.init) ?? "missing"); expected 'init' and a token id below \(model.config.vocabSize)")
                }
                adapter.newTokenOutput = (mode, Int32(id))
            }
        }
        var seen = [String: Bool]()
        for t in file.tensors {
            guard let (suffix, sub) = Self.scaleSuffix(of: t.name) else { continue }
            let base = String(t.name.dropLast(suffix.count))
            guard let target = model.file.tensor(named: base), QuantScales.trains(target.type), !sub || target.type.subBlocks != nil else {
                throw .adapter(path: path, message: "tensor '\(t.name)' names '\(base)', which the model has not as a \(sub ? "K-quant (Q2_K…Q6_K)" : "block-format (Q4_0…Q8_0, Q2_K…Q6_K)") tensor")
            }
            let blocks = target.elementCount / target.type.blockSize
            let perBlock = sub ? target.type.subBlocks!.count : 1
            let values = try floats(t)
            guard values.count == blocks * perBlock else {
                throw .adapter(path: path, message: "tensor '\(t.name)' has \(values.count) scales; '\(base)' has \(blocks * perBlock) \(sub ? "sub-blocks" : "blocks")")
            }
            if seen.updateValue(sub, forKey: base).map({ $0 != sub }) == true {
                throw .adapter(path: path, message: "tensor '\(base)' has both super-block (.qzo_d/.qzo_m) and sub-block (.qzo_sub_d/.qzo_sub_m) scales; keep one kind")
            }
            if sub {
                adapter.subBlocks[base] = perBlock
                if suffix == ".qzo_sub_d" {
                    // A sub-block whose file scale is 0 has no codes left to scale (see KQuantScales.swift).
                    var file0 = [Float](repeating: 0, count: values.count)
                    readSubBlockScales(target.type, model.file.bytes(of: target).baseAddress!, blocks: blocks, s: &file0, m: nil)
                    if let i = values.indices.first(where: { values[$0] != 0 && file0[$0] == 0 }) {
                        throw .adapter(path: path, message: "tensor '\(t.name)' gives sub-block \(i % perBlock) of block \(i / perBlock) the scale \(values[i]), but that sub-block's scale is 0 in the model (its codes are lost); such a scale must stay 0")
                    }
                }
            }
            if suffix.hasSuffix("_d") { adapter.scales[base] = values } else { adapter.offsets[base] = values }
        }
        if let orphan = adapter.offsets.keys.sorted().first(where: { adapter.scales[$0] == nil }) {
            throw .adapter(path: path, message: "tensor '\(orphan).qzo_m' has no '\(orphan).qzo_d' beside it")
        }
        return adapter
    }

    /// The suffix of an adapter tensor that holds tuned scales, and whether it is per sub-block.
    static func scaleSuffix(of name: String) -> (String, Bool)? {
        for (suffix, sub) in [(".qzo_d", false), (".qzo_m", false), (".qzo_sub_d", true), (".qzo_sub_m", true)] where name.hasSuffix(suffix) {
            return (suffix, sub)
        }
        return nil
    }
}
