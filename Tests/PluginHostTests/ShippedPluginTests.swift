import Foundation
import PluginHost
import Testing
import TestSupport
import ZerothOrder

/// The plugins shipped in Plugins/, found beside the test bundle: each passes the
/// conformance check, ZO-SGD equals the built-in ZOSGD bit for bit, and the C plugins
/// match Swift references of their formulas.
@Suite struct ShippedPluginTests {
    static let names = ["zo-sgd", "zo-sgd-sign", "zo-adam", "hizoo", "mfac", "polargrad", "lozo"]

    @Test(arguments: names) func passesConformance(_ name: String) {
        let results = PluginHost.checkConformance(TestPlugins.shipped(name))
        for r in results where !r.passed { Issue.record("\(name): \(r)") }
        #expect(results.count >= 13)
    }

    @Test func conformanceFailsABrokenPlugin() throws {
        let results = PluginHost.checkConformance(try TestPlugins.build("nan-check", defines: ["STEP_WRITES_NAN"]))
        let failed = results.filter { !$0.passed }.map(\.check)
        #expect(failed.contains("loss falls on a quadratic (directions)"), "\(results)")
        #expect(results.first?.passed == true)
    }

    @Test func foundByNameBesideTheExecutable() throws {
        for name in Self.names {
            #expect(try PluginHost.resolve(name) == TestPlugins.shipped(name))
        }
        let found = PluginHost.discover()
        for name in Self.names {
            let entry = found.first { $0.name == name }
            guard case .success(let d)? = entry?.result else {
                Issue.record("\(name) not discovered: \(String(describing: entry))")
                continue
            }
            // hizoo 1.1.0 added the block option.
            #expect(d.name == name && d.abi == PluginHost.abiVersion && d.version == (name == "hizoo" ? "1.1.0" : "1.0.0"))
        }
        let zosgd = try PluginHost.describe("zo-sgd")
        #expect(zosgd.keepLoaded)                    // Swift: never dlclosed
        #expect(try !PluginHost.describe("zo-adam").keepLoaded)
        #expect(try PluginHost.describe("hizoo").needsUnperturbedLoss)
        #expect(try PluginHost.describe("hizoo").providesPerturbationScale)
    }

    // MARK: - Same numbers as the references

    /// Random values and step contexts, the same for every optimizer under test.
    struct Run {
        let sizes: [Int]
        var values: [[Float]]
        var generator: SplitMix

        init(sizes: [Int], seed: UInt64) {
            self.sizes = sizes
            generator = SplitMix(seed: seed)
            var g = generator
            values = sizes.map { n in (0..<n).map { _ in g.uniform(-1, 1) } }
            generator = g
        }

        mutating func context(step: Int, directions: Int, dense: Bool, learningRate: Float = 0.01,
                              unperturbed: Bool = false) -> (StepContext, [[Float]]) {
            let ds = (0..<directions).map { j -> Direction in
                let lossPlus = generator.uniform(2, 3), lossMinus = generator.uniform(2, 3)
                return Direction(seed: Perturbation.directionSeed(runSeed: 77, step: step, direction: j),
                                 derivative: generator.uniform(-5, 5), lossPlus: lossPlus, lossMinus: lossMinus)
            }
            let denseValues = dense ? sizes.map { n in (0..<n).map { _ in generator.uniform(-2, 2) } } : []
            return (StepContext(step: step, learningRate: learningRate, epsilon: 1e-3, directions: ds,
                                unperturbedLoss: unperturbed ? generator.uniform(2, 3) : nil), denseValues)
        }
    }

