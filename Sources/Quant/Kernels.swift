// Row kernels of the 32-weight formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): fast
// dequantization and fused dot products, each beside its plain scalar twin
// (`dequantizeBlockGeneric`, `rowDotGeneric`), which tests compare them against. The
// K-quants' kernels are in KQuants.swift; the table that dispatches to all of them in
// BlockFormats.swift.
//
// The fast versions work a block (32 weights) at a time in SIMD8<Float> lanes (one
// AVX2 register): 16 code bytes hold weights 0..15 in their low nibbles and 16..31 in
// their high nibbles, so each 8-byte half, widened once to 8 × Int32, gives weights
// j..<j+8 (low nibbles) and j+16..<j+24 (high nibbles), lined up with x. Offsets
// (Q4_1's m, Q4_0's −8) are folded out of the inner product through the sum of x over
// the block, computed once per input vector. Q5's fifth bits are spread into the lanes
// from the block's 32-bit `qh` by one broadcast and one per-lane shift per 8 weights.
//
// Why SIMD8 and not SIMD16: 8 lanes are one AVX2 register, so a lane-type conversion
// (bytes → Int32, Int32 → Float) is one instruction (vpmovzxbd, vcvtdq2ps); for 16 lanes
// the standard library's conversions compiled to out-of-line generic calls, which made
// these loops about 10× slower. (For 8 lanes we write the conversions ourselves too: see
// the lane helpers.)

import GGUF

// MARK: - Lane helpers

// The standard library's lane-type conversions (`SIMD8<Float>.init(_:)`,
// `init(truncatingIfNeeded:)`) are generic loops over the lanes that the optimizer
// inlines, and LLVM then turns into one instruction (vcvtdq2ps, vpmovzxbd), only when its
// cost model says so: in large kernels it calls them out of line instead, passing the
// vectors through memory, several times slower. The same loops written here in functions
// that are always inlined always become the single instructions.

/// 8 × Int32 converted to 8 × Float (vcvtdq2ps).
@inline(__always) @usableFromInline
func float8(_ v: SIMD8<Int32>) -> SIMD8<Float> {
    var r = SIMD8<Float>()
    for i in 0..<8 { r[i] = Float(v[i]) }
    return r
}

/// Bytes p[0..<8] widened to 8 × Int32, zero-extended (vpmovzxbd).
@inline(__always) @usableFromInline
func widenBytes8(_ p: UnsafeRawPointer) -> SIMD8<Int32> {
    let b = p.loadUnaligned(as: SIMD8<UInt8>.self)
    var r = SIMD8<Int32>()
    for i in 0..<8 { r[i] = Int32(b[i]) }
    return r
}

/// Signed bytes p[0..<8] widened to 8 × Float (vpmovsxbd, vcvtdq2ps).
@inline(__always) @usableFromInline
func signedBytes8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
    let b = p.loadUnaligned(as: SIMD8<Int8>.self)
    var r = SIMD8<Int32>()
    for i in 0..<8 { r[i] = Int32(b[i]) }
    return float8(r)
}

@inline(__always) @usableFromInline
func loadFloats8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) @usableFromInline
func storeFloats8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

@inline(__always) @usableFromInline
func loadFloats16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) @usableFromInline
func storeFloats16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// Sum of the 8 lanes, pairwise (the standard library's `sum()` adds them one by one).
@inline(__always) @usableFromInline
func laneSum(_ v: SIMD8<Float>) -> Float {
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    return q[0] + q[1]
}

// MARK: - Sums of x

/// Sums of `x` over each block of 32: the term that Q4_0's −8, Q4_1's m, Q5_0's −16,
/// Q5_1's m and the K-quants' mins multiply.
public func blockSums(_ x: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Float>) {
    for b in 0..<(count / 32) {
        let xb = x + b * 32
        sums[b] = laneSum((loadFloats8(xb) + loadFloats8(xb + 8)) + (loadFloats8(xb + 16) + loadFloats8(xb + 24)))
    }
}

// MARK: - Q4_0, Q4_1, Q8_0

/// Q4_0 (`BlockQ4_0`): d at 0, codes at 2.
public enum Q4_0Format: BlockFormat {
    public static var type: GGMLType { .q4_0 }
    public static var blockSize: Int { 32 }
    public static var blockBytes: Int { 18 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 0, m: nil) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 0))
        for half in 0..<2 {
            let q = widenBytes8(block + 2 + 8 * half)
            storeFloats8(d * float8((q & 0x0f) &- 8), out + 8 * half)
            storeFloats8(d * float8((q &>> 4) &- 8), out + 16 + 8 * half)
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 0)
        for j in 0..<16 {
            let q = byte(block, 2 + j)
            out[j] = d * Float(Int(q & 0x0f) - 8)
            out[j + 16] = d * Float(Int(q >> 4) - 8)
        }
    }
}

