// The host-services table (edge_opt_host) a plugin gets with each config and instance:
// the engine's perturbation generator, memory that counts against the run's budget,
// and logging. One table per config or instance, so that each object's allocations are
// counted (and leaks found) separately; all of them add up in PluginHost.allocatedBytes.

import COptimizerABI
import Foundation
import Quant
import ZerothOrder

/// Severity of a plugin's log message (EDGE_OPT_LOG_*).
public enum PluginLogLevel: Int32, Sendable, Comparable, CustomStringConvertible {
    case debug = 0, info = 1, warning = 2, error = 3

    public static func < (a: PluginLogLevel, b: PluginLogLevel) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .debug: return "debug"
        case .info: return "info"
        case .warning: return "warning"
        case .error: return "error"
        }
    }
}

/// Process-wide bookkeeping shared by every table.
enum HostRegistry {
    static let lock = NSLock()
    nonisolated(unsafe) static var totalBytes = 0
    nonisolated(unsafe) static var logHandler: (@Sendable (_ plugin: String, _ level: PluginLogLevel, _ message: String) -> Void)? = nil
    nonisolated(unsafe) static var logThreshold = PluginLogLevel.warning

    static func log(plugin: String, level: PluginLogLevel, message: String) {
        lock.lock()
        let handler = logHandler
        let threshold = logThreshold
        lock.unlock()
        if let handler {
            handler(plugin, level, message)
        } else if level >= threshold {
            // stdio, not FileHandle: a full or closed standard error must not raise.
            _ = fputs("plugin \(plugin): \(level): \(oneLine(message))\n", stderr)
        }
    }
}

/// One edge_opt_host table and the allocations made through it.
final class HostServices {
    /// The table handed to the plugin; its context points back at this object.
    let table: UnsafeMutablePointer<edge_opt_host>
    /// The plugin's name, for log lines.
    let pluginName: String
    /// Bytes this table may hand out in all (nil: no limit).
    let budget: Int?

    private let lock = NSLock()
    /// Each live block: the bytes asked for (what the counter holds) and, for a block mapped
    /// from the system, the length mapped (0 for a block from malloc).
    private var blocks: [UnsafeMutableRawPointer: (size: Int, mapped: Int)] = [:]
    private var bytes = 0

    /// Blocks of at least this many bytes are mapped from the system (mmap) and unmapped by
    /// mem_free, so that their pages go back to it whatever the process's malloc does. glibc
    /// raises its own mmap threshold to the largest block freed so far; after that, blocks of
    /// that size come from the heap, where a plugin that frees and takes a large block every
    /// step fragments it: mfac grew the resident set by 13 MB a step that way, past the plan.
    static let mappedBlockThreshold = 1 << 20
    /// The system's page size, to which a mapped block's length is rounded up.
    static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))

    init(pluginName: String, budget: Int?) {
        self.pluginName = pluginName
        self.budget = budget
        table = .allocate(capacity: 1)
        table.initialize(to: edge_opt_host())
        table.pointee.struct_size = UInt32(MemoryLayout<edge_opt_host>.size)
        table.pointee.struct_version = UInt32(EDGE_OPT_HOST_VERSION)
        table.pointee.abi_major = UInt32(EDGE_OPT_ABI_MAJOR)
        table.pointee.abi_minor = UInt32(EDGE_OPT_ABI_MINOR)
        table.pointee.perturbation_fill = hostPerturbationFill
        table.pointee.perturbation_add = hostPerturbationAdd
        table.pointee.mem_alloc = hostAlloc
        table.pointee.mem_free = hostFree
        table.pointee.log = hostLog
        table.pointee.context = Unmanaged.passUnretained(self).toOpaque()
    }

    /// Frees whatever the plugin did not (a leak, reported at warning level).
    deinit {
        if !blocks.isEmpty {
            HostRegistry.log(plugin: pluginName, level: .warning,
                             message: "leaked \(bytes) bytes in \(blocks.count) blocks from mem_alloc; the host freed them")
            for (block, b) in blocks { Self.freeBlock(block, mapped: b.mapped) }
            HostRegistry.lock.lock()
            HostRegistry.totalBytes -= bytes
            HostRegistry.lock.unlock()
        }
        table.deinitialize(count: 1)
        table.deallocate()
    }

    /// Bytes currently allocated through this table.
    var allocatedBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return bytes
    }

    func allocate(_ size: UInt64) -> UnsafeMutableRawPointer? {
        guard size > 0, size <= UInt64(Int.max / 2) else { return nil }
        let n = Int(size)
        lock.lock()
        defer { lock.unlock() }
        if let budget, bytes + n > budget { return nil }
        let block: UnsafeMutableRawPointer
        var mapped = 0
        if n >= Self.mappedBlockThreshold {
            // Page-aligned (so 64-byte aligned, as the ABI promises) and zero-filled by the
            // system; its pages become resident only as the plugin writes them.
            let length = (n + Self.pageSize - 1) / Self.pageSize * Self.pageSize
            guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  p != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
            block = p
            mapped = length
        } else {
            var p: UnsafeMutableRawPointer?
            guard posix_memalign(&p, 64, n) == 0, let p else { return nil }
            memset(p, 0, n)
            block = p
        }
        blocks[block] = (n, mapped)
        bytes += n
        HostRegistry.lock.lock()
        HostRegistry.totalBytes += n
        HostRegistry.lock.unlock()
        return block
    }

    func release(_ block: UnsafeMutableRawPointer) {
        lock.lock()
        defer { lock.unlock() }
        guard let b = blocks.removeValue(forKey: block) else {
            // Not ours: freeing it could corrupt the heap, so leave it and say so.
            HostRegistry.log(plugin: pluginName, level: .error,
                             message: "mem_free of \(block), which this table's mem_alloc did not return; ignored")
            return
        }
        Self.freeBlock(block, mapped: b.mapped)
        bytes -= b.size
        HostRegistry.lock.lock()
        HostRegistry.totalBytes -= b.size
        HostRegistry.lock.unlock()
    }

    /// Gives a block back: unmapped when it was mapped, else to malloc.
    private static func freeBlock(_ block: UnsafeMutableRawPointer, mapped: Int) {
        if mapped > 0 { munmap(block, mapped) } else { free(block) }
    }

    static func from(_ host: UnsafePointer<edge_opt_host>?) -> HostServices? {
        guard let context = host?.pointee.context else { return nil }
        return Unmanaged<HostServices>.fromOpaque(context).takeUnretainedValue()
    }
}

