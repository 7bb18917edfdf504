// Block formats of ggml, byte by byte; reference: ggml-common.h (block_q4_0 … block_q8_K)
// and ggml-quants.c (quantize_row_*_ref, dequantize_row_*), as gguf-py's quants.py restates them.
//
// A row of a quantized tensor is a sequence of blocks, each holding `blockSize` consecutive
// weights of the row: 32 for the "legacy" formats, 256 (a super-block of 8 or 16 sub-blocks)
// for the K-quants. All numbers are little-endian; "half" is IEEE binary16.
//
// Layouts are defined once here; the kernels read blocks through the byte offsets these
// types imply (see `BlockFormats.swift`), and a test pins every size and offset.

import GGUF

/// Weights per block in Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (and per sub-block in Q4_K/Q5_K).
public let quantBlockSize = 32

/// Weights per super-block of the K-quants (ggml's QK_K).
public let superBlockSize = 256

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

/// Q5_0: w[i] = d × (code[i] − 16), 5-bit codes: the low 4 bits in nibbles as Q4_0, the
/// fifth bit of weight i is bit i of `qh` (a little-endian UInt32). 22 bytes.
public struct BlockQ5_0 {
    public var d: Float16
    public var qh: InlineArray<4, UInt8>
    public var qs: InlineArray<16, UInt8>
}

/// Q5_1: w[i] = d × code[i] + m, codes as Q5_0. 24 bytes.
public struct BlockQ5_1 {
    public var d: Float16
    public var m: Float16
    public var qh: InlineArray<4, UInt8>
    public var qs: InlineArray<16, UInt8>
}

/// Q8_0: w[i] = d × qs[i]. 34 bytes.
public struct BlockQ8_0 {
    public var d: Float16
    public var qs: InlineArray<32, Int8>
}

/// Q2_K: 256 weights in 16 sub-blocks of 16. `scales[j]` holds sub-block j's scale (low
/// nibble) and min (high nibble); w = d × scale × code − dmin × min with 2-bit codes:
/// weight 128h + 32s + l is bits 2s…2s+1 of `qs[32h + l]` (h < 2, s < 4, l < 32). 84 bytes.
public struct BlockQ2_K {
    public var scales: InlineArray<16, UInt8>
    public var qs: InlineArray<64, UInt8>
    public var d: Float16
    public var dmin: Float16
}

/// Q3_K: 256 weights in 16 sub-blocks of 16, w = d × (scale − 32) × code with signed 3-bit
/// codes: weight 128h + 32s + l has low bits 2s…2s+1 of `qs[32h + l]`, minus 4 unless bit
/// 4h + s of `hmask[l]` is set. The sixteen 6-bit scales are packed in 12 bytes: scale j's
/// low 4 bits are the low (j < 8) or high (j ≥ 8) nibble of `scales[j % 8]`, its high 2 bits
/// are bits 2(j / 4)…+1 of `scales[8 + j % 4]`. 110 bytes.
public struct BlockQ3_K {
    public var hmask: InlineArray<32, UInt8>
    public var qs: InlineArray<64, UInt8>
    public var scales: InlineArray<12, UInt8>
    public var d: Float16
}

/// Q4_K: 256 weights in 8 sub-blocks of 32, w = d × scale_j × code − dmin × min_j. The eight
/// 6-bit scales and eight 6-bit mins are packed in 12 bytes (ggml's get_scale_min_k4): for
/// j < 4, scale = scales[j] & 63 and min = scales[j + 4] & 63; for j ≥ 4, scale =
/// (scales[j + 4] & 15) | (scales[j − 4] >> 6) << 4 and min = (scales[j + 4] >> 4) |
/// (scales[j] >> 6) << 4. Weight 64c + 32s + l is the low (s = 0) or high (s = 1) nibble of
/// `qs[32c + l]`, in sub-block 2c + s. 144 bytes.
public struct BlockQ4_K {
    public var d: Float16
    public var dmin: Float16
    public var scales: InlineArray<12, UInt8>
    public var qs: InlineArray<128, UInt8>
}

/// Q5_K: as Q4_K with a fifth bit per weight: bit j of `qh[l]` for weight l of sub-block j.
/// 176 bytes.
public struct BlockQ5_K {
    public var d: Float16
    public var dmin: Float16
    public var scales: InlineArray<12, UInt8>
    public var qh: InlineArray<32, UInt8>
    public var qs: InlineArray<128, UInt8>
}

