// One-token kernels on 8-bit activations, the generation path; reference: llama.cpp's
// ggml-cpu (quantize_row_q8_K / q8_0, ggml_vec_dot_q4_K_q8_K, _q6_K_q8_K, _q5_0_q8_0,
// _q8_0_q8_0 in arch/x86/quants.c), whose approach this follows.
//
// Why: with float activations every weight costs a widening, a conversion and a
// multiply-add on 8 lanes (three instructions per 8 weights); at two cores that is slower
// than memory delivers Q4_K's 4.5 bits per weight. Quantizing x once per token to int8
// lets one vpmaddubsw multiply 32 weight codes by 32 activation bytes and add them in
// pairs, and one vpmaddwd scale those pairs by a sub-block's integer scale: the code bits
// are unpacked 32 at a time in byte lanes and nothing is converted to float until the end
// of a block. The integer sums are exact; the only new error is x's 8-bit rounding,
// |x − d·q| ≤ d/2 with d = max|x| / 127 per block of x (see `KernelTests`' bound).
//
// x is quantized in two shapes: `BlockQ8_K` (one float d per 256 values, and the sums of
// each 16 codes, which the K-quants' mins and Q6_K's −32 multiply) for the K-quants, and
// `BlockQ8x32` (one float d per 32) for Q5_0 and Q8_0.
//
// The kernels use AVX2 through Clang's intrinsics (imported from Swift) because the
// byte-lane operations they need have no form in Swift's SIMD types that LLVM lowers to
// one instruction: SIMD32<UInt8> masks and shifts compile to loops over the lanes, and
// no lane-wise formulation we tried became vpmaddubsw. Each kernel has a plain scalar twin
// (`…Generic`) that computes the same integers and combines them with the same float
// operations in the same order, so the two agree bit for bit; builds without AVX2 (and
// other CPUs) run the twins.

import GGUF
#if arch(x86_64) && EDGE_FINETUNE_AVX2
import _Builtin_intrinsics.intel
#endif

// MARK: - Quantized activations

/// Which 8-bit blocks of x an integer kernel reads.
public enum ActivationBlocks: Sendable, Equatable {
    case q8K
    case q8x32

    /// Bytes of one block and values per block.
    public var blockBytes: Int { self == .q8K ? 292 : 36 }
    public var blockSize: Int { self == .q8K ? 256 : 32 }
}

/// Scale of a block of 8-bit activations whose largest magnitude is `amax`, and its inverse
/// (both 0 for an all-zero block). A block with an infinity gets d = NaN and codes 0, so
/// that, as on the float path, the products come out NaN rather than finite.
@inline(__always) @usableFromInline
func q8Scale(_ amax: Float) -> (d: Float, id: Float) {
    guard amax.isFinite else { return (.nan, 0) }
    return amax > 0 ? (amax / 127, 127 / amax) : (0, 0)
}

/// Largest |x[i]| over `count` values (a multiple of 8); infinity when some x[i] is not finite.
@inline(__always) @usableFromInline
func maxMagnitude(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
    var m = SIMD8<Float>(), poison = SIMD8<Float>()
    for i in stride(from: 0, to: count, by: 8) {
        let v = loadFloats8(x + i)
        m = pointwiseMax(m, pointwiseMax(v, -v))
        poison += v * 0   // NaN in a lane once an infinity or NaN passed through it
    }
    return (poison .== poison) == SIMDMask(repeating: true) ? m.max() : .infinity
}

/// round(x[i] · id) (to nearest, ties to even) into q[i], 8 values; |q| ≤ 127 because id ≤ 127 / max|x|.
@inline(__always) @usableFromInline
func quantize8(_ x: UnsafePointer<Float>, _ id: Float, _ q: UnsafeMutableRawPointer) {
    var v = (loadFloats8(x) * id).rounded(.toNearestOrEven)
    v.replace(with: 0, where: .!(v .== v))   // NaN (an infinity times id = 0): code 0
    var b = SIMD8<Int8>()
    for i in 0..<8 { b[i] = Int8(v[i]) }
    q.storeBytes(of: b, as: SIMD8<Int8>.self)
}

