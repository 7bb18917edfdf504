// Kernels of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): 256-weight super-blocks whose
// sub-blocks of 16 or 32 weights have small integer scales (and mins) relative to the
// super-block's half-precision d (and dmin). Reference: ggml-quants.c's dequantize_row_q*_K,
// which gguf-py's quants.py restates; the scalar `dequantizeBlockGeneric`s follow gguf-py's
// order of operations (sub-block scale = d × scale, then scale × code − dmin × min).
//
// The fast versions work 8 weights at a time in SIMD8 lanes, as the 32-weight kernels do
// (see Kernels.swift for why 8 and not 16): 8 code bytes widened to 8 × Int32, the code
// bits masked or shifted into place, converted, multiplied. Dequantization computes each
// value with the same operations as the scalar code, so it is bit-identical. The dot
// products sum q × x per sub-block in 8 lanes, then scale the sub-block's sum by d × scale;
// the mins' term (dmin × Σ_j min_j × Σ_{i in j} x_i) comes from the sums of x per 32 values
// (Q4_K, Q5_K) or is summed alongside (Q2_K, sub-blocks of 16).
//
// `BlockScales` overrides apply per super-block: `d` replaces its d, `m` its dmin.

import GGUF

// MARK: - Scale unpacking

/// The 8 bytes of two UInt32 (low bytes first) widened to 8 × Int32: each word broadcast
/// to four lanes and shifted by 0, 8, 16, 24 bits (widening a register's bytes lane by
/// lane would compile to byte extracts).
@inline(__always) @usableFromInline
func widenWords(_ lo: UInt32, _ hi: UInt32) -> SIMD8<Int32> {
    let v = SIMD8<UInt32>(lo, lo, lo, lo, hi, hi, hi, hi) &>> SIMD8<UInt32>(0, 8, 16, 24, 0, 8, 16, 24)
    return unsafeBitCast(v & 0xff, to: SIMD8<Int32>.self)
}

/// Q4_K/Q5_K's eight 6-bit scales and mins from their 12 packed bytes at `p`, 6 bits a lane
/// (ggml's utmp trick: three 32-bit words masked and shifted, four sub-blocks at a time).
@inline(__always) @usableFromInline
func scalesAndMinsK4(_ p: UnsafeRawPointer) -> (scales: SIMD8<Int32>, mins: SIMD8<Int32>) {
    let a = loadUInt32(p, 0), b = loadUInt32(p, 4), c = loadUInt32(p, 8)
    let scales = widenWords(a & 0x3f3f_3f3f, (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030))
    let mins = widenWords(b & 0x3f3f_3f3f, ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030))
    return (scales, mins)
}

/// Scalar twin: sub-block j's scale and min (ggml's get_scale_min_k4).
@inline(__always) func scaleMinK4(_ j: Int, _ p: UnsafeRawPointer) -> (scale: UInt8, min: UInt8) {
    if j < 4 { return (byte(p, j) & 63, byte(p, j + 4) & 63) }
    return ((byte(p, j + 4) & 0x0f) | ((byte(p, j - 4) >> 6) << 4), (byte(p, j + 4) >> 4) | ((byte(p, j) >> 6) << 4))
}

/// Q3_K's sixteen 6-bit scales from their 12 packed bytes at `p`, minus 32 (signed), as
/// lanes 0..<8 and 8..<16 (ggml's aux trick).
@inline(__always) @usableFromInline
func scalesQ3K(_ p: UnsafeRawPointer) -> (SIMD8<Int32>, SIMD8<Int32>) {
    let a0 = loadUInt32(p, 0), a1 = loadUInt32(p, 4), t = loadUInt32(p, 8)
    let low: UInt32 = 0x0f0f_0f0f, two: UInt32 = 0x0303_0303
    let s0 = widenWords((a0 & low) | ((t & two) << 4), (a1 & low) | (((t >> 2) & two) << 4))
    let s1 = widenWords(((a0 >> 4) & low) | (((t >> 4) & two) << 4), ((a1 >> 4) & low) | (((t >> 6) & two) << 4))
    return (s0 &- 32, s1 &- 32)
}

/// Scalar twin: Q3_K's scale j, minus 32. Low 4 bits: nibble j / 8 of byte j % 8; high 2
/// bits: bits 2(j / 4)…+1 of byte 8 + j % 4.
@inline(__always) func scaleQ3K(_ j: Int, _ p: UnsafeRawPointer) -> Int {
    let low = (byte(p, j % 8) >> (4 * UInt8(j / 8))) & 0x0f
    let high = (byte(p, 8 + j % 4) >> (2 * UInt8(j / 4))) & 3
    return Int(low | high << 4) - 32
}

