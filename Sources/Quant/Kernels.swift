// Row kernels: fast dequantization and fused dot products for Q4_0, Q4_1 and Q8_0,
// each beside its plain scalar twin (`…Generic`), which tests compare them against.
//
// The fast versions work a block (32 weights) at a time in SIMD8<Float> lanes (one
// AVX2 register): 16 code bytes hold weights 0..15 in their low nibbles and 16..31 in
// their high nibbles, so each 8-byte half, widened once to 8 × Int32, gives weights
// j..<j+8 (low nibbles) and j+16..<j+24 (high nibbles), lined up with x. Offsets
// (Q4_1's m, Q4_0's −8) are folded out of the inner product through the sum of x over
// the block, computed once per input vector.
//
// Why SIMD8 and not SIMD16: the standard library's lane-type conversions
// (`init(truncatingIfNeeded:)`, Int32 → Float) are inlined into single instructions
// (vpmovzxbd, vcvtdq2ps) for 8 lanes, but compile to out-of-line generic calls for 16
// lanes, which made these loops about 10× slower.

import GGUF

// MARK: - Lane helpers

/// Bytes p[0..<8] widened to 8 × Int32 (zero-extended).
@inline(__always) @usableFromInline
func widenBytes8(_ p: UnsafeRawPointer) -> SIMD8<Int32> {
    SIMD8<Int32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD8<UInt8>.self))
}

/// Signed bytes p[0..<8] widened to 8 × Float.
@inline(__always) @usableFromInline
func signedBytes8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
    SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD8<Int8>.self)))
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

// MARK: - Dequantization

/// Dequantizes one row of `count` values (whole blocks) into `dst`; bit-identical to
/// `dequantizeRowGeneric` (each value is one multiply and at most one add, in the same order).
public func dequantizeRow(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int,
                          into dst: UnsafeMutablePointer<Float>, scales: BlockScales = .file) {
    let blocks = count / 32
    switch type {
    case .q4_0:
        for b in 0..<blocks {
            let block = src + b * 18
            let d = SIMD8<Float>(repeating: scales.d?[b] ?? loadHalf(block, 0))
            let out = dst + b * 32
            for half in 0..<2 {
                let q = widenBytes8(block + 2 + 8 * half)
                storeFloats8(d * SIMD8<Float>((q & 0x0f) &- 8), out + 8 * half)
                storeFloats8(d * SIMD8<Float>((q &>> 4) &- 8), out + 16 + 8 * half)
            }
        }
    case .q4_1:
        for b in 0..<blocks {
            let block = src + b * 20
            let d = SIMD8<Float>(repeating: scales.d?[b] ?? loadHalf(block, 0))
            let m = SIMD8<Float>(repeating: scales.m?[b] ?? loadHalf(block, 2))
            let out = dst + b * 32
            for half in 0..<2 {
                let q = widenBytes8(block + 4 + 8 * half)
                storeFloats8(d * SIMD8<Float>(q & 0x0f) + m, out + 8 * half)
                storeFloats8(d * SIMD8<Float>(q &>> 4) + m, out + 16 + 8 * half)
            }
        }
    case .q8_0:
        for b in 0..<blocks {
            let block = src + b * 34
            let d = SIMD8<Float>(repeating: scales.d?[b] ?? loadHalf(block, 0))
            let out = dst + b * 32
            for quarter in 0..<4 {
                storeFloats8(signedBytes8(block + 2 + 8 * quarter) * d, out + 8 * quarter)
            }
        }
    default:
        dequantizeRowGeneric(type, src, count: count, into: dst, scales: scales)
    }
}

// MARK: - Dot products of a quantized row with a float vector

/// Sums of `x` over each block of 32: the term that Q4_0's −8 and Q4_1's m multiply.
public func blockSums(_ x: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Float>) {
    for b in 0..<(count / 32) {
        let xb = x + b * 32
        sums[b] = laneSum((loadFloats8(xb) + loadFloats8(xb + 8)) + (loadFloats8(xb + 16) + loadFloats8(xb + 24)))
    }
}

/// Σ code[i] · x[i] over one Q4_0/Q4_1 block's 32 codes (at `codes`), unscaled, in 8 lanes.
@inline(__always) @usableFromInline
func nibbleDot(_ codes: UnsafeRawPointer, _ xb: UnsafePointer<Float>) -> SIMD8<Float> {
    let q0 = widenBytes8(codes)       // weights 0..<8 (low nibbles), 16..<24 (high)
    let q1 = widenBytes8(codes + 8)   // weights 8..<16, 24..<32
    var s = SIMD8<Float>(q0 & 0x0f) * loadFloats8(xb)
    s = s.addingProduct(SIMD8<Float>(q1 & 0x0f), loadFloats8(xb + 8))
    s = s.addingProduct(SIMD8<Float>(q0 &>> 4), loadFloats8(xb + 16))
    return s.addingProduct(SIMD8<Float>(q1 &>> 4), loadFloats8(xb + 24))
}

