// Model: tokenizer, LLaMA forward pass, sampling.
import GGUF
import Quant
