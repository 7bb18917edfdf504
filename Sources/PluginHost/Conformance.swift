// `edge-finetune plugins check`: a conformance run any plugin author can use. Each
// check is one pass/fail line. The optimizer is driven on a small separable quadratic
//   L(θ) = ½ Σᵢ hᵢ (θᵢ − cᵢ)²,   hᵢ ∈ [0.5, 2],  minimum L = 0 at θ = c,
// in two groups of awkward sizes: a vector of 7 values and a (3, 5) matrix, from θ = 0.
// The check forms the zeroth-order estimates itself from the quadratic's exact losses,
// as the engine would: for each direction j, z_j from Perturbation (seed j of the step)
// or the plugin's own p_j when it has a perturbation hook (ABI 1.1), s the plugin's
// perturbation scale, L± = L(θ ± ε s⊙z_j), d_j = (L₊ − L₋) / (2ε), and L₀ = L(θ) when
// the plugin asks for it.

import COptimizerABI
import Foundation
import ZerothOrder

/// One line of the conformance run.
public struct ConformanceResult: Sendable, CustomStringConvertible {
    public var check: String
    public var passed: Bool
    public var detail: String

    public var description: String {
        (passed ? "PASS  " : "FAIL  ") + check + (detail.isEmpty ? "" : (passed ? "  (" + detail + ")" : ": " + detail))
    }
}

/// How the quadratic is driven.
public struct ConformanceSettings: Sendable {
    /// Learning rate of the descent checks (the others use it too).
    public var learningRate: Float = 0.01
    /// Steps of each descent check.
    public var steps = 400
    /// Perturbation size ε.
    public var epsilon: Float = 1e-3
    /// Directions per step.
    public var directions = 2
    /// `name=value` options applied to every instance except the per-option creates.
    public var options: [String] = []
    /// The loss must end below this fraction of where it started.
    public var requiredLossRatio = 0.5
    /// What each config and instance may allocate through the host's mem_alloc (the checks'
    /// groups hold 20 values: a plugin needing more than this has a bug).
    public var memoryLimit = 256 << 20

    public init() {}
}

extension PluginHost {
    /// Runs every check on the plugin NAME or PATH. The first failure to load stops the run
    /// (that one failed line is returned); every other check runs whatever the others said.
    public static func checkConformance(_ nameOrPath: String, settings: ConformanceSettings = ConformanceSettings()) -> [ConformanceResult] {
        var results: [ConformanceResult] = []
        func record(_ check: String, _ body: () throws -> String) {
            do {
                results.append(ConformanceResult(check: check, passed: true, detail: try body()))
            } catch {
                results.append(ConformanceResult(check: check, passed: false, detail: "\(error)"))
            }
        }

        // Loading: the library, the entry, the handshake, the descriptor and its options.
        let plugin: LoadedPlugin
        do {
            plugin = try load(nameOrPath)
        } catch {
            return [ConformanceResult(check: "loads and negotiates", passed: false, detail: error.description)]
        }
        let d = plugin.description
        results.append(ConformanceResult(
            check: "loads and negotiates", passed: true,
            detail: "\(d.name) \(d.version), ABI \(d.abi) with host ABI \(abiVersion), \(d.options.count) option\(d.options.count == 1 ? "" : "s"), from \(d.path)"))

        let check = ConformanceRun(plugin: plugin, settings: settings)
        record("creates with defaults") { try check.createWithDefaults() }
        for option in d.options {
            record("creates with \(option.name)=\(option.defaultValue) (\(option.type), through its setter)") {
                try check.create(setting: option)
            }
        }
        // Options that do not parse or that the plugin refuses would fail every check below.
        if !settings.options.isEmpty {
            record("creates with the given options") { try check.createWithGivenOptions() }
            if results.last?.passed == false { return results }
        }
        if d.providesPerturbationScale {
            record("perturbation scale is finite and positive") { try check.scaleIsFiniteAndPositive() }
        }
        if d.providesPerturbation {
            record("perturbation hook: deterministic in its seed, finite, the group's size") { try check.perturbationHook() }
        }
        record("a 1.0 host's create_info: works, or is refused naming the field") { try check.abi10Host() }
        record("loss falls on a quadratic (directions)") { try check.descends(dense: false) }
        record("loss falls on a quadratic (dense estimate)") { try check.descends(dense: true) }
        record("save -> load -> step equals step, bit for bit") { try check.saveLoadStep() }
        record("load_state refuses a state of the wrong size") { try check.refusesWrongSizeState() }
        record("two instances do not share state") { try check.instancesAreIndependent() }
        record("rejects a NaN directional derivative") { try check.rejects(.nanDerivative) }
        record("rejects an infinite directional derivative") { try check.rejects(.infiniteDerivative) }
        record("rejects a NaN learning rate") { try check.rejects(.nanLearningRate) }
        record("rejects a NaN in a dense estimate") { try check.rejects(.nanDense) }
        if d.needsUnperturbedLoss {
            record("rejects a NaN unperturbed loss") { try check.rejects(.nanUnperturbedLoss) }
        }
        record("destroy frees everything allocated through the host") { try check.destroyFreesEverything() }
        return results
    }
}

