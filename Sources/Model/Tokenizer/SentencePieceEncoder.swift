// SentencePiece over one fragment of text; reference: llama.cpp's llm_tokenizer_spm_session::tokenize and
// llama_vocab::byte_to_token (llama-vocab.cpp).

/// One symbol of a fragment during merging: a run of bytes and its place in the fragment's linked list.
struct SPMSymbol {
    /// Index of the previous live symbol, or -1.
    var previous: Int32
    /// Index of the next live symbol, or -1.
    var next: Int32
    /// First byte of the symbol in the (escaped) fragment.
    var start: Int32
    /// Length in bytes; 0 once merged into its left neighbor.
    var length: Int32
}

/// A candidate merge of two adjacent symbols into the token their bytes spell, as queued.
struct SPMBigram: MergeCandidate {
    /// The merged token's score: higher merges first.
    var score: Float
    /// Index of the left symbol; ties in score go to the leftmost pair.
    var left: Int32
    var right: Int32
    /// Combined length in bytes when queued; if either side changed since, the lengths no longer add up to it.
    var length: Int32

    /// Whether this bigram merges before `other`: higher score, then lower left index (llama.cpp's comparator).
    @inline(__always)
    func precedes(_ other: SPMBigram) -> Bool {
        score > other.score || (score == other.score && left < other.left)
    }
}

/// Buffers for SentencePiece, reused from fragment to fragment.
struct SPMScratch {
    /// The fragment with spaces escaped as U+2581 '▁' (and the space prefix, if any).
    var text: [UInt8] = []
    /// For each byte of `text`, the offset in the fragment of the byte it came from (the prefix: 0).
    var origin: [Int32] = []
    var symbols: [SPMSymbol] = []
    /// Candidate merges, first the one that goes first (`SPMBigram.precedes`).
    var queue = MergeQueue<SPMBigram>()
}

/// SentencePiece as llama.cpp runs it: characters merged pair by pair, highest-scoring token first.
///
/// There are no merge rules: two adjacent symbols merge when their concatenated bytes are a token of the vocabulary
/// (of any type), and the candidate with the highest score goes first, ties to the leftmost. A symbol left over that
/// is not a token falls back to its bytes as `<0xXX>` tokens.
struct SentencePieceEncoder: Sendable {
    /// Token ids by exact bytes (the vocabulary's texts, spaces as '▁').
    let index: TokenIndex
    /// Each token's score: (count).
    let scores: [Float]
    /// The token for each byte: `<0xXX>` (upper-case hex), else the one-byte text, else -1: (256).
    let byteTokenIDs: [Int32]
    /// Emitted for a byte that has no token (llama.cpp throws there), or nil to emit nothing.
    let unknownID: Int32?

    /// The bytes of U+2581 LOWER ONE EIGHTH BLOCK '▁', SentencePiece's space marker.
    static let spaceMarker: [UInt8] = [0xE2, 0x96, 0x81]

    init(index: TokenIndex, scores: [Float], unknownID: Int32?) {
        self.index = index
        self.scores = scores
        self.unknownID = unknownID
        let hex = Array("0123456789ABCDEF".utf8)
        self.byteTokenIDs = (0..<256).map { byte in
            index[bytes: [0x3C, 0x30, 0x78, hex[byte >> 4], hex[byte & 15], 0x3E]]  // "<0xXX>"
                ?? index[bytes: [UInt8(byte)]] ?? -1
        }
    }

    /// Appends the tokens of one fragment of raw UTF-8 text, prefixed with a space when `spacePrefix`, and where
    /// each starts in the text (`base` plus its offset in the fragment) to `starts`.
    func encode(_ fragment: UnsafeBufferPointer<UInt8>, base: Int, spacePrefix: Bool, scratch: inout SPMScratch,
                into output: inout [Int32], starts: inout [Int]) {
        // spaces become '▁'
        scratch.text.removeAll(keepingCapacity: true)
        scratch.origin.removeAll(keepingCapacity: true)
        if spacePrefix {
            scratch.text.append(contentsOf: Self.spaceMarker)
            scratch.origin.append(contentsOf: [0, 0, 0])
        }
        for (offset, byte) in fragment.enumerated() {
            if byte == 0x20 {
                scratch.text.append(contentsOf: Self.spaceMarker)
                scratch.origin.append(contentsOf: [Int32(offset), Int32(offset), Int32(offset)])
            } else {
                scratch.text.append(byte)
                scratch.origin.append(Int32(offset))
            }
        }
        let first = output.count
        scratch.text.withUnsafeBufferPointer { text in
            encodeEscaped(text, scratch: &scratch, into: &output, starts: &starts)
        }
        // starts so far are offsets in the escaped text: map them back
        for i in first..<output.count { starts[i] = base + Int(scratch.origin[starts[i]]) }
    }