/// x (count a multiple of 256) as `BlockQ8_K`s: per block d = max|x| / 127, codes
/// round(x / d), and the sum of each 16 codes.
public func quantizeQ8K(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    for b in 0..<(count / 256) {
        let xb = x + 256 * b, out = dst + 292 * b
        let (d, id) = q8Scale(maxMagnitude(xb, 256))
        out.storeBytes(of: d, as: Float.self)
        for i in stride(from: 0, to: 256, by: 8) { quantize8(xb + i, id, out + 4 + i) }
        for j in 0..<16 {
            let codes = out + 4 + 16 * j
            let s = SIMD16<Int16>(truncatingIfNeeded: codes.loadUnaligned(as: SIMD16<Int8>.self)).wrappedSum()
            out.storeBytes(of: s, toByteOffset: 260 + 2 * j, as: Int16.self)
        }
    }
}

/// x (count a multiple of 32) as `BlockQ8x32`s: per block d = max|x| / 127, codes round(x / d).
public func quantizeQ8x32(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    for b in 0..<(count / 32) {
        let xb = x + 32 * b, out = dst + 36 * b
        let (d, id) = q8Scale(maxMagnitude(xb, 32))
        out.storeBytes(of: d, as: Float.self)
        for i in stride(from: 0, to: 32, by: 8) { quantize8(xb + i, id, out + 4 + i) }
    }
}

/// Quantizes x (cols values) into `dst` in the shape `blocks`.
public func quantizeActivations(_ blocks: ActivationBlocks, _ x: UnsafePointer<Float>, count: Int,
                                into dst: UnsafeMutableRawPointer) {
    switch blocks {
    case .q8K: quantizeQ8K(x, count: count, into: dst)
    case .q8x32: quantizeQ8x32(x, count: count, into: dst)
    }
}

// MARK: - The kernel shape

/// An integer one-token kernel: one row of format `Format` · x in `blocks`-shaped 8-bit blocks.
public protocol IntegerDot {
    associatedtype Format: BlockFormat
    static var blocks: ActivationBlocks { get }
    /// Row · x̂ (`blocks` blocks of the row, x̂ at `y`), fast (AVX2; the twin elsewhere).
    static func row(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float
    /// The same with plain scalar code: equal to `row` bit for bit.
    static func rowGeneric(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float
}

#if !(arch(x86_64) && EDGE_FINETUNE_AVX2)
extension IntegerDot {
    /// Without AVX2 the scalar twin is the kernel.
    public static func row(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        rowGeneric(w, y, blocks: blocks, scales: scales)
    }
}
#endif

/// y[r] = row r · x̂ for r in `range`.
@inlinable @inline(__always)
func integerRowDots<K: IntegerDot>(_: K.Type, _ w: WeightMatrix, _ range: Range<Int>, _ y8: UnsafeRawPointer,
                                   into y: UnsafeMutablePointer<Float>) {
    let blocks = w.cols / K.Format.blockSize
    let rowBytes = blocks * K.Format.blockBytes
    for r in range {
        y[r] = K.row(w.data + r * rowBytes, y8, blocks: blocks, scales: w.scales.advanced(by: r * blocks))
    }
}

/// The shape of the K-quant kernels: per super-block b (its weights at `block`, x̂'s Q8_K
/// block at `yb`), `sums` gives d, Σ_j scale_j Σ q·x̂ (exact), dmin and Σ_j min_j Σ x̂
/// (exact); the row is Σ_b d_x (d · dots − dmin · mins), added in block order. The fast
/// kernels and their twins go through this one loop, so their float operations are the same.
@inline(__always) @usableFromInline
func superBlockRow<F: BlockFormat>(_: F.Type, _ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int,
                                   _ sums: (_ b: Int, _ block: UnsafeRawPointer, _ yb: UnsafeRawPointer)
                                       -> (d: Float, dots: Int32, dmin: Float, mins: Int32)) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = w + F.blockBytes * b, yb = y + 292 * b
        let dx = yb.load(as: Float.self)
        let s = sums(b, block, yb)
        sum += (dx * s.d) * Float(s.dots)
        sum -= (dx * s.dmin) * Float(s.mins)
    }
    return sum
}

// MARK: - Q4_K

/// Q4_K · Q8_K.
public enum Q4_KQ8Dot: IntegerDot {
    public typealias Format = Q4_KFormat
    public static var blocks: ActivationBlocks { .q8K }

