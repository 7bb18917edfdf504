import Foundation
import Quant
import Testing

@Suite struct VectorMathTests {
    /// exp16 against the C library's expf over the whole useful range, within 3e-7 relative.
    @Test func expMatchesLibm() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88.5 {
            var v = SIMD16<Float>()
            for j in 0..<16 { v[j] = x + Float(j) * 0.0137 }
            let e = exp16(v)
            for j in 0..<16 {
                let reference = expf(v[j])
                worst = max(worst, abs(e[j] - reference) / reference)
            }
            x += 0.219
        }
        #expect(worst < 3e-7, "worst relative error \(worst)")
        let edges = exp16(SIMD16<Float>(-100, -88, 0, 89, 100, .infinity, -.infinity, 1, 2, 3, 4, 5, 6, 7, 8, 9))
        #expect(edges[0] == 0 && edges[6] == 0 && edges[2] == 1)
        #expect(edges[4] == .infinity && edges[5] == .infinity)
    }

    @Test(arguments: [1, 15, 16, 17, 576, 1000]) func softmaxEqualsGeneric(_ n: Int) {
        var rng = SystemRandomNumberGenerator()
        let x = (0..<n).map { _ in Float.random(in: -20...20, using: &rng) }
        var fast = x
        var slow = x
        let a = fast.withUnsafeMutableBufferPointer { softmax($0.baseAddress!, count: n) }
        let b = slow.withUnsafeMutableBufferPointer { softmaxGeneric($0.baseAddress!, count: n) }
        #expect(abs(a - b) < 1e-5)
        #expect(zip(fast, slow).allSatisfy { abs($0 - $1) <= 1e-6 + 1e-5 * $1 })
        #expect(abs(fast.reduce(0, +) - 1) < 1e-5)
    }

    @Test(arguments: [1, 15, 16, 33, 1536]) func siluAndNormEqualGeneric(_ n: Int) {
        var rng = SystemRandomNumberGenerator()
        let g = (0..<n).map { _ in Float.random(in: -12...12, using: &rng) }
        let u = (0..<n).map { _ in Float.random(in: -3...3, using: &rng) }
        var fast = g
        var slow = g
        fast.withUnsafeMutableBufferPointer { siluMultiply($0.baseAddress!, u, count: n) }
        slow.withUnsafeMutableBufferPointer { siluMultiplyGeneric($0.baseAddress!, u, count: n) }
        #expect(zip(fast, slow).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })

        let w = (0..<n).map { _ in Float.random(in: 0.5...1.5, using: &rng) }
        var y1 = [Float](repeating: 0, count: n)
        var y2 = [Float](repeating: 0, count: n)
        rmsNorm(g, weight: w, count: n, eps: 1e-5, into: &y1)
        rmsNormGeneric(g, weight: w, count: n, eps: 1e-5, into: &y2)
        #expect(zip(y1, y2).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) })
    }
}
