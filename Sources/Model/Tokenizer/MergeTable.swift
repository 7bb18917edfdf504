// BPE merge ranks keyed by token-id pairs; llama.cpp keys the same ranks by text pairs (llama_vocab::find_bpe_rank).

/// One BPE merge: its rank (lower merges first) and the token it yields.
struct Merge: Sendable {
    /// Index in `tokenizer.ggml.merges`.
    var rank: Int32
    /// Id of the concatenated token.
    var result: Int32
}

/// Merges keyed by (left id, right id), in an open-addressing hash table with linear probing.
///
/// Token ids stand for texts one-to-one (duplicate texts are refused), so keying by ids finds exactly what llama.cpp's
/// text-pair map finds, without building strings in the merge loop.
struct MergeTable: Sendable {
    /// A key and its merge side by side (16 bytes), so that a probe touches one cache line.
    private struct Slot {
        /// `left << 32 | right`, or `emptyKey` for a free slot.
        var key: UInt64
        var merge: Merge
    }

    /// The table: (capacity).
    private var slots: [Slot]
    /// Number of merges stored.
    private(set) var count = 0
    /// `capacity - 1`; the capacity is a power of two.
    private let mask: Int
    /// The hash's top bits that index the table: 64 - log2(capacity).
    private let shift: UInt64

    private static let emptyKey = UInt64.max

    /// An empty table with room for `expected` merges at a load factor of at most one half.
    init(expected: Int) {
        var capacity = 16
        while capacity < 2 * expected { capacity *= 2 }
        slots = [Slot](repeating: Slot(key: Self.emptyKey, merge: Merge(rank: 0, result: 0)), count: capacity)
        mask = capacity - 1
        shift = UInt64(64 - capacity.trailingZeroBitCount)
    }

    /// Stores a merge unless the pair already has one (llama.cpp keeps the first, lowest rank); returns whether stored.
    @discardableResult
    mutating func insert(left: Int32, right: Int32, _ merge: Merge) -> Bool {
        let key = Self.key(left, right)
        var slot = slotFor(key)
        while slots[slot].key != Self.emptyKey {
            if slots[slot].key == key { return false }
            slot = (slot + 1) & mask
        }
        slots[slot] = Slot(key: key, merge: merge)
        count += 1
        return true
    }

    /// The merge of the pair (left, right), or nil when there is none.
    @inline(__always)
    func lookup(left: Int32, right: Int32) -> Merge? {
        let key = Self.key(left, right)
        var slot = slotFor(key)
        while true {
            let stored = slots[slot].key
            if stored == key { return slots[slot].merge }
            if stored == Self.emptyKey { return nil }
            slot = (slot + 1) & mask
        }
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// Fibonacci hashing: multiply by 2^64 / golden ratio and keep the top bits.
    @inline(__always)
    private func slotFor(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift) & mask
    }
}
