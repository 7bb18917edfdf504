// A plugin instance behind the engine's Optimizer protocol. The adapter owns what
// crosses the boundary: it converts a StepContext to edge_opt_step_args, refuses
// non-finite inputs before the plugin sees them, and checks the plugin's output: a
// step that fails, or that leaves a NaN or an infinity in the parameters, is undone
// from a copy taken before the step, so a training run keeps its last good values.

import COptimizerABI
import Foundation
import ZerothOrder

/// Made by PluginHost.loadOptimizer (or LoadedPlugin.makeOptimizer). Not thread-safe:
/// one call at a time, as the training loop makes them; the plugin's instance is destroyed
/// when this object goes.
public final class PluginOptimizer: Optimizer {
    public let plugin: LoadedPlugin
    public var name: String { plugin.name }
    public let needsUnperturbedLoss: Bool
    /// The groups the instance was created for, with their shapes.
    public let layout: [GroupLayout]
    /// Their names and counts.
    public var groups: [(name: String, count: Int)] { layout.map { ($0.name, $0.count) } }
    /// Whether the instance was created as a 1.0 host would (no shapes, no run metadata).
    public let abi10Only: Bool

    let host: HostServices
    let instance: UnsafeMutableRawPointer
    private let d: edge_opt_plugin

    // Buffers a step hands to the plugin, allocated once (directions grow on demand).
    private let valuePointers: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>   // (groups)
    private let densePointers: UnsafeMutablePointer<UnsafePointer<Float>?>           // (groups)
    private let groupCounts: UnsafeMutablePointer<UInt64>                            // (groups)
    private var directionCapacity = 0
    private var seeds: UnsafeMutablePointer<UInt64>                                  // (directions)
    private var derivatives: UnsafeMutablePointer<Float>                             // (directions)
    private var lossesPlus: UnsafeMutablePointer<Float>                              // (directions)
    private var lossesMinus: UnsafeMutablePointer<Float>                             // (directions)
    /// The values before the current step, all groups back to back: (Σ counts).
    private let snapshot: UnsafeMutablePointer<Float>
    private let totalCount: Int
    /// Set when a step left non-finite values: the plugin's own state may be poisoned
    /// too, so further steps are refused until a state is loaded.
    private var poisoned: String?

