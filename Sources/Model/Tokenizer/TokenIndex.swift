// Token lookup by exact bytes; llama.cpp's token_to_id is a std::unordered_map<std::string, llama_token>.
//
// Swift's `String` equality is Unicode canonical equivalence ("é" == "e\u{301}"), and hashing it normalizes;
// llama.cpp compares bytes. This index keys by UTF-8 bytes, so distinct tokens stay distinct.
//
// Layout, compact because a vocabulary has tens of thousands of entries (a dictionary of byte arrays would
// spend an allocation per token): every key's bytes back to back in one array, their start offsets, and an
// open-addressing table of ids with linear probing, at a load factor of at most one half.

/// Token ids by exact text.
struct TokenIndex: Sendable {
    /// Every inserted key's bytes, back to back.
    private var bytes: [UInt8] = []
    /// Where key i starts in `bytes`: (count + 1).
    private var starts: [Int32] = [0]
    /// Per key, its id.
    private var ids: [Int32] = []
    /// Table slots: index into `ids` (key number), or −1 when free.
    private var slots: [Int32]
    private var mask: Int

    /// An empty index with room for `capacity` tokens before it grows.
    init(capacity: Int) {
        var size = 16
        while size < 2 * max(capacity, 1) { size *= 2 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        ids.reserveCapacity(capacity)
        starts.reserveCapacity(capacity + 1)
    }

    /// FNV-1a over the bytes, then a multiplicative mix.
    @inline(__always)
    private static func hash(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return Int(truncatingIfNeeded: ((h ^ (h >> 29)) &* 0x9E37_79B9_7F4A_7C15) >> 16)
    }

    /// The slot holding `key`, or the free slot where it would go.
    private func find(_ key: UnsafeBufferPointer<UInt8>) -> (slot: Int, found: Bool) {
        var slot = Self.hash(key) & mask
        while true {
            let k = slots[slot]
            if k < 0 { return (slot, false) }
            let start = Int(starts[Int(k)]), end = Int(starts[Int(k) + 1])
            if end - start == key.count && bytes.withUnsafeBufferPointer({ b in
                key.isEmpty || memcmp(b.baseAddress! + start, key.baseAddress!, key.count) == 0
            }) {
                return (slot, true)
            }
            slot = (slot + 1) & mask
        }
    }

    private func lookup(_ key: UnsafeBufferPointer<UInt8>) -> Int32? {
        let (slot, found) = find(key)
        return found ? ids[Int(slots[slot])] : nil
    }

    /// The id of the token with exactly these UTF-8 bytes, or nil.
    subscript(bytes key: [UInt8]) -> Int32? { key.withUnsafeBufferPointer { lookup($0) } }

    /// The id of the token with exactly these bytes, or nil; for hot loops that already hold a buffer.
    subscript(buffer key: UnsafeBufferPointer<UInt8>) -> Int32? { lookup(key) }

    /// The id of the token with exactly this text (byte for byte), or nil.
    subscript(text text: String) -> Int32? {
        var t = text
        return t.withUTF8 { lookup($0) }
    }

    /// Adds a token; returns the id already holding that text instead, if any (and leaves it).
    mutating func insert(_ text: String, id: Int32) -> Int32? {
        if 2 * (ids.count + 1) > slots.count { grow() }
        var t = text
        return t.withUTF8 { key -> Int32? in
            let (slot, found) = find(key)
            if found { return ids[Int(slots[slot])] }
            slots[slot] = Int32(ids.count)
            ids.append(id)
            bytes.append(contentsOf: key)
            starts.append(Int32(bytes.count))
            return nil
        }
    }

    /// Doubles the table and re-inserts every key.
    private mutating func grow() {
        let size = slots.count * 2
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        for k in 0..<ids.count {
            let start = Int(starts[k]), end = Int(starts[k + 1])
            let slot = bytes.withUnsafeBufferPointer { b in
                find(UnsafeBufferPointer(rebasing: b[start..<end])).slot
            }
            slots[slot] = Int32(k)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
