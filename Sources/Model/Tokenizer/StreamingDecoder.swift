// Incremental detokenization for generation: a token may end in the middle of a UTF-8 sequence.

/// Turns a stream of token ids into text, handing out only what forms complete UTF-8 sequences.
///
/// A byte-level BPE token can hold part of a character (an emoji often spans two or three tokens). The decoder keeps
/// such a tail until the rest arrives; bytes that can never become valid UTF-8 come out as U+FFFD at once.
/// Joining everything `append` and `finish` return gives `tokenizer.decode(ids)`.
public struct StreamingDecoder: Sendable {
    /// The tokenizer whose pieces are joined.
    public let tokenizer: Tokenizer
    /// Whether control and unknown tokens render as their text.
    public let renderSpecial: Bool
    /// Bytes received but not yet handed out: an incomplete UTF-8 sequence of at most 3 bytes.
    private var pending: [UInt8] = []

    /// A decoder with nothing pending.
    public init(tokenizer: Tokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// Adds one token; returns the text it completes (possibly empty).
    public mutating func append(_ id: Int32) -> String {
        tokenizer.appendPiece(id, renderSpecial: renderSpecial, to: &pending)
        let complete = pending.count - Self.incompleteSuffixLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Hands out whatever is pending, an incomplete sequence as U+FFFD, and starts over.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the suffix of `bytes` that is the valid start of a UTF-8 sequence still missing bytes, else 0.
    static func incompleteSuffixLength(_ bytes: [UInt8]) -> Int {
        // the lead byte of the last sequence is at most 3 bytes back, behind continuation bytes (10xxxxxx)
        var lead = bytes.count - 1
        while lead >= 0 && lead >= bytes.count - 3 && bytes[lead] & 0xC0 == 0x80 { lead -= 1 }
        guard lead >= 0 else { return 0 }
        let expected: Int
        switch bytes[lead] {
        case 0xC2...0xDF: expected = 2
        case 0xE0...0xEF: expected = 3
        case 0xF0...0xF4: expected = 4
        default: return 0  // ASCII, or a byte that starts no sequence: nothing to wait for
        }
        let have = bytes.count - lead
        guard have < expected else { return 0 }
        // the second byte's range depends on the lead (no overlongs, no surrogates, nothing above U+10FFFF)
        if have >= 2 {
            let second = bytes[lead + 1]
            let valid: ClosedRange<UInt8>
            switch bytes[lead] {
            case 0xE0: valid = 0xA0...0xBF
            case 0xED: valid = 0x80...0x9F
            case 0xF0: valid = 0x90...0xBF
            case 0xF4: valid = 0x80...0x8F
            default: valid = 0x80...0xBF
            }
            guard valid.contains(second) else { return 0 }
        }
        return have
    }
}