    init(plugin: LoadedPlugin, config: PluginConfig, groups: [GroupLayout],
         memoryBudget: Int?, abi10Only: Bool = false) throws(PluginError) {
        guard !groups.isEmpty else {
            throw .invalidGroups(plugin: plugin.name, path: plugin.path, detail: "no trainable groups to create an optimizer for")
        }
        if let empty = groups.first(where: { $0.count < 1 }) {
            throw .invalidGroups(plugin: plugin.name, path: plugin.path, detail: "group '\(empty.name)' has \(empty.count) values")
        }
        // Each shape: rank 1...4, positive dims whose product is the count.
        for group in groups {
            let product = group.shape.reduce(1) { $0.multipliedReportingOverflow(by: max(0, $1)).overflow ? Int.max : $0 * max(0, $1) }
            guard (1...Int(EDGE_OPT_MAX_RANK)).contains(group.shape.count), group.shape.allSatisfy({ $0 >= 1 }),
                  product == group.count else {
                throw .invalidGroups(plugin: plugin.name, path: plugin.path,
                                     detail: "edge_opt_create_info.group_dims of group '\(group.name)': shape \(group.shape) "
                                         + "(product \(product)) does not match its \(group.count) values (rank 1 to \(EDGE_OPT_MAX_RANK), dims >= 1)")
            }
        }
        let descriptor = plugin.descriptor
        if abi10Only && descriptor.perturbation != nil {
            throw .invalidGroups(plugin: plugin.name, path: plugin.path,
                                 detail: "it has a perturbation hook (edge_opt_plugin.perturbation, ABI 1.1), which this 1.0 path cannot apply; use a 1.1 path or a plugin without the hook")
        }
        let services = HostServices(pluginName: plugin.name, budget: memoryBudget)

        // create(host, config, {groups}, &instance, &message)
        let names = groups.map { strdup($0.name) }
        let tensorNames = groups.map { $0.tensors.map { UnsafePointer(strdup($0)) } }
        defer {
            names.forEach { free($0) }
            tensorNames.joined().forEach { free(UnsafeMutablePointer(mutating: $0)) }
        }
        var counts = groups.map { UInt64($0.count) }
        var namePointers: [UnsafePointer<CChar>?] = names.map { UnsafePointer($0) }
        var ranks = groups.map { UInt32($0.shape.count) }
        var dims = groups.flatMap { g in (0..<Int(EDGE_OPT_MAX_RANK)).map { $0 < g.shape.count ? UInt64(g.shape[$0]) : 0 } }
        var tensorCounts = groups.map { UInt32($0.tensors.count) }
        // [group] -> [tensor] C strings, each list in its own allocation.
        let lists: [UnsafeMutablePointer<UnsafePointer<CChar>?>] = tensorNames.map { names in
            let list = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(1, names.count))
            list.initialize(repeating: nil, count: max(1, names.count))
            for (i, n) in names.enumerated() { list[i] = n }
            return list
        }
        defer { lists.forEach { $0.deallocate() } }
        var listPointers: [UnsafePointer<UnsafePointer<CChar>?>?] = lists.map { UnsafePointer($0) }
        var made: UnsafeMutableRawPointer?
        var message: UnsafePointer<CChar>?
        var info = edge_opt_create_info()
        let status = namePointers.withUnsafeMutableBufferPointer { namesBuffer in
            counts.withUnsafeMutableBufferPointer { countsBuffer in
                ranks.withUnsafeMutableBufferPointer { ranksBuffer in
                    dims.withUnsafeMutableBufferPointer { dimsBuffer in
                        tensorCounts.withUnsafeMutableBufferPointer { tensorCountsBuffer in
                            listPointers.withUnsafeMutableBufferPointer { listsBuffer in
                                info.struct_size = UInt32(abi10Only ? Int(EDGE_OPT_CREATE_INFO_SIZE_V1) : MemoryLayout<edge_opt_create_info>.size)
                                info.struct_version = UInt32(abi10Only ? 1 : EDGE_OPT_CREATE_INFO_VERSION)
                                info.group_count = UInt32(groups.count)
                                info.group_names = UnsafePointer(namesBuffer.baseAddress)
                                info.group_counts = UnsafePointer(countsBuffer.baseAddress)
                                if !abi10Only {
                                    info.group_ranks = UnsafePointer(ranksBuffer.baseAddress)
                                    info.group_dims = UnsafePointer(dimsBuffer.baseAddress)
                                    info.group_tensor_counts = UnsafePointer(tensorCountsBuffer.baseAddress)
                                    info.group_tensor_names = UnsafePointer(listsBuffer.baseAddress)
                                }
                                return descriptor.create!(services.table, config.config, &info, &made, &message)
                            }
                        }
                    }
                }
            }
        }
        guard status == EDGE_OPT_OK, let made else {
            let text = message.map { String(cString: $0) }
            if let made { descriptor.destroy!(made) }
            throw .createFailed(plugin: plugin.name, path: plugin.path, status: status == EDGE_OPT_OK ? EDGE_OPT_ERROR_INTERNAL : status,
                                message: status == EDGE_OPT_OK ? "returned EDGE_OPT_OK without an instance" : text)
        }
        self.plugin = plugin
        self.layout = groups
        self.abi10Only = abi10Only
        d = descriptor
        needsUnperturbedLoss = plugin.description.needsUnperturbedLoss
        host = services
        instance = made

