// The output head: logits of one position, and the negative log-likelihood of target
// tokens computed tile by tile over the vocabulary, so the (tokens × vocab) logits
// matrix is never held whole (for a training batch it would be 100 MB).

import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import Quant

/// Reusable buffers of the tiled output head.
public final class OutputScratch {
    public let capacity: Int
    public let tileRows: Int
    let hidden: FloatBuffer    /// (capacity, dim) rows of xb that have a target
    let logits: FloatBuffer    /// (capacity, tileRows) one tile of logits
    let runningMax: FloatBuffer
    let runningSum: FloatBuffer
    let targetLogit: FloatBuffer

    public init(dim: Int, capacity: Int, tileRows: Int = 1024) {
        self.capacity = capacity
        self.tileRows = tileRows
        hidden = FloatBuffer(count: capacity * dim)
        logits = FloatBuffer(count: capacity * tileRows)
        runningMax = FloatBuffer(count: capacity)
        runningSum = FloatBuffer(count: capacity)
        targetLogit = FloatBuffer(count: capacity)
    }

    public var byteCount: Int { hidden.byteCount + logits.byteCount + 3 * capacity * 4 }

    public static func estimatedBytes(dim: Int, capacity: Int, tileRows: Int = 1024) -> Int {
        4 * capacity * (dim + tileRows + 3)
    }
}

extension LlamaModel {
    /// Logits of the position of token `t` (after `forward`), the vocabulary then the extra tokens.
    public func logits(_ state: RunState, token t: Int, extra: ExtraTokens? = nil, variant: Int = 0,
                       into out: UnsafeMutablePointer<Float>, weights: WeightSource? = nil) {
        let h = state.xb.pointer + t * config.dim
        let source = weights ?? self
        var v0 = 0
        while v0 < config.vocabSize {
            let count = min(source.outputTileRows, config.vocabSize - v0)
            matmul(source.outputRows(v0..<(v0 + count)), h, n: 1, out + v0, scratch: state.scratch)
            v0 += count
        }
        if let extra {
            for e in 0..<extra.count {
                out[config.vocabSize + e] = dotF32(extra.tables[variant] + e * config.dim, h, count: config.dim)
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
            let nll = chunkNLL(chunk, variants: chunkVariants, targets: chunk.map { targets[$0] },
                               state, extra: extra, scratch: o, weights: weights ?? self)
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
        for i in 0..<m {
            o.runningMax[i] = -.infinity
            o.runningSum[i] = 0
            o.targetLogit[i] = .nan
        }

        // Tiles of the vocabulary: logits L (m, tile) = H · W[tile]ᵀ, folded into a running log-sum-exp
        var v0 = 0
        while v0 < vocab {
            let count = min(o.tileRows, vocab - v0, state.scratch.tileRows, source.outputTileRows)
            let tile = state.scratch.buffer
            let w = source.outputRows(v0..<(v0 + count))
            Parallel.forRanges(count, granule: 8) { r in
                w.dequantize(rows: r, into: tile + r.lowerBound * dim)
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(count), Int32(dim),
                        1, o.hidden.pointer, Int32(dim), tile, Int32(dim), 0, o.logits.pointer, Int32(count))
            let first = v0
            Parallel.forRanges(m) { r in
                for i in r {
                    foldTile(o.logits.pointer + i * count, count: count, i, o)
                    let target = Int(targets[i])
                    if target >= first && target < first + count {
                        o.targetLogit[i] = o.logits[i * count + target - first]
                    }
                }
            }
            v0 += count
        }

        // Extra tokens: one more small tile per row, from the row's variant
        if let extra {
            for i in 0..<m {
                let h = o.hidden.pointer + i * dim
                let l = o.logits.pointer
                for e in 0..<extra.count {
                    l[e] = dotF32(extra.tables[variants[i]] + e * dim, h, count: dim)
                }
                foldTile(l, count: extra.count, i, o)
                let target = Int(targets[i])
                if target >= extra.firstID { o.targetLogit[i] = l[target - extra.firstID] }
            }
        }

        return (0..<m).map { i in o.runningMax[i] + logf(o.runningSum[i]) - o.targetLogit[i] }
    }

    /// runningSum · e^runningMax += Σ e^logits, rescaled to the new maximum.
    private func foldTile(_ logits: UnsafeMutablePointer<Float>, count: Int, _ i: Int, _ o: OutputScratch) {
        var tileMax = -Float.infinity
        for j in 0..<count { tileMax = max(tileMax, logits[j]) }
        let newMax = max(o.runningMax[i], tileMax)
        // Σ e^(l − newMax), through a temporary pass that leaves the logits intact.
        var sum: Float = 0
        var j = 0
        let shift = SIMD16<Float>(repeating: newMax)
        while j + 16 <= count {
            sum += exp16(UnsafeRawPointer(logits + j).loadUnaligned(as: SIMD16<Float>.self) - shift).sum()
            j += 16
        }
        if j < count {
            var tail = SIMD16<Float>(repeating: -.infinity)
            for k in j..<count { tail[k - j] = logits[k] - newMax }
            sum += exp16(tail).sum()
        }
        o.runningSum[i] = o.runningSum[i] * expf(o.runningMax[i] - newMax) + sum
        o.runningMax[i] = newMax
    }
}