// MARK: - Q4_K and Q5_K

/// What Q4_K and Q5_K share: 8 sub-blocks of 32 weights, scale and min of each packed in
/// 12 bytes at offset 4 (`scalesAndMinsK4`), w = d × scale × code − dmin × min; weight
/// 64c + 32s + l (sub-block 2c + s) has its low 4 bits in nibble s of byte 32c + l of the
/// nibbles. Q5_K adds a fifth bit per weight. The dequantizers and dot products of both
/// are the generic loops below, over these few members.
public protocol K4Format: BlockFormat {
    /// Offset of the 128 nibble bytes in a block.
    static var nibbleOffset: Int { get }
    /// The fifth bits of weights 8g..<8g+8 of sub-blocks 2c (first) and 2c + 1 (second),
    /// at bit 4 (zero for Q4_K).
    static func fifthBits8(_ block: UnsafeRawPointer, c: Int, g: Int) -> (SIMD8<Int32>, SIMD8<Int32>)
    /// Scalar twin: weight l's fifth bit of sub-block j, at bit 4.
    static func fifthBit(_ block: UnsafeRawPointer, j: Int, l: Int) -> UInt8
}

extension K4Format {
    public static var scaleFields: ScaleFields? { ScaleFields(d: 0, m: 2) }

    /// The codes of weights 8g..<8g+8 of sub-blocks 2c and 2c + 1.
    @inline(__always)
    static func codes8(_ block: UnsafeRawPointer, c: Int, g: Int) -> (SIMD8<Int32>, SIMD8<Int32>) {
        let q = widenBytes8(block + nibbleOffset + 32 * c + 8 * g)
        let (h0, h1) = fifthBits8(block, c: c, g: g)
        return ((q & 0x0f) | h0, (q &>> 4) | h1)
    }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let (sc, mn) = scalesAndMinsK4(block + 4)
        let dl = SIMD8<Float>(repeating: scales.d(b, block, 0)) * float8(sc)
        let ml = SIMD8<Float>(repeating: scales.m(b, block, 2)) * float8(mn)
        for c in 0..<4 {
            let d0 = SIMD8<Float>(repeating: dl[2 * c]), d1 = SIMD8<Float>(repeating: dl[2 * c + 1])
            let m0 = SIMD8<Float>(repeating: ml[2 * c]), m1 = SIMD8<Float>(repeating: ml[2 * c + 1])
            for g in 0..<4 {
                let (lo, hi) = codes8(block, c: c, g: g)
                storeFloats8(d0 * float8(lo) - m0, out + 64 * c + 8 * g)
                storeFloats8(d1 * float8(hi) - m1, out + 64 * c + 32 + 8 * g)
            }
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 0), dmin = scales.m(b, block, 2)
        for j in 0..<8 {
            let (sc, m) = scaleMinK4(j, block + 4)
            let d1 = d * Float(sc), m1 = dmin * Float(m)
            let shift = UInt8(4 * (j % 2))
            for l in 0..<32 {
                let low = (byte(block, nibbleOffset + 32 * (j / 2) + l) >> shift) & 0x0f
                out[32 * j + l] = d1 * Float(low | fifthBit(block, j: j, l: l)) - m1
            }
        }
    }
}

/// Q4_K (`BlockQ4_K`): d at 0, dmin at 2, packed scales at 4, nibbles at 16.
public enum Q4_KFormat: K4Format {
    public static var type: GGMLType { .q4_K }
    public static var blockSize: Int { 256 }
    public static var blockBytes: Int { 144 }
    public static var nibbleOffset: Int { 16 }
    @inline(__always)
    public static func fifthBits8(_ block: UnsafeRawPointer, c: Int, g: Int) -> (SIMD8<Int32>, SIMD8<Int32>) { (.zero, .zero) }
    @inline(__always) public static func fifthBit(_ block: UnsafeRawPointer, j: Int, l: Int) -> UInt8 { 0 }
}

