// Token lookup by exact bytes; llama.cpp's token_to_id is a std::unordered_map<std::string, llama_token>.

/// A token's text compared and hashed byte for byte.
///
/// Swift's `String` equality is Unicode canonical equivalence ("é" == "e\u{301}"), and hashing it normalizes;
/// llama.cpp compares bytes. Keying by UTF-8 keeps distinct tokens distinct and skips the normalization.
struct TokenBytes: Hashable, Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    init(_ text: String) { self.bytes = Array(text.utf8) }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// Token ids by exact text.
struct TokenIndex: Sendable {
    private var ids: [TokenBytes: Int32]

    /// An empty index with room for `capacity` tokens.
    init(capacity: Int) {
        ids = Dictionary(minimumCapacity: capacity)
    }

    /// The id of the token with exactly these UTF-8 bytes, or nil.
    subscript(bytes bytes: [UInt8]) -> Int32? { ids[TokenBytes(bytes)] }

    /// The id of the token with exactly this text (byte for byte), or nil.
    subscript(text text: String) -> Int32? { ids[TokenBytes(text)] }

    /// Adds a token; returns the id already holding that text instead, if any (and leaves it).
    mutating func insert(_ text: String, id: Int32) -> Int32? {
        let key = TokenBytes(text)
        if let existing = ids[key] { return existing }
        ids[key] = id
        return nil
    }
}