    public static func rowGeneric(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        superBlockRow(Format.self, w, y, blocks: blocks) { b, block, yb in
            var dots: Int32 = 0, mins: Int32 = 0
            for j in 0..<8 {
                let (sc, m) = scaleMinK4(j, block + 4)
                var s: Int32 = 0
                for l in 0..<32 {
                    let q = Int32((byte(block, 16 + 32 * (j / 2) + l) >> UInt8(4 * (j % 2))) & 0x0f)
                    s += q * Int32(yb.load(fromByteOffset: 4 + 32 * j + l, as: Int8.self))
                }
                dots += Int32(sc) * s
                let bsums = Int32(yb.load(fromByteOffset: 260 + 4 * j, as: Int16.self))
                    + Int32(yb.load(fromByteOffset: 262 + 4 * j, as: Int16.self))
                mins += Int32(m) * bsums
            }
            return (scales.d(b, block, 0), dots, scales.m(b, block, 2), mins)
        }
    }
}

// MARK: - Q6_K

/// Q6_K · Q8_K.
public enum Q6_KQ8Dot: IntegerDot {
    public typealias Format = Q6_KFormat
    public static var blocks: ActivationBlocks { .q8K }

    public static func rowGeneric(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        superBlockRow(Format.self, w, y, blocks: blocks) { b, block, yb in
            var dots: Int32 = 0
            for h in 0..<2 {
                for s in 0..<4 {
                    for half in 0..<2 {
                        // Sub-block 8h + 2s + half: weights 128h + 32s + 16·half ..< +16.
                        var t: Int32 = 0
                        for l in (16 * half)..<(16 * half + 16) {
                            let low = (byte(block, 64 * h + 32 * (s % 2) + l) >> UInt8(4 * (s / 2))) & 0x0f
                            let high = (byte(block, 128 + 32 * h + l) >> UInt8(2 * s)) & 3
                            let q = Int32(low | high << 4) - 32
                            t += q * Int32(yb.load(fromByteOffset: 4 + 128 * h + 32 * s + l, as: Int8.self))
                        }
                        dots += Int32(block.load(fromByteOffset: 192 + 8 * h + 2 * s + half, as: Int8.self)) * t
                    }
                }
            }
            return (scales.d(b, block, 208), dots, 0, 0)
        }
    }
}

// MARK: - Q5_0, Q8_0 (blocks of 32)

/// The shape of the 32-weight kernels: per block, 8 lanes of exact integer sums (lane i:
/// weights 4i..<4i+4), converted and multiplied by d_w · d_x into two accumulators taking
/// alternate blocks (as `rowDot`, so the adds do not wait on each other); the lanes are
/// summed at the end with `laneSum`.
@inline(__always) @usableFromInline
func blocks32Row(blocks: Int, _ lanes: (Int) -> (d: Float, sums: SIMD8<Int32>)) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var b = 0
    while b + 2 <= blocks {
        let (d0, s0) = lanes(b), (d1, s1) = lanes(b + 1)
        acc0 = acc0.addingProduct(float8(s0), SIMD8<Float>(repeating: d0))
        acc1 = acc1.addingProduct(float8(s1), SIMD8<Float>(repeating: d1))
        b += 2
    }
    if b < blocks {
        let (d0, s0) = lanes(b)
        acc0 = acc0.addingProduct(float8(s0), SIMD8<Float>(repeating: d0))
    }
    return laneSum(acc0 + acc1)
}

/// The scalar twin of a 32-weight kernel: per block, lane i = Σ_{k<4} code(block, 4i + k) ·
/// x̂[4i + k] in plain integer code, then `blocks32Row`'s float steps.
@inline(__always) @usableFromInline
func blocks32Generic<F: BlockFormat>(_: F.Type, _ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales,
                                     _ code: (_ block: UnsafeRawPointer, _ i: Int) -> Int32) -> Float {
    blocks32Row(blocks: blocks) { b in
        let block = w + F.blockBytes * b, yb = y + 36 * b
        var s = SIMD8<Int32>()
        for i in 0..<8 {
            for k in 0..<4 { s[i] += code(block, 4 * i + k) * Int32(yb.load(fromByteOffset: 4 + 4 * i + k, as: Int8.self)) }
        }
        return (scales.d(b, block, 0) * yb.load(as: Float.self), s)
    }
}

