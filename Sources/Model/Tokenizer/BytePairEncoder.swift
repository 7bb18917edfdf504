// Byte-level BPE over one word; reference: llama.cpp's llm_tokenizer_bpe_session::tokenize (llama-vocab.cpp).

/// One symbol of a word during merging: a token id and its place in the word's linked list.
struct BPESymbol {
    /// Token id of the symbol's text, or -1 when the text is not in the vocabulary.
    var id: Int32
    /// Index of the previous live symbol, or -1.
    var previous: Int32
    /// Index of the next live symbol, or -1.
    var next: Int32
    /// First byte of the symbol in the word.
    var start: Int32
    /// Length in bytes; 0 once merged into its left neighbor.
    var length: Int32
}

/// A candidate merge of two adjacent symbols, as queued.
struct BPEBigram: MergeCandidate {
    var rank: Int32
    /// Index of the left symbol; ties in rank go to the leftmost pair.
    var left: Int32
    var right: Int32
    /// Ids of the two symbols when queued; if either changed since, the entry is stale.
    var leftID: Int32
    var rightID: Int32
    /// Id of the merged token.
    var result: Int32

    /// Whether this bigram merges before `other`: lower rank, then lower left index (llama.cpp's comparator).
    @inline(__always)
    func precedes(_ other: BPEBigram) -> Bool {
        rank < other.rank || (rank == other.rank && left < other.left)
    }
}

/// Buffers for BPE, reused from word to word so that merging allocates nothing once warm.
struct BPEScratch {
    var symbols: [BPESymbol] = []
    /// Candidate merges, first the one that goes first (`BPEBigram.precedes`).
    var queue = MergeQueue<BPEBigram>()
}

/// Byte-level BPE: the bytes of a word become symbols, merged pair by pair in rank order.
struct BytePairEncoder: Sendable {
    /// Merge ranks keyed by token-id pairs.
    let merges: MergeTable
    /// Token id of the one-character text standing for each byte through GPT-2's byte map, or -1: (256).
    let byteTokenIDs: [Int32]
    /// What llama.cpp emits for each byte of a symbol missing from the vocabulary, or -1: (256).
    ///
    /// llama.cpp looks up each byte of the symbol's byte-mapped UTF-8 as a one-byte text. Only bytes that map to
    /// printable ASCII can match, and for those the lookup is the same as the symbol's own, so a missing symbol
    /// emits nothing. The table keeps that rule literal.
    let fallbackTokenIDs: [Int32]

    /// Appends the tokens of one word (its raw UTF-8 bytes) to `output`, and where each starts (`base` plus its
    /// offset in the word) to `starts`.
    ///
    /// Every byte starts as a symbol: the byte-mapped word's characters are its bytes one to one. The lowest-ranked
    /// adjacent pair merges first, ties to the leftmost; a queued pair whose symbols changed since is skipped.
    func encode(_ word: UnsafeBufferPointer<UInt8>, base: Int, scratch: inout BPEScratch, into output: inout [Int32],
                starts: inout [Int]) {
        // one symbol per byte, linked in order
        scratch.symbols.removeAll(keepingCapacity: true)
        scratch.queue.removeAll()
        let count = Int32(word.count)
        for index in 0..<count {
            scratch.symbols.append(BPESymbol(
                id: byteTokenIDs[Int(word[Int(index)])],
                previous: index - 1,
                next: index + 1 == count ? -1 : index + 1,
                start: index,
                length: 1))
        }

        // every adjacent pair that has a merge is a candidate
        for index in 1..<max(count, 1) {
            queuePair(index - 1, index, scratch: &scratch)
        }

        // merge in rank order until no candidate is left
        while let bigram = scratch.queue.pop() {
            let left = scratch.symbols[Int(bigram.left)]
            let right = scratch.symbols[Int(bigram.right)]
            guard left.length > 0, right.length > 0, left.id == bigram.leftID, right.id == bigram.rightID else {
                continue  // stale: one side was merged into something else since this pair was queued
            }
            scratch.symbols[Int(bigram.left)].id = bigram.result
            scratch.symbols[Int(bigram.left)].length += right.length
            scratch.symbols[Int(bigram.left)].next = right.next
            scratch.symbols[Int(bigram.right)].length = 0
            if right.next >= 0 {
                scratch.symbols[Int(right.next)].previous = bigram.left
            }
            queuePair(left.previous, bigram.left, scratch: &scratch)
            queuePair(bigram.left, right.next, scratch: &scratch)
        }

        // live symbols, in order, are the word's tokens
        for symbol in scratch.symbols where symbol.length > 0 {
            if symbol.id >= 0 {
                output.append(symbol.id)
                starts.append(base + Int(symbol.start))
            } else {
                for offset in symbol.start..<(symbol.start + symbol.length) {
                    let fallback = fallbackTokenIDs[Int(word[Int(offset)])]
                    if fallback >= 0 {
                        output.append(fallback)
                        starts.append(base + Int(offset))
                    }
                }
            }
        }
    }

    /// Queues the pair (left, right) if both exist and the vocabulary has a merge for them.
    @inline(__always)
    private func queuePair(_ left: Int32, _ right: Int32, scratch: inout BPEScratch) {
        guard left >= 0, right >= 0 else { return }
        let leftID = scratch.symbols[Int(left)].id
        let rightID = scratch.symbols[Int(right)].id
        guard leftID >= 0, rightID >= 0, let merge = merges.lookup(left: leftID, right: rightID) else { return }
        scratch.queue.push(BPEBigram(rank: merge.rank, left: left, right: right,
                               leftID: leftID, rightID: rightID, result: merge.result))
    }
}
