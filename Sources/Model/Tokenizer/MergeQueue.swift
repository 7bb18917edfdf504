// The queue of candidate merges shared by both tokenizers (BPE by rank, SentencePiece by
// score): a binary heap over an array that keeps its capacity from word to word, so that
// merging allocates nothing once warm.

/// A candidate merge that knows whether it goes before another one.
protocol MergeCandidate {
    /// Whether this candidate merges before `other` (the tokenizer's comparator).
    func precedes(_ other: Self) -> Bool
}

/// Binary heap of candidates, first the one that `precedes` all others.
struct MergeQueue<Candidate: MergeCandidate> {
    private var heap: [Candidate] = []

    /// Empties the queue, keeping its storage.
    @inline(__always)
    mutating func removeAll() {
        heap.removeAll(keepingCapacity: true)
    }

    /// Adds a candidate (sift up).
    @inline(__always)
    mutating func push(_ candidate: Candidate) {
        heap.append(candidate)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the first candidate (sift down), or nil when empty.
    @inline(__always)
    mutating func pop() -> Candidate? {
        guard let first = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                guard left < heap.count else { break }
                let right = left + 1
                let child = right < heap.count && heap[right].precedes(heap[left]) ? right : left
                guard heap[child].precedes(heap[parent]) else { break }
                heap.swapAt(child, parent)
                parent = child
            }
        }
        return first
    }
}
