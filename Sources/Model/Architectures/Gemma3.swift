// Gemma 3 (text); reference: llama.cpp's src/models/gemma3.cpp and HF transformers'
// modeling_gemma3.py.
//
//   x = token_embd[token] · √dim
//   per block:  x += post_attention_norm(Wo · attention(q, k, v)),  n = rmsnorm(x) ⊙ attn_norm
//                 q = rope(rmsnorm_head(Wq·n) ⊙ attn_q_norm), k likewise with attn_k_norm
//               x += post_ffw_norm(Wdown · (gelu_tanh(Wgate·n) ⊙ Wup·n)),  n = rmsnorm(x) ⊙ ffn_norm
//   logits = token_embd · (rmsnorm(x) ⊙ output_norm)   (tied)
//
// Five of every six blocks (index % 6 < 5) attend to the last `sliding_window` keys only
// (a key is masked when q_pos − k_pos ≥ window) and rotate with base 10,000; the others
// see every key and rotate with `rope.freq_base`. The scale is 1/√key_length (the head
// width 256 is not dim / heads). The converter stores Gemma's norm weights with the 1
// already added (convert_hf_to_gguf.py's Gemma3Model), so they are plain multipliers
// here; some exceed 1,600, and hidden states reach about 1e5: everything stays float32.

public enum Gemma3: Architecture {
    public static let name = "gemma3"
    /// Rotary base of the sliding-window blocks (HF's rope_local_base_freq; not in the file).
    public static let localRopeBase: Float = 10000
    /// Blocks repeat as (pattern − 1) local ones, then one global (llama.cpp's n_swa_pattern).
    public static let slidingWindowPattern = 6

    public static func config(_ h: Hyperparameters, vocabSize: Int) throws(ModelError) -> LlamaConfig {
        var c = try h.commonConfig(vocabSize: vocabSize)
        c.architecture = name
        c.ropeMode = .halves
        c.activation = .geluTanh
        c.embeddingScale = Float(c.dim).squareRoot()
        c.attentionScale = 1 / Float(c.headDim).squareRoot()
        let window = try h.positive("attention.sliding_window")
        c.layerAttention = (0..<c.layerCount).map { l in
            l % slidingWindowPattern < slidingWindowPattern - 1
                ? LayerAttention(window: window, ropeBase: localRopeBase)
                : LayerAttention(window: nil, ropeBase: c.ropeBase)
        }
        return c
    }

    public static let blockVectors: [BlockVector] = [.qNorm, .kNorm, .postAttentionNorm, .postFFNNorm]

    public static func block(_ b: BlockPass) {
        b.normInput(b.w.attnNorm)
        b.attention()                              // per-head q/k norms from the block's vectors
        b.normOutput(b.w.postAttentionNorm!)
        b.addResidual()
        b.normInput(b.w.ffnNorm)
        b.feedForward()
        b.normOutput(b.w.postFFNNorm!)
        b.addResidual()
    }
}
