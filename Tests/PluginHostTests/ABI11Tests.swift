import COptimizerABI
import Foundation
import Model
import PluginHost
import Testing
import TestSupport
import ZerothOrder

/// ABI 1.1: group shapes, the perturbation hook, step metadata, and the plugins built on
/// them, each checked against a reference computed here (in Double) or against the
/// engine's own ZO-SGD.
@Suite struct ABI11Tests {
    /// A vector of 4 values and a (6, 5) matrix, as a training run would give a plugin.
    static let layout = [GroupLayout(name: "v", count: 4), GroupLayout(name: "m", count: 30, shape: [6, 5], tensors: ["blk.0.m"])]

    // MARK: - Compatibility

    /// The probe plugin built from the 1.0 header as released: it loads as ABI 1.0 and
    /// trains through the 1.1 host as the engine's ZO-SGD does.
    @Test func aVersion10PluginStillTrains() throws {
        let path = try TestPlugins.build("probe10", include: TestPlugins.abi10IncludeDirectory)
        let plugin = try LoadedPlugin(path: path)
        #expect(plugin.description.abi == ABIVersion(major: 1, minor: 0))
        #expect(!plugin.description.providesPerturbation)
        let a = QuadraticObjective(layout: Self.layout), b = QuadraticObjective(layout: Self.layout)
        let probe = try plugin.makeOptimizer(groups: Self.layout)
        let builtIn = ZOSGD(groupSizes: Self.layout.map(\.count))
        let ta = try Trainer(objective: a, optimizer: probe, settings: a.settings, train: [a.example])
        let tb = try Trainer(objective: b, optimizer: builtIn, settings: b.settings, train: [b.example])
        for _ in 0..<5 {
            try ta.runStep()
            try tb.runStep()
        }
        for g in Self.layout.indices {
            for i in 0..<Self.layout[g].count {
                // The probe adds −η dⱼ/n · zⱼ into θ, ZO-SGD subtracts η·g: two float orders, a few ulps a step.
                #expect(abs(a.values[g][i] - b.values[g][i]) <= 1e-5 * max(1, abs(b.values[g][i])), "group \(g) index \(i)")
            }
        }
        #expect(a.loss() < QuadraticObjective(layout: Self.layout).loss())
    }

    /// A shape whose product is not the group's count is refused before create, naming the
    /// plugin and the field.
    @Test func aShapeThatDoesNotMatchTheCountIsRefused() throws {
        do {
            _ = try PluginHost.loadOptimizer(TestPlugins.shipped("polargrad"),
                                             groups: [GroupLayout(name: "m", count: 15, shape: [4, 4])])
            Issue.record("a (4, 4) shape for 15 values was accepted")
        } catch {
            #expect(error.description.contains("polargrad"), "\(error)")
            #expect(error.description.contains("edge_opt_create_info.group_dims of group 'm'"), "\(error)")
        }
    }

    /// A 1.1 plugin on a path that writes only 1.0's structs: polargrad refuses naming the
    /// shapes' field, a plugin with a perturbation hook is refused naming the hook.
    @Test func aVersion11PluginOnA10PathIsRefused() throws {
        let polar = try LoadedPlugin(path: TestPlugins.shipped("polargrad"))
        #expect(throws: PluginError.self) { try polar.makeOptimizer(groups: Self.layout, abi10Only: true) }
        do { _ = try polar.makeOptimizer(groups: Self.layout, abi10Only: true) } catch {
            #expect(error.description.contains("polargrad") && error.description.contains("edge_opt_create_info.group_ranks"), "\(error)")
        }
        let lozo = try LoadedPlugin(path: TestPlugins.shipped("lozo"))
        do {
            _ = try lozo.makeOptimizer(groups: Self.layout, abi10Only: true)
            Issue.record("lozo was created on a 1.0 path")
        } catch {
            #expect(error.description.contains("lozo") && error.description.contains("edge_opt_plugin.perturbation"), "\(error)")
        }
    }

    // MARK: - The perturbation hook through the trainer

