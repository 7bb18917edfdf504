// Conversion between float rows and GGUF tensor rows, through the table of block formats;
// reference: gguf-py quants.py (quantize_blocks / dequantize_blocks), which restates
// ggml-quants.c's reference code. Results are bit-identical to gguf-py's.
//
// gguf-py quantizes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, and so do we. It has
// no quantizer for the K-quants (Q2_K … Q6_K: llama.cpp's are iterative searches over
// scales); requantizing into those is refused with `QuantError.cannotQuantize`.

import GGUF

/// Per-block scale overrides for dequantization: QZO keeps float32 master copies of
/// the block scales `d` (and, for Q4_1, optionally the offsets `m`) and dequantizes
/// through them instead of the file's half-precision values. For the K-quants the
/// overrides are per super-block of 256: `d` replaces the super-block's d, `m` its dmin.
public struct BlockScales {
    /// One `d` per block, or nil to use the file's.
    public var d: UnsafePointer<Float>?
    /// One `m` (or dmin) per block, or nil to use the file's.
    public var m: UnsafePointer<Float>?

    /// K-quants only (QZO's sub-block granularity, see KQuantScales.swift): `subPerBlock`
    /// effective sub-block scales d·sc_k per block, and mins dmin·mn_k, replacing the file's;
    /// when set, `d` and `m` are not read.
    public var sub: UnsafePointer<Float>?
    public var subMin: UnsafePointer<Float>?
    public var subPerBlock: Int

    public init(d: UnsafePointer<Float>? = nil, m: UnsafePointer<Float>? = nil) {
        self.d = d
        self.m = m
        sub = nil
        subMin = nil
        subPerBlock = 0
    }

    public init(sub: UnsafePointer<Float>, subMin: UnsafePointer<Float>?, subPerBlock: Int) {
        self.init()
        self.sub = sub
        self.subMin = subMin
        self.subPerBlock = subPerBlock
    }

    public static var file: BlockScales { BlockScales() }

    /// The overrides for the blocks starting at block index `first`.
    @inlinable public func advanced(by first: Int) -> BlockScales {
        var a = self
        a.d = d.map { $0 + first }
        a.m = m.map { $0 + first }
        a.sub = sub.map { $0 + first * subPerBlock }
        a.subMin = subMin.map { $0 + first * subPerBlock }
        return a
    }

    /// Block b's d: the override, or the half at `offset` of the block.
    @inline(__always) @usableFromInline
    func d(_ b: Int, _ block: UnsafeRawPointer, _ offset: Int) -> Float {
        d?[b] ?? loadHalf(block, offset)
    }