    /// SentencePiece over escaped text: one symbol per UTF-8 character, merged by score.
    private func encodeEscaped(_ text: UnsafeBufferPointer<UInt8>, scratch: inout SPMScratch,
                               into output: inout [Int32], starts: inout [Int]) {
        scratch.symbols.removeAll(keepingCapacity: true)
        scratch.queue.removeAll()
        guard !text.isEmpty else { return }

        // one symbol per character, its length read from the lead byte as llama.cpp's unicode_len_utf8 does
        var offset = 0
        while offset < text.count {
            let length = min(Self.utf8Length(text[offset]), text.count - offset)
            let index = Int32(scratch.symbols.count)
            scratch.symbols.append(SPMSymbol(
                previous: index - 1,
                next: offset + length == text.count ? -1 : index + 1,
                start: Int32(offset),
                length: Int32(length)))
            offset += length
        }

        // every adjacent pair that spells a token is a candidate
        for index in 1..<Int32(scratch.symbols.count) {
            queuePair(index - 1, index, text: text, scratch: &scratch)
        }

        // merge the best candidate until none is left
        while let bigram = scratch.queue.pop() {
            let left = scratch.symbols[Int(bigram.left)]
            let right = scratch.symbols[Int(bigram.right)]
            guard left.length > 0, right.length > 0, left.length + right.length == bigram.length else {
                continue  // stale: one side was merged into something else since this pair was queued
            }
            scratch.symbols[Int(bigram.left)].length += right.length
            scratch.symbols[Int(bigram.left)].next = right.next
            scratch.symbols[Int(bigram.right)].length = 0
            if right.next >= 0 {
                scratch.symbols[Int(right.next)].previous = bigram.left
            }
            queuePair(left.previous, bigram.left, text: text, scratch: &scratch)
            queuePair(bigram.left, right.next, text: text, scratch: &scratch)
        }

        // live symbols, in order: a token, or its bytes
        var index: Int32 = 0
        while index >= 0 {
            let symbol = scratch.symbols[Int(index)]
            let bytes = UnsafeBufferPointer(rebasing: text[Int(symbol.start)..<Int(symbol.start + symbol.length)])
            if let id = self.index[buffer: bytes] {
                output.append(id)
                starts.append(Int(symbol.start))
            } else {
                for (offset, byte) in bytes.enumerated() {
                    let id = byteTokenIDs[Int(byte)]
                    if id >= 0 {
                        output.append(id)
                        starts.append(Int(symbol.start) + offset)
                    } else if let unknownID {
                        output.append(unknownID)
                        starts.append(Int(symbol.start) + offset)
                    }
                }
            }
            index = symbol.next
        }
    }

    /// Queues the pair (left, right) if both exist and their bytes together are a token.
    @inline(__always)
    private func queuePair(_ left: Int32, _ right: Int32, text: UnsafeBufferPointer<UInt8>,
                           scratch: inout SPMScratch) {
        guard left >= 0, right >= 0 else { return }
        let start = Int(scratch.symbols[Int(left)].start)
        let length = scratch.symbols[Int(left)].length + scratch.symbols[Int(right)].length
        guard let id = index[buffer: UnsafeBufferPointer(rebasing: text[start..<(start + Int(length))])] else { return }
        scratch.queue.push(SPMBigram(score: scores[Int(id)], left: left, right: right, length: length))
    }

    /// A UTF-8 sequence's length from its lead byte (a continuation byte counts as 1), as llama.cpp reads it.
    @inline(__always)
    static func utf8Length(_ lead: UInt8) -> Int {
        switch lead >> 4 {
        case 0xC, 0xD: return 2
        case 0xE: return 3
        case 0xF: return 4
        default: return 1
        }
    }
}
