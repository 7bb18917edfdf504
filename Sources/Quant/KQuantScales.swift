// The K-quants' sub-block scales as floats: read them, write them back re-encoded, and
// dequantize through float overrides of them (QZO's sub-block granularity).
//
// A K-quant super-block of 256 weights is made of sub-blocks of 32 (Q4_K, Q5_K: 8 of them)
// or 16 weights (Q2_K, Q3_K, Q6_K: 16). Sub-block k's weights are s_k · q − m_k with the
// effective scale s_k = d · sc_k and, where the format has mins, m_k = dmin · mn_k; sc_k and
// mn_k are small integers packed in the block (reference: ggml-quants.c):
//   Q4_K, Q5_K  eight 6-bit scales and eight 6-bit mins in 12 bytes at 4 (get_scale_min_k4)
//   Q6_K        sixteen int8 scales at 192
//   Q3_K        sixteen 6-bit scales (stored + 32) in 12 bytes at 96
//   Q2_K        sixteen bytes at 0, scale | min << 4 (4 bits each)
//
// Writing back (`writeSubBlockScales`) re-encodes float s_k and m_k the way llama.cpp's
// quantize_row_q*_K_ref encodes the scales it found: d = the largest scale over the format's
// largest integer (Q4_K, Q5_K: 63; Q2_K: 15; mins likewise with dmin), or for the signed
// scales of Q6_K and Q3_K d = −s_max / 128 (−s_max / 32) with s_max the scale of largest
// magnitude; each integer is nearest_int(s_k / d) clamped to the field; d and dmin are
// stored in half precision. The codes are never touched. This is lossy: the file then holds
// s_k' = half(d) · sc_k', whatever the trained s_k were.
//
// Dequantizing with float overrides (`BlockScales.sub`, `.subMin`): each block is first
// dequantized by the format's own kernel with d = 1 and dmin = 0, which gives sc_k · q
// exactly (small integers); q is that times 1 / sc_k rounded to the nearest integer (the
// product alone can miss: 376 × fl(1/47) = 7.9999995), and the weight is s_k · q − m_k, the
// same operations as the format's kernel, so at s_k = d · sc_k it is bit-identical to it. A sub-block whose file
// scale sc_k is 0 has lost its codes: its weights are −m_k whatever s_k is (QZO's ratios
// keep such a scale at 0).

import GGUF

/// The sub-blocks of a K-quant super-block.
public struct SubBlockLayout: Sendable, Equatable {
    /// Sub-blocks per super-block (8 or 16).
    public let count: Int
    /// Weights per sub-block (32 or 16).
    public let size: Int
    /// Whether sub-blocks have mins (m_k = dmin · mn_k).
    public let hasMins: Bool
}

extension GGMLType {
    /// The sub-blocks of a K-quant's super-block; nil for every other type.
    public var subBlocks: SubBlockLayout? {
        switch self {
        case .q4_K, .q5_K: SubBlockLayout(count: 8, size: 32, hasMins: true)
        case .q2_K: SubBlockLayout(count: 16, size: 16, hasMins: true)
        case .q3_K, .q6_K: SubBlockLayout(count: 16, size: 16, hasMins: false)
        default: nil
        }
    }
}

// MARK: - Packing

/// Sub-block k's integer scale and min of the block at `p` (min 0 where there is none).
@inline(__always) func subScale(_ type: GGMLType, _ p: UnsafeRawPointer, _ k: Int) -> (scale: Int32, min: Int32) {
    func b(_ i: Int) -> Int32 { Int32(p.load(fromByteOffset: i, as: UInt8.self)) }
    switch type {
    case .q4_K, .q5_K:
        let q = 4
        if k < 4 { return (b(q + k) & 63, b(q + k + 4) & 63) }
        return ((b(q + k + 4) & 0x0f) | ((b(q + k - 4) >> 6) << 4), (b(q + k + 4) >> 4) | ((b(q + k) >> 6) << 4))
    case .q6_K:
        return (Int32(p.load(fromByteOffset: 192 + k, as: Int8.self)), 0)
    case .q3_K:
        let low = (b(96 + k % 8) >> (4 * Int32(k / 8))) & 0x0f
        let high = (b(96 + 8 + k % 4) >> (2 * Int32(k / 4))) & 3
        return ((low | high << 4) - 32, 0)
    case .q2_K:
        return (b(k) & 0x0f, b(k) >> 4)
    default:
        preconditionFailure("subScale: \(type) has no sub-blocks")
    }
}