/// Σ code[i] · x[i] over one Q8_0 block's 32 signed codes, unscaled, in 8 lanes.
@inline(__always) @usableFromInline
func byteDot(_ codes: UnsafeRawPointer, _ xb: UnsafePointer<Float>) -> SIMD8<Float> {
    var s = signedBytes8(codes) * loadFloats8(xb)
    s = s.addingProduct(signedBytes8(codes + 8), loadFloats8(xb + 8))
    s = s.addingProduct(signedBytes8(codes + 16), loadFloats8(xb + 16))
    return s.addingProduct(signedBytes8(codes + 24), loadFloats8(xb + 24))
}

// The dot products below take two blocks per step into two accumulators: with one,
// every block waits for the previous block's multiply-add (4 cycles of latency) and
// the loop runs at that pace instead of at the pace of its instructions.

/// Q4_0 row · x. `xSums` holds `blockSums(x)`.
@inlinable
public func dotQ4_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                    blocks: Int, scales: BlockScales = .file) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var offset0: Float = 0, offset1: Float = 0
    var b = 0
    while b + 2 <= blocks {
        let block0 = row + b * 18, block1 = block0 + 18
        let d0 = scales.d?[b] ?? loadHalf(block0, 0)
        let d1 = scales.d?[b + 1] ?? loadHalf(block1, 0)
        acc0 = acc0.addingProduct(nibbleDot(block0 + 2, x + b * 32), d0)
        acc1 = acc1.addingProduct(nibbleDot(block1 + 2, x + b * 32 + 32), d1)
        offset0 += d0 * xSums[b]
        offset1 += d1 * xSums[b + 1]
        b += 2
    }
    if b < blocks {
        let block = row + b * 18
        let d = scales.d?[b] ?? loadHalf(block, 0)
        acc0 = acc0.addingProduct(nibbleDot(block + 2, x + b * 32), d)
        offset0 += d * xSums[b]
    }
    return laneSum(acc0 + acc1) - 8 * (offset0 + offset1)
}

/// Scalar twin of `dotQ4_0`.
public func dotQ4_0Generic(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                           scales: BlockScales = .file) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = row + b * 18
        let d = scales.d?[b] ?? loadHalf(block, 0)
        for j in 0..<16 {
            let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
            sum += d * Float(Int(byte & 15) - 8) * x[b * 32 + j]
            sum += d * Float(Int(byte >> 4) - 8) * x[b * 32 + j + 16]
        }
    }
    return sum
}

/// Q4_1 row · x. `xSums` holds `blockSums(x)`.
@inlinable
public func dotQ4_1(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                    blocks: Int, scales: BlockScales = .file) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var offset0: Float = 0, offset1: Float = 0
    var b = 0
    while b + 2 <= blocks {
        let block0 = row + b * 20, block1 = block0 + 20
        let d0 = scales.d?[b] ?? loadHalf(block0, 0)
        let d1 = scales.d?[b + 1] ?? loadHalf(block1, 0)
        let m0 = scales.m?[b] ?? loadHalf(block0, 2)
        let m1 = scales.m?[b + 1] ?? loadHalf(block1, 2)
        acc0 = acc0.addingProduct(nibbleDot(block0 + 4, x + b * 32), d0)
        acc1 = acc1.addingProduct(nibbleDot(block1 + 4, x + b * 32 + 32), d1)
        offset0 += m0 * xSums[b]
        offset1 += m1 * xSums[b + 1]
        b += 2
    }
    if b < blocks {
        let block = row + b * 20
        let d = scales.d?[b] ?? loadHalf(block, 0)
        let m = scales.m?[b] ?? loadHalf(block, 2)
        acc0 = acc0.addingProduct(nibbleDot(block + 4, x + b * 32), d)
        offset0 += m * xSums[b]
    }
    return laneSum(acc0 + acc1) + (offset0 + offset1)
}

/// Scalar twin of `dotQ4_1`.
public func dotQ4_1Generic(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                           scales: BlockScales = .file) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = row + b * 20
        let d = scales.d?[b] ?? loadHalf(block, 0)
        let m = scales.m?[b] ?? loadHalf(block, 2)
        for j in 0..<16 {
            let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
            sum += (d * Float(byte & 15) + m) * x[b * 32 + j]
            sum += (d * Float(byte >> 4) + m) * x[b * 32 + j + 16]
        }
    }
    return sum
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
    @inline(__always) func nibbles(_ mask: SIMD8<Int32>) -> SIMD8<Float> { SIMD8<Float>(v & mask) }
    var s = nibbles(SIMD8<Int32>(0xf, 0xf, 0xf, 0xf, 0xf0, 0xf0, 0xf0, 0xf0)) * loadFloats8(xp)
    s = s.addingProduct(nibbles(SIMD8<Int32>(0xf00, 0xf00, 0xf00, 0xf00, 0xf000, 0xf000, 0xf000, 0xf000)), loadFloats8(xp + 8))
    s = s.addingProduct(nibbles(SIMD8<Int32>(0xf_0000, 0xf_0000, 0xf_0000, 0xf_0000, 0xf0_0000, 0xf0_0000, 0xf0_0000, 0xf0_0000)),
                        loadFloats8(xp + 16))
    // The top nibble would make the lane negative: bring it down to position 6 first.
    let top = (v &>> SIMD8<Int32>(0, 0, 0, 0, 4, 4, 4, 4)) & 0x0f00_0000
    return s.addingProduct(SIMD8<Float>(top), loadFloats8(xp + 24))
}

