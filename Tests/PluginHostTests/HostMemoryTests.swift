import Foundation
@testable import PluginHost
import Testing

/// The host's mem_alloc serves blocks of a MiB or more by mmap and mem_free unmaps them, so a
/// plugin that frees and takes a large block every step gives its pages back to the system
/// whatever the process's malloc does. (glibc raises its mmap threshold to the largest block
/// freed so far; from then on such blocks come from the heap, where a freed block stays
/// resident and the heap fragments: this is what grew mfac's runs by 13 MB a step.) These
/// tests use the host table directly, in a process that never set malloc's options.
@Suite struct HostMemoryTests {
    static let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Pages of [p, p + n) resident in this process; 0 when the range is not mapped at all
    /// (mincore fails with ENOMEM on unmapped pages).
    static func residentPages(_ p: UnsafeMutableRawPointer, _ n: Int) -> Int {
        let start = Int(bitPattern: p) / page * page
        let length = Int(bitPattern: p) + n - start
        var vector = [UInt8](repeating: 0, count: (length + page - 1) / page)
        guard mincore(UnsafeMutableRawPointer(bitPattern: start), length, &vector) == 0 else { return 0 }
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }

    /// A block freed and taken again every step, with a small block living across each free
    /// (a plugin's state): every large block is 64-byte aligned and zero-filled, the counter
    /// holds exactly the bytes asked for, and once freed, none of the block's pages is resident.
    @Test func largeBlocksFreedEachStepGoBackToTheSystem() throws {
        let host = HostServices(pluginName: "test", budget: nil)
        let table = UnsafePointer(host.table)
        let alloc = try #require(host.table.pointee.mem_alloc), release = try #require(host.table.pointee.mem_free)
        var small: [UnsafeMutableRawPointer] = []
        for step in 0..<24 {
            let n = 13_000_003 - step * 4096           // not a page multiple; never larger than the last one freed
            let s = try #require(alloc(table, 1000))
            small.append(s)
            let block = try #require(alloc(table, UInt64(n)))
            #expect(Int(bitPattern: block) % 64 == 0)
            let bytes = block.assumingMemoryBound(to: UInt8.self)
            #expect(stride(from: 0, to: n, by: 4093).allSatisfy { bytes[$0] == 0 } && bytes[n - 1] == 0, "zero-filled")
            memset(block, 0x5A, n)
            #expect(Self.residentPages(block, n) >= n / Self.page, "written, so resident")
            #expect(host.allocatedBytes == n + 1000 * small.count)
            release(table, block)
            #expect(Self.residentPages(block, n) == 0, "step \(step): pages of the freed block are still resident")
            #expect(host.allocatedBytes == 1000 * small.count)
        }
        for s in small { release(table, s) }
        #expect(host.allocatedBytes == 0)
    }

    /// The budget counts the bytes asked for, mapped blocks included; a freed mapped block's
    /// bytes can be taken again.
    @Test func mappedBlocksCountAgainstTheBudget() throws {
        let host = HostServices(pluginName: "test", budget: 3 << 20)
        let table = UnsafePointer(host.table)
        let alloc = try #require(host.table.pointee.mem_alloc), release = try #require(host.table.pointee.mem_free)
        let a = try #require(alloc(table, 2 << 20))
        #expect(alloc(table, (1 << 20) + 1) == nil, "over the budget by one byte")
        let b = try #require(alloc(table, 1 << 20))
        #expect(host.allocatedBytes == 3 << 20)
        release(table, a)
        let c = try #require(alloc(table, 2 << 20))
        #expect(host.allocatedBytes == 3 << 20)
        release(table, b)
        release(table, c)
        #expect(host.allocatedBytes == 0)
    }
}