/// Q5_K (`BlockQ5_K`): d at 0, dmin at 2, packed scales at 4, fifth bits at 16 (bit j of
/// byte l: weight l of sub-block j), nibbles at 48.
public enum Q5_KFormat: K4Format {
    public static var type: GGMLType { .q5_K }
    public static var blockSize: Int { 256 }
    public static var blockBytes: Int { 176 }
    public static var nibbleOffset: Int { 48 }
    @inline(__always)
    public static func fifthBits8(_ block: UnsafeRawPointer, c: Int, g: Int) -> (SIMD8<Int32>, SIMD8<Int32>) {
        let h = widenBytes8(block + 16 + 8 * g)
        return (((h &>> Int32(2 * c)) & 1) &<< 4, ((h &>> Int32(2 * c + 1)) & 1) &<< 4)
    }
    @inline(__always) public static func fifthBit(_ block: UnsafeRawPointer, j: Int, l: Int) -> UInt8 {
        ((byte(block, 16 + l) >> UInt8(j)) & 1) << 4
    }
}

/// Q4_K or Q5_K · x: per pair of sub-blocks (32 code bytes), the low and the high codes'
/// products in two sums, each scaled by its sub-block's d × scale; the mins' term from the
/// sums of x per 32.
public enum K4Dot<F: K4Format>: BlockDot {
    public typealias Format = F
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let (sc, mn) = scalesAndMinsK4(block + 4)
        let dl = SIMD8<Float>(repeating: scales.d(b, block, 0)) * float8(sc)
        offset += scales.m(b, block, 2) * laneSum(float8(mn) * loadFloats8(a.sums + 8 * b))
        let x = a.x + 256 * b
        for c in 0..<4 {
            let xc = x + 64 * c
            var (lo0, hi0) = codes(block, c, 0)
            var lo = float8(lo0) * loadFloats8(xc)
            var hi = float8(hi0) * loadFloats8(xc + 32)
            for g in 1..<4 {
                (lo0, hi0) = codes(block, c, g)
                lo = lo.addingProduct(float8(lo0), loadFloats8(xc + 8 * g))
                hi = hi.addingProduct(float8(hi0), loadFloats8(xc + 32 + 8 * g))
            }
            acc = acc.addingProduct(lo, dl[2 * c])
            acc = acc.addingProduct(hi, dl[2 * c + 1])
        }
    }
    @inline(__always) static func codes(_ block: UnsafeRawPointer, _ c: Int, _ g: Int) -> (SIMD8<Int32>, SIMD8<Int32>) {
        F.codes8(block, c: c, g: g)
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes - offset }
}

/// Q4_K's float one-token kernel.
public typealias Q4_KDot = K4Dot<Q4_KFormat>
/// Q5_K's float one-token kernel.
public typealias Q5_KDot = K4Dot<Q5_KFormat>

// MARK: - Q6_K

/// The four 6-bit codes (minus 32) at position l..<l+8 of each quarter of a Q6_K half:
/// weights l, 32 + l, 64 + l, 96 + l of the half whose low bits are at `ql`, high at `qh`.
@inline(__always) @usableFromInline
func codesQ6K(_ ql: UnsafeRawPointer, _ qh: UnsafeRawPointer, _ l: Int)
    -> (SIMD8<Int32>, SIMD8<Int32>, SIMD8<Int32>, SIMD8<Int32>) {
    let a = widenBytes8(ql + l), b = widenBytes8(ql + 32 + l), h = widenBytes8(qh + l)
    let q1 = (a & 0x0f) | ((h &<< 4) & 0x30)
    let q2 = (b & 0x0f) | ((h &<< 2) & 0x30)
    let q3 = (a &>> 4) | (h & 0x30)
    let q4 = (b &>> 4) | ((h &>> 2) & 0x30)
    return (q1 &- 32, q2 &- 32, q3 &- 32, q4 &- 32)
}

