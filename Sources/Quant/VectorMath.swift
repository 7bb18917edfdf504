// Elementwise kernels of the forward pass: exp, RMSNorm, softmax, SiLU gating.
// The fast versions run 16 lanes at a time with a scalar tail; each has a plain
// scalar twin using the C library's expf for tests to compare against.

#if canImport(Glibc)
import Glibc
#endif

/// e^x in 16 lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial
/// (Cephes' expf coefficients), 2^n assembled in the exponent bits. Relative error
/// about 2e-7 over the float range; inputs below −87.3 give 0, above 88.7 give +inf.
///
/// Written with plain lane arithmetic only: the standard library's generic `clamped`,
/// `rounded(_:)` and `init(_:rounding:)` on SIMD types compile to calls through
/// metadata, about 50× slower. n is rounded to nearest-even by adding and subtracting
/// 1.5·2²³ (exact for |n| < 2²²), and its integer value read from the sum's low bits.
@inlinable @inline(__always)
public func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let hi = SIMD16<Float>(repeating: 88.72283)
    let lo = SIMD16<Float>(repeating: -87.33654)
    var xc = x
    xc.replace(with: hi, where: x .> hi)
    xc.replace(with: lo, where: x .< lo)
    // n = round(x / ln 2): adding 1.5·2²³ leaves the rounded integer in the low mantissa bits.
    let magic = SIMD16<Float>(repeating: 12_582_912)
    let t = xc * 1.442_695_04 + magic
    let n = t - magic
    // r = x − n ln 2, with ln 2 split in two for accuracy
    var r = xc - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    // e^r ≈ 1 + r + r²·P(r)
    var p = SIMD16<Float>(repeating: 1.987_569_1e-4)
    p = p * r + 1.398_199_9e-3
    p = p * r + 8.333_452e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 1.666_666_5e-1
    p = p * r + 5e-1
    let er = (p * (r * r)) + r + 1
    // 2^n: n + 127 in the exponent field; n ∈ [−126, 128] after the clamp, so split
    // 2^n = 2^(n/2) · 2^(n − n/2) to stay in range at both ends.
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let n1 = ni &>> 1
    let n2 = ni &- n1
    let s1 = unsafeBitCast((n1 &+ 127) &<< 23, to: SIMD16<Float>.self)
    let s2 = unsafeBitCast((n2 &+ 127) &<< 23, to: SIMD16<Float>.self)
    var result = er * s1 * s2
    result.replace(with: 0, where: x .< lo)
    result.replace(with: Float.infinity, where: x .> hi)
    return result
}

/// y[i] = e^x[i] for i in 0..<count (in place allowed).
@inlinable
public func expVector(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
        UnsafeMutableRawPointer(y + i).storeBytes(of: exp16(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)), as: SIMD16<Float>.self)
        i += 16
    }
    if i < count {
        // Tail through one padded vector, so every element gets the same rounding.
        var tail = SIMD16<Float>(repeating: 0)
        for j in 0..<(count - i) { tail[j] = x[i + j] }
        let e = exp16(tail)
        for j in 0..<(count - i) { y[i + j] = e[j] }
    }
}

/// RMSNorm as llama.cpp's ggml_rms_norm then the weight multiply:
/// y = x / sqrt(mean(x²) + eps) ⊙ w.
@inlinable
public func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int, eps: Float,
                    into y: UnsafeMutablePointer<Float>) {
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
        acc = acc.addingProduct(v, v)
        i += 16
    }
    var sum = Double(acc.sum())
    while i < count {
        sum += Double(x[i]) * Double(x[i])
        i += 1
    }
    let scale = 1 / Float((sum / Double(count) + Double(eps)).squareRoot())
    for j in 0..<count { y[j] = x[j] * scale * weight[j] }
}

/// Scalar twin of `rmsNorm`.
public func rmsNormGeneric(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int, eps: Float,
                           into y: UnsafeMutablePointer<Float>) {
    var sum = 0.0
    for j in 0..<count { sum += Double(x[j]) * Double(x[j]) }
    let scale = 1 / Float((sum / Double(count) + Double(eps)).squareRoot())
    for j in 0..<count { y[j] = x[j] * scale * weight[j] }
}

/// Lane-wise maximum by compare and select. The standard library's `pointwiseMax`
/// on SIMD16 compiles to a lane-by-lane loop through memory here (it honours IEEE
/// maxNum's NaN rules); this is one compare and one blend per register.
@inline(__always) @usableFromInline
func laneMax(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
    var r = a
    r.replace(with: b, where: b .> a)
    return r
}

/// Largest of the 16 lanes, by halving.
@inline(__always) @usableFromInline
func horizontalMax(_ v: SIMD16<Float>) -> Float {
    var h = v.lowHalf
    h.replace(with: v.highHalf, where: v.highHalf .> h)
    var q = h.lowHalf
    q.replace(with: h.highHalf, where: h.highHalf .> q)
    return max(max(q[0], q[1]), max(q[2], q[3]))
}

/// Sum of the 16 lanes, by halving.
@inline(__always) @usableFromInline
func horizontalSum(_ v: SIMD16<Float>) -> Float {
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    return (q[0] + q[1]) + (q[2] + q[3])
}

/// Largest of x[0..<count] (−inf when empty), 16 lanes at a time.
@inlinable
public func maxValue(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var m16 = SIMD16<Float>(repeating: -.infinity)
    var i = 0
    while i + 16 <= count {
        m16 = laneMax(m16, UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self))
        i += 16
    }
    var m = horizontalMax(m16)
    while i < count {
        m = max(m, x[i])
        i += 1
    }
    return m
}