/// Q4_1 (`BlockQ4_1`): d at 0, m at 2, codes at 4.
public enum Q4_1Format: BlockFormat {
    public static var type: GGMLType { .q4_1 }
    public static var blockSize: Int { 32 }
    public static var blockBytes: Int { 20 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 0, m: 2) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 0))
        let m = SIMD8<Float>(repeating: scales.m(b, block, 2))
        for half in 0..<2 {
            let q = widenBytes8(block + 4 + 8 * half)
            storeFloats8(d * float8(q & 0x0f) + m, out + 8 * half)
            storeFloats8(d * float8(q &>> 4) + m, out + 16 + 8 * half)
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 0)
        let m = scales.m(b, block, 2)
        for j in 0..<16 {
            let q = byte(block, 4 + j)
            out[j] = d * Float(q & 0x0f) + m
            out[j + 16] = d * Float(q >> 4) + m
        }
    }
}

/// Q8_0 (`BlockQ8_0`): d at 0, signed codes at 2.
public enum Q8_0Format: BlockFormat {
    public static var type: GGMLType { .q8_0 }
    public static var blockSize: Int { 32 }
    public static var blockBytes: Int { 34 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 0, m: nil) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 0))
        for quarter in 0..<4 {
            storeFloats8(signedBytes8(block + 2 + 8 * quarter) * d, out + 8 * quarter)
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 0)
        for j in 0..<32 { out[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }
}

/// Σ code[i] · x[i] over one Q4_0/Q4_1 block's 32 codes (at `codes`), unscaled, in 8 lanes.
@inline(__always) @usableFromInline
func nibbleDot(_ codes: UnsafeRawPointer, _ xb: UnsafePointer<Float>) -> SIMD8<Float> {
    let q0 = widenBytes8(codes)       // weights 0..<8 (low nibbles), 16..<24 (high)
    let q1 = widenBytes8(codes + 8)   // weights 8..<16, 24..<32
    var s = float8(q0 & 0x0f) * loadFloats8(xb)
    s = s.addingProduct(float8(q1 & 0x0f), loadFloats8(xb + 8))
    s = s.addingProduct(float8(q0 &>> 4), loadFloats8(xb + 16))
    return s.addingProduct(float8(q1 &>> 4), loadFloats8(xb + 24))
}

/// Σ code[i] · x[i] over one Q8_0 block's 32 signed codes, unscaled, in 8 lanes.
@inline(__always) @usableFromInline
func byteDot(_ codes: UnsafeRawPointer, _ xb: UnsafePointer<Float>) -> SIMD8<Float> {
    var s = signedBytes8(codes) * loadFloats8(xb)
    s = s.addingProduct(signedBytes8(codes + 8), loadFloats8(xb + 8))
    s = s.addingProduct(signedBytes8(codes + 16), loadFloats8(xb + 16))
    return s.addingProduct(signedBytes8(codes + 24), loadFloats8(xb + 24))
}

// The dot kernels of the 32-weight formats: the codes' products with x, scaled by d, in
// the lanes; offsets (Q4_0's −8, Q4_1's m) times the block's sum of x in the scalar.
// These keep the summation order the reference-model golden tests were recorded with.

/// Q4_0 on plain x.
public enum Q4_0Dot: BlockDot {
    public typealias Format = Q4_0Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = scales.d(b, block, 0)
        acc = acc.addingProduct(nibbleDot(block + 2, a.x + b * 32), d)
        offset += d * a.sums[b]
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes - 8 * offset }
}

/// Q4_1 on plain x.
public enum Q4_1Dot: BlockDot {
    public typealias Format = Q4_1Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = scales.d(b, block, 0)
        let m = scales.m(b, block, 2)
        acc = acc.addingProduct(nibbleDot(block + 4, a.x + b * 32), d)
        offset += m * a.sums[b]
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes + offset }
}

/// Q8_0.
public enum Q8_0Dot: BlockDot {
    public typealias Format = Q8_0Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        acc = acc.addingProduct(byteDot(block + 2, a.x + b * 32), scales.d(b, block, 0))
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes }
}

