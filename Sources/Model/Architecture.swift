// An architecture as data: what a file of one `general.architecture` holds and in which
// order its block applies the shared steps (BlockPass). Each architecture is one short file
// under Architectures/ (mlx-lm's models/*.py, llama.cpp's src/models/*.cpp); the forward
// pass, streaming, the memory planner and training never ask which one they run.
//
// Adding one: a file with a type conforming to `Architecture`, its entry in
// `Architectures.supported`, and its tests.

import GGUF

/// One family of models, as the forward pass needs it.
public protocol Architecture {
    /// The value of `general.architecture` this type runs.
    static var name: String { get }
    /// The hyperparameters, read from the metadata with their defaults in one place and
    /// checked; `vocabSize` is the number of rows of `token_embd.weight`.
    static func config(_ h: Hyperparameters, vocabSize: Int) throws(ModelError) -> LlamaConfig
    /// Per-block vectors the files carry besides `attn_norm` and `ffn_norm` (all required).
    static var blockVectors: [BlockVector] { get }
    /// One transformer block, in place on the residual stream, as shared steps in order.
    static func block(_ b: BlockPass)
}

/// Every architecture the runtime runs, by `general.architecture`.
public enum Architectures {
    public static let supported: [any Architecture.Type] = [Llama.self, Qwen2.self, Gemma3.self]

    /// The architecture of `name`, or an error naming it and the supported ones.
    public static func named(_ name: String) throws(ModelError) -> any Architecture.Type {
        guard let a = supported.first(where: { $0.name == name }) else {
            throw .unsupportedArchitecture(name, supported: supported.map { $0.name })
        }
        return a
    }
}

/// Small vectors of a block beyond its two norms, loaded at init like the norms.
public enum BlockVector: CaseIterable, Sendable {
    /// Biases added to q, k, v after their projections (qwen2).
    case qBias, kBias, vBias
    /// Per-head RMSNorm weights of q and k, applied before the rotation (gemma3).
    case qNorm, kNorm
    /// RMSNorm of the attention output and of the feed-forward output before their residual adds (gemma3).
    case postAttentionNorm, postFFNNorm

    /// Tensor name after `blk.N.` (llama.cpp's LLM_TENSOR names).
    public var tensorName: String {
        switch self {
        case .qBias: return "attn_q.bias"
        case .kBias: return "attn_k.bias"
        case .vBias: return "attn_v.bias"
        case .qNorm: return "attn_q_norm.weight"
        case .kNorm: return "attn_k_norm.weight"
        case .postAttentionNorm: return "post_attention_norm.weight"
        case .postFFNNorm: return "post_ffw_norm.weight"
        }
    }

    /// Its length under `c`.
    public func count(_ c: LlamaConfig) -> Int {
        switch self {
        case .qBias: return c.qDim
        case .kBias, .vBias: return c.kvDim
        case .qNorm, .kNorm: return c.headDim
        case .postAttentionNorm, .postFFNNorm: return c.dim
        }
    }
}

/// Typed reads of `<arch>.<key>` metadata: a missing key, a key of the wrong type and a
/// value out of range are three different errors, each naming the key and the value.
public struct Hyperparameters {
    public let metadata: GGUFMetadata
    public let architecture: String

    public init(metadata: GGUFMetadata, architecture: String) {
        self.metadata = metadata
        self.architecture = architecture
    }

    public func key(_ k: String) -> String { "\(architecture).\(k)" }

    /// An integer, nil when absent.
    public func int(_ k: String) throws(ModelError) -> Int? {
        guard let v = metadata[key(k)] else { return nil }
        guard let i = v.intValue else { throw .keyType(key: key(k), expected: "an integer", found: "\(v.type)") }
        return i
    }

    /// A positive integer that must be there.
    public func positive(_ k: String) throws(ModelError) -> Int {
        guard let v = try int(k) else { throw .missingKey(key(k)) }
        guard v > 0 else { throw .invalidHyperparameter(key: key(k), value: "\(v)", why: "must be positive") }
        return v
    }

    /// A positive integer, `fallback` when absent.
    public func positive(_ k: String, default fallback: Int) throws(ModelError) -> Int {
        guard let v = try int(k) else { return fallback }
        guard v > 0 else { throw .invalidHyperparameter(key: key(k), value: "\(v)", why: "must be positive") }
        return v
    }

