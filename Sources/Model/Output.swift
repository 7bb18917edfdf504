// The output head: logits of one position, and the negative log-likelihood of target
// tokens computed tile by tile over the vocabulary, so the (tokens × vocab) logits
// matrix is never held whole (for a training batch it would be 100 MB).

import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import Quant

/// Reusable buffers of the tiled output head. Tiles of the vocabulary are handed to the
/// threads; each thread has its own weight and logits tiles, and each tile's log-sum-exp
/// per row is kept, then merged in vocabulary order, so the result does not depend on
/// which thread took which tile (training runs are reproducible bit for bit).
public final class OutputScratch {
    public let capacity: Int
    /// Vocabulary rows per tile, per thread.
    public let tileRows: Int
    let hidden: FloatBuffer    /// (capacity, dim) rows of xb that have a target
    let parts: [Part]
    /// Per tile and row: the tile's maximum logit and Σ e^(logit − maximum); sized for the
    /// vocabulary on first use.
    var tileMax: FloatBuffer?
    var tileSum: FloatBuffer?

    /// One thread's share of the work.
    final class Part {
        let weights: FloatBuffer      /// (tileRows, dim) dequantized vocabulary rows
        let logits: FloatBuffer       /// (capacity, tileRows) one tile of logits
        let runningMax: FloatBuffer   /// (capacity)
        let runningSum: FloatBuffer   /// (capacity)
        let targetLogit: FloatBuffer  /// (capacity) NaN unless the target fell in this part's vocabulary

        init(dim: Int, capacity: Int, tileRows: Int) {
            weights = FloatBuffer(count: tileRows * dim)
            logits = FloatBuffer(count: capacity * tileRows)
            runningMax = FloatBuffer(count: capacity)
            runningSum = FloatBuffer(count: capacity)
            targetLogit = FloatBuffer(count: capacity)
        }

        var byteCount: Int { weights.byteCount + logits.byteCount + 3 * runningMax.byteCount }
    }

    public init(dim: Int, capacity: Int, tileRows: Int = 256) {
        self.capacity = capacity
        self.tileRows = tileRows
        hidden = FloatBuffer(count: capacity * dim)
        parts = (0..<max(1, Parallel.threadCount)).map { _ in Part(dim: dim, capacity: capacity, tileRows: tileRows) }
    }

    public var byteCount: Int { hidden.byteCount + parts.reduce(0) { $0 + $1.byteCount } }

    /// What the buffers take for a vocabulary of `vocabulary` rows: besides the tiles, each
    /// tile's maximum and sum per row (2 MB for Gemma 3's 262,144 rows at 256 rows a tile).
    public static func estimatedBytes(dim: Int, capacity: Int, tileRows: Int = 256, vocabulary: Int = 0) -> Int {
        let tiles = (vocabulary + tileRows - 1) / tileRows
        return 4 * (capacity * dim + max(1, Parallel.threadCount) * (tileRows * dim + capacity * (tileRows + 3)))
            + 8 * tiles * capacity
    }
}

extension LlamaModel {
    /// Logits of the position of token `t` (after `forward`), the vocabulary then the extra tokens.
    public func logits(_ state: RunState, token t: Int, extra: ExtraTokens? = nil, variant: Int = 0,
                       into out: UnsafeMutablePointer<Float>, weights: WeightSource? = nil) {
        let h = state.xb.pointer + t * config.dim
        let source = weights ?? self
        Profile.measure(.outputHead) {
            // The whole matrix at once when mapped; tile by tile when streamed from disk.
            var v0 = 0
            while v0 < config.vocabSize {
                let count = min(source.outputTileRows, config.vocabSize - v0)
                matmul(source.outputRows(v0..<(v0 + count), thread: 0), h, n: 1, out + v0, scratch: state.scratch)
                v0 += count
            }
        }
        if let extra {
            for e in 0..<extra.count {
                out[config.vocabSize + e] = dotF32(extra.outputRows(variant) + e * config.dim, h, count: config.dim)
            }
        }
    }

    /// Logits of the positions of tokens `tokens` (after `forward`), vocabulary only:
    /// (tokens.count, vocab) row-major into `out`. The output matrix is read once for all
    /// of them, tile by tile when streamed.
    public func logits(_ state: RunState, tokens: Range<Int>, into out: UnsafeMutablePointer<Float>,
                       weights: WeightSource? = nil) {
        let source = weights ?? self
        let vocab = config.vocabSize
        Profile.measure(.outputHead) {
            var v0 = 0
            while v0 < vocab {
                let count = min(source.outputTileRows, vocab - v0)
                matmul(source.outputRows(v0..<(v0 + count), thread: 0), state.xb.pointer + tokens.lowerBound * config.dim,
                       n: tokens.count, out + v0, ldy: vocab, scratch: state.scratch)
                v0 += count
            }
        }
    }