    /// Block b's m (or dmin): the override, or the half at `offset` of the block.
    @inline(__always) @usableFromInline
    func m(_ b: Int, _ block: UnsafeRawPointer, _ offset: Int) -> Float {
        m?[b] ?? loadHalf(block, offset)
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

@inline(__always) @usableFromInline
func loadUInt32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inline(__always) @usableFromInline
func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
}

// MARK: - Entry points by type

/// Dequantizes `count` values of one row (a whole number of blocks) from `src` into `dst`.
/// Plain scalar code: the reference `dequantizeRow` is tested against.
public func dequantizeRowGeneric(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int,
                                 into dst: UnsafeMutablePointer<Float>, scales: BlockScales = .file) {
    guard let t = type.traits else {
        preconditionFailure("dequantizeRowGeneric: \(type) is not supported; check isSupportedForCompute first")
    }
    if scales.sub != nil { return dequantizeRowSubScaled(type, src, count: count, into: dst, scales: scales) }
    t.dequantizeRowGeneric(src, count, dst, scales)
}

/// Dequantizes one row of `count` values (whole blocks) into `dst`; bit-identical to
/// `dequantizeRowGeneric` (each value is computed by the same operations in the same order).
public func dequantizeRow(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int,
                          into dst: UnsafeMutablePointer<Float>, scales: BlockScales = .file) {
    guard let t = type.traits else {
        preconditionFailure("dequantizeRow: \(type) is not supported; check isSupportedForCompute first")
    }
    if scales.sub != nil { return dequantizeRowSubScaled(type, src, count: count, into: dst, scales: scales) }
    t.dequantizeRow(src, count, dst, scales)
}

/// Quantizes `count` floats (a whole number of blocks) into `dst`, bit-identical to gguf-py.
public func quantizeRow(_ type: GGMLType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    guard let q = type.traits?.quantizeRow else {
        preconditionFailure("quantizeRow: quantizing into \(type) is not supported; check canQuantize first")
    }
    q(src, count, dst)
}

/// Reads the per-block scales `d` (and `m`, for formats that have one, when asked) of a row as floats.
public func readBlockScales(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int,
                            d: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>? = nil) {
    guard let fields = type.traits?.scales else { preconditionFailure("readBlockScales: \(type) has no block scales") }
    let stride = type.bytesPerBlock
    for b in 0..<blocks {
        d[b] = loadHalf(src + b * stride, fields.d)
        if let m, let mo = fields.m { m[b] = loadHalf(src + b * stride, mo) }
    }
}

/// Overwrites the per-block scales of a row (rounded to half precision); codes are untouched.
public func writeBlockScales(_ type: GGMLType, _ dst: UnsafeMutableRawPointer, blocks: Int,
                             d: UnsafePointer<Float>, m: UnsafePointer<Float>? = nil) {
    guard let fields = type.traits?.scales else { preconditionFailure("writeBlockScales: \(type) has no block scales") }
    let stride = type.bytesPerBlock
    for b in 0..<blocks {
        storeHalf(dst + b * stride, fields.d, d[b])
        if let m, let mo = fields.m { storeHalf(dst + b * stride, mo, m[b]) }
    }
}

// MARK: - Quantizers of the 32-weight formats (gguf-py's quantize_blocks)

/// A code from an already offset value: truncated toward zero, clamped to 0...maxCode
/// (NaN gives 0), as gguf-py's `trunc(...).astype(uint8).clip(0, maxCode)`.
@inline(__always) func code(_ v: Float, max maxCode: UInt8) -> UInt8 {
    v >= Float(maxCode) ? maxCode : (v > 0 ? UInt8(v) : 0)
}

/// The value of largest magnitude in x[0..<32] (the first one on ties), as numpy's
/// `take_along_axis(x, abs(x).argmax())`.
@inline(__always) func signedAbsMax(_ x: UnsafePointer<Float>) -> Float {
    var amax = abs(x[0])
    var max = x[0]
    for j in 1..<32 where abs(x[j]) > amax {
        amax = abs(x[j])
        max = x[j]
    }
    return max
}

/// Minimum and maximum of x[0..<32]; between equal signed zeros numpy's vectorized
/// min/max pick +0, and so do we.
@inline(__always) func minMax(_ x: UnsafePointer<Float>) -> (Float, Float) {
    var lo = x[0]
    var hi = x[0]
    for j in 1..<32 {
        lo = min(lo, x[j])
        hi = max(hi, x[j])
    }
    if lo == 0 { lo = 0 }
    if hi == 0 { hi = 0 }
    return (lo, hi)
}

extension Q4_0Format: QuantizableFormat {
    /// d = max / −8 with max the value of largest magnitude; code = trunc(x / d + 8.5).
    public static func quantizeBlock(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        let d = signedAbsMax(x) / -8
        let id: Float = d == 0 ? 0 : 1 / d
        storeHalf(block, 0, d)
        for j in 0..<16 {
            let lo = code(x[j] * id + 8.5, max: 15)
            let hi = code(x[j + 16] * id + 8.5, max: 15)
            block.storeBytes(of: lo | (hi << 4), toByteOffset: 2 + j, as: UInt8.self)
        }
    }
}

extension Q4_1Format: QuantizableFormat {
    /// d = (max − min) / 15, m = min; code = trunc((x − min) / d + 0.5).
    public static func quantizeBlock(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        let (lo, hi) = minMax(x)
        let d = (hi - lo) / 15
        let id: Float = d == 0 ? 0 : 1 / d
        storeHalf(block, 0, d)
        storeHalf(block, 2, lo)
        for j in 0..<16 {
            let q0 = code((x[j] - lo) * id + 0.5, max: 15)
            let q1 = code((x[j + 16] - lo) * id + 0.5, max: 15)
            block.storeBytes(of: q0 | (q1 << 4), toByteOffset: 4 + j, as: UInt8.self)
        }
    }
}

/// Packs 32 five-bit codes: low nibbles as Q4_0 at `qs`, fifth bits into the UInt32 at `qh`.
@inline(__always) func storeFiveBitCodes(_ q: UnsafePointer<UInt8>, _ block: UnsafeMutableRawPointer, qh: Int, qs: Int) {
    var high: UInt32 = 0
    for j in 0..<32 { high |= UInt32(q[j] >> 4) << j }
    block.storeBytes(of: high.littleEndian, toByteOffset: qh, as: UInt32.self)
    for j in 0..<16 {
        block.storeBytes(of: (q[j] & 0x0f) | (q[j + 16] << 4), toByteOffset: qs + j, as: UInt8.self)
    }
}

extension Q5_0Format: QuantizableFormat {
    /// d = max / −16 with max the value of largest magnitude; code = trunc(x / d + 16.5).
    public static func quantizeBlock(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        let d = signedAbsMax(x) / -16
        let id: Float = d == 0 ? 0 : 1 / d
        storeHalf(block, 0, d)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { q in
            for j in 0..<32 { q[j] = code(x[j] * id + 16.5, max: 31) }
            storeFiveBitCodes(q.baseAddress!, block, qh: 2, qs: 6)
        }
    }
}

extension Q5_1Format: QuantizableFormat {
    /// d = (max − min) / 31, m = min; code = trunc((x − min) / d + 0.5).
    public static func quantizeBlock(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        let (lo, hi) = minMax(x)
        let d = (hi - lo) / 31
        let id: Float = d == 0 ? 0 : 1 / d
        storeHalf(block, 0, d)
        storeHalf(block, 2, lo)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { q in
            for j in 0..<32 { q[j] = code((x[j] - lo) * id + 0.5, max: 31) }
            storeFiveBitCodes(q.baseAddress!, block, qh: 4, qs: 8)
        }
    }
}

extension Q8_0Format: QuantizableFormat {
    /// d = max |x| / 127; code = round(x / d), halves away from zero.
    public static func quantizeBlock(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = Swift.max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d == 0 ? 0 : 1 / d
        storeHalf(block, 0, d)
        for j in 0..<32 {
            let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
            let c: Int8 = q.isNaN ? 0 : Int8(Swift.max(-128, Swift.min(127, q)))
            block.storeBytes(of: c, toByteOffset: 2 + j, as: Int8.self)
        }
    }
}

// MARK: - F32, F16, BF16 as rows of the table

/// A plain number type: one value per "block", converted to and from float elementwise.
protocol PlainFormat {
    static var type: GGMLType { get }
    static var bytes: Int { get }
    static func toFloat(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>)
    /// Float to this type; F16 and BF16 round to nearest even (BF16 as ggml_compute_fp32_to_bf16).
    static func fromFloat(_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer)
}

enum F32Format: PlainFormat {
    static var type: GGMLType { .f32 }
    static var bytes: Int { 4 }
    static func toFloat(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
    }
    static func fromFloat(_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer) {
        for i in 0..<count { dst.storeBytes(of: src[i], toByteOffset: 4 * i, as: Float.self) }
    }
}

enum F16Format: PlainFormat {
    static var type: GGMLType { .f16 }
    static var bytes: Int { 2 }
    static func toFloat(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dst[i] = loadHalf(src, 2 * i) }
    }
    static func fromFloat(_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer) {
        for i in 0..<count { storeHalf(dst, 2 * i, src[i]) }
    }
}

enum BF16Format: PlainFormat {
    static var type: GGMLType { .bf16 }
    static var bytes: Int { 2 }
    static func toFloat(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dst[i] = bf16ToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
    }
    static func fromFloat(_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer) {
        for i in 0..<count { dst.storeBytes(of: floatToBF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
    }
}