    /// LOZO's p is applied at both points, and the step moves θ by −η·d·p with d the
    /// derivative the engine measured along p.
    @Test func theEngineAppliesTheHooksPerturbationAndHandsTheSeedBack() throws {
        let objective = QuadraticObjective(layout: Self.layout)
        let optimizer = try PluginHost.loadOptimizer(TestPlugins.shipped("lozo"), options: ["rank=2"], groups: Self.layout)
        #expect(optimizer.providesPerturbation)
        let trainer = try Trainer(objective: objective, optimizer: optimizer, settings: objective.settings, train: [objective.example])
        let before = objective.snapshot()
        let seed = Perturbation.directionSeed(runSeed: objective.settings.seed, step: 1, direction: 0)
        var p: [[Float]] = []
        for (g, group) in Self.layout.enumerated() {
            var out = [Float](repeating: 0, count: group.count)
            try optimizer.perturbation(step: 1, seed: seed, direction: 0, group: g, count: group.count, into: &out)
            p.append(out)
        }
        let record = try trainer.runStep()
        let eps = objective.settings.epsilon, lr = objective.settings.learningRate
        // The points measured: θ + ε p and θ − ε p.
        #expect(objective.seen.count == 2)
        for (k, sign) in [Float(1), -1].enumerated() {
            for g in Self.layout.indices {
                for i in 0..<Self.layout[g].count {
                    #expect(abs(objective.seen[k][g][i] - (before[g][i] + sign * eps * p[g][i])) <= 1e-6)
                }
            }
        }
        // The matrix group's p is the low-rank one, not z.
        var z = [Float](repeating: 0, count: 30)
        Perturbation.fill(seed: seed, group: 1, start: 0, count: 30, into: &z)
        #expect(p[1] != z)
        #expect(try rank(of: p[1], rows: 6, cols: 5) == 2)
        // The step: θ − η d p.
        let d = record.derivatives[0]
        for g in Self.layout.indices {
            for i in 0..<Self.layout[g].count {
                let expected = before[g][i] - lr * d * p[g][i]
                #expect(abs(objective.values[g][i] - expected) <= 1e-5 * max(1, abs(expected)), "group \(g) index \(i)")
            }
        }
    }

