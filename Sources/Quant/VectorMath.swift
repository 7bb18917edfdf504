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
@inlinable
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

/// In-place softmax of `count` values; returns log Σ e^x (the log normaliser).
@discardableResult @inlinable
public func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) -> Float {
    var m = -Float.infinity
    for i in 0..<count { m = max(m, x[i]) }
    if m == -.infinity { return m }
    for i in 0..<count { x[i] -= m }
    expVector(x, x, count: count)
    var sum: Float = 0
    for i in 0..<count { sum += x[i] }
    let inv = 1 / sum
    for i in 0..<count { x[i] *= inv }
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