/// Both half-precision numbers at `p` (Q4_1's d and m), converted with one instruction.
@inline(__always) @usableFromInline
func loadHalfPair(_ p: UnsafeRawPointer) -> SIMD2<Float> {
    let h = SIMD4<Float16>(lowHalf: p.loadUnaligned(as: SIMD2<Float16>.self), highHalf: SIMD2<Float16>())
    return SIMD4<Float>(h).lowHalf
}

/// Q4_0 row · x with x in `nibbleOrder`; `xSums` holds `blockSums(x)`. Same value as
/// `dotQ4_0` up to rounding.
@inlinable
public func dotQ4_0Ordered(_ row: UnsafeRawPointer, _ xp: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                           blocks: Int, scales: BlockScales = .file) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var offset0: Float = 0, offset1: Float = 0
    var b = 0
    while b + 2 <= blocks {
        let block0 = row + b * 18, block1 = block0 + 18
        let d0 = scales.d?[b] ?? loadHalf(block0, 0)
        let d1 = scales.d?[b + 1] ?? loadHalf(block1, 0)
        acc0 = acc0.addingProduct(nibbleDotOrdered(block0 + 2, xp + b * 32), d0)
        acc1 = acc1.addingProduct(nibbleDotOrdered(block1 + 2, xp + b * 32 + 32), d1)
        offset0 += d0 * xSums[b]
        offset1 += d1 * xSums[b + 1]
        b += 2
    }
    if b < blocks {
        let block = row + b * 18
        let d = scales.d?[b] ?? loadHalf(block, 0)
        acc0 = acc0.addingProduct(nibbleDotOrdered(block + 2, xp + b * 32), d)
        offset0 += d * xSums[b]
    }
    return laneSum(acc0 + acc1) - 8 * (offset0 + offset1)
}

/// Q4_1 row · x with x in `nibbleOrder`; `xSums` holds `blockSums(x)`. Same value as
/// `dotQ4_1` up to rounding.
@inlinable
public func dotQ4_1Ordered(_ row: UnsafeRawPointer, _ xp: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                           blocks: Int, scales: BlockScales = .file) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var offset0: Float = 0, offset1: Float = 0
    var b = 0
    while b + 2 <= blocks {
        let block0 = row + b * 20, block1 = block0 + 20
        let dm0 = loadHalfPair(block0), dm1 = loadHalfPair(block1)
        let d0 = scales.d?[b] ?? dm0[0], d1 = scales.d?[b + 1] ?? dm1[0]
        let m0 = scales.m?[b] ?? dm0[1], m1 = scales.m?[b + 1] ?? dm1[1]
        acc0 = acc0.addingProduct(nibbleDotOrdered(block0 + 4, xp + b * 32), d0)
        acc1 = acc1.addingProduct(nibbleDotOrdered(block1 + 4, xp + b * 32 + 32), d1)
        offset0 += m0 * xSums[b]
        offset1 += m1 * xSums[b + 1]
        b += 2
    }
    if b < blocks {
        let block = row + b * 20
        let dm = loadHalfPair(block)
        let d = scales.d?[b] ?? dm[0]
        let m = scales.m?[b] ?? dm[1]
        acc0 = acc0.addingProduct(nibbleDotOrdered(block + 4, xp + b * 32), d)
        offset0 += m * xSums[b]
    }
    return laneSum(acc0 + acc1) + (offset0 + offset1)
}

/// Q8_0 row · x.
@inlinable
public func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                    scales: BlockScales = .file) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var b = 0
    while b + 2 <= blocks {
        let block0 = row + b * 34, block1 = block0 + 34
        let d0 = scales.d?[b] ?? loadHalf(block0, 0)
        let d1 = scales.d?[b + 1] ?? loadHalf(block1, 0)
        acc0 = acc0.addingProduct(byteDot(block0 + 2, x + b * 32), d0)
        acc1 = acc1.addingProduct(byteDot(block1 + 2, x + b * 32 + 32), d1)
        b += 2
    }
    if b < blocks {
        let block = row + b * 34
        let d = scales.d?[b] ?? loadHalf(block, 0)
        acc0 = acc0.addingProduct(byteDot(block + 2, x + b * 32), d)
    }
    return laneSum(acc0 + acc1)
}

/// Scalar twin of `dotQ8_0`.
public func dotQ8_0Generic(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                           scales: BlockScales = .file) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = row + b * 34
        let d = scales.d?[b] ?? loadHalf(block, 0)
        for j in 0..<32 {
            sum += d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * x[b * 32 + j]
        }
    }
    return sum
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
