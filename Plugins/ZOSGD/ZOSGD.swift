// ZO-SGD (MeZO) as a plugin written in Swift: θ ← θ − η (g + λθ), optionally with
// momentum on g (v ← μv + g; θ ← θ − η (v + λθ)), g = (1/n) Σⱼ dⱼ zⱼ or the engine's
// dense estimate. It performs exactly the float operations of the built-in ZOSGD
// (Sources/ZerothOrder/Optimizer.swift), in the same order, so the two agree bit for
// bit; the tests hold it to that.
//
// It is built against edge_optimizer.h alone (module COptimizerABI) and never links the
// host: z comes from the host's perturbation_add, memory from its mem_alloc. No Swift
// type crosses the boundary: the host sees C structs, C function pointers and opaque
// pointers. Nothing here may trap: every input is checked and every failure is a status
// and a message. The Swift runtime cannot be unloaded, so the descriptor sets
// EDGE_OPT_PLUGIN_KEEP_LOADED and the host never dlcloses this library.

import COptimizerABI
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The entry: the only exported symbol.
@_cdecl("edge_optimizer_entry")
public func edgeOptimizerEntry(_ negotiation: UnsafeMutablePointer<edge_opt_negotiation>?) -> Int32 {
    edge_opt_negotiate(negotiation, descriptor)
}

/// Values of `z` processed at a time: the scratch for g is this long, not a group long.
private let chunk = 4096

/// A C string the object owns until it is replaced or the object goes: how a message
/// outlives the call that reports it.
private final class MessageSlot {
    private var text: UnsafeMutablePointer<CChar>?

    func set(_ message: String, into out: UnsafeMutablePointer<UnsafePointer<CChar>?>?) {
        free(text)
        text = strdup(message)
        out?.pointee = UnsafePointer(text)
    }

    deinit { free(text) }
}

/// Options, before create.
private final class Config {
    var momentum = 0.0
    var weightDecay = 0.0
    let message = MessageSlot()
}

/// One optimizer: the velocity of every group (when momentum > 0), from the host's allocator.
private final class Instance {
    let host: UnsafePointer<edge_opt_host>
    let momentum: Float
    let weightDecay: Float
    let counts: [Int]
    /// (groups) -> (counts[g]) velocity; empty without momentum.
    var velocity: [UnsafeMutablePointer<Float>] = []
    /// (chunk) scratch for g.
    var estimate: UnsafeMutablePointer<Float>?
    let message = MessageSlot()

    init(host: UnsafePointer<edge_opt_host>, config: Config, counts: [Int]) {
        self.host = host
        momentum = Float(config.momentum)
        weightDecay = Float(config.weightDecay)
        self.counts = counts
    }

    /// Allocates the scratch and the velocity; false when the budget says no.
    func allocate() -> Bool {
        guard let raw = host.pointee.mem_alloc(host, UInt64(4 * chunk)) else { return false }
        estimate = raw.bindMemory(to: Float.self, capacity: chunk)
        if momentum > 0 {
            for n in counts {
                // Zero-filled by the host: the velocity starts at 0.
                guard let raw = host.pointee.mem_alloc(host, UInt64(4 * n)) else { return false }
                velocity.append(raw.bindMemory(to: Float.self, capacity: n))
            }
        }
        return true
    }

    deinit {
        for v in velocity { host.pointee.mem_free(host, v) }
        if let estimate { host.pointee.mem_free(host, estimate) }
    }

    var stateSize: Int { 16 + (momentum > 0 ? 4 * counts.reduce(0, +) : 0) }
}

// MARK: - Options