/// A failed check's reason.
struct CheckFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The separable quadratic and its exact losses.
struct Quadratic {
    static let groups: [GroupLayout] = [GroupLayout(name: "a", count: 7),
                                        GroupLayout(name: "b", count: 15, shape: [3, 5], tensors: ["check.b"])]
    /// (groups) -> (count) curvature hᵢ and minimum cᵢ.
    let h: [[Double]]
    let c: [[Double]]

    init() {
        var h: [[Double]] = []
        var c: [[Double]] = []
        var k = 0
        for group in Quadratic.groups {
            var hg: [Double] = []
            var cg: [Double] = []
            for _ in 0..<group.count {
                k += 1
                let golden = (Double(k) * 0.6180339887498949).truncatingRemainder(dividingBy: 1)
                hg.append(0.5 + 1.5 * golden)
                cg.append(1.5 * sin(Double(k) * 1.3))
            }
            h.append(hg)
            c.append(cg)
        }
        self.h = h
        self.c = c
    }

    func loss(_ values: [UnsafeMutablePointer<Float>]) -> Double {
        loss { g, i in Double(values[g][i]) }
    }

    func loss(_ value: (Int, Int) -> Double) -> Double {
        var total = 0.0
        for g in h.indices {
            for i in h[g].indices {
                let e = value(g, i) - c[g][i]
                total += 0.5 * h[g][i] * e * e
            }
        }
        return total
    }
}

/// Parameters of the quadratic's shape, at stable addresses.
final class Parameters {
    let values: [UnsafeMutablePointer<Float>]

    init(fill: Float = 0) {
        values = Quadratic.groups.map { group in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: group.count)
            p.initialize(repeating: fill, count: group.count)
            return p
        }
    }

    init(copying other: Parameters) {
        values = Quadratic.groups.enumerated().map { g, group in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: group.count)
            p.initialize(from: other.values[g], count: group.count)
            return p
        }
    }

    deinit { values.forEach { $0.deallocate() } }

    var groups: [ParameterGroup] {
        Quadratic.groups.enumerated().map { g, group in ParameterGroup(name: group.name, values: values[g], count: group.count) }
    }

    /// The values' bit patterns, for exact comparisons.
    var bits: [[UInt32]] {
        Quadratic.groups.enumerated().map { g, group in (0..<group.count).map { values[g][$0].bitPattern } }
    }
}

/// The checks themselves, each returning a detail for its PASS line or throwing why it failed.
struct ConformanceRun {
    let plugin: LoadedPlugin
    let settings: ConformanceSettings
    let quadratic = Quadratic()

    func make(_ options: [String]? = nil) throws -> PluginOptimizer {
        try plugin.makeOptimizer(options: options ?? settings.options, groups: Quadratic.groups, memoryBudget: settings.memoryLimit)
    }

    func createWithDefaults() throws -> String {
        let optimizer = try plugin.makeOptimizer(options: [], groups: Quadratic.groups, memoryBudget: settings.memoryLimit)
        return "state \(optimizer.pluginStateSize) bytes, \(optimizer.allocatedBytes) bytes allocated through the host"
    }

