// Quantizing float rows into Q4_K and Q6_K; reference: ggml's quantize_row_q4_K_ref with
// make_qkx2_quants and quantize_row_q6_K_ref with make_qx_quants (ggml-quants.c), the
// quantizers llama.cpp uses for these tensors when it has no importance matrix. Ported
// operation for operation, in the same order and in Float arithmetic, so the bytes come out
// identical to ggml's (checked against the library llama-cpp-python ships,
// Tests/QuantTests/KQuantQuantizeTests.swift).
//
// Q4_K: a super-block of 256 weights is 8 sub-blocks of 32. Each sub-block gets an affine fit
// w ≈ scale·q − min with q in 0...15 (a weighted least-squares search over 21 candidate
// scales); the 8 scales and 8 mins are then quantized to 6 bits against the super-block's
// half-precision d = max scale / 63 and dmin = max min / 63, and the 4-bit codes are
// recomputed against the rounded scales.

import GGUF

/// ggml's nearest_int: round half to even by adding 1.5·2²³ in Float and reading the
/// mantissa bits (exact for |x| ≤ 2²², and like ggml's, never traps outside).
@inline(__always) func nearestInt(_ x: Float) -> Int {
    let v = x + 12_582_912
    return Int(Int32(bitPattern: v.bitPattern) & 0x007f_ffff) - 0x0040_0000
}

/// One sub-block's affine fit (ggml's make_qkx2_quants): returns the scale, writes the
/// codes to `codes` and the (non-negative) min to `theMin`; `scratch` holds n bytes.
func makeQKX2Quants(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>,
                    _ codes: UnsafeMutablePointer<UInt8>, _ theMin: inout Float, _ scratch: UnsafeMutablePointer<UInt8>,
                    rmin: Float, rdelta: Float, nstep: Int, useMAD: Bool) -> Float {
    var min = x[0], max = x[0]
    var sumW = weights[0]
    var sumX = sumW * x[0]
    for i in 1..<n {
        if x[i] < min { min = x[i] }
        if x[i] > max { max = x[i] }
        let w = weights[i]
        sumW += w
        sumX += w * x[i]
    }
    if min > 0 { min = 0 }
    if max == min {
        for i in 0..<n { codes[i] = 0 }
        theMin = -min
        return 0
    }
    let fmax = Float(nmax)
    var iscale = fmax / (max - min)
    var scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
        let l = nearestInt(iscale * (x[i] - min))
        codes[i] = UInt8(Swift.max(0, Swift.min(nmax, l)))
        var diff = scale * Float(codes[i]) + min - x[i]
        diff = useMAD ? abs(diff) : diff * diff
        bestError += weights[i] * diff
    }
    if nstep < 1 {
        theMin = -min
        return scale
    }
    for step in 0...nstep {
        iscale = (rmin + rdelta * Float(step) + fmax) / (max - min)
        var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
        for i in 0..<n {
            let l = Swift.max(0, Swift.min(nmax, nearestInt(iscale * (x[i] - min))))
            scratch[i] = UInt8(l)
            let w = weights[i]
            let fl = Float(l)
            sumL += w * fl
            sumL2 += w * fl * fl
            sumXL += w * fl * x[i]
        }
        let D = sumW * sumL2 - sumL * sumL
        if D > 0 {
            var thisScale = (sumW * sumXL - sumX * sumL) / D
            var thisMin = (sumL2 * sumX - sumL * sumXL) / D
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                var diff = thisScale * Float(scratch[i]) + thisMin - x[i]
                diff = useMAD ? abs(diff) : diff * diff
                error += weights[i] * diff
            }
            if error < bestError {
                for i in 0..<n { codes[i] = scratch[i] }
                bestError = error
                scale = thisScale
                min = thisMin
            }
        }
    }
    theMin = -min
    return scale
}