private let setMomentum: @convention(c) (UnsafeMutableRawPointer?, Double, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 = {
    config, value, message in
    guard let config else { return EDGE_OPT_ERROR_INVALID_ARGUMENT }
    let c = Unmanaged<Config>.fromOpaque(config).takeUnretainedValue()
    guard value >= 0 && value < 1 else {
        c.message.set("momentum must be in [0, 1), got \(value)", into: message)
        return EDGE_OPT_ERROR_INVALID_ARGUMENT
    }
    c.momentum = value
    return EDGE_OPT_OK
}

private let setWeightDecay: @convention(c) (UnsafeMutableRawPointer?, Double, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 = {
    config, value, message in
    guard let config else { return EDGE_OPT_ERROR_INVALID_ARGUMENT }
    let c = Unmanaged<Config>.fromOpaque(config).takeUnretainedValue()
    guard value >= 0 && value < 1 else {
        c.message.set("weight_decay must be in [0, 1), got \(value)", into: message)
        return EDGE_OPT_ERROR_INVALID_ARGUMENT
    }
    c.weightDecay = value
    return EDGE_OPT_OK
}

private func option(_ name: String, _ help: String,
                    _ setter: @convention(c) (UnsafeMutableRawPointer?, Double, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32)
    -> UnsafePointer<edge_opt_option> {
    var o = edge_opt_option()
    o.struct_size = UInt32(MemoryLayout<edge_opt_option>.size)
    o.struct_version = UInt32(EDGE_OPT_OPTION_VERSION)
    o.name = UnsafePointer(strdup(name))
    o.help = UnsafePointer(strdup(help))
    o.type = UInt32(EDGE_OPT_TYPE_DOUBLE)
    o.setter = unsafeBitCast(setter, to: edge_opt_setter_fn.self)
    o.default_double = 0
    let p = UnsafeMutablePointer<edge_opt_option>.allocate(capacity: 1)
    p.initialize(to: o)
    return UnsafePointer(p)
}

// MARK: - The descriptor

/// Built once and never freed: the host reads it for as long as the library is loaded.
private let descriptor: UnsafePointer<edge_opt_plugin> = {
    let options = UnsafeMutablePointer<UnsafePointer<edge_opt_option>?>.allocate(capacity: 2)
    options[0] = option("momentum", "momentum mu on g: v = mu v + g, theta -= eta (v + lambda theta) (0 = none)", setMomentum)
    options[1] = option("weight_decay", "weight decay lambda: theta -= eta (g + lambda theta) (0 = none)", setWeightDecay)

    var d = edge_opt_plugin()
    d.struct_size = UInt32(MemoryLayout<edge_opt_plugin>.size)
    d.struct_version = UInt32(EDGE_OPT_PLUGIN_VERSION)
    d.name = UnsafePointer(strdup("zo-sgd"))
    d.version = UnsafePointer(strdup("1.0.0"))
    d.description = UnsafePointer(strdup("ZO-SGD (MeZO) with momentum and weight decay, bit-identical to the built-in (Swift)"))
    d.flags = UInt32(EDGE_OPT_PLUGIN_KEEP_LOADED)
    d.option_count = 2
    d.options = UnsafePointer(options)
    d.config_create = configCreate
    d.config_destroy = configDestroy
    d.create = create
    d.destroy = destroy
    d.step = step
    d.state_size = stateSize
    d.save_state = saveState
    d.load_state = loadState
    d.perturbation_scale = nil
    let p = UnsafeMutablePointer<edge_opt_plugin>.allocate(capacity: 1)
    p.initialize(to: d)
    return UnsafePointer(p)
}()

private let configCreate: @convention(c) (UnsafePointer<edge_opt_host>?) -> UnsafeMutableRawPointer? = { _ in
    Unmanaged.passRetained(Config()).toOpaque()
}

private let configDestroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { config in
    guard let config else { return }
    Unmanaged<Config>.fromOpaque(config).release()
}

private let create: @convention(c) (UnsafePointer<edge_opt_host>?, UnsafeMutableRawPointer?, UnsafePointer<edge_opt_create_info>?,
                                    UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 = {
    host, config, info, instance, message in
    guard let host, let config, let info, let instance else { return EDGE_OPT_ERROR_INVALID_ARGUMENT }
    let c = Unmanaged<Config>.fromOpaque(config).takeUnretainedValue()
    guard info.pointee.struct_size >= UInt32(EDGE_OPT_CREATE_INFO_SIZE_V1), info.pointee.group_count > 0,
          let groupCounts = info.pointee.group_counts else {
        c.message.set("create needs at least one group", into: message)
        return EDGE_OPT_ERROR_INVALID_ARGUMENT
    }
    var counts: [Int] = []
    for g in 0..<Int(info.pointee.group_count) {
        let n = groupCounts[g]
        guard n >= 1, n <= UInt64(Int.max / 8) else {
            c.message.set("group \(g) has \(n) values", into: message)
            return EDGE_OPT_ERROR_INVALID_ARGUMENT
        }
        counts.append(Int(n))
    }
    let made = Instance(host: host, config: c, counts: counts)
    guard made.allocate() else {
        c.message.set("out of memory for the velocity of \(counts.reduce(0, +)) values", into: message)
        return EDGE_OPT_ERROR_OUT_OF_MEMORY
    }
    instance.pointee = Unmanaged.passRetained(made).toOpaque()
    return EDGE_OPT_OK
}

private let destroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { instance in
    guard let instance else { return }
    Unmanaged<Instance>.fromOpaque(instance).release()
}

// MARK: - The step

private let step: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<edge_opt_step_args>?,
                                  UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 = { instance, args, message in
    guard let instance else { return EDGE_OPT_ERROR_INVALID_ARGUMENT }
    let s = Unmanaged<Instance>.fromOpaque(instance).takeUnretainedValue()
    guard let a = args?.pointee, a.struct_size >= UInt32(EDGE_OPT_STEP_ARGS_SIZE_V1) else {
        s.message.set("step arguments missing or too small", into: message)
        return EDGE_OPT_ERROR_INVALID_ARGUMENT
    }
    if let problem = check(a, s) {
        s.message.set(problem, into: message)
        return EDGE_OPT_ERROR_INVALID_ARGUMENT
    }
    let host = s.host
    let eta = a.learning_rate
    let nDirections = Int(a.direction_count)
    let n = Float(max(1, nDirections))
    guard let estimate = s.estimate else { return EDGE_OPT_ERROR_INTERNAL }
    for g in 0..<s.counts.count {
        guard let v = a.values?[g] else { return EDGE_OPT_ERROR_INTERNAL }
        let count = s.counts[g]
        var start = 0
        while start < count {
            let len = min(chunk, count - start)
            // g for this chunk: the dense estimate, or 0 + Σⱼ (dⱼ/n) zⱼ.
            if let dense = a.dense?[g] {
                estimate.update(from: dense + start, count: len)
            } else {
                estimate.update(repeating: 0, count: len)
                for j in 0..<nDirections {
                    host.pointee.perturbation_add(host, a.seeds[j], UInt32(g), UInt64(start), UInt64(len),
                                                  a.derivatives[j] / n, nil, estimate)
                }
            }
            // The update, as the built-in ZOSGD writes it.
            if s.momentum > 0 {
                let velocity = s.velocity[g] + start
                let x = v + start
                for i in 0..<len {
                    velocity[i] = s.momentum * velocity[i] + estimate[i]
                    x[i] -= eta * (velocity[i] + s.weightDecay * x[i])
                }
            } else {
                let x = v + start
                for i in 0..<len { x[i] -= eta * (estimate[i] + s.weightDecay * x[i]) }
            }
            start += len
        }
    }
    return EDGE_OPT_OK
}

/// What is wrong with a step's inputs, or nil; checked before anything is written.
private func check(_ a: edge_opt_step_args, _ s: Instance) -> String? {
    guard a.learning_rate.isFinite, a.epsilon.isFinite else {
        return "learning rate \(a.learning_rate) or epsilon \(a.epsilon) is not finite at step \(a.step)"
    }
    guard Int(a.group_count) == s.counts.count, let values = a.values, let counts = a.group_counts else {
        return "step has \(a.group_count) groups, the instance was created for \(s.counts.count)"
    }
    for g in 0..<s.counts.count {
        guard counts[g] == UInt64(s.counts[g]), values[g] != nil else {
            return "group \(g) has \(counts[g]) values, the instance was created for \(s.counts[g])"
        }
    }
    if a.direction_count > 0 {
        guard let derivatives = a.derivatives, a.seeds != nil else { return "directions without derivatives or seeds" }
        for j in 0..<Int(a.direction_count) where !derivatives[j].isFinite {
            return "the directional derivative of direction \(j) is \(derivatives[j]) at step \(a.step)"
        }
    }
    if let dense = a.dense {
        for g in 0..<s.counts.count {
            guard let d = dense[g] else { return "dense estimate of group \(g) is NULL" }
            for i in 0..<s.counts[g] where !d[i].isFinite {
                return "the dense estimate of group \(g) is \(d[i]) at index \(i)"
            }
        }
    }
    return nil
}

// MARK: - State: "ZSGD", format 1, the value count, then the velocity (momentum > 0)

private let stateSize: @convention(c) (UnsafeMutableRawPointer?) -> UInt64 = { instance in
    guard let instance else { return 0 }
    return UInt64(Unmanaged<Instance>.fromOpaque(instance).takeUnretainedValue().stateSize)
}

private let magic: [UInt8] = Array("ZSGD".utf8)

private let saveState: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UInt64,
                                       UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 = { instance, bytes, size, message in
    guard let instance else { return EDGE_OPT_ERROR_INVALID_ARGUMENT }
    let s = Unmanaged<Instance>.fromOpaque(instance).takeUnretainedValue()
    guard let bytes, size == UInt64(s.stateSize) else {
        s.message.set("save_state: the buffer is not state_size bytes", into: message)
        return EDGE_OPT_ERROR_INVALID_ARGUMENT
    }
    for (i, b) in magic.enumerated() { bytes.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
    bytes.storeBytes(of: UInt32(1).littleEndian, toByteOffset: 4, as: UInt32.self)
    bytes.storeBytes(of: UInt64(s.counts.reduce(0, +)).littleEndian, toByteOffset: 8, as: UInt64.self)
    var offset = 16
    for (g, v) in s.velocity.enumerated() {
        (bytes + offset).copyMemory(from: v, byteCount: 4 * s.counts[g])
        offset += 4 * s.counts[g]
    }
    return EDGE_OPT_OK
}

private let loadState: @convention(c) (UnsafeMutableRawPointer?, UnsafeRawPointer?, UInt64,
                                       UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 = { instance, bytes, size, message in
    guard let instance else { return EDGE_OPT_ERROR_INVALID_ARGUMENT }
    let s = Unmanaged<Instance>.fromOpaque(instance).takeUnretainedValue()
    guard let bytes, size == UInt64(s.stateSize) else {
        s.message.set("not a zo-sgd state for these groups and options (\(size) bytes, expected \(s.stateSize))", into: message)
        return EDGE_OPT_ERROR_BAD_STATE
    }
    let tag = (0..<4).map { bytes.load(fromByteOffset: $0, as: UInt8.self) }
    let format = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    let total = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    guard tag == magic, format == 1, total == UInt64(s.counts.reduce(0, +)) else {
        s.message.set("not a zo-sgd state for these groups (bad magic, format or value count)", into: message)
        return EDGE_OPT_ERROR_BAD_STATE
    }
    var offset = 16
    for (g, v) in s.velocity.enumerated() {
        UnsafeMutableRawPointer(v).copyMemory(from: bytes + offset, byteCount: 4 * s.counts[g])
        offset += 4 * s.counts[g]
    }
    return EDGE_OPT_OK
}