/// Packs integer scales and mins (already clamped to their fields) into the block at `p`.
func packSubScales(_ type: GGMLType, _ p: UnsafeMutableRawPointer, scales sc: [Int32], mins mn: [Int32]) {
    func set(_ i: Int, _ v: Int32) { p.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: i, as: UInt8.self) }
    switch type {
    case .q4_K, .q5_K:
        // ggml's layout: bytes 0..<4 scales 0..<4 (+ high bits of 4..<8 in bits 6, 7),
        // bytes 4..<8 mins 0..<4 (likewise), bytes 8..<12 low nibbles of scales | mins 4..<8.
        let q = 4
        for j in 0..<4 {
            set(q + j, (sc[j] & 63) | ((sc[j + 4] >> 4) << 6))
            set(q + j + 4, (mn[j] & 63) | ((mn[j + 4] >> 4) << 6))
            set(q + j + 8, (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4))
        }
    case .q6_K:
        for k in 0..<16 { p.storeBytes(of: Int8(sc[k]), toByteOffset: 192 + k, as: Int8.self) }
    case .q3_K:
        var bytes = [Int32](repeating: 0, count: 12)
        for k in 0..<16 {
            let l = sc[k] + 32
            if k < 8 { bytes[k] = l & 0x0f } else { bytes[k - 8] |= (l & 0x0f) << 4 }
            bytes[8 + k % 4] |= (l >> 4) << (2 * Int32(k / 4))
        }
        for i in 0..<12 { set(96 + i, bytes[i]) }
    case .q2_K:
        for k in 0..<16 { set(k, sc[k] | mn[k] << 4) }
    default:
        preconditionFailure("packSubScales: \(type) has no sub-blocks")
    }
}

// MARK: - Reading and writing

/// The effective sub-block scales s = d · sc_k (and mins m = dmin · mn_k, where the format
/// has them) of `blocks` super-blocks at `src`: `s` and `m` hold blocks × count floats,
/// block by block. Computed with the kernels' operations (half d widened, times the integer).
public func readSubBlockScales(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int,
                               s: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>?) {
    guard let layout = type.subBlocks, let fields = type.traits?.scales else {
        preconditionFailure("readSubBlockScales: \(type) has no sub-blocks")
    }
    let n = layout.count
    for b in 0..<blocks {
        let block = src + b * type.bytesPerBlock
        let d = loadHalf(block, fields.d)
        let dmin = fields.m.map { loadHalf(block, $0) } ?? 0
        for k in 0..<n {
            let (sc, mn) = subScale(type, block, k)
            s[b * n + k] = d * Float(sc)
            if let m, layout.hasMins { m[b * n + k] = dmin * Float(mn) }
        }
    }
}

/// Re-encodes float sub-block scales `s` (and mins `m`) into the d, dmin and integer scales
/// and mins of `blocks` super-blocks at `dst`, as llama.cpp's quantize_row_q*_K_ref encodes
/// scales (see the file's header); the codes are left as they are.
public func writeSubBlockScales(_ type: GGMLType, _ dst: UnsafeMutableRawPointer, blocks: Int,
                                s: UnsafePointer<Float>, m: UnsafePointer<Float>?) {
    guard let layout = type.subBlocks, let fields = type.traits?.scales else {
        preconditionFailure("writeSubBlockScales: \(type) has no sub-blocks")
    }
    let n = layout.count
    for b in 0..<blocks {
        let block = dst + b * type.bytesPerBlock
        let (d, sc) = encodeScales(type, s + b * n, n)
        var mn = [Int32](repeating: 0, count: n)
        storeHalf(block, fields.d, d)
        if let mo = fields.m {
            var dmin: Float = 0
            if let m, layout.hasMins { (dmin, mn) = encodeUnsigned(m + b * n, n, top: type == .q2_K ? 15 : 63) }
            storeHalf(block, mo, dmin)
        }
        packSubScales(type, block, scales: sc, mins: mn)
    }
}

/// What `writeSubBlockScales` stores, read back: s and m replaced by the effective scales
/// and mins the re-encoded file holds.
public func roundSubBlockScales(_ type: GGMLType, blocks: Int, s: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>?) {
    let bytes = UnsafeMutableRawPointer.allocate(byteCount: type.bytesPerBlock, alignment: 16)
    defer { bytes.deallocate() }
    let n = type.subBlocks!.count
    for b in 0..<blocks {
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: type.bytesPerBlock)
        writeSubBlockScales(type, bytes, blocks: 1, s: s + b * n, m: m.map { UnsafePointer($0 + b * n) })
        readSubBlockScales(type, bytes, blocks: 1, s: s + b * n, m: m.map { $0 + b * n })
    }
}