    func create(setting option: OptionDescription) throws -> String {
        let text = "\(option.name)=\(option.defaultValue)"
        _ = try plugin.makeOptimizer(options: [text], groups: Quadratic.groups, memoryBudget: settings.memoryLimit)
        return ""
    }

    func createWithGivenOptions() throws -> String {
        _ = try make()
        return settings.options.joined(separator: " ")
    }

    /// The step's context at θ: losses and derivatives along each direction, scaled by
    /// the optimizer's current perturbation scale; the exact gradient as the dense estimate.
    func context(step: Int, runSeed: UInt64, at p: Parameters, optimizer: PluginOptimizer, dense: Bool,
                 denseStorage: inout [[Float]]) -> StepContext {
        let eps = settings.epsilon
        var directions: [Direction] = []
        for j in 0..<settings.directions {
            let seed = Perturbation.directionSeed(runSeed: runSeed, step: step, direction: j)
            var z: [[Float]] = []
            var s: [[Float]] = []
            for (g, group) in Quadratic.groups.enumerated() {
                var zg = [Float](repeating: 0, count: group.count)
                if optimizer.providesPerturbation {
                    // The plugin's own direction (checked by the adapter); z when it fails.
                    if (try? optimizer.perturbation(step: step, seed: seed, direction: j, group: g, count: group.count, into: &zg)) == nil {
                        Perturbation.fill(seed: seed, group: UInt32(g), start: 0, count: group.count, into: &zg)
                    }
                } else {
                    Perturbation.fill(seed: seed, group: UInt32(g), start: 0, count: group.count, into: &zg)
                }
                z.append(zg)
                let scale = optimizer.perturbationScale(group: g)
                s.append((0..<group.count).map { scale?[$0] ?? 1 })
            }
            // θ ± ε s⊙z in float, as the engine perturbs the fp32 values.
            let plus = quadratic.loss { g, i in Double(p.values[g][i] + eps * s[g][i] * z[g][i]) }
            let minus = quadratic.loss { g, i in Double(p.values[g][i] - eps * s[g][i] * z[g][i]) }
            let derivative = Float((plus - minus) / (2 * Double(eps)))
            directions.append(Direction(seed: seed, derivative: derivative, lossPlus: Float(plus), lossMinus: Float(minus)))
        }
        if dense {
            denseStorage = Quadratic.groups.enumerated().map { g, group in
                (0..<group.count).map { i in Float(quadratic.h[g][i] * (Double(p.values[g][i]) - quadratic.c[g][i])) }
            }
        }
        let unperturbed: Float? = optimizer.needsUnperturbedLoss ? Float(quadratic.loss(p.values)) : nil
        return StepContext(step: step, learningRate: settings.learningRate, epsilon: eps, directions: directions,
                           unperturbedLoss: unperturbed)
    }

    /// One step of `optimizer` on `p` through the adapter (the path a training run takes).
    func step(_ optimizer: PluginOptimizer, _ p: Parameters, step: Int, runSeed: UInt64, dense: Bool = false) throws {
        var storage: [[Float]] = []
        var c = context(step: step, runSeed: runSeed, at: p, optimizer: optimizer, dense: dense, denseStorage: &storage)
        if dense {
            try withDense(storage) { pointers throws in
                c.dense = pointers
                try optimizer.step(c, p.groups)
            }
        } else {
            try optimizer.step(c, p.groups)
        }
    }

    func descends(dense: Bool) throws -> String {
        let optimizer = try make()
        let p = Parameters()
        let start = quadratic.loss(p.values)
        for t in 1...settings.steps { try step(optimizer, p, step: t, runSeed: 0xC0FFEE, dense: dense) }
        let end = quadratic.loss(p.values)
        let detail = "loss \(short(start)) -> \(short(end)) in \(settings.steps) steps at learning rate \(settings.learningRate)"
        guard end.isFinite, end < settings.requiredLossRatio * start else {
            throw CheckFailure(detail + ", not below \(settings.requiredLossRatio) of the start; try --learning-rate or --steps")
        }
        return detail
    }