/// Quantizes `count` floats (a multiple of 256) into Q4_K blocks at `dst` (144 bytes per 256),
/// bit for bit as ggml's quantize_row_q4_K_ref.
public func quantizeRowQ4_K(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    precondition(count % 256 == 0, "quantizeRowQ4_K: \(count) values is not a whole number of 256-value super-blocks")
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32) { bytes in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 16) { floats in
            let codes = bytes.baseAddress!, scratch = codes + 256
            let weights = floats.baseAddress!, scales = weights + 32, mins = scales + 8
            for b in 0..<(count / 256) {
                let x = src + 256 * b
                let y = dst + 144 * b
                // Each sub-block's own fit, weighted by (RMS of the sub-block + |x|).
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<8 {
                    var sumX2: Float = 0
                    for l in 0..<32 { sumX2 += x[32 * j + l] * x[32 * j + l] }
                    let avX = (sumX2 / 32).squareRoot()
                    for l in 0..<32 { weights[l] = avX + abs(x[32 * j + l]) }
                    var m: Float = 0
                    scales[j] = makeQKX2Quants(32, 15, x + 32 * j, weights, codes + 32 * j, &m, scratch,
                                               rmin: -1, rdelta: 0.1, nstep: 20, useMAD: false)
                    mins[j] = m
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if m > maxMin { maxMin = m }
                }

                // The 6-bit scales and mins, packed as get_scale_min_k4 reads them.
                let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
                let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
                let packed = y.advanced(by: 4).assumingMemoryBound(to: UInt8.self)
                for j in 0..<12 { packed[j] = 0 }
                for j in 0..<8 {
                    let ls = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
                    let lm = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
                    if j < 4 {
                        packed[j] = ls
                        packed[j + 4] = lm
                    } else {
                        packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4)
                        packed[j - 4] |= (ls >> 4) << 6
                        packed[j] |= (lm >> 4) << 6
                    }
                }
                storeHalf(y, 0, maxScale / 63)
                storeHalf(y, 2, maxMin / 63)

                // The codes again, against the rounded scales (a sub-block whose scale
                // rounds to 0 keeps its fit's codes, as ggml does).
                let d = loadHalf(y, 0), dmin = loadHalf(y, 2)
                for j in 0..<8 {
                    let (sc, m) = scaleMinK4(j, UnsafeRawPointer(packed))
                    let dj = d * Float(sc)
                    if dj == 0 { continue }
                    let mj = dmin * Float(m)
                    for l in 0..<32 {
                        codes[32 * j + l] = UInt8(Swift.max(0, Swift.min(15, nearestInt((x[32 * j + l] + mj) / dj))))
                    }
                }

                // Nibbles: byte l of each 32-byte group holds weights l (low) and l + 32 (high) of 64.
                let q = y.advanced(by: 16).assumingMemoryBound(to: UInt8.self)
                for g in 0..<4 {
                    for l in 0..<32 { q[32 * g + l] = codes[64 * g + l] | (codes[64 * g + l + 32] << 4) }
                }
            }
        }
    }
}

/// One group's symmetric fit (ggml's make_qx_quants with rmse_type 1 and no importance
/// weights): codes l + nmax with l in −nmax...nmax−1 written to `codes`, weights x², the scale
/// chosen among 19 candidates by weighted least squares; returns the scale (0 for a group
/// that is all below 1e-15).
func makeQXQuants(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ codes: UnsafeMutablePointer<Int8>) -> Float {
    var max: Float = 0, amax: Float = 0
    for i in 0..<n where abs(x[i]) > amax {
        amax = abs(x[i])
        max = x[i]
    }
    if amax < 1e-15 {
        for i in 0..<n { codes[i] = 0 }
        return 0
    }
    let fmax = Float(nmax)
    @inline(__always) func code(_ iscale: Float, _ i: Int) -> Int {
        Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))
    }
    var iscale = -fmax / max
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = code(iscale, i)
        codes[i] = Int8(l + nmax)
        let w = x[i] * x[i], fl = Float(l)
        sumLX += w * x[i] * fl
        sumL2 += w * fl * fl
    }
    var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
    var best = scale * sumLX
    for step in -9...9 where step != 0 {
        iscale = -(fmax + 0.1 * Float(step)) / max
        sumLX = 0
        sumL2 = 0
        for i in 0..<n {
            let w = x[i] * x[i], fl = Float(code(iscale, i))
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
            for i in 0..<n { codes[i] = Int8(nmax + code(iscale, i)) }
            scale = sumLX / sumL2
            best = scale * sumLX
        }
    }
    return scale
}