/// Q5_0 · Q8x32.
public enum Q5_0Q8Dot: IntegerDot {
    public typealias Format = Q5_0Format
    public static var blocks: ActivationBlocks { .q8x32 }

    public static func rowGeneric(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        blocks32Generic(Format.self, w, y, blocks: blocks, scales: scales) { block, i in
            let nibble = Int32(i < 16 ? byte(block, 6 + i) & 0x0f : byte(block, 6 + i - 16) >> 4)
            return (nibble | Int32((loadUInt32(block, 2) >> UInt32(i)) & 1) << 4) - 16
        }
    }
}

/// Q8_0 · Q8x32.
public enum Q8_0Q8Dot: IntegerDot {
    public typealias Format = Q8_0Format
    public static var blocks: ActivationBlocks { .q8x32 }

    public static func rowGeneric(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        blocks32Generic(Format.self, w, y, blocks: blocks, scales: scales) { block, i in
            Int32(block.load(fromByteOffset: 2 + i, as: Int8.self))
        }
    }
}

// MARK: - AVX2 block sums

#if arch(x86_64) && EDGE_FINETUNE_AVX2

// The fast rows differ from their twins' loops in two ways that change no value:
//   - the file's half-precision scales are converted from a 32-bit load (vmovd, vcvtph2ps):
//     the usual 16-bit insert (vpinsrw) merges into a register that LLVM picks freely, and
//     it picked the accumulator, chaining every block's scale to the previous block's sum;
//   - the loop is written twice, for no overrides (the usual case, where the optional
//     overrides are known nil and their tests vanish) and for overrides.

/// The two halves in the 4 bytes at p + offset, as floats (d, then dmin for Q4_K).
@inline(__always) func halfPair(_ p: UnsafeRawPointer, _ offset: Int) -> (Float, Float) {
    let v: SIMD4<Float> = _mm_cvtph_ps(_mm_cvtsi32_si128(Int32(bitPattern: loadUInt32(p, offset))))
    return (v[0], v[1])
}

/// rows(.file) when there are no overrides, so that the compiler drops their tests from the loop.
@inline(__always) func unswitched(_ scales: BlockScales, _ rows: (BlockScales) -> Float) -> Float {
    scales.d == nil && scales.m == nil ? rows(.file) : rows(scales)
}

// Each fast row is an always-inlined loop over the scales it is given, called once with
// no overrides and once with them (a closure literal inlined at two places was instead
// outlined by the compiler, leaving a call per block).

extension Q4_KQ8Dot {
    public static func row(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        unswitched(scales) { rows(w, y, blocks, $0) }
    }
    @inline(__always) static func rows(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, _ blocks: Int, _ scales: BlockScales) -> Float {
        superBlockRow(Format.self, w, y, blocks: blocks) { b, block, yb in
            let (dots, mins) = q4KSums(block, yb)
            let (d, dmin) = halfPair(block, 0)
            return (scales.d?[b] ?? d, dots, scales.m?[b] ?? dmin, mins)
        }
    }
}

extension Q6_KQ8Dot {
    public static func row(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        unswitched(scales) { rows(w, y, blocks, $0) }
    }
    @inline(__always) static func rows(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, _ blocks: Int, _ scales: BlockScales) -> Float {
        // d is the last 2 of the block's 210 bytes: read 206..<210, take the second half.
        superBlockRow(Format.self, w, y, blocks: blocks) { b, block, yb in
            (scales.d?[b] ?? halfPair(block, 206).1, q6KSums(block, yb), 0, 0)
        }
    }
}

/// The fast rows of the 32-weight kernels: `lanes` gives a block's 8 integer lane sums.
@inline(__always) func blocks32Fast<F: BlockFormat>(_: F.Type, _ w: UnsafeRawPointer, _ y: UnsafeRawPointer, _ blocks: Int,
                                                    _ scales: BlockScales,
                                                    _ lanes: (_ block: UnsafeRawPointer, _ yb: UnsafeRawPointer) -> SIMD8<Int32>) -> Float {
    blocks32Row(blocks: blocks) { b in
        let block = w + F.blockBytes * b, yb = y + 36 * b
        return ((scales.d?[b] ?? halfPair(block, 0).0) * yb.load(as: Float.self), lanes(block, yb))
    }
}