    /// Negative log-likelihood (nats) of `targets[t]` at each token t of the batch
    /// (after `forward`); targets < 0 are skipped and give NaN.
    public func negativeLogLikelihoods(_ batch: Batch, _ state: RunState, targets: [Int32],
                                       extra: ExtraTokens? = nil, scratch o: OutputScratch,
                                       weights: WeightSource? = nil) -> [Float] {
        var result = [Float](repeating: .nan, count: batch.count)
        // Rows that have a target, with their sequence's variant.
        var rows = [Int]()
        var variants = [Int]()
        for span in batch.spans {
            for t in span.start..<(span.start + span.count) where targets[t] >= 0 {
                rows.append(t)
                variants.append(span.variant)
            }
        }
        var begin = 0
        while begin < rows.count {
            let chunk = Array(rows[begin..<min(rows.count, begin + o.capacity)])
            let chunkVariants = Array(variants[begin..<min(rows.count, begin + o.capacity)])
            let nll = Profile.measure(.outputHead) {
                chunkNLL(chunk, variants: chunkVariants, targets: chunk.map { targets[$0] }, state, extra: extra, scratch: o,
                         weights: weights ?? self)
            }
            for (i, t) in chunk.enumerated() { result[t] = nll[i] }
            begin += o.capacity
        }
        return result
    }

    private func chunkNLL(_ rows: [Int], variants: [Int], targets: [Int32], _ state: RunState,
                          extra: ExtraTokens?, scratch o: OutputScratch, weights source: WeightSource) -> [Float] {
        let dim = config.dim
        let m = rows.count
        let vocab = config.vocabSize
        // Gather the rows' normed hidden states: H (m, dim)
        for (i, t) in rows.enumerated() {
            (o.hidden.pointer + i * dim).update(from: state.xb.pointer + t * dim, count: dim)
        }

        // Tiles of the vocabulary, handed out to the threads one at a time: the thread that
        // takes a tile computes logits L (m, tile) = H · W[tile]ᵀ and each row's log-sum-exp
        // over the tile. The target's logit is written by the one tile that holds it.
        let threads = o.parts.count
        let total = o.parts[0]
        for i in 0..<m { total.targetLogit[i] = .nan }
        let tileRows = min(o.tileRows, source.outputTileRows)
        let tiles = (vocab + tileRows - 1) / tileRows
        if (o.tileMax?.count ?? 0) < tiles * o.capacity {
            o.tileMax = FloatBuffer(count: tiles * o.capacity)
            o.tileSum = FloatBuffer(count: tiles * o.capacity)
        }
        let tileMax = o.tileMax!.pointer, tileSum = o.tileSum!.pointer
        BLAS.useOneThread()
        let run = { (tile: Int, thread: Int) in
            let part = o.parts[thread]
            let v0 = tile * tileRows
            let count = min(tileRows, vocab - v0)
            let w = source.outputRows(v0..<(v0 + count), thread: thread)
            w.dequantize(rows: 0..<count, into: part.weights.pointer)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(count), Int32(dim),
                        1, o.hidden.pointer, Int32(dim), part.weights.pointer, Int32(dim), 0, part.logits.pointer, Int32(count))
            for i in 0..<m {
                let row = part.logits.pointer + i * count
                var mx = -Float.infinity
                var sum: Float = 0
                foldLogSumExp(row, count: count, runningMax: &mx, runningSum: &sum)
                tileMax[tile * m + i] = mx
                tileSum[tile * m + i] = sum
                let target = Int(targets[i])
                if target >= v0 && target < v0 + count { total.targetLogit[i] = row[target - v0] }
            }
        }
        if Parallel.threadCount <= threads {
            Parallel.forEachOnThread(tiles, run)
        } else {
            for tile in 0..<tiles { run(tile, 0) }
        }

        // Merge the tiles in vocabulary order: one running log-sum-exp per row.
        for i in 0..<m {
            var mx = -Float.infinity
            var sum: Float = 0
            for tile in 0..<tiles {
                let tm = tileMax[tile * m + i]
                let newMax = max(mx, tm)
                sum = sum * expf(mx - newMax) + tileSum[tile * m + i] * expf(tm - newMax)
                mx = newMax
            }
            total.runningMax[i] = mx
            total.runningSum[i] = sum
        }