/// Q6_K: 256 weights in 16 sub-blocks of 16, w = d × scales[j] × (code − 32) with 6-bit
/// codes: in half h (128 weights), weight 32s + l (s < 4, l < 32) has its low 4 bits in the
/// low (s < 2) or high (s ≥ 2) nibble of `ql[64h + 32(s % 2) + l]` and its high 2 bits in
/// bits 2s…2s+1 of `qh[32h + l]`. 210 bytes.
public struct BlockQ6_K {
    public var ql: InlineArray<128, UInt8>
    public var qh: InlineArray<64, UInt8>
    public var scales: InlineArray<16, Int8>
    public var d: Float16
}

/// Q8_K: 256 weights, w = d × qs[i] with a float32 d and the sums of each 16 codes. Used,
/// as ggml does, only for activations: generation quantizes x into it once per token for
/// the K-quants' integer kernels (IntegerDots.swift). 292 bytes.
public struct BlockQ8_K {
    public var d: Float
    public var qs: InlineArray<256, Int8>
    public var bsums: InlineArray<16, Int16>
}

/// Q8x32: 32 activations, x ≈ d × qs[i]; ggml's block_q8_0 with a float32 d instead of a
/// half (one rounding less). Not a GGUF type: generation quantizes x into it once per token
/// for the integer kernels of Q5_0 and Q8_0 (IntegerDots.swift). 36 bytes.
public struct BlockQ8x32 {
    public var d: Float
    public var qs: InlineArray<32, Int8>
}

extension GGMLType {
    /// The row of ggml's table of block formats for this type (`BlockFormatTraits`), when
    /// `Quant` computes with it.
    public var traits: BlockFormatTraits? { BlockFormatTraits.of(self) }

    /// Whether `Quant` can dequantize and multiply with this type (it is in the table).
    public var isSupportedForCompute: Bool { traits != nil }

    /// Whether `Quant` can quantize float rows into this type.
    public var canQuantize: Bool { traits?.quantizeRow != nil }

    /// Weights per overridable scale `d` (see `BlockScales`): 32 for Q4_0, Q4_1, Q5_0,
    /// Q5_1 and Q8_0, 256 for the K-quants (the super-block's d, and dmin as `m`); nil
    /// for types without block scales.
    public var scaleBlockSize: Int? { traits?.scales.map { _ in blockSize } }

    /// Whether the type is a block format with one scale `d` per 32 weights (the values
    /// QZO trains, counted as elementCount / 32 blocks). The K-quants honour overrides per
    /// super-block of 256 (`scaleBlockSize`), which QZO does not count yet.
    public var hasBlockScales: Bool { scaleBlockSize == quantBlockSize }
}

/// Errors of `Quant`: a type it cannot compute with, or sizes that do not fit.
public enum QuantError: Error, Equatable, CustomStringConvertible {
    case unsupportedType(GGMLType, context: String)
    /// A row (of tensor `tensor` with `shape`, ne0 first) is not a whole number of blocks of `type`.
    case notWholeBlocks(count: Int, type: GGMLType, tensor: String? = nil, shape: [Int]? = nil)
    /// Quantizing into `type` is not implemented (the K-quants: use llama-quantize).
    case cannotQuantize(GGMLType, context: String)
    case file(GGUFError)

    public var description: String {
        switch self {
        case .unsupportedType(let t, let context):
            "\(context): tensor type \(t) is not supported (supported: \(BlockFormatTraits.all.map(\.type.name).joined(separator: ", "))); requantize the model with llama-quantize"
        case .notWholeBlocks(let count, let t, let tensor, let shape):
            if let tensor {
                "tensor '\(tensor)' (shape \(shape.map { $0.map(String.init).joined(separator: " x ") } ?? "?")): rows of \(count) values are not a whole number of \(t) blocks of \(t.blockSize)"
            } else {
                "\(count) values are not a whole number of \(t) blocks of \(t.blockSize)"
            }
        case .cannotQuantize(let t, let context):
            "\(context): quantizing into \(t) is not implemented (types we quantize: \(BlockFormatTraits.all.filter { $0.quantizeRow != nil }.map(\.type.name).joined(separator: ", "))); use llama.cpp's llama-quantize for \(t)"
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