extension Q5_0Q8Dot {
    public static func row(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        unswitched(scales) { rows(w, y, blocks, $0) }
    }
    @inline(__always) static func rows(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, _ blocks: Int, _ scales: BlockScales) -> Float {
        blocks32Fast(Format.self, w, y, blocks, scales) { block, yb in q5_0Lanes(block, yb) }
    }
}

extension Q8_0Q8Dot {
    public static func row(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, blocks: Int, scales: BlockScales) -> Float {
        unswitched(scales) { rows(w, y, blocks, $0) }
    }
    @inline(__always) static func rows(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer, _ blocks: Int, _ scales: BlockScales) -> Float {
        blocks32Fast(Format.self, w, y, blocks, scales) { block, yb in signedLanes(loadBytes32(block + 2), yb) }
    }
}

@inline(__always) func loadBytes32(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }
@inline(__always) func loadBytes16(_ p: UnsafeRawPointer) -> __m128i { p.loadUnaligned(as: __m128i.self) }

/// Sum of the 8 Int32 lanes.
@inline(__always) func laneSum(_ v: __m256i) -> Int32 {
    let s = unsafeBitCast(v, to: SIMD8<Int32>.self)
    let h = s.lowHalf &+ s.highHalf
    let q = h.lowHalf &+ h.highHalf
    return q[0] &+ q[1]
}

/// Sum of the 4 Int32 lanes.
@inline(__always) func laneSum(_ v: __m128i) -> Int32 {
    let s = unsafeBitCast(v, to: SIMD4<Int32>.self)
    let h = s.lowHalf &+ s.highHalf
    return h[0] &+ h[1]
}

/// A shuffle (vpshufb) that broadcasts 16-bit lane `lo` of a 128-bit half to the whole low
/// half of the result and 16-bit lane `hi` to the whole high half.
@inline(__always) func broadcastPairs(_ lo: Int, _ hi: Int) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(Int16(2 * hi | (2 * hi + 1) << 8)), _mm_set1_epi16(Int16(2 * lo | (2 * lo + 1) << 8)))
}

/// Q4_K super-block at `w` · Q8_K block at `y`: (Σ_j scale_j Σ q·x̂, Σ_j min_j Σ x̂ over sub-block j).
/// Per 64 weights (two sub-blocks, 32 code bytes): the low and the high nibbles, each
/// multiplied with 32 bytes of x̂ and added in pairs (vpmaddubsw; at most 2·15·127, no
/// saturation), then times the sub-block's scale and added in pairs again (vpmaddwd).
@inline(__always) func q4KSums(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer) -> (Int32, Int32) {
    let a = loadUInt32(w, 4), b = loadUInt32(w, 8), c = loadUInt32(w, 12)
    let scaleWords = (a & 0x3f3f_3f3f, (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030))
    let minWords = (b & 0x3f3f_3f3f, ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030))
    // Mins: 8 × Int16 times the sums of x̂ over each 32 (pairs of the 16-sums, vphaddw).
    let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, Int32(bitPattern: minWords.1), Int32(bitPattern: minWords.0)))
    let sums32 = _mm_hadd_epi16(loadBytes16(y + 260), loadBytes16(y + 276))
    let minSum = laneSum(_mm_madd_epi16(mins, sums32))
    // Scales: 8 × Int16 in both halves, one broadcast per sub-block.
    let scales = _mm256_broadcastsi128_si256(
        _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, Int32(bitPattern: scaleWords.1), Int32(bitPattern: scaleWords.0))))
    let low = _mm256_set1_epi8(0x0f)
    let qs = w + 16, q8 = y + 4
    var acc = _mm256_setzero_si256()
    for j in 0..<4 {
        let bits = loadBytes32(qs + 32 * j)
        let lo = _mm256_maddubs_epi16(_mm256_and_si256(bits, low), loadBytes32(q8 + 64 * j))
        let hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(bits, 4), low), loadBytes32(q8 + 64 * j + 32))
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcastPairs(2 * j, 2 * j)), lo))
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcastPairs(2 * j + 1, 2 * j + 1)), hi))
    }
    return (laneSum(acc), minSum)
}

