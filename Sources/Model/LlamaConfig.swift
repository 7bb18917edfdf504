// Hyperparameters of a model, whatever its architecture: widths, and the choices the
// shared blocks take as data (rotation mode, attention scale and windows, activation,
// embedding scale). Each architecture file (Architectures/) fills one from the GGUF
// metadata; reference: llama.cpp's llm_load_hparams.

import GGUF

/// How the rotary embedding pairs the dimensions of a head (llama.cpp's rope types).
public enum RopeMode: Sendable, Equatable {
    /// Adjacent pairs (2i, 2i+1): LLAMA_ROPE_TYPE_NORM (llama).
    case adjacentPairs
    /// Pairs (i, i + headDim/2), the two halves of the head: LLAMA_ROPE_TYPE_NEOX (qwen2, gemma3).
    case halves
}

/// The nonlinearity of the gated feed-forward block: down(act(gate·x) ⊙ up·x).
public enum GatedActivation: Sendable, Equatable {
    /// SiLU, x·σ(x) (SwiGLU).
    case silu
    /// GELU with the tanh approximation (GeGLU).
    case geluTanh
}

/// The attention of one block: which keys a query sees, and the rotary base.
public struct LayerAttention: Sendable, Equatable {
    /// Keys at q_pos − k_pos ≥ window are masked; nil: every earlier key is seen.
    public var window: Int?
    public var ropeBase: Float

    public init(window: Int? = nil, ropeBase: Float) {
        self.window = window
        self.ropeBase = ropeBase
    }
}

public struct LlamaConfig: Equatable, Sendable {
    /// `general.architecture`.
    public var architecture: String
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
    /// Rotary base of full-attention blocks (`rope.freq_base`; default 10000).
    public var ropeBase: Float
    /// Dimensions rotated in each head (`rope.dimension_count`; default: headDim).
    public var ropeDim: Int
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`; default 1e-5).
    public var rmsEps: Float
    public var ropeMode: RopeMode
    /// Multiplies q·k before the softmax (usually 1/√headDim).
    public var attentionScale: Float
    public var activation: GatedActivation
    /// Multiplies the token embeddings at the input (not the tied output rows).
    public var embeddingScale: Float
    /// Per block: its window and rotary base.
    public var layerAttention: [LayerAttention]

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }
    /// Query heads per key/value head.
    public var groupSize: Int { headCount / kvHeadCount }
    /// The distinct rotary bases, in order of first use (one table of angles each).
    public var ropeBases: [Float] {
        var out = [Float]()
        for a in layerAttention where !out.contains(a.ropeBase) { out.append(a.ropeBase) }
        return out
    }

    /// Llama's choices unless given: adjacent pairs, 1/√headDim, SiLU, no embedding scale,
    /// full attention at `ropeBase` in every block.
    public init(architecture: String = "llama", dim: Int, layerCount: Int, headCount: Int, kvHeadCount: Int, headDim: Int,
                ffnDim: Int, vocabSize: Int, contextLength: Int, ropeBase: Float, ropeDim: Int, rmsEps: Float,
                ropeMode: RopeMode = .adjacentPairs, attentionScale: Float? = nil, activation: GatedActivation = .silu,
                embeddingScale: Float = 1, layerAttention: [LayerAttention]? = nil) {
        self.architecture = architecture
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
        self.ropeMode = ropeMode
        self.attentionScale = attentionScale ?? 1 / Float(headDim).squareRoot()
        self.activation = activation
        self.embeddingScale = embeddingScale
        self.layerAttention = layerAttention ?? Array(repeating: LayerAttention(ropeBase: ropeBase), count: layerCount)
    }

    /// Reads the hyperparameters of the file's architecture; `vocabSize` comes from the
    /// token embedding's shape.
    public init(metadata m: GGUFMetadata, vocabSize: Int) throws(ModelError) {
        guard let value = m["general.architecture"] else { throw .missingKey("general.architecture") }
        guard let name = value.stringValue else {
            throw .keyType(key: "general.architecture", expected: "a string", found: "\(value.type)")
        }
        let arch = try Architectures.named(name)
        self = try arch.config(Hyperparameters(metadata: m, architecture: name), vocabSize: vocabSize)
    }
}
