// Perturbation directions regenerated from a seed, never stored (MeZO).
//
// The generator is part of the plugin contract (edge_optimizer.h): the value z for
// (seed, group, index) is defined exactly as follows, whatever the threading or
// chunking of the caller.
//
//   1. Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
//      SC'11; Random123's philox4x32_R with R = 10):
//        key     = (seed & 0xffffffff, seed >> 32)
//        counter = (b & 0xffffffff, b >> 32, group, 0) with b = index / 4
//        output  = four UInt32 x0, x1, x2, x3
//   2. Uniforms in (0, 1), exactly representable in Float:
//        u_i = (Float(x_i >> 8) + 0.5) · 2^-24
//   3. Box–Muller, in Float arithmetic with the C library's logf, sqrtf, cosf, sinf:
//        r = sqrtf(−2 · logf(u0)),  t = 2π · u1  (2π as the Float 6.2831855)
//        z[4b + 0] = r · cosf(t),   z[4b + 1] = r · sinf(t)
//        and the same with (u2, u3) for z[4b + 2], z[4b + 3].
//
// So z ~ N(0, 1) independently per (seed, group, index); a group's values are z for
// indices 0..<count.

#if canImport(Glibc)
import Glibc
#endif
import Quant

public enum Perturbation {
    /// One Philox4x32-10 block.
    @inlinable
    public static func philox(key: (UInt32, UInt32), counter: (UInt32, UInt32, UInt32, UInt32)) -> (UInt32, UInt32, UInt32, UInt32) {
        var (c0, c1, c2, c3) = counter
        var (k0, k1) = key
        for round in 0..<10 {
            if round > 0 {
                k0 &+= 0x9E37_79B9
                k1 &+= 0xBB67_AE85
            }
            let p0 = UInt64(0xD251_1F53) &* UInt64(c0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
        }
        return (c0, c1, c2, c3)
    }

    @inline(__always) @usableFromInline
    static func unit(_ x: UInt32) -> Float {
        (Float(x >> 8) + 0.5) * 0x1p-24
    }

    /// The four values z[4b ..< 4b + 4] of (seed, group).
    @inlinable
    public static func block(seed: UInt64, group: UInt32, block b: UInt64) -> (Float, Float, Float, Float) {
        let x = philox(key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)),
                       counter: (UInt32(truncatingIfNeeded: b), UInt32(truncatingIfNeeded: b >> 32), group, 0))
        let twoPi: Float = 6.2831855
        let r0 = sqrtf(-2 * logf(unit(x.0)))
        let t0 = twoPi * unit(x.1)
        let r1 = sqrtf(-2 * logf(unit(x.2)))
        let t1 = twoPi * unit(x.3)
        return (r0 * cosf(t0), r0 * sinf(t0), r1 * cosf(t1), r1 * sinf(t1))
    }

    /// z for one index.
    public static func value(seed: UInt64, group: UInt32, index: UInt64) -> Float {
        let z = block(seed: seed, group: group, block: index / 4)
        switch index % 4 {
        case 0: return z.0
        case 1: return z.1
        case 2: return z.2
        default: return z.3
        }
    }

    /// Writes z for indices start..<start+count into `out`: whole blocks written straight
    /// through, a partial block at either end through `value`.
    public static func fill(seed: UInt64, group: UInt32, start: UInt64, count: Int, into out: UnsafeMutablePointer<Float>) {
        var i = 0
        var index = start
        while i < count && index % 4 != 0 {
            out[i] = value(seed: seed, group: group, index: index)
            i += 1
            index += 1
        }
        while count - i >= 4 {
            let z = block(seed: seed, group: group, block: index / 4)
            (out[i], out[i + 1], out[i + 2], out[i + 3]) = z
            i += 4
            index += 4
        }
        while i < count {
            out[i] = value(seed: seed, group: group, index: index)
            i += 1
            index += 1
        }
    }

    /// values[i] += alpha · scale[i] · z[i] for i in 0..<count (scale nil means 1), in
    /// chunks across threads; the result does not depend on the chunking.
    public static func addScaled(alpha: Float, seed: UInt64, group: UInt32, to values: UnsafeMutablePointer<Float>,
                                 count: Int, scale: UnsafePointer<Float>? = nil) {
        Parallel.forRanges(count, granule: 1024) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 1024) { z in
                var start = range.lowerBound
                while start < range.upperBound {
                    let n = min(1024, range.upperBound - start)
                    fill(seed: seed, group: group, start: UInt64(start), count: n, into: z.baseAddress!)
                    if let scale {
                        for j in 0..<n { values[start + j] += alpha * scale[start + j] * z[j] }
                    } else {
                        for j in 0..<n { values[start + j] += alpha * z[j] }
                    }
                    start += n
                }
            }
        }
    }

    /// A step's direction seeds: a hash of (run seed, step, direction), so a resumed run
    /// regenerates the same directions.
    public static func directionSeed(runSeed: UInt64, step: Int, direction: Int) -> UInt64 {
        var x = runSeed ^ (UInt64(truncatingIfNeeded: step) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(truncatingIfNeeded: direction) &* 0xC2B2_AE3D_27D4_EB4F)
        x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
        return x ^ (x >> 31)
    }
}
