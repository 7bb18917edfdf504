// Conversion between float rows and GGUF tensor rows; reference: gguf-py quants.py
// (quantize_blocks / dequantize_blocks for Q4_0, Q4_1, Q8_0, BF16), which restates
// ggml-quants.c's reference quantizers. Results are bit-identical to gguf-py's.

import GGUF

/// Per-block scale overrides for dequantization: QZO keeps float32 master copies of
/// the block scales `d` (and, for Q4_1, optionally the offsets `m`) and dequantizes
/// through them instead of the file's half-precision values.
public struct BlockScales {
    /// One `d` per block, or nil to use the file's.
    public var d: UnsafePointer<Float>?
    /// One `m` per block (Q4_1 only), or nil to use the file's.
    public var m: UnsafePointer<Float>?

    public init(d: UnsafePointer<Float>? = nil, m: UnsafePointer<Float>? = nil) {
        self.d = d
        self.m = m
    }

    public static var file: BlockScales { BlockScales() }

    /// The overrides for the blocks starting at block index `first`.
    @inlinable public func advanced(by first: Int) -> BlockScales {
        BlockScales(d: d.map { $0 + first }, m: m.map { $0 + first })
    }
}

@inline(__always) @usableFromInline
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
}

@inline(__always) @usableFromInline
func storeHalf(_ p: UnsafeMutableRawPointer, _ offset: Int, _ x: Float) {
    p.storeBytes(of: Float16(x).bitPattern.littleEndian, toByteOffset: offset, as: UInt16.self)
}

/// A 4-bit code from an already offset value: truncated toward zero, clamped to 0...15
/// (NaN gives 0), as gguf-py's `trunc(...).astype(uint8).clip(0, 15)`.
@inline(__always) func nibble(_ v: Float) -> UInt8 {
    v >= 15 ? 15 : (v > 0 ? UInt8(v) : 0)
}

/// Dequantizes `count` values of one row (a whole number of blocks) from `src` into `dst`.
/// Plain scalar code: the reference `dequantizeRow` is tested against.
public func dequantizeRowGeneric(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int,
                          into dst: UnsafeMutablePointer<Float>, scales: BlockScales = .file) {
    switch type {
    case .f32:
        for i in 0..<count { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
    case .f16:
        for i in 0..<count { dst[i] = loadHalf(src, 2 * i) }
    case .bf16:
        for i in 0..<count { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .q4_0:
        for b in 0..<(count / 32) {
            let block = src + b * 18
            let d = scales.d?[b] ?? loadHalf(block, 0)
            let out = dst + b * 32
            for j in 0..<16 {
                let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                out[j] = d * Float(Int(byte & 0x0f) - 8)
                out[j + 16] = d * Float(Int(byte >> 4) - 8)
            }
        }
    case .q4_1:
        for b in 0..<(count / 32) {
            let block = src + b * 20
            let d = scales.d?[b] ?? loadHalf(block, 0)
            let m = scales.m?[b] ?? loadHalf(block, 2)
            let out = dst + b * 32
            for j in 0..<16 {
                let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                out[j] = d * Float(byte & 0x0f) + m
                out[j + 16] = d * Float(byte >> 4) + m
            }
        }
    case .q8_0:
        for b in 0..<(count / 32) {
            let block = src + b * 34
            let d = scales.d?[b] ?? loadHalf(block, 0)
            let out = dst + b * 32
            for j in 0..<32 {
                out[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d
            }
        }
    default:
        preconditionFailure("dequantizeRowGeneric: \(type) is not supported; check isSupportedForCompute first")
    }
}

/// Quantizes `count` floats (a whole number of blocks) into `dst`, bit-identical to gguf-py.
public func quantizeRow(_ type: GGMLType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    switch type {
    case .f32:
        for i in 0..<count { dst.storeBytes(of: src[i], toByteOffset: 4 * i, as: Float.self) }
    case .f16:
        for i in 0..<count { storeHalf(dst, 2 * i, src[i]) }
    case .bf16:
        for i in 0..<count { dst.storeBytes(of: floatToBF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
    case .q4_0:
        for b in 0..<(count / 32) {
            let x = src + b * 32
            // The value of largest magnitude (first one on ties) sets d = max / −8.
            var amax = abs(x[0])
            var max = x[0]
            for j in 1..<32 where abs(x[j]) > amax {
                amax = abs(x[j])
                max = x[j]
            }
            let d = max / -8
            let id: Float = d == 0 ? 0 : 1 / d
            let block = dst + b * 18
            storeHalf(block, 0, d)
            for j in 0..<16 {
                let lo = nibble(x[j] * id + 8.5)
                let hi = nibble(x[j + 16] * id + 8.5)
                block.storeBytes(of: lo | (hi << 4), toByteOffset: 2 + j, as: UInt8.self)
            }
        }
    case .q4_1:
        for b in 0..<(count / 32) {
            let x = src + b * 32
            var lo = x[0]
            var hi = x[0]
            for j in 1..<32 {
                lo = min(lo, x[j])
                hi = Swift.max(hi, x[j])
            }
            // Between equal signed zeros numpy's vectorized min/max pick +0; so do we.
            if lo == 0 { lo = 0 }
            if hi == 0 { hi = 0 }
            let d = (hi - lo) / 15
            let id: Float = d == 0 ? 0 : 1 / d
            let block = dst + b * 20
            storeHalf(block, 0, d)
            storeHalf(block, 2, lo)
            for j in 0..<16 {
                let q0 = nibble((x[j] - lo) * id + 0.5)
                let q1 = nibble((x[j + 16] - lo) * id + 0.5)
                block.storeBytes(of: q0 | (q1 << 4), toByteOffset: 4 + j, as: UInt8.self)
            }
        }
    case .q8_0:
        for b in 0..<(count / 32) {
            let x = src + b * 32
            var amax: Float = 0
            for j in 0..<32 { amax = Swift.max(amax, abs(x[j])) }
            let d = amax / 127
            let id: Float = d == 0 ? 0 : 1 / d
            let block = dst + b * 34
            storeHalf(block, 0, d)
            for j in 0..<32 {
                let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
                let code: Int8 = q.isNaN ? 0 : Int8(Swift.max(-128, Swift.min(127, q)))
                block.storeBytes(of: code, toByteOffset: 2 + j, as: Int8.self)
            }
        }
    default:
        preconditionFailure("quantizeRow: \(type) is not supported; check isSupportedForCompute first")
    }
}

/// Reads the per-block scales `d` of a Q4_0/Q4_1/Q8_0 row as floats.
public func readBlockScales(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int,
                            d: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>? = nil) {
    let stride = type.bytesPerBlock
    for b in 0..<blocks {
        d[b] = loadHalf(src + b * stride, 0)
        if type == .q4_1, let m { m[b] = loadHalf(src + b * stride, 2) }
    }
}

/// Overwrites the per-block scales of a row (rounded to half precision); codes are untouched.
public func writeBlockScales(_ type: GGMLType, _ dst: UnsafeMutableRawPointer, blocks: Int,
                             d: UnsafePointer<Float>, m: UnsafePointer<Float>? = nil) {
    let stride = type.bytesPerBlock
    for b in 0..<blocks {
        storeHalf(dst + b * stride, 0, d[b])
        if type == .q4_1, let m { storeHalf(dst + b * stride, 2, m[b]) }
    }
}
