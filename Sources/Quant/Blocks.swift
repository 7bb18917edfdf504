// Block formats of ggml; reference: ggml-common.h (block_q4_0, block_q4_1, block_q8_0)
// and ggml-quants.c (quantize_row_*_ref, dequantize_row_*), as gguf-py's quants.py restates them.
//
// Every block holds 32 consecutive weights of one row. Layouts are defined once here;
// the kernels read blocks through these types or through the byte offsets they imply,
// and a test pins the sizes.

import GGUF

/// Weights per block in Q4_0, Q4_1 and Q8_0.
public let quantBlockSize = 32

/// Q4_0: w[i] = d × (code[i] − 8). Codes 0..15; weight i < 16 is the low nibble of
/// `qs[i]`, weight i ≥ 16 the high nibble of `qs[i − 16]`. 18 bytes.
public struct BlockQ4_0 {
    public var d: Float16
    public var qs: InlineArray<16, UInt8>
}

/// Q4_1: w[i] = d × code[i] + m. Nibble order as Q4_0. 20 bytes.
public struct BlockQ4_1 {
    public var d: Float16
    public var m: Float16
    public var qs: InlineArray<16, UInt8>
}

/// Q8_0: w[i] = d × qs[i]. 34 bytes.
public struct BlockQ8_0 {
    public var d: Float16
    public var qs: InlineArray<32, Int8>
}

extension GGMLType {
    /// Whether `Quant` can dequantize, quantize and multiply with this type.
    public var isSupportedForCompute: Bool {
        self == .f32 || self == .f16 || self == .bf16 || self == .q4_0 || self == .q4_1 || self == .q8_0
    }

    /// Whether the type is a block format with a per-block scale `d` (the values QZO trains).
    public var hasBlockScales: Bool {
        self == .q4_0 || self == .q4_1 || self == .q8_0
    }
}

/// Errors of `Quant`: a type it cannot compute with, or sizes that do not fit.
public enum QuantError: Error, Equatable, CustomStringConvertible {
    case unsupportedType(GGMLType, context: String)
    case notWholeBlocks(count: Int, type: GGMLType)
    case file(GGUFError)

    public var description: String {
        switch self {
        case .unsupportedType(let t, let context):
            "\(context): tensor type \(t) is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0); requantize the model with llama-quantize"
        case .notWholeBlocks(let count, let t):
            "\(count) values are not a whole number of \(t) blocks of \(t.blockSize)"
        case .file(let e):
            e.description
        }
    }
}

// MARK: - BF16

/// bfloat16 → float: the high 16 bits of a float32.
@inlinable public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// float → bfloat16 as ggml_compute_fp32_to_bf16: NaN made quiet, otherwise round to nearest even.
@inlinable public func floatToBF16(_ x: Float) -> UInt16 {
    let u = x.bitPattern
    if u & 0x7fff_ffff > 0x7f80_0000 { return UInt16((u >> 16) | 64) }
    return UInt16((UInt64(u) + UInt64(0x7fff + ((u >> 16) & 1))) >> 16)
}