    func scaleIsFiniteAndPositive() throws -> String {
        let optimizer = try make()
        let p = Parameters()
        func checkScale(_ when: String) throws {
            for (g, group) in Quadratic.groups.enumerated() {
                guard let s = optimizer.perturbationScale(group: g) else { continue }
                for i in 0..<group.count where !(s[i].isFinite && s[i] > 0) {
                    throw CheckFailure("\(when): scale of group \(g) is \(s[i]) at index \(i)")
                }
            }
        }
        try checkScale("after create")
        for t in 1...20 { try step(optimizer, p, step: t, runSeed: 7) }
        try checkScale("after 20 steps")
        return ""
    }

    /// p for the same (state, arguments) twice: the same bits; another seed: other values;
    /// every value finite and exactly the group's count written (the adapter checks those).
    func perturbationHook() throws -> String {
        let optimizer = try make()
        let p = Parameters()
        for t in 1...3 { try step(optimizer, p, step: t, runSeed: 13) }
        var details: [String] = []
        for (g, group) in Quadratic.groups.enumerated() {
            let seed = Perturbation.directionSeed(runSeed: 13, step: 4, direction: 0)
            var first = [Float](repeating: 0, count: group.count)
            var second = [Float](repeating: 0, count: group.count)
            var other = [Float](repeating: 0, count: group.count)
            try optimizer.perturbation(step: 4, seed: seed, direction: 0, group: g, count: group.count, into: &first)
            try optimizer.perturbation(step: 4, seed: seed, direction: 0, group: g, count: group.count, into: &second)
            try optimizer.perturbation(step: 4, seed: seed ^ 0x5A5A, direction: 0, group: g, count: group.count, into: &other)
            guard first.map(\.bitPattern) == second.map(\.bitPattern) else {
                throw CheckFailure("two calls with the same seed gave different values for group '\(group.name)'")
            }
            guard first != other else { throw CheckFailure("another seed gave the same values for group '\(group.name)'") }
            let meanSquare = first.reduce(0) { $0 + Double($1 * $1) } / Double(group.count)
            details.append("group \(group.name) \(group.shape): mean p² \(short(meanSquare))")
        }
        return details.joined(separator: ", ")
    }

    /// The plugin created from a 1.0-sized create_info (no shapes) and stepped with 1.0-sized
    /// arguments, as a 1.0 host would: it must work, or refuse naming what it misses.
    func abi10Host() throws -> String {
        do {
            let optimizer = try plugin.makeOptimizer(options: settings.options, groups: Quadratic.groups,
                                                     memoryBudget: settings.memoryLimit, abi10Only: true)
            let p = Parameters()
            for t in 1...3 { try step(optimizer, p, step: t, runSeed: 17) }
            return "works: 3 steps with 1.0 arguments"
        } catch let error as PluginError {
            let text = error.description
            guard text.contains("edge_opt_") else {
                throw CheckFailure("refused without naming the missing field (edge_opt_...): \(text)")
            }
            return "refused: \(oneLine(text))"
        }
    }

    func saveLoadStep() throws -> String {
        let a = try make()
        let p = Parameters()
        for t in 1...5 { try step(a, p, step: t, runSeed: 11) }
        let saved = try a.saveState()
        let q = Parameters(copying: p)
        let b = try make()
        try b.loadState(saved)
        for (g, group) in Quadratic.groups.enumerated() {
            let sa = a.perturbationScale(group: g), sb = b.perturbationScale(group: g)
            if (sa == nil) != (sb == nil) { throw CheckFailure("the perturbation scale differs after load (one is NULL)") }
            if let sa, let sb, (0..<group.count).contains(where: { sa[$0].bitPattern != sb[$0].bitPattern }) {
                throw CheckFailure("the perturbation scale of group \(g) differs after load")
            }
        }
        // The same step (same context) on both.
        var storage: [[Float]] = []
        let c = context(step: 6, runSeed: 11, at: p, optimizer: a, dense: false, denseStorage: &storage)
        try a.step(c, p.groups)
        try b.step(c, q.groups)
        guard p.bits == q.bits else { throw CheckFailure("the parameters after the step differ") }
        guard try a.saveState() == b.saveState() else { throw CheckFailure("the states after the step differ") }
        return "\(saved.count) bytes of state"
    }