    /// lozo's row_shared: the matrix group's direction is u 1ᵀ with u = z(seed) over its
    /// rows (every value of a row gets its row's z), and the step is θ − η d p.
    @Test func rowSharedDirectionsGiveEachRowOneFactor() throws {
        let objective = QuadraticObjective(layout: Self.layout)
        let optimizer = try PluginHost.loadOptimizer(TestPlugins.shipped("lozo"), options: ["row_shared=true"], groups: Self.layout)
        let trainer = try Trainer(objective: objective, optimizer: optimizer, settings: objective.settings, train: [objective.example])
        let before = objective.snapshot()
        let seed = Perturbation.directionSeed(runSeed: objective.settings.seed, step: 1, direction: 0)
        var p = [Float](repeating: 0, count: 30)
        try optimizer.perturbation(step: 1, seed: seed, direction: 0, group: 1, count: 30, into: &p)
        for i in 0..<6 {
            let u = Perturbation.value(seed: seed, group: 1, index: UInt64(i))
            for k in 0..<5 { #expect(p[i * 5 + k] == u, "row \(i) column \(k)") }
        }
        let record = try trainer.runStep()
        let d = record.derivatives[0], lr = objective.settings.learningRate
        for i in 0..<30 {
            let expected = before[1][i] - lr * d * p[i]
            #expect(abs(objective.values[1][i] - expected) <= 1e-5 * max(1, abs(expected)), "index \(i)")
        }
    }

    /// A hook that fails, writes a non-finite value, too few or too many values: the step
    /// fails naming the plugin and the field, no loss is measured and θ is unchanged.
    @Test(arguments: [("HOOK_NAN", "wrote nan"), ("HOOK_SHORT", "wrote fewer than the 30 values"),
                      ("HOOK_LONG", "wrote past the 30 values"), ("HOOK_FAILS", "failed (invalid argument)")])
    func aBadPerturbationIsRefusedAndThetaIsUnchanged(_ variant: String, _ expected: String) throws {
        let path = try TestPlugins.build("hooked", defines: [variant], source: Self.hookedSource)
        let objective = QuadraticObjective(layout: Self.layout)
        let optimizer = try PluginHost.loadOptimizer(path, groups: Self.layout)
        let trainer = try Trainer(objective: objective, optimizer: optimizer, settings: objective.settings, train: [objective.example])
        let before = objective.snapshot()
        do {
            try trainer.runStep()
            Issue.record("\(variant): the step succeeded")
        } catch {
            #expect(error.description.contains("hooked"), "\(error)")
            #expect(error.description.contains("edge_opt_plugin.perturbation " + expected), "\(error)")
        }
        #expect(objective.seen.isEmpty)
        #expect(objective.snapshot().map { $0.map(\.bitPattern) } == before.map { $0.map(\.bitPattern) })
    }

    /// The step metadata: the run's length, the base rate, and the first step after a resume.
    @Test func stepMetadataReachesThePlugin() throws {
        let path = try TestPlugins.build("hooked", source: Self.hookedSource)
        let objective = QuadraticObjective(layout: Self.layout)
        var settings = objective.settings
        settings.steps = 7
        let first = try Trainer(objective: objective, optimizer: try PluginHost.loadOptimizer(path, groups: Self.layout),
                                settings: settings, train: [objective.example])
        try first.runStep()
        let seen = try HookedState(first.optimizer.saveState())
        #expect(seen.totalSteps == 7 && seen.baseRate == settings.learningRate && seen.flags == 0 && seen.step == 1)
        let checkpoint = try first.checkpoint(identity: [:])
        let resumed = try Trainer(objective: objective, optimizer: try PluginHost.loadOptimizer(path, groups: Self.layout),
                                  settings: settings, train: [objective.example])
        try resumed.restore(checkpoint)
        try resumed.runStep()
        let after = try HookedState(resumed.optimizer.saveState())
        #expect(after.step == 2 && after.flags == UInt32(EDGE_OPT_STEP_FIRST_AFTER_RESUME))
        try resumed.runStep()
        #expect(try HookedState(resumed.optimizer.saveState()).flags == 0)
    }

    /// Under a schedule the plugin's learning_rate is the schedule's value at the step and
    /// base_learning_rate the base: with 4 warm-up steps, step 1 is at a quarter of the base.
    @Test func aScheduledRateReachesThePluginBesideItsBase() throws {
        let path = try TestPlugins.build("hooked", source: Self.hookedSource)
        let objective = QuadraticObjective(layout: Self.layout)
        var settings = objective.settings
        settings.steps = 8
        settings.lrSchedule = .cosine
        settings.warmup = 4
        let trainer = try Trainer(objective: objective, optimizer: try PluginHost.loadOptimizer(path, groups: Self.layout),
                                  settings: settings, train: [objective.example])
        try trainer.runStep()
        var seen = try HookedState(trainer.optimizer.saveState())
        #expect(seen.baseRate == settings.learningRate && seen.rate == settings.learningRate / 4 && seen.rate != seen.baseRate)
        for _ in 0..<5 { try trainer.runStep() }
        seen = try HookedState(trainer.optimizer.saveState())
        // Step 6: two of the four decay steps done, cos²(π/4) = ½ of the base.
        #expect(seen.step == 6 && abs(seen.rate - settings.learningRate / 2) <= 1e-6 * settings.learningRate && seen.baseRate == settings.learningRate)
    }

    // MARK: - The plugins against references

    /// polargrad on a dense estimate with a known SVD, G = A diag(σ) Bᵀ: the step is
    /// −η (Σσ) A Bᵀ.
    @Test func polarGradStepsAlongTheScaledPolarFactor() throws {
        let rows = 3, cols = 5
        let a = rotation(rows, angles: [0.3, -0.7, 1.1])     // (3, 3)
        let b = rotation(cols, angles: [0.5, 0.2, -0.4, 0.9, -1.3])  // (5, 5); its first 3 columns
        let sigma = [2.0, 0.7, 0.15]
        var g = [Float](repeating: 0, count: rows * cols)
        var polar = [Double](repeating: 0, count: rows * cols)
        for i in 0..<rows {
            for k in 0..<cols {
                var sum = 0.0, p = 0.0
                for q in 0..<rows {
                    sum += a[i][q] * sigma[q] * b[k][q]
                    p += a[i][q] * b[k][q]
                }
                g[i * cols + k] = Float(sum)
                polar[i * cols + k] = p
            }
        }
        let layout = [GroupLayout(name: "m", count: rows * cols, shape: [rows, cols])]
        let optimizer = try PluginHost.loadOptimizer(TestPlugins.shipped("polargrad"), options: ["ns_steps=40"], groups: layout)
        let theta = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
        defer { theta.deallocate() }
        theta.initialize(repeating: 0, count: rows * cols)
        let lr: Float = 0.1
        try g.withUnsafeBufferPointer { gp in
            let c = StepContext(step: 1, learningRate: lr, epsilon: 1e-3, directions: [], dense: [gp.baseAddress!])
            try optimizer.step(c, [ParameterGroup(name: "m", values: theta, count: rows * cols)])
        }
        let nuclear = sigma.reduce(0, +)
        for i in 0..<(rows * cols) {
            #expect(abs(Double(theta[i]) + Double(lr) * nuclear * polar[i]) <= 1e-4, "index \(i)")
        }
    }

    /// mfac over 5 steps with a window of 3, against λF⁻¹g formed densely here (Gaussian
    /// elimination on the d × d system, in Double).
    @Test func mfacMatchesTheDenseInverseFisher() throws {
        let layout = [GroupLayout(name: "a", count: 4), GroupLayout(name: "b", count: 6, shape: [2, 3])]
        let d = 10, m = 3
        let damp = 0.5
        let optimizer = try PluginHost.loadOptimizer(TestPlugins.shipped("mfac"), options: ["window=\(m)", "damp=\(damp)"], groups: layout)
        let theta = UnsafeMutablePointer<Float>.allocate(capacity: d)
        defer { theta.deallocate() }
        theta.initialize(repeating: 0, count: d)
        var reference = [Double](repeating: 0, count: d)
        var window: [[Double]] = []
        let lr: Float = 0.05
        for t in 1...5 {
            let g = (0..<d).map { i in Float(sin(Double(i * 7 + t * 3)) + 0.3 * Double(t)) }
            try g.withUnsafeBufferPointer { gp in
                let c = StepContext(step: t, learningRate: lr, epsilon: 1e-3, directions: [],
                                    dense: [gp.baseAddress!, gp.baseAddress! + 4])
                try optimizer.step(c, [ParameterGroup(name: "a", values: theta, count: 4),
                                       ParameterGroup(name: "b", values: theta + 4, count: 6)])
            }
            // The reference: W the last m estimates, kλ = damp · mean |w|², u = λ F⁻¹ g.
            window.append(g.map(Double.init))
            if window.count > m { window.removeFirst() }
            let k = Double(window.count)
            let lambda = damp * window.map { $0.reduce(0) { $0 + $1 * $1 } }.reduce(0, +) / k / k
            var f = (0..<d).map { i in (0..<d).map { j in (i == j ? lambda : 0) + window.reduce(0) { $0 + $1[i] * $1[j] } / k } }
            var rhs = g.map { lambda * Double($0) }
            let u = solve(&f, &rhs)
            for i in 0..<d { reference[i] -= Double(lr) * u[i] }
            for i in 0..<d {
                #expect(abs(Double(theta[i]) - reference[i]) <= 1e-4 * max(1, abs(reference[i])), "step \(t) index \(i)")
            }
        }
    }

    /// hizoo's block option: the curvature, and so the perturbation scale, is one value per
    /// block of `block` consecutive values.
    @Test func hizooBlockAveragingIsConstantPerBlock() throws {
        let layout = [GroupLayout(name: "a", count: 13)]
        let optimizer = try PluginHost.loadOptimizer(TestPlugins.shipped("hizoo"), options: ["block=5", "alpha=0.5"], groups: layout)
        let theta = UnsafeMutablePointer<Float>.allocate(capacity: 13)
        defer { theta.deallocate() }
        theta.initialize(repeating: 0.5, count: 13)
        let c = StepContext(step: 1, learningRate: 0.01, epsilon: 1e-2,
                            directions: [Direction(seed: 99, derivative: 0.3, lossPlus: 1.2, lossMinus: 1.1)], unperturbedLoss: 1.0)
        try optimizer.step(c, [ParameterGroup(name: "a", values: theta, count: 13)])
        let s = try #require(optimizer.perturbationScale(group: 0))
        for block in [0..<5, 5..<10, 10..<13] {
            #expect(block.allSatisfy { s[$0] == s[block.lowerBound] }, "block \(block)")
        }
        #expect(s[0] != s[5] || s[5] != s[10])
        // The same block's curvature, formed here: mean over the block of w z², w = |L+ + L- - 2 L0| / (2 ε²).
        let w = abs(1.2 + 1.1 - 2.0) / (2 * 1e-2 * 1e-2)
        var z = [Float](repeating: 0, count: 13)
        Perturbation.fill(seed: 99, group: 0, start: 0, count: 13, into: &z)
        let h = (0..<5).reduce(0.0) { $0 + w * Double(z[$1] * z[$1]) } / 5
        let sigma = max(1e-4, 0.5 + 0.5 * h)
        #expect(abs(Double(s[0]) - 1 / sqrt(sigma)) <= 1e-4 * (1 / sqrt(sigma)))
    }

    // MARK: - Helpers

    /// A plugin with a perturbation hook, p = z of seed + 1, and SGD on g = (1/n) Σ d_j p_j;
    /// its state records the last step's metadata. Broken hooks by -D flags.
    static let hookedSource = #"""
    #include "edge_optimizer.h"
    #include <math.h>
    #include <string.h>

    typedef struct hooked { const edge_opt_host *host; uint32_t groups; uint64_t counts[8];
                            uint64_t step, total; float base; uint32_t flags; float rate; } hooked;

    typedef struct hooked_config { const edge_opt_host *host; } hooked_config;
    static void *config_create(const edge_opt_host *host) {
        hooked_config *c = (hooked_config *)host->mem_alloc(host, sizeof(hooked_config));
        if (c) c->host = host;
        return c;
    }
    static void config_destroy(void *config) { hooked_config *c = (hooked_config *)config; if (c) c->host->mem_free(c->host, c); }
    static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                                  void **instance, const char **message) {
        (void)config; (void)message;
        hooked *s = (hooked *)host->mem_alloc(host, sizeof(hooked));
        s->host = host;
        s->groups = info->group_count;
        for (uint32_t g = 0; g < info->group_count && g < 8; g++) s->counts[g] = info->group_counts[g];
        *instance = s;
        return EDGE_OPT_OK;
    }
    static void destroy(void *instance) { hooked *s = (hooked *)instance; if (s) s->host->mem_free(s->host, s); }
    static edge_opt_status perturbation(void *instance, const edge_opt_perturbation_args *a, float *out, const char **message) {
        hooked *s = (hooked *)instance;
        uint64_t n = a->count;
    #ifdef HOOK_FAILS
        *message = "no direction today";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    #endif
    #ifdef HOOK_SHORT
        if (a->group == 1) n -= 1;
    #endif
    #ifdef HOOK_LONG
        if (a->group == 1) n += 1;
    #endif
        (void)message;
        s->host->perturbation_fill(s->host, a->seed + 1, a->group, 0, n, out);
    #ifdef HOOK_NAN
        if (a->group == 1) out[7] = NAN;
    #endif
        return EDGE_OPT_OK;
    }
    static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
        hooked *s = (hooked *)instance;
        edge_opt_status status = edge_opt_check_step(a, s->groups, s->counts, message);
        if (status != EDGE_OPT_OK) return status;
        const float n = (float)(a->direction_count > 0 ? a->direction_count : 1);
        for (uint32_t g = 0; g < a->group_count; g++)
            for (uint32_t j = 0; j < a->direction_count; j++)
                s->host->perturbation_add(s->host, a->seeds[j] + 1, g, 0, s->counts[g], -a->learning_rate * a->derivatives[j] / n,
                                          NULL, a->values[g]);
        s->step = a->step;
        if (EDGE_OPT_HAS_FIELD(a, edge_opt_step_args, step_flags)) {
            s->total = a->total_steps;
            s->base = a->base_learning_rate;
            s->flags = a->step_flags;
        }
        s->rate = a->learning_rate;
        return EDGE_OPT_OK;
    }
    static uint64_t state_size(void *instance) { (void)instance; return 32; }
    static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
        hooked *s = (hooked *)instance;
        (void)size; (void)message;
        unsigned char *p = (unsigned char *)bytes;
        memcpy(p, &s->step, 8); memcpy(p + 8, &s->total, 8); memcpy(p + 16, &s->base, 4); memcpy(p + 20, &s->flags, 4);
        memcpy(p + 24, &s->rate, 4);
        memset(p + 28, 0, 4);
        return EDGE_OPT_OK;
    }
    static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
        hooked *s = (hooked *)instance;
        if (size != 32) { *message = "wrong size"; return EDGE_OPT_ERROR_BAD_STATE; }
        const unsigned char *p = (const unsigned char *)bytes;
        memcpy(&s->step, p, 8); memcpy(&s->total, p + 8, 8); memcpy(&s->base, p + 16, 4); memcpy(&s->flags, p + 20, 4); memcpy(&s->rate, p + 24, 4);
        return EDGE_OPT_OK;
    }
    static const edge_opt_plugin plugin = {
        sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION, "hooked", "0.1.0", "test plugin with a perturbation hook", 0,
        0, NULL, config_create, config_destroy, create, destroy, step, state_size, save_state, load_state,
        NULL, perturbation,
    };
    EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
        return edge_opt_negotiate(negotiation, &plugin);
    }
    """#

    struct HookedState {
        var step: UInt64, totalSteps: UInt64, baseRate: Float, flags: UInt32, rate: Float
        init(_ bytes: [UInt8]) throws {
            try #require(bytes.count == 32)
            step = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }
            totalSteps = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }
            baseRate = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: Float.self) }
            flags = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 20, as: UInt32.self) }
            rate = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: Float.self) }
        }
    }
}

/// L(θ) = ½ Σ (θ − c)² over shaped groups, one "token" per example; records the points
/// each call measured (θ after the engine's perturbation).
final class QuadraticObjective: TrainableSet, Objective {
    let layout: [GroupLayout]
    let values: [UnsafeMutablePointer<Float>]
    let centre: [[Float]]
    let groups: [ParameterGroup]
    /// The last call's points: (points) -> (groups) -> (count).
    var seen: [[[Float]]] = []
    let example = Example(tokens: [1, 2], targets: [2, -1], line: 1)

    var settings: TrainingSettings {
        var s = TrainingSettings()
        s.steps = 10
        s.batchSize = 1
        s.microBatchSize = 1
        s.learningRate = 0.05
        s.epsilon = 1e-2
        s.seed = 42
        s.evalEvery = 0
        return s
    }

    init(layout: [GroupLayout]) {
        self.layout = layout
        let storage = layout.map { g in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: g.count)
            p.initialize(repeating: 0, count: g.count)
            return p
        }
        values = storage
        centre = layout.enumerated().map { g, group in (0..<group.count).map { Float(sin(Double(g * 31 + $0) * 1.7)) } }
        groups = layout.enumerated().map { g, group in ParameterGroup(name: group.name, values: storage[g], count: group.count) }
    }

    deinit { values.forEach { $0.deallocate() } }

    var parameters: TrainableSet { self }
    var passCapacity: Int { 1 << 20 }
    func constrain() -> Int { 0 }

    func snapshot() -> [[Float]] {
        layout.enumerated().map { g, group in Array(UnsafeBufferPointer(start: values[g], count: group.count)) }
    }

    func loss(_ point: [[Float]]? = nil) -> Double {
        let v = point ?? snapshot()
        var total = 0.0
        for g in v.indices { for i in v[g].indices { let e = Double(v[g][i] - centre[g][i]); total += 0.5 * e * e } }
        return total
    }

    func accumulateLosses(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                          examples: [Example], into sums: inout [LossSum]) throws(TrainingError) {
        seen = []
        for (k, point) in points.enumerated() {
            var v = snapshot()
            if let seed = point.seed {
                for g in v.indices {
                    v[g].withUnsafeMutableBufferPointer {
                        shape.apply(alpha: point.sign * epsilon, seed: seed, group: g, to: $0.baseAddress!, count: $0.count)
                    }
                }
                seen.append(v)
            }
            sums[k] = sums[k] + LossSum(tokens: examples.count, totalNLL: loss(v) * Double(examples.count))
        }
    }
}

/// An n × n rotation: the product of Givens rotations of the given angles in planes (i, i+1 mod n).
func rotation(_ n: Int, angles: [Double]) -> [[Double]] {
    var r = (0..<n).map { i in (0..<n).map { $0 == i ? 1.0 : 0.0 } }
    for (k, angle) in angles.enumerated() {
        let i = k % n, j = (k + 1) % n
        let c = cos(angle), s = sin(angle)
        for row in 0..<n {
            let a = r[row][i], b = r[row][j]
            r[row][i] = c * a - s * b
            r[row][j] = s * a + c * b
        }
    }
    return r
}

/// Solves A x = b by Gaussian elimination with partial pivoting (Double).
func solve(_ a: inout [[Double]], _ b: inout [Double]) -> [Double] {
    let n = b.count
    for col in 0..<n {
        let pivot = (col..<n).max { abs(a[$0][col]) < abs(a[$1][col]) }!
        a.swapAt(col, pivot)
        b.swapAt(col, pivot)
        for row in (col + 1)..<n {
            let f = a[row][col] / a[col][col]
            for k in col..<n { a[row][k] -= f * a[col][k] }
            b[row] -= f * b[col]
        }
    }
    var x = [Double](repeating: 0, count: n)
    for row in stride(from: n - 1, through: 0, by: -1) {
        var sum = b[row]
        for k in (row + 1)..<n { sum -= a[row][k] * x[k] }
        x[row] = sum / a[row][row]
    }
    return x
}

/// The numerical rank of a (rows, cols) matrix: pivots above 1e-4 of the largest in
/// Gaussian elimination with full pivoting.
func rank(of m: [Float], rows: Int, cols: Int) throws -> Int {
    var a = (0..<rows).map { i in (0..<cols).map { Double(m[i * cols + $0]) } }
    let scale = a.flatMap { $0 }.map(abs).max() ?? 0
    var r = 0
    var usedRows = Set<Int>(), usedCols = Set<Int>()
    while true {
        var best = (0.0, -1, -1)
        for i in 0..<rows where !usedRows.contains(i) {
            for j in 0..<cols where !usedCols.contains(j) && abs(a[i][j]) > best.0 { best = (abs(a[i][j]), i, j) }
        }
        guard best.1 >= 0, best.0 > 1e-4 * scale else { return r }
        let (pi, pj) = (best.1, best.2)
        usedRows.insert(pi); usedCols.insert(pj)
        for i in 0..<rows where i != pi {
            let f = a[i][pj] / a[pi][pj]
            for j in 0..<cols { a[i][j] -= f * a[pi][j] }
        }
        r += 1
    }
}