/// Quantizes `count` floats (a multiple of 256) into Q6_K blocks at `dst` (210 bytes per 256),
/// bit for bit as ggml's quantize_row_q6_K_ref: sixteen groups of 16 fitted with 6-bit codes
/// (make_qx_quants), their scales quantized to 8 bits against d = −(largest |scale|'s scale)/128,
/// the codes recomputed against the rounded scales; layout ql[128] (low nibbles), qh[64]
/// (high 2 bits), scales[16] (int8), d (half).
public func quantizeRowQ6_K(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    precondition(count % 256 == 0, "quantizeRowQ6_K: \(count) values is not a whole number of 256-value super-blocks")
    withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { codeBuffer in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scaleBuffer in
            let codes = codeBuffer.baseAddress!, scales = scaleBuffer.baseAddress!
            for b in 0..<(count / 256) {
                let x = src + 256 * b
                let y = dst + 210 * b
                var maxScale: Float = 0, maxAbsScale: Float = 0
                for g in 0..<16 {
                    scales[g] = makeQXQuants(16, 32, x + 16 * g, codes + 16 * g)
                    if abs(scales[g]) > maxAbsScale {
                        maxAbsScale = abs(scales[g])
                        maxScale = scales[g]
                    }
                }
                if maxAbsScale < 1e-15 {
                    y.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
                    continue
                }
                let iscale = -128 / maxScale
                storeHalf(y, 208, 1 / iscale)
                let packedScales = (y + 192).assumingMemoryBound(to: Int8.self)
                for g in 0..<16 { packedScales[g] = Int8(truncatingIfNeeded: Swift.min(127, nearestInt(iscale * scales[g]))) }
                let d = loadHalf(y, 208)
                for g in 0..<16 {
                    let dg = d * Float(packedScales[g])
                    if dg == 0 { continue }
                    for i in 0..<16 {
                        codes[16 * g + i] = Int8(Swift.max(-32, Swift.min(31, nearestInt(x[16 * g + i] / dg))) + 32)
                    }
                }
                // Per 128 weights: 64 bytes of low nibbles (l and l + 64 share a byte, as do
                // l + 32 and l + 96) and 32 bytes of high 2-bit pairs (four weights per byte).
                let ql = y.assumingMemoryBound(to: UInt8.self), qh = ql + 128
                for half in 0..<2 {
                    let c = codes + 128 * half, low = ql + 64 * half, high = qh + 32 * half
                    for l in 0..<32 {
                        let q0 = UInt8(bitPattern: c[l]), q1 = UInt8(bitPattern: c[l + 32])
                        let q2 = UInt8(bitPattern: c[l + 64]), q3 = UInt8(bitPattern: c[l + 96])
                        low[l] = (q0 & 0xf) | ((q2 & 0xf) << 4)
                        low[l + 32] = (q1 & 0xf) | ((q3 & 0xf) << 4)
                        high[l] = (q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6)
                    }
                }
            }
        }
    }
}

/// Quantizes one row into `type`: the block formats' own quantizers, and Q4_K's and Q6_K's above
/// (which the table of formats does not list as quantizable).
public func quantizeRowAnyFormat(_ type: GGMLType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
    if type == .q4_K {
        quantizeRowQ4_K(src, count: count, into: dst)
    } else if type == .q6_K {
        quantizeRowQ6_K(src, count: count, into: dst)
    } else {
        quantizeRow(type, src, count: count, into: dst)
    }
}

/// Whether `quantizeRowAnyFormat` can write rows of `count` values in `type`.
public func canQuantizeRow(_ type: GGMLType, count: Int) -> Bool {
    if type == .q4_K || type == .q6_K { return count % 256 == 0 }
    guard let t = type.traits, t.quantizeRow != nil else { return false }
    return count % t.blockSize == 0
}