    /// Steps `optimizer` on `values` with `c` (and the dense estimates, if any).
    static func step(_ optimizer: Optimizer, _ c: StepContext, dense: [[Float]], _ values: inout [[Float]]) throws {
        var c = c
        let denseBuffers = dense.map { d -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: d.count)
            p.initialize(from: d, count: d.count)
            return p
        }
        defer { denseBuffers.forEach { $0.deallocate() } }
        if !dense.isEmpty { c.dense = denseBuffers.map { UnsafePointer($0) } }
        let buffers = values.map { v -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: v.count)
            p.initialize(from: v, count: v.count)
            return p
        }
        defer { buffers.forEach { $0.deallocate() } }
        let groups = buffers.enumerated().map { g, p in ParameterGroup(name: "g\(g)", values: p, count: values[g].count) }
        try optimizer.step(c, groups)
        values = buffers.enumerated().map { g, p in Array(UnsafeBufferPointer(start: p, count: values[g].count)) }
    }

    /// Groups that cross the plugins' 4096-value chunks, and tiny ones.
    static let sizes = [5000, 7, 1, 4096]

    @Test(arguments: [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)])
    func zoSGDPluginEqualsBuiltInBitForBit(_ momentum: Double, _ weightDecay: Double) throws {
        let builtIn = ZOSGD(groupSizes: Self.sizes, momentum: Float(momentum), weightDecay: Float(weightDecay))
        let plugin = try PluginHost.loadOptimizer(TestPlugins.shipped("zo-sgd"),
                                                  options: ["momentum=\(momentum)", "weight_decay=\(weightDecay)"],
                                                  groups: Self.sizes.enumerated().map { ("g\($0)", $1) })
        var run = Run(sizes: Self.sizes, seed: 1)
        var a = run.values, b = run.values
        for t in 1...7 {
            let (c, dense) = run.context(step: t, directions: [1, 2, 3, 2, 1, 4, 2][t - 1], dense: t == 4)
            try Self.step(builtIn, c, dense: dense, &a)
            try Self.step(plugin, c, dense: dense, &b)
            #expect(a.map { $0.map(\.bitPattern) } == b.map { $0.map(\.bitPattern) }, "step \(t)")
        }
        #expect(a != run.values)
    }

    /// |a − b| ≤ 1e-6 · max(1, |b|) everywhere: the C plugins and their Swift references do
    /// the same float operations in the same order (on x86-64 they agree bit for bit), but
    /// a C compiler may fuse a multiply and an add (FMA) on targets that have one, which
    /// changes the last bits.
    static func expectClose(_ a: [[Float]], _ b: [[Float]], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var worst: Float = 0
        for (x, y) in zip(a.joined(), b.joined()) { worst = max(worst, abs(x - y) / max(1, abs(y))) }
        #expect(worst <= 1e-6, "\(what): relative difference \(worst)", sourceLocation: sourceLocation)
    }

    @Test func zoAdamMatchesItsFormulas() throws {
        let (b1, b2, eps, wd): (Float, Float, Float, Float) = (0.8, 0.99, 1e-3, 0.01)
        let plugin = try PluginHost.loadOptimizer(TestPlugins.shipped("zo-adam"),
                                                  options: ["beta1=0.8", "beta2=0.99", "eps=1e-3", "weight_decay=0.01"],
                                                  groups: Self.sizes.enumerated().map { ("g\($0)", $1) })
        var run = Run(sizes: Self.sizes, seed: 2)
        var reference = run.values, values = run.values
        var m = Self.sizes.map { [Float](repeating: 0, count: $0) }
        var v = m
        for t in 1...6 {
            let (c, dense) = run.context(step: t, directions: 2, dense: t == 3)
            try Self.step(plugin, c, dense: dense, &values)
            let c1 = Float(1 / (1 - pow(Double(b1), Double(t)))), c2 = Float(1 / (1 - pow(Double(b2), Double(t))))
            for (g, n) in Self.sizes.enumerated() {
                var est = [Float](repeating: 0, count: n)
                if dense.isEmpty { gradientEstimate(c, group: g, count: n, into: &est) } else { est = dense[g] }
                for i in 0..<n {
                    m[g][i] = b1 * m[g][i] + (1 - b1) * est[i]
                    v[g][i] = b2 * v[g][i] + (1 - b2) * (est[i] * est[i])
                    let mh = m[g][i] * c1, vh = v[g][i] * c2
                    reference[g][i] -= c.learningRate * (mh / (sqrtf(vh) + eps) + wd * reference[g][i])
                }
            }
            Self.expectClose(values, reference, "step \(t)")
        }
    }

    @Test func zoSGDSignMatchesItsFormulas() throws {
        let wd: Float = 0.05
        let plugin = try PluginHost.loadOptimizer(TestPlugins.shipped("zo-sgd-sign"), options: ["weight_decay=0.05"],
                                                  groups: Self.sizes.enumerated().map { ("g\($0)", $1) })
        var run = Run(sizes: Self.sizes, seed: 3)
        var reference = run.values, values = run.values
        for t in 1...5 {
            let (c, dense) = run.context(step: t, directions: 3, dense: t == 2)
            try Self.step(plugin, c, dense: dense, &values)
            let lr = c.learningRate, n = Float(c.directions.count)
            for (g, size) in Self.sizes.enumerated() {
                for i in 0..<size { reference[g][i] -= lr * wd * reference[g][i] }
                if !dense.isEmpty {
                    for i in 0..<size { reference[g][i] -= lr * Float(signOf: dense[g][i]) }
                } else {
                    for d in c.directions {
                        let alpha = -lr * Float(signOf: d.derivative) / n
                        Perturbation.addScaled(alpha: alpha, seed: d.seed, group: UInt32(g), to: &reference[g], count: size)
                    }
                }
            }
            Self.expectClose(values, reference, "step \(t)")
        }
    }

    @Test func hiZOOMatchesItsFormulas() throws {
        let (alpha, floor): (Float, Float) = (0.05, 1e-4)
        let plugin = try PluginHost.loadOptimizer(TestPlugins.shipped("hizoo"), options: ["alpha=0.05"],
                                                  groups: Self.sizes.enumerated().map { ("g\($0)", $1) })
        #expect(plugin.needsUnperturbedLoss)
        var run = Run(sizes: Self.sizes, seed: 4)
        var reference = run.values, values = run.values
        var sigma = Self.sizes.map { [Float](repeating: 1, count: $0) }
        var scale = sigma
        for t in 1...5 {
            let (c, dense) = run.context(step: t, directions: 2, dense: t == 4, learningRate: 1e-3, unperturbed: true)
            // The scale the engine perturbs with is the plugin's.
            for (g, n) in Self.sizes.enumerated() {
                let s = try #require(plugin.perturbationScale(group: g))
                Self.expectClose([Array(UnsafeBufferPointer(start: s, count: n))], [scale[g]], "scale before step \(t)")
            }
            try Self.step(plugin, c, dense: dense, &values)
            let eps = Double(c.epsilon), l0 = Double(c.unperturbedLoss!)
            let w = c.directions.map { Float(abs(Double($0.lossPlus) + Double($0.lossMinus) - 2 * l0) / (2 * eps * eps)) }
            let n = Float(c.directions.count)
            for (g, size) in Self.sizes.enumerated() {
                var est = [Float](repeating: 0, count: size)
                if dense.isEmpty {
                    scale[g].withUnsafeBufferPointer { gradientEstimate(c, group: g, count: size, scale: $0.baseAddress, into: &est) }
                } else {
                    est = dense[g]
                }
                var h = [Float](repeating: 0, count: size)
                for (j, d) in c.directions.enumerated() {
                    var z = [Float](repeating: 0, count: size)
                    Perturbation.fill(seed: d.seed, group: UInt32(g), start: 0, count: size, into: &z)
                    for i in 0..<size { h[i] += w[j] * (z[i] * z[i]) }
                }
                for i in 0..<size {
                    reference[g][i] -= c.learningRate * (est[i] + 0 * reference[g][i])
                    var next = (1 - alpha) * sigma[g][i] + alpha * (h[i] / n) * sigma[g][i]
                    next = min(max(next, floor), 1e20)
                    sigma[g][i] = next
                    scale[g][i] = 1 / sqrtf(next)
                }
            }
            Self.expectClose(values, reference, "step \(t)")
        }
        #expect(scale.joined().contains { $0 != 1 })
    }
}

/// Test data from TestSupport's seeded generator.
typealias SplitMix = SplitMix64

extension SplitMix64 {
    init(seed: UInt64) { self.init(state: seed) }

    mutating func uniform(_ lo: Float, _ hi: Float) -> Float {
        lo + (hi - lo) * Float(next() >> 40) * 0x1p-24
    }
}

extension Float {
    init(signOf x: Float) { self = x > 0 ? 1 : (x < 0 ? -1 : 0) }
}
