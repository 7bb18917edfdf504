// Qwen2 (Qwen2.5, Qwen2.5-Coder); reference: llama.cpp's src/models/qwen2.cpp and
// HF transformers' modeling_qwen2.py.
//
// LLaMA's block with three differences:
//   * q, k and v projections carry biases, added before the rotation;
//   * the rotation pairs the two halves of each head (NEOX: dimensions i and i + headDim/2),
//     what llama.cpp's llama_model_rope_type gives LLM_ARCH_QWEN2;
//   * grouped-query attention with few KV heads (14 query / 2 KV heads on the 0.5B).
// Scale 1/√headDim; the files carry their own output.weight, which is used when present.

public enum Qwen2: Architecture {
    public static let name = "qwen2"

    public static func config(_ h: Hyperparameters, vocabSize: Int) throws(ModelError) -> LlamaConfig {
        var c = try h.commonConfig(vocabSize: vocabSize)
        c.architecture = name
        c.ropeMode = .halves
        return c
    }

    public static let blockVectors: [BlockVector] = [.qBias, .kBias, .vBias]

    public static func block(_ b: BlockPass) {
        b.normInput(b.w.attnNorm)
        b.attention()                 // biases from the block's vectors
        b.addResidual()
        b.normInput(b.w.ffnNorm)
        b.feedForward()
        b.addResidual()
    }
}