/// Q6_K (`BlockQ6_K`): low nibbles at 0, high 2-bit pairs at 128, int8 scales at 192, d at 208.
public enum Q6_KFormat: BlockFormat {
    public static var type: GGMLType { .q6_K }
    public static var blockSize: Int { 256 }
    public static var blockBytes: Int { 210 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 208, m: nil) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 208))
        for h in 0..<2 {
            let dl = d * signedBytes8(block + 192 + 8 * h)   // d × scale of sub-blocks 8h..<8h+8
            let y = out + 128 * h
            for g in 0..<4 {
                let (q1, q2, q3, q4) = codesQ6K(block + 64 * h, block + 128 + 32 * h, 8 * g)
                // Weight 32k + 8g + i of the half is in its sub-block 2k + g / 2.
                storeFloats8(SIMD8<Float>(repeating: dl[g / 2]) * float8(q1), y + 8 * g)
                storeFloats8(SIMD8<Float>(repeating: dl[2 + g / 2]) * float8(q2), y + 32 + 8 * g)
                storeFloats8(SIMD8<Float>(repeating: dl[4 + g / 2]) * float8(q3), y + 64 + 8 * g)
                storeFloats8(SIMD8<Float>(repeating: dl[6 + g / 2]) * float8(q4), y + 96 + 8 * g)
            }
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 208)
        for h in 0..<2 {
            let ql = 64 * h, qh = 128 + 32 * h, sc = 192 + 8 * h
            let y = out + 128 * h
            for l in 0..<32 {
                let s = l / 16
                let high = byte(block, qh + l)
                let q1 = Int((byte(block, ql + l) & 0x0f) | (high & 3) << 4) - 32
                let q2 = Int((byte(block, ql + l + 32) & 0x0f) | ((high >> 2) & 3) << 4) - 32
                let q3 = Int((byte(block, ql + l) >> 4) | ((high >> 4) & 3) << 4) - 32
                let q4 = Int((byte(block, ql + l + 32) >> 4) | ((high >> 6) & 3) << 4) - 32
                func scale(_ k: Int) -> Float { d * Float(block.load(fromByteOffset: sc + s + 2 * k, as: Int8.self)) }
                y[l] = scale(0) * Float(q1)
                y[l + 32] = scale(1) * Float(q2)
                y[l + 64] = scale(2) * Float(q3)
                y[l + 96] = scale(3) * Float(q4)
            }
        }
    }
}

/// Q6_K · x: per half and pair of 8-lane groups, the four sub-blocks' sums, each scaled.
public enum Q6_KDot: BlockDot {
    public typealias Format = Q6_KFormat
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 208))
        for h in 0..<2 {
            let dl = d * signedBytes8(block + 192 + 8 * h)
            let x = a.x + 256 * b + 128 * h
            for pair in 0..<2 {
                var s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>(), s4 = SIMD8<Float>()
                for g in (2 * pair)..<(2 * pair + 2) {
                    let (q1, q2, q3, q4) = codesQ6K(block + 64 * h, block + 128 + 32 * h, 8 * g)
                    s1 = s1.addingProduct(float8(q1), loadFloats8(x + 8 * g))
                    s2 = s2.addingProduct(float8(q2), loadFloats8(x + 32 + 8 * g))
                    s3 = s3.addingProduct(float8(q3), loadFloats8(x + 64 + 8 * g))
                    s4 = s4.addingProduct(float8(q4), loadFloats8(x + 96 + 8 * g))
                }
                acc = acc.addingProduct(s1, dl[pair])
                acc = acc.addingProduct(s2, dl[2 + pair])
                acc = acc.addingProduct(s3, dl[4 + pair])
                acc = acc.addingProduct(s4, dl[6 + pair])
            }
        }
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes }
}

// MARK: - Q3_K

/// 8 signed 3-bit codes of Q3_K: weights 128h + 32s + l ..< +8 (l a multiple of 8).
@inline(__always) @usableFromInline
func codesQ3K(_ block: UnsafeRawPointer, h: Int, s: Int, l: Int) -> SIMD8<Int32> {
    let low = (widenBytes8(block + 32 + 32 * h + l) &>> Int32(2 * s)) & 3
    let mask = widenBytes8(block + l)
    // Minus 4 where the weight's bit of hmask is clear.
    let clear = ((mask &>> Int32(4 * h + s)) & 1) ^ 1
    return low &- (clear &<< 2)
}

/// Q3_K (`BlockQ3_K`): high-bit mask at 0, 2-bit pairs at 32, packed scales at 96, d at 108.
public enum Q3_KFormat: BlockFormat {
    public static var type: GGMLType { .q3_K }
    public static var blockSize: Int { 256 }
    public static var blockBytes: Int { 110 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 108, m: nil) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 108))
        let (s0, s1) = scalesQ3K(block + 96)
        let dls = (d * float8(s0), d * float8(s1))
        for h in 0..<2 {
            let dl = h == 0 ? dls.0 : dls.1
            for s in 0..<4 {
                for g in 0..<4 {
                    // Weight 32s + 8g + i of half h is in sub-block 8h + 2s + g / 2.
                    storeFloats8(SIMD8<Float>(repeating: dl[2 * s + g / 2]) * float8(codesQ3K(block, h: h, s: s, l: 8 * g)),
                                 out + 128 * h + 32 * s + 8 * g)
                }
            }
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 108)
        for h in 0..<2 {
            for s in 0..<4 {
                for l in 0..<32 {
                    let dl = d * Float(scaleQ3K(8 * h + 2 * s + l / 16, block + 96))
                    let low = Int((byte(block, 32 + 32 * h + l) >> UInt8(2 * s)) & 3)
                    let set = (byte(block, l) >> UInt8(4 * h + s)) & 1 == 1
                    out[128 * h + 32 * s + l] = dl * Float(low - (set ? 0 : 4))
                }
            }
        }
    }
}