// MARK: - Dot products on nibble-ordered activations (the one-token path)
//
// `nibbleDot` widens each 8 code bytes with vpmovzxbd, an instruction only one port of
// the core executes, four times per block; together with the half-precision scale
// conversions that port is the bottleneck (about 11 cycles a block). The kernels
// below load a block's 16 code bytes once into both halves of a register (4 × UInt32
// each) and never shift the nibbles down: masking keeps nibble j of each 32-bit lane
// in place, worth q · 16^j, and int → float conversion is exact for it (4 significant
// bits), so multiplying by x · 16^−j (exact too: a power of two) gives q · x with the
// same rounding as the plain kernel. Per 8 weights that is one mask, one conversion
// and one multiply-add. Lane i of the k-th mask (k = 0..<4) holds weight 4i + k
// (lanes 0..<4) or 16 + 4i + k (lanes 4..<8); `nibbleOrder` reorders and prescales x
// once per matrix to match. Block sums come from the original x.

/// Powers 16^−j by which `nibbleOrder` scales lane groups (j = nibble position 0..<8;
/// the top nibble is shifted down by 4 first, so positions 6 and 7 both use 16^−6).
@usableFromInline let nibbleScales: [Float] = [1, 0x1p-4, 0x1p-8, 0x1p-12, 0x1p-16, 0x1p-20, 0x1p-24, 0x1p-24]

/// Reorders and prescales each block of 32 values of x (count a multiple of 32) for
/// `nibbleDotOrdered`: xp[8k + i] = x[4i + k] / 16^(2k), xp[8k + 4 + i] = x[16 + 4i + k] / 16^(2k+1)
/// (with 16^−6 for the last group, see `nibbleScales`).
public func nibbleOrder(_ x: UnsafePointer<Float>, count: Int, into xp: UnsafeMutablePointer<Float>) {
    for b in 0..<(count / 32) {
        let src = x + b * 32
        let dst = xp + b * 32
        for k in 0..<4 {
            for i in 0..<4 {
                dst[8 * k + i] = src[4 * i + k] * nibbleScales[2 * k]
                dst[8 * k + 4 + i] = src[16 + 4 * i + k] * nibbleScales[2 * k + 1]
            }
        }
    }
}

/// Σ code[i] · x[i] over one Q4 block's 16 code bytes, x from `nibbleOrder`, unscaled.
@inline(__always) @usableFromInline
func nibbleDotOrdered(_ codes: UnsafeRawPointer, _ xp: UnsafePointer<Float>) -> SIMD8<Float> {
    let c = codes.loadUnaligned(as: SIMD4<Int32>.self)
    let v = SIMD8<Int32>(lowHalf: c, highHalf: c)
    @inline(__always) func nibbles(_ mask: SIMD8<Int32>) -> SIMD8<Float> { float8(v & mask) }
    var s = nibbles(SIMD8<Int32>(0xf, 0xf, 0xf, 0xf, 0xf0, 0xf0, 0xf0, 0xf0)) * loadFloats8(xp)
    s = s.addingProduct(nibbles(SIMD8<Int32>(0xf00, 0xf00, 0xf00, 0xf00, 0xf000, 0xf000, 0xf000, 0xf000)), loadFloats8(xp + 8))
    s = s.addingProduct(nibbles(SIMD8<Int32>(0xf_0000, 0xf_0000, 0xf_0000, 0xf_0000, 0xf0_0000, 0xf0_0000, 0xf0_0000, 0xf0_0000)),
                        loadFloats8(xp + 16))
    // The top nibble would make the lane negative: bring it down to position 6 first.
    let top = (v &>> SIMD8<Int32>(0, 0, 0, 0, 4, 4, 4, 4)) & 0x0f00_0000
    return s.addingProduct(float8(top), loadFloats8(xp + 24))
}

/// Both half-precision numbers at `p` (Q4_1's d and m), converted with one instruction.
@inline(__always) @usableFromInline
func loadHalfPair(_ p: UnsafeRawPointer) -> SIMD2<Float> {
    let h = SIMD4<Float16>(lowHalf: p.loadUnaligned(as: SIMD2<Float16>.self), highHalf: SIMD2<Float16>())
    return SIMD4<Float>(h).lowHalf
}

/// Q4_0 on x in `nibbleOrder` (the one-token path); same value as `Q4_0Dot` up to rounding.
public enum Q4_0OrderedDot: BlockDot {
    public typealias Format = Q4_0Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = scales.d(b, block, 0)
        acc = acc.addingProduct(nibbleDotOrdered(block + 2, a.ordered.unsafelyUnwrapped + b * 32), d)
        offset += d * a.sums[b]
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes - 8 * offset }
}