/// Q6_K super-block at `w` · Q8_K block at `y`: Σ_j scale_j Σ (q − 32)·x̂. The unsigned codes
/// q (0..<64) go through vpmaddubsw (at most 2·63·127); the −32 is taken out once per block
/// as 32 · Σ_j scale_j · (sum of x̂ over sub-block j), from Q8_K's sums.
@inline(__always) func q6KSums(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer) -> Int32 {
    let scaleBytes = w + 192
    let offset = laneSum(_mm256_madd_epi16(_mm256_cvtepi8_epi16(loadBytes16(scaleBytes)), loadBytes32(y + 260)))
    let low = _mm256_set1_epi8(0x0f)
    let q8 = y + 4
    var acc = _mm256_setzero_si256()
    for h in 0..<2 {
        // Sub-blocks 8h..<8h+8: their scales as 8 × Int16 in both halves.
        let scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_set_epi64x(
            0, Int64(bitPattern: (scaleBytes + 8 * h).loadUnaligned(as: UInt64.self)))))
        let b1 = loadBytes32(w + 64 * h), b2 = loadBytes32(w + 64 * h + 32), high = loadBytes32(w + 128 + 32 * h)
        // Quarter s of the half: weights 32s + l, low bits in nibble s / 2 of b1 (s even) or
        // b2 (s odd), high bits 2s…2s+1 of `high`.
        let q0 = _mm256_or_si256(_mm256_and_si256(b1, low), _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(0x03)), 4))
        let q1 = _mm256_or_si256(_mm256_and_si256(b2, low), _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(0x0c)), 2))
        let q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), low), _mm256_and_si256(high, _mm256_set1_epi8(0x30)))
        let q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), low),
                                 _mm256_and_si256(_mm256_srli_epi16(high, 2), _mm256_set1_epi8(0x30)))
        let x = q8 + 128 * h
        // 32 weights of quarter s: sub-block 2s in the low half, 2s + 1 in the high half.
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcastPairs(0, 1)),
                                                      _mm256_maddubs_epi16(q0, loadBytes32(x))))
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcastPairs(2, 3)),
                                                      _mm256_maddubs_epi16(q1, loadBytes32(x + 32))))
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcastPairs(4, 5)),
                                                      _mm256_maddubs_epi16(q2, loadBytes32(x + 64))))
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcastPairs(6, 7)),
                                                      _mm256_maddubs_epi16(q3, loadBytes32(x + 96))))
    }
    return laneSum(acc) &- 32 &* offset
}

/// Signed bytes `w` · the 32 codes of the Q8x32 block at `y`, as 8 lanes of 4 products
/// each. vpmaddubsw wants one unsigned operand: |w| times x̂ with w's sign (vpsignb), as ggml's
/// mul_sum_i8_pairs does; |w|, |x̂| ≤ 127, so pairs stay below 2¹⁵.
@inline(__always) func signedLanes(_ w: __m256i, _ y: UnsafeRawPointer) -> SIMD8<Int32> {
    let x = loadBytes32(y + 4)
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    return unsafeBitCast(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)), to: SIMD8<Int32>.self)
}

/// Q5_0 block at `w` · the Q8x32 block at `y`. Weight i's code minus 16, as a signed byte:
/// its nibble, with 0xf0 or-ed in where its fifth bit (bit i of qh) is clear (n − 16 in
/// two's complement). The fifth bits are spread to one byte each by a shuffle, an or with
/// every bit but the weight's own, and a compare with all ones (ggml's bytes_from_bits_32).
@inline(__always) func q5_0Lanes(_ w: UnsafeRawPointer, _ y: UnsafeRawPointer) -> SIMD8<Int32> {
    let qs = loadBytes16(w + 6)
    let nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(0x0f))
    let qh = Int32(bitPattern: loadUInt32(w, 2))
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(qh),
                                     _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0))
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe)), _mm256_set1_epi64x(-1))
    let codes = _mm256_or_si256(nibbles, _mm256_andnot_si256(set, _mm256_set1_epi8(-16)))
    return signedLanes(codes, y)
}

#endif