/// The half-precision d and integer scales of one block's float scales.
func encodeScales(_ type: GGMLType, _ s: UnsafePointer<Float>, _ n: Int) -> (Float, [Int32]) {
    switch type {
    case .q6_K, .q3_K:
        // Signed scales: the one of largest magnitude maps to −128 (Q6_K) or −32 (Q3_K).
        let low: Float = type == .q6_K ? -128 : -32, high: Int32 = type == .q6_K ? 127 : 31
        var smax: Float = 0
        for k in 0..<n where abs(s[k]) > abs(smax) { smax = s[k] }
        guard smax != 0 else { return (0, [Int32](repeating: 0, count: n)) }
        let iscale = low / smax
        let sc = (0..<n).map { k in max(Int32(low), min(high, Int32(nearestInt(iscale * s[k])))) }
        return (1 / iscale, sc)
    default:
        return encodeUnsigned(s, n, top: type == .q2_K ? 15 : 63)
    }
}

/// Unsigned fields (Q4_K, Q5_K: 6 bits; Q2_K: 4): d = max / top, sc_k = nearest_int(top / max · s_k).
/// A block whose values are all ≤ 0 encodes as zeros (QZO's ratios keep them ≥ 0).
func encodeUnsigned(_ s: UnsafePointer<Float>, _ n: Int, top: Float) -> (Float, [Int32]) {
    var smax: Float = 0
    for k in 0..<n where s[k] > smax { smax = s[k] }
    let inv = smax > 0 ? top / smax : 0
    let sc = (0..<n).map { k in max(0, min(Int32(top), Int32(nearestInt(inv * s[k])))) }
    return (smax / top, sc)
}

// MARK: - Dequantizing through float sub-block scales

/// Dequantizes `count` values (whole super-blocks) of one row through `scales.sub` (and
/// `scales.subMin`): weight = s_k · q − m_k (see the file's header).
public func dequantizeRowSubScaled(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>,
                                   scales: BlockScales) {
    guard let layout = type.subBlocks, let traits = type.traits, let sub = scales.sub else {
        preconditionFailure("dequantizeRowSubScaled: \(type) with no sub-block scales")
    }
    precondition(scales.subPerBlock == layout.count, "dequantizeRowSubScaled: \(scales.subPerBlock) scales per block for \(type)")
    var unit: (d: Float, m: Float) = (1, 0)
    withUnsafePointer(to: &unit.d) { one in
        withUnsafePointer(to: &unit.m) { zero in
            let integer = BlockScales(d: one, m: zero)
            let n = layout.count, size = layout.size
            for b in 0..<(count / 256) {
                let block = src + b * type.bytesPerBlock
                let out = dst + 256 * b
                traits.dequantizeRow(block, 256, out, integer)   // sc_k · q
                for k in 0..<n {
                    let sc = subScale(type, block, k).scale
                    let inv = SIMD8<Float>(repeating: sc == 0 ? 0 : 1 / Float(sc))
                    let s = SIMD8<Float>(repeating: sub[b * n + k])
                    let y = out + size * k
                    if layout.hasMins, let mins = scales.subMin {
                        let m = SIMD8<Float>(repeating: mins[b * n + k])
                        for i in stride(from: 0, to: size, by: 8) {
                            let q = (UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self) * inv).rounded(.toNearestOrEven)
                            UnsafeMutableRawPointer(y + i).storeBytes(of: s * q - m, as: SIMD8<Float>.self)
                        }
                    } else {
                        for i in stride(from: 0, to: size, by: 8) {
                            let q = (UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self) * inv).rounded(.toNearestOrEven)
                            UnsafeMutableRawPointer(y + i).storeBytes(of: s * q, as: SIMD8<Float>.self)
                        }
                    }
                }
            }
        }
    }
}

/// The tile dequantizer for a matrix with sub-block overrides: rows `range` into dst.
func dequantizeRowsSubScaled(_ w: WeightMatrix, _ range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
    let blocks = w.blocksPerRow, rowBytes = w.rowBytes
    for (i, r) in range.enumerated() {
        dequantizeRowSubScaled(w.type, w.data + r * rowBytes, count: w.cols, into: dst + i * w.cols,
                               scales: w.scales.advanced(by: r * blocks))
    }
}

/// The one-token kernel for a matrix with sub-block overrides: each row dequantized, then a
/// float dot product (used by generation and short evaluations with a sub-block adapter).
func dotsSubScaled(_ w: WeightMatrix, _ range: Range<Int>, _ a: Activations, _ y: UnsafeMutablePointer<Float>) {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: w.cols) { row in
        for r in range {
            dequantizeRowSubScaled(w.type, w.data + r * w.rowBytes, count: w.cols, into: row.baseAddress!,
                                   scales: w.scales.advanced(by: r * w.blocksPerRow))
            y[r] = dotF32(row.baseAddress!, a.x, count: w.cols)
        }
    }
}
