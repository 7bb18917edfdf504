// GGUF, the file format of llama.cpp/ggml; reference: ggml's gguf.cpp and gguf-py.
//
// A GGUF file, byte by byte (all integers little-endian):
//
//   magic            4 bytes   "GGUF" (0x46554747 as a little-endian UInt32)
//   version          UInt32    2 or 3 (same layout; version 1 used 32-bit counts and is unsupported)
//   tensor_count     UInt64
//   kv_count         UInt64
//   kv_count times:
//     key            string    UInt64 length, then that many UTF-8 bytes (no terminator)
//     value_type     UInt32    GGUFValueType
//     value          scalar of that type, a string, or an array:
//                              element_type UInt32, count UInt64, count elements
//                              (arrays may nest: element_type == array)
//   tensor_count times:
//     name           string
//     n_dims         UInt32    1...4
//     dims           n_dims × UInt64, ne0 first (ne0 is the contiguous dimension: a row)
//     type           UInt32    GGMLType
//     offset         UInt64    from the start of the data section; a multiple of the alignment
//   padding          zeros up to a multiple of the alignment
//   data             the tensors' bytes; each tensor padded to the alignment
//
// The alignment is `general.alignment` (a UInt32 power of two) when present, else 32.

/// The four bytes every GGUF file starts with, as a little-endian UInt32.
public let ggufMagic: UInt32 = 0x4655_4747

/// The format version this package writes.
public let ggufWriteVersion: UInt32 = 3

/// The alignment of the data section when `general.alignment` is absent.
public let ggufDefaultAlignment = 32

/// The type tag of a metadata value.
public struct GGUFValueType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let uint8 = GGUFValueType(rawValue: 0)
    public static let int8 = GGUFValueType(rawValue: 1)
    public static let uint16 = GGUFValueType(rawValue: 2)
    public static let int16 = GGUFValueType(rawValue: 3)
    public static let uint32 = GGUFValueType(rawValue: 4)
    public static let int32 = GGUFValueType(rawValue: 5)
    public static let float32 = GGUFValueType(rawValue: 6)
    /// One byte, 0 or 1.
    public static let bool = GGUFValueType(rawValue: 7)
    /// UInt64 length, then UTF-8 bytes.
    public static let string = GGUFValueType(rawValue: 8)
    /// UInt32 element type, UInt64 count, elements.
    public static let array = GGUFValueType(rawValue: 9)
    public static let uint64 = GGUFValueType(rawValue: 10)
    public static let int64 = GGUFValueType(rawValue: 11)
    public static let float64 = GGUFValueType(rawValue: 12)

    /// Size in bytes of a scalar of this type; nil for strings, arrays and unknown tags.
    public var scalarSize: Int? {
        switch self {
        case .uint8, .int8, .bool: 1
        case .uint16, .int16: 2
        case .uint32, .int32, .float32: 4
        case .uint64, .int64, .float64: 8
        default: nil
        }
    }

    /// The fewest bytes one element of this type can occupy in a file (a string needs its length).
    var minimumEncodedSize: Int {
        switch self {
        case .string: 8
        case .array: 12
        default: scalarSize ?? 1
        }
    }

    public var isKnown: Bool { rawValue <= 12 }

    public var description: String {
        switch self {
        case .uint8: "uint8"
        case .int8: "int8"
        case .uint16: "uint16"
        case .int16: "int16"
        case .uint32: "uint32"
        case .int32: "int32"
        case .float32: "float32"
        case .bool: "bool"
        case .string: "string"
        case .array: "array"
        case .uint64: "uint64"
        case .int64: "int64"
        case .float64: "float64"
        default: "unknown(\(rawValue))"
        }
    }
}

