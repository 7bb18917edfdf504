// Quant: GGUF block formats and the kernels that compute with them.
import GGUF