// The table's functions. C function pointers cannot capture, so each finds its
// HostServices through host->context.

/// Values z(seed, group, start + i), exactly Perturbation.fill, split across threads in
/// ranges (the values do not depend on the split).
private let hostPerturbationFill: @convention(c) (UnsafePointer<edge_opt_host>?, UInt64, UInt32, UInt64, UInt64,
                                                  UnsafeMutablePointer<Float>?) -> Void = { _, seed, group, start, count, out in
    guard let out, count > 0, count <= UInt64(Int.max) else { return }
    Parallel.forRanges(Int(count), granule: 1024) { range in
        Perturbation.fill(seed: seed, group: group, start: start + UInt64(range.lowerBound), count: range.count,
                          into: out + range.lowerBound)
    }
}

/// values[i] += (alpha · scale[i]) · z(start + i), or alpha · z(start + i) without a scale:
/// the same float operations, in the same order, as Perturbation.addScaled, so that an
/// estimate formed here is bit-identical to the engine's own gradientEstimate.
private let hostPerturbationAdd: @convention(c) (UnsafePointer<edge_opt_host>?, UInt64, UInt32, UInt64, UInt64, Float,
                                                 UnsafePointer<Float>?, UnsafeMutablePointer<Float>?) -> Void = {
    _, seed, group, start, count, alpha, scale, values in
    guard let values, count > 0, count <= UInt64(Int.max) else { return }
    Parallel.forRanges(Int(count), granule: 1024) { range in
        // z for one chunk at a time, in a stack buffer: nothing of the group's size is made.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 1024) { buffer in
            let z = buffer.baseAddress!
            var i = range.lowerBound
            while i < range.upperBound {
                let n = min(1024, range.upperBound - i)
                Perturbation.fill(seed: seed, group: group, start: start + UInt64(i), count: n, into: z)
                if let scale {
                    for j in 0..<n { values[i + j] += alpha * scale[i + j] * z[j] }
                } else {
                    for j in 0..<n { values[i + j] += alpha * z[j] }
                }
                i += n
            }
        }
    }
}

private let hostAlloc: @convention(c) (UnsafePointer<edge_opt_host>?, UInt64) -> UnsafeMutableRawPointer? = { host, size in
    HostServices.from(host)?.allocate(size)
}

private let hostFree: @convention(c) (UnsafePointer<edge_opt_host>?, UnsafeMutableRawPointer?) -> Void = { host, block in
    guard let block else { return }
    HostServices.from(host)?.release(block)
}

private let hostLog: @convention(c) (UnsafePointer<edge_opt_host>?, Int32, UnsafePointer<CChar>?) -> Void = { host, level, message in
    guard let message else { return }
    let name = HostServices.from(host)?.pluginName ?? "?"
    HostRegistry.log(plugin: name, level: PluginLogLevel(rawValue: level) ?? .error, message: String(cString: message))
}