/// A tensor element type of ggml: a plain number type or a block quantization format.
///
/// Every type ggml defines is listed with its block geometry, so files of any
/// type can be read and inspected; which types can be computed with is up to `Quant`.
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: 0)
    public static let f16 = GGMLType(rawValue: 1)
    /// 32 weights: `d: Float16`, 16 bytes of 4-bit codes; w = d × (code − 8).
    public static let q4_0 = GGMLType(rawValue: 2)
    /// 32 weights: `d: Float16`, `m: Float16`, 16 bytes of 4-bit codes; w = d × code + m.
    public static let q4_1 = GGMLType(rawValue: 3)
    /// 32 weights: `d: Float16`, 4 bytes of fifth bits, 16 bytes of low nibbles; w = d × (code − 16).
    public static let q5_0 = GGMLType(rawValue: 6)
    /// 32 weights: `d: Float16`, `m: Float16`, fifth bits, nibbles; w = d × code + m.
    public static let q5_1 = GGMLType(rawValue: 7)
    /// 32 weights: `d: Float16`, 32 × Int8; w = d × code.
    public static let q8_0 = GGMLType(rawValue: 8)
    public static let q8_1 = GGMLType(rawValue: 9)
    // The K-quants: super-blocks of 256 weights in sub-blocks of 16 or 32 with small integer
    // scales (and mins) relative to the super-block's half-precision d (and dmin); Quant's
    // Blocks.swift gives each layout byte by byte.
    /// 256 weights, 16 sub-blocks of 16: 4-bit scale and min each, 2-bit codes; w = d·scale·q − dmin·min.
    public static let q2_K = GGMLType(rawValue: 10)
    /// 256 weights, 16 sub-blocks of 16: 6-bit scales, signed 3-bit codes (2 bits + a high-bit mask); w = d·(scale − 32)·q.
    public static let q3_K = GGMLType(rawValue: 11)
    /// 256 weights, 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes, 4-bit codes; w = d·scale·q − dmin·min.
    public static let q4_K = GGMLType(rawValue: 12)
    /// 256 weights: as Q4_K with a fifth bit per code.
    public static let q5_K = GGMLType(rawValue: 13)
    /// 256 weights, 16 sub-blocks of 16: int8 scales, 6-bit codes (4 + 2 bits); w = d·scale·(q − 32).
    public static let q6_K = GGMLType(rawValue: 14)
    /// 256 weights: `d: Float32`, 256 × Int8, 16 Int16 sums; ggml's activation format (not computed with here).
    public static let q8_K = GGMLType(rawValue: 15)
    public static let bf16 = GGMLType(rawValue: 30)

    /// (name, weights per block, bytes per block), indexed by raw value; nil for unassigned values.
    private static let table: [(String, Int, Int)?] = {
        let qk = 256
        var t = [(String, Int, Int)?](repeating: nil, count: 42)
        t[0] = ("F32", 1, 4)
        t[1] = ("F16", 1, 2)
        t[2] = ("Q4_0", 32, 2 + 16)
        t[3] = ("Q4_1", 32, 2 + 2 + 16)
        t[6] = ("Q5_0", 32, 2 + 4 + 16)
        t[7] = ("Q5_1", 32, 2 + 2 + 4 + 16)
        t[8] = ("Q8_0", 32, 2 + 32)
        t[9] = ("Q8_1", 32, 4 + 4 + 32)
        t[10] = ("Q2_K", qk, 2 + 2 + qk / 16 + qk / 4)
        t[11] = ("Q3_K", qk, 2 + qk / 4 + qk / 8 + 12)
        t[12] = ("Q4_K", qk, 2 + 2 + qk / 2 + 12)
        t[13] = ("Q5_K", qk, 2 + 2 + qk / 2 + qk / 8 + 12)
        t[14] = ("Q6_K", qk, 2 + qk / 2 + qk / 4 + qk / 16)
        t[15] = ("Q8_K", qk, 4 + qk + qk / 8)
        t[16] = ("IQ2_XXS", qk, 2 + qk / 4)
        t[17] = ("IQ2_XS", qk, 2 + qk / 4 + qk / 32)
        t[18] = ("IQ3_XXS", qk, 2 + qk / 4 + qk / 8)
        t[19] = ("IQ1_S", qk, 2 + qk / 8 + qk / 16)
        t[20] = ("IQ4_NL", 32, 2 + 16)
        t[21] = ("IQ3_S", qk, 2 + qk / 4 + qk / 8 + qk / 32 + 4)
        t[22] = ("IQ2_S", qk, 2 + qk / 4 + qk / 16)
        t[23] = ("IQ4_XS", qk, 2 + 2 + qk / 2 + qk / 64)
        t[24] = ("I8", 1, 1)
        t[25] = ("I16", 1, 2)
        t[26] = ("I32", 1, 4)
        t[27] = ("I64", 1, 8)
        t[28] = ("F64", 1, 8)
        t[29] = ("IQ1_M", qk, qk / 8 + qk / 16 + qk / 32)
        t[30] = ("BF16", 1, 2)
        t[34] = ("TQ1_0", qk, 2 + 4 * 13)
        t[35] = ("TQ2_0", qk, 2 + 64)
        t[39] = ("MXFP4", 32, 1 + 16)
        t[40] = ("NVFP4", 64, 4 + 32)
        t[41] = ("Q1_0", 128, 2 + 16)
        return t
    }()

    private var entry: (String, Int, Int)? {
        rawValue < Self.table.count ? Self.table[Int(rawValue)] : nil
    }

    /// Whether ggml defines this type (so its size can be computed).
    public var isKnown: Bool { entry != nil }
    /// Weights per block (1 for plain number types).
    public var blockSize: Int { entry?.1 ?? 0 }
    /// Bytes per block.
    public var bytesPerBlock: Int { entry?.2 ?? 0 }
    /// ggml's name for the type, e.g. "Q4_1".
    public var name: String { entry?.0 ?? "type \(rawValue)" }
    public var description: String { name }

    /// Looks a type up by ggml's name ("Q4_0", "f16", ...).
    public init?(name: String) {
        let upper = name.uppercased()
        guard let index = Self.table.firstIndex(where: { $0?.0 == upper }) else { return nil }
        self.rawValue = UInt32(index)
    }

    /// Bytes of a row of `count` weights, or nil if `count` is not a whole number of blocks
    /// or the size overflows.
    public func rowBytes(_ count: Int) -> Int? {
        guard isKnown, count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }
}