/// Q3_K · x: per sub-block of 16, the signed codes' products summed, then scaled.
public enum Q3_KDot: BlockDot {
    public typealias Format = Q3_KFormat
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 108))
        let (s0, s1) = scalesQ3K(block + 96)
        let dls = (d * float8(s0), d * float8(s1))
        let x = a.x + 256 * b
        for h in 0..<2 {
            let dl = h == 0 ? dls.0 : dls.1
            for s in 0..<4 {
                let xs = x + 128 * h + 32 * s
                var t0 = float8(codesQ3K(block, h: h, s: s, l: 0)) * loadFloats8(xs)
                t0 = t0.addingProduct(float8(codesQ3K(block, h: h, s: s, l: 8)), loadFloats8(xs + 8))
                var t1 = float8(codesQ3K(block, h: h, s: s, l: 16)) * loadFloats8(xs + 16)
                t1 = t1.addingProduct(float8(codesQ3K(block, h: h, s: s, l: 24)), loadFloats8(xs + 24))
                acc = acc.addingProduct(t0, dl[2 * s])
                acc = acc.addingProduct(t1, dl[2 * s + 1])
            }
        }
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes }
}

// MARK: - Q2_K

/// Q2_K (`BlockQ2_K`): scale/min bytes at 0, 2-bit codes at 16, d at 80, dmin at 82.
public enum Q2_KFormat: BlockFormat {
    public static var type: GGMLType { .q2_K }
    public static var blockSize: Int { 256 }
    public static var blockBytes: Int { 84 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 80, m: 82) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 80)), dmin = SIMD8<Float>(repeating: scales.m(b, block, 82))
        for h in 0..<2 {
            let sm = widenBytes8(block + 8 * h)       // sub-blocks 8h..<8h+8: scale | min << 4
            let dl = d * float8(sm & 0x0f), ml = dmin * float8(sm &>> 4)
            for s in 0..<4 {
                for g in 0..<4 {
                    let q = (widenBytes8(block + 16 + 32 * h + 8 * g) &>> Int32(2 * s)) & 3
                    let j = 2 * s + g / 2
                    storeFloats8(SIMD8<Float>(repeating: dl[j]) * float8(q) - SIMD8<Float>(repeating: ml[j]),
                                 out + 128 * h + 32 * s + 8 * g)
                }
            }
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 80), dmin = scales.m(b, block, 82)
        for h in 0..<2 {
            for s in 0..<4 {
                for l in 0..<32 {
                    let sm = byte(block, 8 * h + 2 * s + l / 16)
                    let dl = d * Float(sm & 0x0f), ml = dmin * Float(sm >> 4)
                    let q = (byte(block, 16 + 32 * h + l) >> UInt8(2 * s)) & 3
                    out[128 * h + 32 * s + l] = dl * Float(q) - ml
                }
            }
        }
    }
}

/// Q2_K · x: per sub-block of 16, Σ code × x scaled by d × scale in the lanes and Σ x scaled
/// by the min in a second 8 lanes, times dmin at the end.
public enum Q2_KDot: BlockDot {
    public typealias Format = Q2_KFormat
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 80))
        let x = a.x + 256 * b
        var mins = SIMD8<Float>()
        for h in 0..<2 {
            let sm = widenBytes8(block + 8 * h)
            let dl = d * float8(sm & 0x0f), m = float8(sm &>> 4)
            for s in 0..<4 {
                for pair in 0..<2 {
                    let l = 16 * pair
                    let q0 = (widenBytes8(block + 16 + 32 * h + l) &>> Int32(2 * s)) & 3
                    let q1 = (widenBytes8(block + 16 + 32 * h + l + 8) &>> Int32(2 * s)) & 3
                    let x0 = loadFloats8(x + 128 * h + 32 * s + l), x1 = loadFloats8(x + 128 * h + 32 * s + l + 8)
                    let t = (float8(q0) * x0).addingProduct(float8(q1), x1)
                    acc = acc.addingProduct(t, dl[2 * s + pair])
                    mins = mins.addingProduct(x0 + x1, m[2 * s + pair])
                }
            }
        }
        offset += scales.m(b, block, 82) * laneSum(mins)
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes - offset }
}