/// Q4_1 on x in `nibbleOrder` (the one-token path); same value as `Q4_1Dot` up to rounding.
public enum Q4_1OrderedDot: BlockDot {
    public typealias Format = Q4_1Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let dm = loadHalfPair(block)
        let d = scales.d?[b] ?? dm[0]
        let m = scales.m?[b] ?? dm[1]
        acc = acc.addingProduct(nibbleDotOrdered(block + 4, a.ordered.unsafelyUnwrapped + b * 32), d)
        offset += m * a.sums[b]
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes + offset }
}

// MARK: - Q5_0, Q5_1

/// The fifth bits of 8 consecutive weights k..<k+8 (k a multiple of 8) of a Q5 block,
/// each moved to bit 4 (worth 16), from the block's 32-bit `qh`.
@inline(__always) @usableFromInline
func fifthBits8(_ qh: UInt32, _ k: Int) -> SIMD8<Int32> {
    // Bit k + i of qh lands at bit 4 + i of the broadcast, then lane i shifts it down to 4.
    let spread = SIMD8<Int32>(repeating: Int32((qh >> UInt32(k)) & 0xff) << 4)
    return (spread &>> SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)) & 0x10
}

/// Σ code[i] · x[i] over one Q5 block's 32 five-bit codes, unscaled, in 8 lanes.
@inline(__always) @usableFromInline
func fiveBitDot(_ qh: UInt32, _ codes: UnsafeRawPointer, _ xb: UnsafePointer<Float>) -> SIMD8<Float> {
    let q0 = widenBytes8(codes)       // weights 0..<8 (low nibbles), 16..<24 (high)
    let q1 = widenBytes8(codes + 8)   // weights 8..<16, 24..<32
    var s = float8((q0 & 0x0f) | fifthBits8(qh, 0)) * loadFloats8(xb)
    s = s.addingProduct(float8((q1 & 0x0f) | fifthBits8(qh, 8)), loadFloats8(xb + 8))
    s = s.addingProduct(float8((q0 &>> 4) | fifthBits8(qh, 16)), loadFloats8(xb + 16))
    return s.addingProduct(float8((q1 &>> 4) | fifthBits8(qh, 24)), loadFloats8(xb + 24))
}

/// Q5_0 (`BlockQ5_0`): d at 0, fifth bits at 2, nibbles at 6; w = d × (code − 16).
public enum Q5_0Format: BlockFormat {
    public static var type: GGMLType { .q5_0 }
    public static var blockSize: Int { 32 }
    public static var blockBytes: Int { 22 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 0, m: nil) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 0))
        let qh = loadUInt32(block, 2)
        for half in 0..<2 {
            let q = widenBytes8(block + 6 + 8 * half)
            storeFloats8(d * float8(((q & 0x0f) | fifthBits8(qh, 8 * half)) &- 16), out + 8 * half)
            storeFloats8(d * float8(((q &>> 4) | fifthBits8(qh, 16 + 8 * half)) &- 16), out + 16 + 8 * half)
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 0)
        let qh = loadUInt32(block, 2)
        for j in 0..<16 {
            let q = byte(block, 6 + j)
            let lo = Int(q & 0x0f) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            out[j] = d * Float(lo - 16)
            out[j + 16] = d * Float(hi - 16)
        }
    }
}

/// Q5_1 (`BlockQ5_1`): d at 0, m at 2, fifth bits at 4, nibbles at 8; w = d × code + m.
public enum Q5_1Format: BlockFormat {
    public static var type: GGMLType { .q5_1 }
    public static var blockSize: Int { 32 }
    public static var blockBytes: Int { 24 }
    public static var scaleFields: ScaleFields? { ScaleFields(d: 0, m: 2) }

    @inline(__always)
    public static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = SIMD8<Float>(repeating: scales.d(b, block, 0))
        let m = SIMD8<Float>(repeating: scales.m(b, block, 2))
        let qh = loadUInt32(block, 4)
        for half in 0..<2 {
            let q = widenBytes8(block + 8 + 8 * half)
            storeFloats8(d * float8((q & 0x0f) | fifthBits8(qh, 8 * half)) + m, out + 8 * half)
            storeFloats8(d * float8((q &>> 4) | fifthBits8(qh, 16 + 8 * half)) + m, out + 16 + 8 * half)
        }
    }

    public static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>) {
        let d = scales.d(b, block, 0)
        let m = scales.m(b, block, 2)
        let qh = loadUInt32(block, 4)
        for j in 0..<16 {
            let q = byte(block, 8 + j)
            let lo = UInt32(q & 0x0f) | ((qh >> UInt32(j)) & 1) << 4
            let hi = UInt32(q >> 4) | ((qh >> UInt32(j + 16)) & 1) << 4
            out[j] = d * Float(lo) + m
            out[j + 16] = d * Float(hi) + m
        }
    }
}