    func refusesWrongSizeState() throws -> String {
        let a = try make()
        let saved = try a.saveState()
        let d = plugin.descriptor
        var message: UnsafePointer<CChar>?
        var longer = saved + [0]
        let status = longer.withUnsafeMutableBytes { d.load_state!(a.instance, $0.baseAddress, UInt64(saved.count + 1), &message) }
        guard status != EDGE_OPT_OK else { throw CheckFailure("load_state accepted \(saved.count + 1) bytes for a \(saved.count)-byte state") }
        return message.map { "\"" + oneLine(String(cString: $0)) + "\"" } ?? "no message"
    }

    func instancesAreIndependent() throws -> String {
        // The reference: one instance alone.
        let reference: [[[UInt32]]]
        do {
            let r = try make()
            let p = Parameters()
            var trace: [[[UInt32]]] = []
            for t in 1...6 {
                try step(r, p, step: t, runSeed: 21)
                trace.append(p.bits)
            }
            reference = trace
        }
        // The same run interleaved with another instance stepping other values along other directions.
        let a = try make()
        let b = try make()
        let p = Parameters()
        let q = Parameters(fill: 1)
        for t in 1...6 {
            try step(a, p, step: t, runSeed: 21)
            try step(b, q, step: t, runSeed: 99)
            guard p.bits == reference[t - 1] else {
                throw CheckFailure("stepping a second instance changed the first one's step \(t)")
            }
        }
        return ""
    }

    enum BadInput { case nanDerivative, infiniteDerivative, nanLearningRate, nanDense, nanUnperturbedLoss }

    /// The plugin's own step (without the adapter's checks) must refuse the input with an
    /// error and leave the parameters as they were.
    func rejects(_ bad: BadInput) throws -> String {
        let optimizer = try make()
        let p = Parameters()
        try step(optimizer, p, step: 1, runSeed: 5)
        var storage: [[Float]] = []
        var c = context(step: 2, runSeed: 5, at: p, optimizer: optimizer, dense: bad == .nanDense, denseStorage: &storage)
        switch bad {
        case .nanDerivative: c.directions[0].derivative = .nan
        case .infiniteDerivative: c.directions[c.directions.count - 1].derivative = .infinity
        case .nanLearningRate: c.learningRate = .nan
        case .nanDense: storage[1][5] = .nan
        case .nanUnperturbedLoss: c.unperturbedLoss = .nan
        }
        let before = p.bits
        let (status, message) = withDense(bad == .nanDense ? storage : nil) { pointers in
            c.dense = pointers
            return optimizer.callStep(c, values: p.values)
        }
        guard status != EDGE_OPT_OK else {
            throw CheckFailure("step returned EDGE_OPT_OK" + (p.bits == before ? "" : " and changed the parameters"))
        }
        guard p.bits == before else {
            throw CheckFailure("step failed (\(statusName(status))) but changed the parameters")
        }
        return "\(statusName(status))" + (message.map { ": \"" + oneLine($0) + "\"" } ?? ", no message")
    }

    func destroyFreesEverything() throws -> String {
        var optimizer: PluginOptimizer? = try make()
        let host = optimizer!.host
        let p = Parameters()
        for t in 1...3 { try step(optimizer!, p, step: t, runSeed: 3) }
        let held = host.allocatedBytes
        optimizer = nil
        let left = host.allocatedBytes
        guard left == 0 else { throw CheckFailure("\(left) of \(held) bytes still allocated after destroy") }
        return "\(held) bytes freed"
    }

    private func short(_ x: Double) -> String {
        let r = (x * 10_000).rounded() / 10_000
        return "\(r)"
    }
}

/// Runs `body` with pointers to each group's dense estimate (nil when there is none).
private func withDense<R>(_ storage: [[Float]]?, _ body: ([UnsafePointer<Float>]?) throws -> R) rethrows -> R {
    guard let storage else { return try body(nil) }
    var pointers: [UnsafePointer<Float>] = []
    var buffers: [UnsafeMutablePointer<Float>] = []
    for group in storage {
        let b = UnsafeMutablePointer<Float>.allocate(capacity: group.count)
        b.initialize(from: group, count: group.count)
        buffers.append(b)
        pointers.append(UnsafePointer(b))
    }
    defer { buffers.forEach { $0.deallocate() } }
    return try body(pointers)
}
