import TestSupport
import Testing
import ZerothOrder

@Suite struct SubspaceTests {
    /// A history that moves only inside a 3-dimensional subspace keeps exactly that subspace:
    /// projecting a vector of the subspace leaves it, one orthogonal to it vanishes.
    @Test func keepsTheSubspaceTheValuesMoveIn() {
        let dim = 40
        let tau = 32
        let s = SubspaceGradient(groups: 1, dim: dim, mode: .projectEstimate, period: tau, threshold: 1e-3)
        var values = [Float](repeating: 0, count: dim)
        var rng = SplitMix64(state: 1)
        func centred() -> Double { Double(rng.next() >> 11) * 0x1p-53 - 0.5 }
        // Directions e0, e1, e2 with different variances; everything else constant.
        for step in 1...tau {
            values[0] = Float(centred()) * 3
            values[1] = Float(centred()) * 2
            values[2] = Float(centred())
            values.withUnsafeMutableBufferPointer { p in
                s.record(step: step, groups: [ParameterGroup(name: "v", values: p.baseAddress!, count: dim)])
            }
        }
        #expect(s.isActive)
        #expect(s.ranks[0] <= 3)
        var inside = [Float](repeating: 0, count: dim)
        inside[0] = 1
        s.project(group: 0, &inside, count: dim)
        var outside = [Float](repeating: 0, count: dim)
        outside[7] = 1
        s.project(group: 0, &outside, count: dim)
        #expect(abs(inside[0] - 1) < 1e-4 || s.ranks[0] < 3)
        #expect(outside.allSatisfy { abs($0) < 1e-5 })
        // Projection is idempotent.
        var twice = inside
        s.project(group: 0, &twice, count: dim)
        #expect(zip(twice, inside).allSatisfy { abs($0 - $1) < 1e-5 })
    }
}