/// Q5_0: Σ code · x scaled by d in the lanes, −16 × d × Σx in the scalar.
public enum Q5_0Dot: BlockDot {
    public typealias Format = Q5_0Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let d = scales.d(b, block, 0)
        acc = acc.addingProduct(fiveBitDot(loadUInt32(block, 2), block + 6, a.x + b * 32), d)
        offset += d * a.sums[b]
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes - 16 * offset }
}

/// Q5_1: Σ code · x scaled by d in the lanes, m × Σx in the scalar.
public enum Q5_1Dot: BlockDot {
    public typealias Format = Q5_1Format
    @inline(__always)
    public static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                                  _ acc: inout SIMD8<Float>, _ offset: inout Float) {
        let dm = loadHalfPair(block)
        let d = scales.d?[b] ?? dm[0]
        let m = scales.m?[b] ?? dm[1]
        acc = acc.addingProduct(fiveBitDot(loadUInt32(block, 4), block + 8, a.x + b * 32), d)
        offset += m * a.sums[b]
    }
    @inline(__always) public static func finish(_ lanes: Float, _ offset: Float) -> Float { lanes + offset }
}

// MARK: - Named entry points (tests and benchmarks call the kernels by name)

/// Q4_0 row · x. `xSums` holds `blockSums(x)`.
public func dotQ4_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                    blocks: Int, scales: BlockScales = .file) -> Float {
    rowDot(Q4_0Dot.self, row, Activations(x: x, sums: xSums), blocks: blocks, scales: scales)
}

/// Q4_1 row · x. `xSums` holds `blockSums(x)`.
public func dotQ4_1(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                    blocks: Int, scales: BlockScales = .file) -> Float {
    rowDot(Q4_1Dot.self, row, Activations(x: x, sums: xSums), blocks: blocks, scales: scales)
}

/// Q4_0 row · x with x in `nibbleOrder` (`xp`); `xSums` holds `blockSums(x)`.
public func dotQ4_0Ordered(_ row: UnsafeRawPointer, _ xp: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                           blocks: Int, scales: BlockScales = .file) -> Float {
    rowDot(Q4_0OrderedDot.self, row, Activations(x: xp, sums: xSums, ordered: xp), blocks: blocks, scales: scales)
}

/// Q4_1 row · x with x in `nibbleOrder` (`xp`); `xSums` holds `blockSums(x)`.
public func dotQ4_1Ordered(_ row: UnsafeRawPointer, _ xp: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                           blocks: Int, scales: BlockScales = .file) -> Float {
    rowDot(Q4_1OrderedDot.self, row, Activations(x: xp, sums: xSums, ordered: xp), blocks: blocks, scales: scales)
}

/// Q8_0 row · x.
public func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                    scales: BlockScales = .file) -> Float {
    rowDot(Q8_0Dot.self, row, Activations(x: x, sums: x), blocks: blocks, scales: scales)
}

/// Scalar twin of every row · x kernel (`cols` values): the row dequantized by the scalar
/// code, block by block, and the products summed in order.
public func dotGeneric(_ type: GGMLType, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, cols: Int,
                       scales: BlockScales = .file) -> Float {
    guard let t = type.traits else { preconditionFailure("dotGeneric: \(type) is not supported") }
    return t.dotGeneric(row, x, cols, scales)
}

/// Float row · x, 8 lanes at a time in two accumulators, with a scalar tail.
@inlinable
public func dotF32(_ a: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int) -> Float {
    var acc0 = SIMD8<Float>()
    var acc1 = SIMD8<Float>()
    var i = 0
    while i + 16 <= count {
        acc0 = acc0.addingProduct(loadFloats8(a + i), loadFloats8(x + i))
        acc1 = acc1.addingProduct(loadFloats8(a + i + 8), loadFloats8(x + i + 8))
        i += 16
    }
    if i + 8 <= count {
        acc0 = acc0.addingProduct(loadFloats8(a + i), loadFloats8(x + i))
        i += 8
    }
    var sum = laneSum(acc0 + acc1)
    while i < count {
        sum += a[i] * x[i]
        i += 1
    }
    return sum
}
