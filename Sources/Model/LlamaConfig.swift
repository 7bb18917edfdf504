// Hyperparameters of the llama architecture, read from GGUF metadata in one place;
// reference: llama.cpp's llm_load_hparams (keys prefixed by general.architecture).

import GGUF

public struct LlamaConfig: Equatable, Sendable {
    /// Model width (`embedding_length`).
    public var dim: Int
    /// Transformer blocks (`block_count`).
    public var layerCount: Int
    /// Query heads (`attention.head_count`).
    public var headCount: Int
    /// Key/value heads (`attention.head_count_kv`; default: head_count).
    public var kvHeadCount: Int
    /// Per-head width (`attention.key_length`; default: dim / head_count).
    public var headDim: Int
    /// Hidden width of the feed-forward block (`feed_forward_length`).
    public var ffnDim: Int
    /// Vocabulary size (rows of token_embd).
    public var vocabSize: Int
    /// Longest sequence the model was trained for (`context_length`).
    public var contextLength: Int
    /// Rotary base (`rope.freq_base`; default 10000).
    public var ropeBase: Float
    /// Dimensions rotated in each head (`rope.dimension_count`; default: headDim).
    public var ropeDim: Int
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`; default 1e-5).
    public var rmsEps: Float

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }
    /// Query heads per key/value head.
    public var groupSize: Int { headCount / kvHeadCount }

    public init(dim: Int, layerCount: Int, headCount: Int, kvHeadCount: Int, headDim: Int, ffnDim: Int,
                vocabSize: Int, contextLength: Int, ropeBase: Float, ropeDim: Int, rmsEps: Float) {
        self.dim = dim
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim
        self.ffnDim = ffnDim
        self.vocabSize = vocabSize
        self.contextLength = contextLength
        self.ropeBase = ropeBase
        self.ropeDim = ropeDim
        self.rmsEps = rmsEps
    }

    /// Reads the hyperparameters; `vocabSize` comes from the token embedding's shape.
    public init(metadata m: GGUFMetadata, vocabSize: Int) throws(ModelError) {
        guard let arch = m.string("general.architecture") else { throw .missingKey("general.architecture") }
        guard arch == "llama" else { throw .unsupportedArchitecture(arch) }
        func required(_ key: String) throws(ModelError) -> Int {
            guard let v = m.int("\(arch).\(key)") else { throw .missingKey("\(arch).\(key)") }
            guard v > 0 else { throw .invalidHyperparameter(key: "\(arch).\(key)", value: "\(v)", why: "must be positive") }
            return v
        }
        dim = try required("embedding_length")
        layerCount = try required("block_count")
        headCount = try required("attention.head_count")
        ffnDim = try required("feed_forward_length")
        contextLength = try required("context_length")
        kvHeadCount = m.int("\(arch).attention.head_count_kv") ?? headCount
        headDim = m.int("\(arch).attention.key_length") ?? dim / headCount
        ropeDim = m.int("\(arch).rope.dimension_count") ?? headDim
        ropeBase = m.float("\(arch).rope.freq_base") ?? 10000
        rmsEps = m.float("\(arch).attention.layer_norm_rms_epsilon") ?? 1e-5
        self.vocabSize = vocabSize

        guard kvHeadCount > 0, headCount % kvHeadCount == 0 else {
            throw .invalidHyperparameter(key: "\(arch).attention.head_count_kv", value: "\(kvHeadCount)",
                                         why: "must divide head_count \(headCount)")
        }
        if let v = m.int("\(arch).attention.value_length"), v != headDim {
            throw .unsupportedFeature("'\(arch).attention.value_length' (\(v)) differs from key_length (\(headDim)); not supported")
        }
        guard ropeDim == headDim else {
            throw .unsupportedFeature("partial rotary embeddings (rope.dimension_count \(ropeDim) of head width \(headDim)) are not supported")
        }
        guard headDim % 2 == 0, dim % 32 == 0, ffnDim % 32 == 0, qDim % 32 == 0 else {
            throw .invalidHyperparameter(key: "\(arch).embedding_length", value: "\(dim)",
                                         why: "widths must be multiples of 32 (dim \(dim), ffn \(ffnDim), heads×width \(qDim))")
        }
        if let scaling = m.string("\(arch).rope.scaling.type"), scaling != "none" {
            throw .unsupportedFeature("rope scaling '\(scaling)' is not supported")
        }
    }
}
