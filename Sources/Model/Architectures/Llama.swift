// LLaMA (and SmolLM2); reference: llama.cpp's src/models/llama.cpp (llm_build_llama).
//
//   x = token_embd[token]
//   per block:  x += Wo · attention(rope(Wq·n), rope(Wk·n), Wv·n),  n = rmsnorm(x) ⊙ attn_norm
//               x += Wdown · (silu(Wgate·n) ⊙ Wup·n),                n = rmsnorm(x) ⊙ ffn_norm
//   logits = output · (rmsnorm(x) ⊙ output_norm)   (output: output.weight, else token_embd)
// Rotation of adjacent pairs, scale 1/√headDim, every block attends to every earlier key.

public enum Llama: Architecture {
    public static let name = "llama"

    public static func config(_ h: Hyperparameters, vocabSize: Int) throws(ModelError) -> LlamaConfig {
        var c = try h.commonConfig(vocabSize: vocabSize)
        c.architecture = name
        c.ropeMode = .adjacentPairs
        return c
    }

    public static let blockVectors: [BlockVector] = []

    public static func block(_ b: BlockPass) {
        b.normInput(b.w.attnNorm)
        b.attention()
        b.addResidual()
        b.normInput(b.w.ffnNorm)
        b.feedForward()
        b.addResidual()
    }
}
