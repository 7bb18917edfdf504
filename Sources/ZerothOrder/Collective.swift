// Data-parallel training: the ranks of one run and the one exchange a step needs.
//
// A zeroth-order step is a seed and a few scalars. Every rank holds the same θ, draws the
// same batch and the same direction seeds, and measures the loss at every point of the
// step on its share of the batch's micro-batches. The ranks then gather, per micro-batch
// and point, the loss sum and the scored-token count, and every rank adds them up in
// micro-batch order: the same doubles added in the same order on every rank, and in a
// one-process run, so every rank gets the same directional derivatives to the last bit
// and applies the same update. θ, the optimizer's state and the subspace never travel.
//
// Which rank does what does not change the numbers: the micro-batches (fixed by the
// global batch and the micro-batch size) are the units, and a unit's sums start from
// zero wherever it runs. A one-process run with the same micro-batch size adds the same
// unit sums in the same order, so it gives the same adapter bit for bit.
//
// What goes over the wire per step and rank: one status byte, then for each of its units
// (⌈micro-batches / ranks⌉ slots, padded) and each point two 8-byte values: 16 bytes per
// point and unit, independent of the model's size.

import GGUF
import Model

/// The ranks of a run and the one collective operation training needs.
public protocol Collective: AnyObject {
    /// This process's rank, 0..<size.
    var rank: Int { get }
    var size: Int { get }
    /// Every rank's `bytes`, in rank order (this rank's own included). Every rank passes
    /// the same count. `step` names the step in errors (0: before training). Throws
    /// `.distributed` naming the ranks that did not answer in time.
    func allgather(_ bytes: [UInt8], step: Int) throws(TrainingError) -> [[UInt8]]
    /// Bytes this rank has sent to other ranks so far (payloads, not MPI's headers).
    var bytesSent: Int { get }
    /// Seconds spent in `allgather` so far (waiting for slower ranks included).
    var secondsExchanging: Double { get }
}

/// One process: the whole batch here, nothing sent.
public final class SingleProcess: Collective {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allgather(_ bytes: [UInt8], step: Int) throws(TrainingError) -> [[UInt8]] { [bytes] }
    public var bytesSent: Int { 0 }
    public var secondsExchanging: Double { 0 }
}

extension Collective {
    /// The units (micro-batches) this rank measures: u with u mod size == rank.
    public func owns(unit u: Int) -> Bool { u % size == rank }

    /// Runs `work` for this rank's units of `units`, each giving `width` loss sums, gathers
    /// every rank's, and returns all units' sums in unit order. When `work` throws on any
    /// rank, every rank throws: the failing rank's own error is carried to all of them, so
    /// rank 0 can print it as one line with the rank and the step.
    public func gatherLossSums(units: Int, width: Int, step: Int,
                               _ work: (Int) throws(TrainingError) -> [LossSum]) throws(TrainingError) -> [[LossSum]] {
        let slots = (units + size - 1) / size
        var failure: TrainingError?
        var payload = [UInt8](repeating: 0, count: 1 + slots * width * 16)
        for slot in 0..<slots {
            let u = rank + slot * size
            guard u < units, failure == nil else { continue }
            do {
                let sums = try work(u)
                precondition(sums.count == width, "one loss sum per point")
                for (p, sum) in sums.enumerated() {
                    let at = 1 + (slot * width + p) * 16
                    store(sum.totalNLL.bitPattern, &payload, at)
                    store(UInt64(sum.tokens), &payload, at + 8)
                }
            } catch {
                failure = error
            }
        }
        if failure != nil { payload[0] = 1 }
        let gathered = try allgather(payload, step: step)
        if let failed = gathered.firstIndex(where: { $0[0] != 0 }) {
            // The first failing rank's message, to every rank.
            let message = try self.message(failed == rank ? (failure?.description ?? "") : "", from: failed, step: step)
            if size == 1, let failure { throw failure }
            throw .distributed("rank \(failed) failed \(step < 0 ? "in a held-out evaluation" : "at step \(step)"): \(message)")
        }
        var out = [[LossSum]]()
        out.reserveCapacity(units)
        for u in 0..<units {
            let r = u % size, slot = u / size
            out.append((0..<width).map { p in
                let at = 1 + (slot * width + p) * 16
                return LossSum(tokens: Int(load(gathered[r], at + 8)), totalNLL: Double(bitPattern: load(gathered[r], at)))
            })
        }
        return out
    }

    /// The text `from` sends (up to 480 bytes of UTF-8), received by every rank.
    func message(_ text: String, from sender: Int, step: Int) throws(TrainingError) -> String {
        var bytes = [UInt8](repeating: 0, count: 480)
        if rank == sender {
            let utf8 = Array(text.utf8.prefix(480))
            bytes.replaceSubrange(0..<utf8.count, with: utf8)
        }
        let all = try allgather(bytes, step: step)
        return String(decoding: all[sender].prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Compares named digests with rank 0's before training: throws `.distributed` naming
    /// the first item that differs and the rank it differs on. Every rank throws the same.
    public func checkAgreement(_ items: [(name: String, digest: String)]) throws(TrainingError) {
        guard size > 1 else { return }
        var payload = [UInt8]()
        for item in items {
            var h = SHA256()
            h.update(Array(item.digest.utf8))
            payload += h.finalize().prefix(16)
        }
        let all = try allgather(payload, step: 0)
        for (i, item) in items.enumerated() {
            let slice = (i * 16)..<(i * 16 + 16)
            if let other = all.indices.first(where: { all[$0][slice] != all[0][slice] }) {
                throw .distributed("rank \(other) and rank 0 differ in \(item.name); every rank must run with the same model file, data, flags and plugin")
            }
        }
    }
}

/// Sums of each unit's loss sums, added in unit order per point (the same order on every
/// rank and in a one-process run).
public func combineInOrder(_ units: [[LossSum]], width: Int) -> [LossSum] {
    var total = [LossSum](repeating: LossSum(), count: width)
    for unit in units {
        for p in 0..<width { total[p] = total[p] + unit[p] }
    }
    return total
}

/// Groups of consecutive whole examples of at most `capacity` tokens each, packed greedily
/// in order (how the evaluators pack their passes), so that a group's result does not
/// depend on which rank measures it.
public func greedyGroups(_ examples: [Example], capacity: Int) -> [Range<Int>] {
    var groups = [Range<Int>]()
    var start = 0, tokens = 0
    for (i, e) in examples.enumerated() {
        if i > start, tokens + e.tokens.count > capacity {
            groups.append(start..<i)
            start = i
            tokens = 0
        }
        tokens += e.tokens.count
    }
    if start < examples.count { groups.append(start..<examples.count) }
    return groups
}

private func store(_ v: UInt64, _ bytes: inout [UInt8], _ at: Int) {
    for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
}

private func load(_ bytes: [UInt8], _ at: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
}