        // Extra tokens: one more small tile per row, from the row's variant
        if let extra {
            for i in 0..<m {
                let h = o.hidden.pointer + i * dim
                let l = total.logits.pointer
                for e in 0..<extra.count {
                    l[e] = dotF32(extra.outputRows(variants[i]) + e * dim, h, count: dim)
                }
                foldLogSumExp(l, count: extra.count, runningMax: &total.runningMax[i], runningSum: &total.runningSum[i])
                let target = Int(targets[i])
                if target >= extra.firstID { total.targetLogit[i] = l[target - extra.firstID] }
            }
        }

        return (0..<m).map { i in total.runningMax[i] + logf(total.runningSum[i]) - total.targetLogit[i] }
    }
}

/// A teacher's next-token distribution at one position, kept to its most likely tokens:
/// their ids and probabilities (renormalized over those tokens).
public struct SoftTarget: Sendable, Equatable {
    public var ids: [Int32]
    public var probabilities: [Float]

    public init(ids: [Int32], probabilities: [Float]) {
        self.ids = ids
        self.probabilities = probabilities
    }

    /// The teacher's entropy over these tokens: cross-entropy minus this is the KL divergence.
    public var entropy: Double {
        probabilities.reduce(0.0) { $0 - ($1 > 0 ? Double($1) * log(Double($1)) : 0) }
    }
}

extension LlamaModel {
    /// Cross-entropy H(p, q) = log Σ e^logits − Σₖ pₖ · logit(idₖ) (nats) of each token's soft
    /// target p under this model's next-token distribution q (after `forward`); tokens
    /// without a soft target give NaN. Minimizing it over q minimizes KL(p ‖ q).
    public func crossEntropies(_ batch: Batch, _ state: RunState, soft: [SoftTarget?], extra: ExtraTokens? = nil,
                               scratch o: OutputScratch, weights: WeightSource? = nil) -> [Float] {
        // The tiled head gives log Σ e^logits − logit(first id); add the first id's logit back.
        let first = soft.map { $0?.ids.first ?? -1 }
        let partial = negativeLogLikelihoods(batch, state, targets: first, extra: extra, scratch: o, weights: weights)
        let source = weights ?? self
        let dim = config.dim
        var variant = [Int](repeating: 0, count: batch.count)
        for span in batch.spans { for t in span.start..<(span.start + span.count) { variant[t] = span.variant } }
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: dim) { row in
            (0..<batch.count).map { t -> Float in
                guard let target = soft[t], !target.ids.isEmpty else { return .nan }
                let h = state.xb.pointer + t * dim
                func logit(_ id: Int32) -> Float {
                    if let extra, Int(id) >= extra.firstID {
                        return dotF32(extra.outputRows(variant[t]) + (Int(id) - extra.firstID) * dim, h, count: dim)
                    }
                    source.outputRows(Int(id)..<(Int(id) + 1), thread: 0).dequantize(rows: 0..<1, into: row.baseAddress!)
                    return dotF32(row.baseAddress!, h, count: dim)
                }
                let lse = partial[t] + logit(target.ids[0])
                var expected: Float = 0
                for (id, p) in zip(target.ids, target.probabilities) { expected += p * logit(id) }
                return lse - expected
            }
        }
    }

    /// The `k` most likely next tokens at each position with a target (after `forward`).
    public func topTokens(_ batch: Batch, _ state: RunState, targets: [Int32], k: Int, extra: ExtraTokens? = nil,
                          weights: WeightSource? = nil) -> [SoftTarget?] {
        let vocab = vocabularySize(extra: extra)
        let logits = FloatBuffer(count: vocab)
        return (0..<batch.count).map { t -> SoftTarget? in
            guard targets[t] >= 0 else { return nil }
            self.logits(state, token: t, extra: extra, into: logits.pointer, weights: weights)
            softmax(logits.pointer, count: vocab)
            // Partial selection of the k largest.
            var best = [(Float, Int32)]()
            best.reserveCapacity(k + 1)
            for v in 0..<vocab {
                let p = logits[v]
                if best.count < k || p > best[best.count - 1].0 {
                    let at = best.firstIndex { $0.0 < p } ?? best.count
                    best.insert((p, Int32(v)), at: at)
                    if best.count > k { best.removeLast() }
                }
            }
            let mass = best.reduce(0) { $0 + $1.0 }
            return SoftTarget(ids: best.map(\.1), probabilities: best.map { $0.0 / mass })
        }
    }
}