    /// A number, nil when absent.
    public func float(_ k: String) throws(ModelError) -> Float? {
        guard let v = metadata[key(k)] else { return nil }
        guard let d = v.doubleValue else { throw .keyType(key: key(k), expected: "a number", found: "\(v.type)") }
        return Float(d)
    }

    /// A finite number > 0 (a rotary base, an epsilon may not be 0 or negative).
    public func positiveFloat(_ k: String, default fallback: Float) throws(ModelError) -> Float {
        guard let v = try float(k) else { return fallback }
        guard v.isFinite, v > 0 else { throw .invalidHyperparameter(key: key(k), value: "\(v)", why: "must be a finite number > 0") }
        return v
    }

    /// A finite number ≥ 0.
    public func nonNegativeFloat(_ k: String, default fallback: Float) throws(ModelError) -> Float {
        guard let v = try float(k) else { return fallback }
        guard v.isFinite, v >= 0 else { throw .invalidHyperparameter(key: key(k), value: "\(v)", why: "must be a finite number ≥ 0") }
        return v
    }

    /// A string, nil when absent.
    public func string(_ k: String) throws(ModelError) -> String? {
        guard let v = metadata[key(k)] else { return nil }
        guard let s = v.stringValue else { throw .keyType(key: key(k), expected: "a string", found: "\(v.type)") }
        return s
    }

    /// The widths every architecture has, with llama.cpp's defaults (llm_load_hparams),
    /// checked against each other. Rope and attention details are the caller's.
    public func commonConfig(vocabSize: Int) throws(ModelError) -> LlamaConfig {
        let dim = try positive("embedding_length")
        let layers = try positive("block_count")
        let heads = try positive("attention.head_count")
        let ffn = try positive("feed_forward_length")
        let context = try positive("context_length")
        let kvHeads = try positive("attention.head_count_kv", default: heads)
        guard heads % kvHeads == 0 else {
            throw .invalidHyperparameter(key: key("attention.head_count_kv"), value: "\(kvHeads)",
                                         why: "must divide \(key("attention.head_count")) = \(heads)")
        }
        let headDim: Int
        if let k = try int("attention.key_length") {
            guard k > 0 else { throw .invalidHyperparameter(key: key("attention.key_length"), value: "\(k)", why: "must be positive") }
            headDim = k
        } else {
            guard dim % heads == 0 else {
                throw .invalidHyperparameter(key: key("attention.head_count"), value: "\(heads)",
                                             why: "must divide \(key("embedding_length")) = \(dim) (no attention.key_length gives the head width)")
            }
            headDim = dim / heads
        }
        if let v = try int("attention.value_length"), v != headDim {
            throw .unsupportedFeature("'\(key("attention.value_length"))' = \(v) differs from the key width \(headDim); not supported")
        }
        let ropeDim = try positive("rope.dimension_count", default: headDim)
        guard ropeDim == headDim else {
            throw .unsupportedFeature("partial rotary embeddings ('\(key("rope.dimension_count"))' = \(ropeDim) of head width \(headDim)) are not supported")
        }
        guard headDim % 2 == 0 else {
            throw .invalidHyperparameter(key: key("attention.key_length"), value: "\(headDim)", why: "the head width must be even for the rotary embedding")
        }
        guard dim % 32 == 0, ffn % 32 == 0, (heads * headDim) % 32 == 0 else {
            throw .invalidHyperparameter(key: key("embedding_length"), value: "\(dim)",
                                         why: "widths must be multiples of 32 (width \(dim), feed-forward \(ffn), heads×head width \(heads * headDim))")
        }
        if let scaling = try string("rope.scaling.type"), scaling != "none" {
            throw .unsupportedFeature("'\(key("rope.scaling.type"))' = '\(scaling)': rope scaling is not supported for \(architecture)")
        }
        let base = try positiveFloat("rope.freq_base", default: 10000)
        let eps = try nonNegativeFloat("attention.layer_norm_rms_epsilon", default: 1e-5)
        if let declared = try int("vocab_size"), declared != vocabSize {
            throw .invalidHyperparameter(key: key("vocab_size"), value: "\(declared)",
                                         why: "token_embd.weight has \(vocabSize) rows")
        }
        return LlamaConfig(dim: dim, layerCount: layers, headCount: heads, kvHeadCount: kvHeads, headDim: headDim,
                           ffnDim: ffn, vocabSize: vocabSize, contextLength: context, ropeBase: base, ropeDim: ropeDim,
                           rmsEps: eps)
    }
}