/// In-place softmax of `count` values; returns log Σ e^x (the log normaliser).
/// Three passes of 16 lanes: the maximum; e^(x − max) stored and summed; the scaling.
@discardableResult @inlinable
public func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) -> Float {
    let m = maxValue(x, count: count)
    if m == -.infinity { return m }
    let shift = SIMD16<Float>(repeating: m)
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
        let e = exp16(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self) - shift)
        UnsafeMutableRawPointer(x + i).storeBytes(of: e, as: SIMD16<Float>.self)
        acc += e
        i += 16
    }
    if i < count {
        // Tail through one padded vector (e^−inf = 0 in the unused lanes).
        var tail = SIMD16<Float>(repeating: -.infinity)
        for j in i..<count { tail[j - i] = x[j] - m }
        let e = exp16(tail)
        for j in i..<count { x[j] = e[j - i] }
        acc += e
    }
    let sum = horizontalSum(acc)
    let inv = SIMD16<Float>(repeating: 1 / sum)
    i = 0
    while i + 16 <= count {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
        UnsafeMutableRawPointer(x + i).storeBytes(of: v * inv, as: SIMD16<Float>.self)
        i += 16
    }
    while i < count {
        x[i] *= inv[0]
        i += 1
    }
    return m + logf(sum)
}

/// Scalar twin of `softmax`.
@discardableResult
public func softmaxGeneric(_ x: UnsafeMutablePointer<Float>, count: Int) -> Float {
    var m = -Float.infinity
    for i in 0..<count { m = max(m, x[i]) }
    if m == -.infinity { return m }
    var sum: Float = 0
    for i in 0..<count {
        x[i] = expf(x[i] - m)
        sum += x[i]
    }
    for i in 0..<count { x[i] /= sum }
    return m + logf(sum)
}

/// SwiGLU's gating: gate[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + e^−g).
@inlinable
public func siluMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
        let g = UnsafeRawPointer(gate + i).loadUnaligned(as: SIMD16<Float>.self)
        let u = UnsafeRawPointer(up + i).loadUnaligned(as: SIMD16<Float>.self)
        let s = g / (1 + exp16(-g))
        UnsafeMutableRawPointer(gate + i).storeBytes(of: s * u, as: SIMD16<Float>.self)
        i += 16
    }
    while i < count {
        var g = SIMD16<Float>(repeating: 0)
        g[0] = gate[i]
        gate[i] = gate[i] / (1 + exp16(-g)[0]) * up[i]
        i += 1
    }
}

/// Scalar twin of `siluMultiply`.
public func siluMultiplyGeneric(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { gate[i] = gate[i] / (1 + expf(-gate[i])) * up[i] }
}

/// Folds a tile of logits into a running log-sum-exp: afterwards
/// runningSum · e^runningMax = (its value before) + Σ e^logits[i], with runningMax the
/// largest logit seen so far (−inf and 0 before the first tile).
/// The maximum and the exponentials run 16 lanes at a time; the tail goes through one
/// padded vector so every element is rounded the same way.
@inlinable
public func foldLogSumExp(_ logits: UnsafePointer<Float>, count: Int, runningMax: inout Float, runningSum: inout Float) {
    let tileMax = maxValue(logits, count: count)
    let newMax = max(runningMax, tileMax)
    if newMax == -.infinity { return }
    let shift = SIMD16<Float>(repeating: newMax)
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
        acc += exp16(UnsafeRawPointer(logits + i).loadUnaligned(as: SIMD16<Float>.self) - shift)
        i += 16
    }
    if i < count {
        var tail = SIMD16<Float>(repeating: -.infinity)
        for j in i..<count { tail[j - i] = logits[j] - newMax }
        acc += exp16(tail)
    }
    runningSum = runningSum * expf(runningMax - newMax) + horizontalSum(acc)
    runningMax = newMax
}

/// Scalar twin of `foldLogSumExp`, with the C library's expf.
public func foldLogSumExpGeneric(_ logits: UnsafePointer<Float>, count: Int, runningMax: inout Float, runningSum: inout Float) {
    var tileMax = -Float.infinity
    for j in 0..<count { tileMax = max(tileMax, logits[j]) }
    let newMax = max(runningMax, tileMax)
    if newMax == -.infinity { return }
    var sum: Float = 0
    for j in 0..<count { sum += expf(logits[j] - newMax) }
    runningSum = runningSum * expf(runningMax - newMax) + sum
    runningMax = newMax
}

/// y (width) = Σ_j p[j] · rows[j] (rows of `width` floats, `stride` apart), for j < count:
/// attention's weighted sum of value rows for one query. 8 lanes across the width.
@inlinable
public func weightedSum(_ p: UnsafePointer<Float>, rows: UnsafePointer<Float>, stride: Int, count: Int, width: Int,
                        into y: UnsafeMutablePointer<Float>) {
    var k = 0
    while k + 8 <= width {
        var acc = SIMD8<Float>()
        for j in 0..<count {
            acc = acc.addingProduct(SIMD8<Float>(repeating: p[j]), UnsafeRawPointer(rows + j * stride + k).loadUnaligned(as: SIMD8<Float>.self))
        }
        UnsafeMutableRawPointer(y + k).storeBytes(of: acc, as: SIMD8<Float>.self)
        k += 8
    }
    while k < width {
        var sum: Float = 0
        for j in 0..<count { sum += p[j] * rows[j * stride + k] }
        y[k] = sum
        k += 1
    }
}

/// Scalar twin of `weightedSum`.
public func weightedSumGeneric(_ p: UnsafePointer<Float>, rows: UnsafePointer<Float>, stride: Int, count: Int, width: Int,
                               into y: UnsafeMutablePointer<Float>) {
    for k in 0..<width {
        var sum: Float = 0
        for j in 0..<count { sum += p[j] * rows[j * stride + k] }
        y[k] = sum
    }
}