        let g = groups.count
        valuePointers = .allocate(capacity: g)
        valuePointers.initialize(repeating: nil, count: g)
        densePointers = .allocate(capacity: g)
        densePointers.initialize(repeating: nil, count: g)
        groupCounts = .allocate(capacity: g)
        for (i, group) in groups.enumerated() { (groupCounts + i).initialize(to: UInt64(group.count)) }
        totalCount = groups.reduce(0) { $0 + $1.count }
        snapshot = .allocate(capacity: totalCount)
        seeds = .allocate(capacity: 0)
        derivatives = .allocate(capacity: 0)
        lossesPlus = .allocate(capacity: 0)
        lossesMinus = .allocate(capacity: 0)
    }

    deinit {
        d.destroy!(instance)
        valuePointers.deallocate()
        densePointers.deallocate()
        groupCounts.deallocate()
        snapshot.deallocate()
        seeds.deallocate()
        derivatives.deallocate()
        lossesPlus.deallocate()
        lossesMinus.deallocate()
    }

    /// "zo-adam (/path/libzo-adam.so)": how errors name the plugin.
    var label: String { plugin.label }

    /// Bytes the instance has allocated through the host (its moments, Hessian estimates...).
    public var allocatedBytes: Int { host.allocatedBytes }

    /// Bytes save_state writes (as the plugin reports it; an absurd size reads as Int.max).
    public var pluginStateSize: Int { Int(clamping: d.state_size!(instance)) }

    /// The largest state the adapter accepts from a plugin (a size beyond it is a bug).
    static let maximumStateBytes = 1 << 40

    /// For the memory planner: the plugin's state (what it allocated through the host, or
    /// its saved size if larger) plus this adapter's copy of the values (4 bytes a value),
    /// which lets it undo a bad step.
    public var stateByteCount: Int {
        max(min(pluginStateSize, Self.maximumStateBytes), host.allocatedBytes) + 4 * totalCount
    }

    public func perturbationScale(group: Int) -> UnsafePointer<Float>? {
        guard let scale = d.perturbation_scale, group >= 0, group < layout.count else { return nil }
        return scale(instance, UInt32(group))
    }

    public var providesPerturbation: Bool { d.perturbation != nil && !abi10Only }

    /// A bit pattern no arithmetic produces (a NaN with a payload), written into the hook's
    /// buffer before the call: a value still holding it afterwards was not written.
    static let unwritten: UInt32 = 0x7FA5_A5A5
    /// Floats past `count` the hook must leave alone.
    static let guardCount = 16

    /// p from the plugin's perturbation hook, checked: status, every value written and
    /// finite, nothing written past `count`.
    public func perturbation(step: Int, seed: UInt64, direction: Int, group: Int, count: Int,
                             into out: UnsafeMutablePointer<Float>) throws(OptimizerError) {
        guard let hook = d.perturbation, !abi10Only else {
            Perturbation.fill(seed: seed, group: UInt32(group), start: 0, count: count, into: out)
            return
        }
        guard group >= 0, group < layout.count, count == layout[group].count else {
            throw failure("perturbation asked for \(count) values of group \(group); the instance has \(layout.map(\.count))")
        }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count + Self.guardCount)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: Float(bitPattern: Self.unwritten), count: count + Self.guardCount)
        var args = edge_opt_perturbation_args()
        args.struct_size = UInt32(MemoryLayout<edge_opt_perturbation_args>.size)
        args.struct_version = UInt32(EDGE_OPT_PERTURBATION_ARGS_VERSION)
        args.step = UInt64(max(0, step))
        args.seed = seed
        args.direction = UInt32(direction)
        args.group = UInt32(group)
        args.count = UInt64(count)
        var message: UnsafePointer<CChar>?
        let status = hook(instance, &args, buffer, &message)
        let name = layout[group].name
        guard status == EDGE_OPT_OK else {
            throw failure("edge_opt_plugin.perturbation failed (\(statusName(status))) for group '\(name)' at step \(step)"
                          + (message.map { ": \(oneLine(String(cString: $0)))" } ?? "") + "; parameters left unchanged")
        }
        if let i = (count..<(count + Self.guardCount)).first(where: { buffer[$0].bitPattern != Self.unwritten }) {
            throw failure("edge_opt_plugin.perturbation wrote past the \(count) values of group '\(name)' (at index \(i)), step \(step); parameters left unchanged")
        }
        if let i = (0..<count).first(where: { buffer[$0].bitPattern == Self.unwritten }) {
            throw failure("edge_opt_plugin.perturbation wrote fewer than the \(count) values of group '\(name)' (index \(i) untouched), step \(step); parameters left unchanged")
        }
        if let i = (0..<count).first(where: { !buffer[$0].isFinite }) {
            throw failure("edge_opt_plugin.perturbation wrote \(buffer[i]) at index \(i) of group '\(name)', step \(step); parameters left unchanged")
        }
        out.update(from: buffer, count: count)
    }

    public func step(_ c: StepContext, _ parameterGroups: [ParameterGroup]) throws(OptimizerError) {
        if let poisoned { throw failure(poisoned) }
        try checkShapes(c, parameterGroups)
        try checkInputs(c)

        // Keep the values, call the plugin, and undo whatever went wrong.
        var offset = 0
        for group in parameterGroups {
            (snapshot + offset).update(from: group.values, count: group.count)
            offset += group.count
        }
        let (status, message) = callStep(c, values: parameterGroups.map(\.values))
        if status != EDGE_OPT_OK {
            restore(parameterGroups)
            throw failure("step \(c.step) failed (\(statusName(status)))" + (message.map { ": \(oneLine($0))" } ?? "")
                          + "; parameters left as before the step")
        }
        if let bad = firstNonFinite(parameterGroups) {
            restore(parameterGroups)
            poisoned = "a previous step wrote \(bad.value) into the parameters; load a saved state to continue"
            throw failure("step \(c.step) wrote \(bad.value) into group '\(parameterGroups[bad.group].name)' at index \(bad.index); "
                          + "parameters restored to their values before the step")
        }
    }

    public func saveState() throws(OptimizerError) -> [UInt8] {
        let size = pluginStateSize
        guard size <= Self.maximumStateBytes else { throw failure("state_size reports \(size) bytes, more than 1 TiB") }
        var bytes = [UInt8](repeating: 0, count: size)
        var message: UnsafePointer<CChar>?
        let status = bytes.withUnsafeMutableBytes { d.save_state!(instance, $0.baseAddress, UInt64(size), &message) }
        guard status == EDGE_OPT_OK else {
            throw failure("save_state failed (\(statusName(status)))" + (message.map { ": \(oneLine(String(cString: $0)))" } ?? ""))
        }
        return bytes
    }

    public func loadState(_ bytes: [UInt8]) throws(OptimizerError) {
        let size = pluginStateSize
        guard bytes.count == size else {
            throw failure("saved state has \(bytes.count) bytes, this instance's has \(size); same plugin, options and groups?")
        }
        var message: UnsafePointer<CChar>?
        let status = bytes.withUnsafeBytes { d.load_state!(instance, $0.baseAddress, UInt64(size), &message) }
        guard status == EDGE_OPT_OK else {
            throw failure("load_state failed (\(statusName(status)))" + (message.map { ": \(oneLine(String(cString: $0)))" } ?? ""))
        }
        poisoned = nil
    }

    // MARK: - The call itself

    /// Calls the plugin's step with `c` on `values` as it is: no checks, no snapshot.
    /// The conformance check uses it to see what the plugin itself does with bad input.
    func callStep(_ c: StepContext, values: [UnsafeMutablePointer<Float>]) -> (status: Int32, message: String?) {
        let n = c.directions.count
        if n > directionCapacity { growDirections(to: n) }
        for (j, direction) in c.directions.enumerated() {
            seeds[j] = direction.seed
            derivatives[j] = direction.derivative
            lossesPlus[j] = direction.lossPlus
            lossesMinus[j] = direction.lossMinus
        }
        for (g, v) in values.enumerated() { valuePointers[g] = v }
        if let dense = c.dense { for (g, p) in dense.enumerated() { densePointers[g] = p } }

        var args = edge_opt_step_args()
        args.struct_size = UInt32(MemoryLayout<edge_opt_step_args>.size)
        args.struct_version = UInt32(EDGE_OPT_STEP_ARGS_VERSION)
        args.step = UInt64(max(0, c.step))
        args.learning_rate = c.learningRate
        args.epsilon = c.epsilon
        args.direction_count = UInt32(n)
        args.group_count = UInt32(values.count)
        args.seeds = UnsafePointer(seeds)
        args.derivatives = UnsafePointer(derivatives)
        args.losses_plus = UnsafePointer(lossesPlus)
        args.losses_minus = UnsafePointer(lossesMinus)
        args.unperturbed_loss = c.unperturbedLoss ?? .nan
        args.has_unperturbed_loss = c.unperturbedLoss == nil ? 0 : 1
        args.values = UnsafePointer(valuePointers)
        args.group_counts = UnsafePointer(groupCounts)
        args.dense = c.dense == nil ? nil : UnsafePointer(densePointers)
        if abi10Only {
            args.struct_size = UInt32(EDGE_OPT_STEP_ARGS_SIZE_V1)
            args.struct_version = 1
        } else {
            args.total_steps = UInt64(max(0, c.totalSteps))
            args.base_learning_rate = c.baseLearningRate ?? c.learningRate
            args.step_flags = c.firstAfterResume ? UInt32(EDGE_OPT_STEP_FIRST_AFTER_RESUME) : 0
        }
        var message: UnsafePointer<CChar>?
        let status = d.step!(instance, &args, &message)
        return (status, message.map { String(cString: $0) })
    }

    private func growDirections(to n: Int) {
        seeds.deallocate()
        derivatives.deallocate()
        lossesPlus.deallocate()
        lossesMinus.deallocate()
        seeds = .allocate(capacity: n)
        derivatives = .allocate(capacity: n)
        lossesPlus = .allocate(capacity: n)
        lossesMinus = .allocate(capacity: n)
        directionCapacity = n
    }

    // MARK: - Checks around the call

    private func checkShapes(_ c: StepContext, _ parameterGroups: [ParameterGroup]) throws(OptimizerError) {
        let sizes = parameterGroups.map(\.count)
        let expected = groups.map(\.count)
        guard sizes == expected else {
            throw failure("step got groups of sizes \(sizes), the instance was created for \(expected)")
        }
        if let dense = c.dense, dense.count != layout.count {
            throw failure("step got \(dense.count) dense estimates for \(layout.count) groups")
        }
        guard c.directions.count <= Int(UInt32.max) else { throw failure("too many directions (\(c.directions.count))") }
    }

    /// Non-finite inputs never reach the plugin (it must refuse them too; `plugins check`
    /// tests that it does).
    private func checkInputs(_ c: StepContext) throws(OptimizerError) {
        guard c.learningRate.isFinite, c.epsilon.isFinite else {
            throw failure("learning rate \(c.learningRate) or epsilon \(c.epsilon) is not finite at step \(c.step); parameters left unchanged")
        }
        for (j, direction) in c.directions.enumerated() where !direction.derivative.isFinite {
            throw failure("the directional derivative of direction \(j) is \(direction.derivative) at step \(c.step); parameters left unchanged")
        }
        if let l0 = c.unperturbedLoss, !l0.isFinite {
            throw failure("the unperturbed loss is \(l0) at step \(c.step); parameters left unchanged")
        }
        if let dense = c.dense {
            for (g, estimate) in dense.enumerated() {
                for i in 0..<layout[g].count where !estimate[i].isFinite {
                    throw failure("the dense estimate of group '\(layout[g].name)' is \(estimate[i]) at index \(i), step \(c.step); "
                                  + "parameters left unchanged")
                }
            }
        }
    }

    private func firstNonFinite(_ parameterGroups: [ParameterGroup]) -> (group: Int, index: Int, value: Float)? {
        for (g, group) in parameterGroups.enumerated() {
            let v = group.values
            for i in 0..<group.count where !v[i].isFinite { return (g, i, v[i]) }
        }
        return nil
    }

    private func restore(_ parameterGroups: [ParameterGroup]) {
        var offset = 0
        for group in parameterGroups {
            group.values.update(from: snapshot + offset, count: group.count)
            offset += group.count
        }
    }

    private func failure(_ message: String) -> OptimizerError {
        OptimizerError(optimizer: label, message: message)
    }
}
