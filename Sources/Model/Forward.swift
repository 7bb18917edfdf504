// LLaMA forward pass; reference: llama.cpp's llm_build_llama.
//
// One token's path, top to bottom:
//   x = token_embd[token]                                   (dim)
//   for each block:
//     xb = rmsnorm(x) ⊙ attn_norm
//     q = Wq·xb, k = Wk·xb, v = Wv·xb                         (qDim), (kvDim), (kvDim)
//     rotate q and k by the token's position (RoPE, adjacent pairs: llama.cpp's "norm" mode)
//     per head h: softmax(q_h·K_gᵀ / √headDim, causal) · V_g, g = h / groupSize
//     x += Wo·attention
//     xb = rmsnorm(x) ⊙ ffn_norm
//     x += Wdown·(silu(Wgate·xb) ⊙ Wup·xb)
//   logits = output · (rmsnorm(x) ⊙ output_norm)             (vocab)
//
// Tokens of all sequences in a batch travel together (rows of x), so every weight
// matrix is read once per block per pass; attention alone works per sequence.

import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import GGUF
import Quant

/// One sequence inside a batch: tokens start..<start+count of the batch, the first
/// at absolute position `position`.
public struct SequenceSpan: Sendable, Equatable {
    public var start: Int
    public var count: Int
    public var position: Int
    /// Which table of extra (trainable) token embeddings this sequence reads.
    public var variant: Int
    /// KV-cache slot holding this sequence's earlier positions; nil: the batch holds the whole sequence.
    public var cacheSlot: Int?

    public init(start: Int, count: Int, position: Int = 0, variant: Int = 0, cacheSlot: Int? = nil) {
        self.start = start
        self.count = count
        self.position = position
        self.variant = variant
        self.cacheSlot = cacheSlot
    }
}

/// Tokens of one or more sequences, back to back.
public struct Batch: Sendable {
    public var tokens: [Int32]
    public var spans: [SequenceSpan]

    public init(tokens: [Int32], spans: [SequenceSpan]) {
        self.tokens = tokens
        self.spans = spans
    }

    /// Whole sequences from position 0, without a cache.
    public init(sequences: [[Int32]], variants: [Int]? = nil) {
        tokens = sequences.flatMap { $0 }
        spans = []
        var start = 0
        for (i, s) in sequences.enumerated() {
            spans.append(SequenceSpan(start: start, count: s.count, variant: variants?[i] ?? 0))
            start += s.count
        }
    }

    public var count: Int { tokens.count }
}

/// Embeddings of tokens appended to the vocabulary (textual inversion), one table per
/// variant (e.g. θ+εz and θ−εz in one batch). With a tied output, the same rows are
/// also the new tokens' output rows.
public struct ExtraTokens {
    /// Ids from `firstID` on are extra tokens.
    public var firstID: Int
    public var count: Int
    /// Per variant: (count, dim) row-major floats.
    public var tables: [UnsafePointer<Float>]

    public init(firstID: Int, count: Int, tables: [UnsafePointer<Float>]) {
        self.firstID = firstID
        self.count = count
        self.tables = tables
    }
}

/// Every scratch buffer of a forward pass for up to `capacity` tokens per pass and
/// sequences up to `contextLength` positions. Allocated once; the pass allocates nothing.
public final class RunState {
    public let config: LlamaConfig
    public let capacity: Int
    public let contextLength: Int
    public let x: FloatBuffer        /// (capacity, dim) residual stream
    public let xb: FloatBuffer       /// (capacity, dim) normed input of a sub-block
    let q: FloatBuffer               /// (capacity, qDim)
    let k: FloatBuffer               /// (capacity, kvDim)
    let v: FloatBuffer               /// (capacity, kvDim)
    let attention: FloatBuffer       /// (capacity, qDim) attention output before Wo
    let projected: FloatBuffer       /// (capacity, dim) output of Wo or Wdown before the residual add
    let gate: FloatBuffer            /// (capacity, ffnDim)
    let up: FloatBuffer              /// (capacity, ffnDim)
    let scores: FloatBuffer          /// (threads, min(capacity, ctx), ctx) attention probabilities
    let scoreStride: Int
    let ropeCos: FloatBuffer         /// (ctx, headDim / 2)
    let ropeSin: FloatBuffer         /// (ctx, headDim / 2)
    public let scratch: MatmulScratch
    public let cache: KVCache?
    let threads: Int

    /// Rows of a weight matrix dequantized per tile in the many-token path.
    public static let tileRows = 1024

    /// `tileRows`: rows of a weight matrix dequantized at a time (smaller saves memory).
    public init(config c: LlamaConfig, capacity: Int, contextLength: Int, cacheSlots: Int = 0, tileRows: Int = RunState.tileRows) {
        config = c
        self.capacity = capacity
        self.contextLength = contextLength
        threads = max(1, Parallel.threadCount)
        x = FloatBuffer(count: capacity * c.dim)
        xb = FloatBuffer(count: capacity * c.dim)
        q = FloatBuffer(count: capacity * c.qDim)
        k = FloatBuffer(count: capacity * c.kvDim)
        v = FloatBuffer(count: capacity * c.kvDim)
        attention = FloatBuffer(count: capacity * c.qDim)
        projected = FloatBuffer(count: capacity * c.dim)
        gate = FloatBuffer(count: capacity * c.ffnDim)
        up = FloatBuffer(count: capacity * c.ffnDim)
        scoreStride = min(capacity, contextLength, LlamaModel.queryBlock) * contextLength
        scores = FloatBuffer(count: threads * scoreStride)
        scratch = MatmulScratch(tileRows: tileRows, cols: max(c.dim, c.ffnDim, c.qDim))

        // Rotation angles: position p, pair i turns by p · base^(−2i / ropeDim), in double precision.
        let half = c.headDim / 2
        ropeCos = FloatBuffer(count: contextLength * half)
        ropeSin = FloatBuffer(count: contextLength * half)
        for p in 0..<contextLength {
            for i in 0..<half {
                let theta = Double(p) * pow(Double(c.ropeBase), -2 * Double(i) / Double(c.ropeDim))
                ropeCos[p * half + i] = Float(cos(theta))
                ropeSin[p * half + i] = Float(sin(theta))
            }
        }
        cache = cacheSlots > 0 ? KVCache(config: c, slots: cacheSlots, contextLength: contextLength) : nil
    }

    /// Bytes of every buffer this state owns.
    public var byteCount: Int {
        [x, xb, q, k, v, attention, projected, gate, up, scores, ropeCos, ropeSin].reduce(0) { $0 + $1.byteCount }
            + scratch.byteCount + (cache?.byteCount ?? 0)
    }

    /// Bytes a state of this shape will allocate, without allocating it.
    public static func estimatedBytes(config c: LlamaConfig, capacity: Int, contextLength: Int, cacheSlots: Int = 0,
                                      tileRows: Int = RunState.tileRows) -> Int {
        let perToken = 3 * c.dim + 2 * c.qDim + 2 * c.kvDim + 2 * c.ffnDim
        let scores = max(1, Parallel.threadCount) * min(capacity, contextLength, LlamaModel.queryBlock) * contextLength
        let rope = contextLength * c.headDim
        let tile = tileRows * max(c.dim, c.ffnDim, c.qDim)
        let cache = cacheSlots * c.layerCount * contextLength * c.kvDim * 2
        return 4 * (capacity * perToken + scores + rope + tile + cache)
    }
}

/// Keys and values of earlier positions, per slot and block: (slots, layers, ctx, kvDim) each.
public final class KVCache {
    public let slots: Int
    public let layers: Int
    public let contextLength: Int
    public let kvDim: Int
    let keys: FloatBuffer
    let values: FloatBuffer

    init(config c: LlamaConfig, slots: Int, contextLength: Int) {
        self.slots = slots
        layers = c.layerCount
        self.contextLength = contextLength
        kvDim = c.kvDim
        keys = FloatBuffer(count: slots * c.layerCount * contextLength * c.kvDim)
        values = FloatBuffer(count: slots * c.layerCount * contextLength * c.kvDim)
    }

    var byteCount: Int { keys.byteCount + values.byteCount }

    /// Start of (slot, layer)'s rows.
    func offset(slot: Int, layer: Int) -> Int { (slot * layers + layer) * contextLength * kvDim }
}

extension LlamaModel {
    /// Vocabulary size including `extra` tokens.
    public func vocabularySize(extra: ExtraTokens?) -> Int {
        config.vocabSize + (extra?.count ?? 0)
    }

    /// Checks a batch against the state's sizes and the vocabulary before any work.
    public func validate(_ batch: Batch, _ state: RunState, extra: ExtraTokens? = nil) throws(ModelError) {
        guard !batch.tokens.isEmpty else { throw .emptyInput("the batch has no tokens") }
        guard batch.count <= state.capacity else {
            throw .contextOverflow(tokens: batch.count, contextLength: state.capacity)
        }
        let vocab = vocabularySize(extra: extra)
        for t in batch.tokens where t < 0 || Int(t) >= vocab {
            throw .tokenOutOfRange(token: t, vocabularySize: vocab)
        }
        for s in batch.spans where s.position + s.count > state.contextLength {
            throw .contextOverflow(tokens: s.position + s.count, contextLength: state.contextLength)
        }
    }

    /// The whole pass: embeddings, every block, final norm into `state.xb`. Weights come
    /// from `weights` (default: the mapped file).
    public func forward(_ batch: Batch, _ state: RunState, extra: ExtraTokens? = nil, weights: WeightSource? = nil) {
        let source = weights ?? self
        Profile.measure(.embed) { embed(batch, state, extra: extra, weights: source) }
        for l in 0..<config.layerCount {
            block(l, source.layer(l), batch, state)
        }
        Profile.measure(.finalNorm) { finalNorm(batch, state) }
    }

    /// x[t] = embedding of token t (extra tokens from their variant's table).
    public func embed(_ batch: Batch, _ state: RunState, extra: ExtraTokens? = nil, weights: WeightSource? = nil) {
        let dim = config.dim
        let source = weights ?? self
        for span in batch.spans {
            for t in span.start..<(span.start + span.count) {
                let id = Int(batch.tokens[t])
                let row = state.x.pointer + t * dim
                if let extra, id >= extra.firstID {
                    let src = extra.tables[span.variant] + (id - extra.firstID) * dim
                    row.update(from: src, count: dim)
                } else {
                    source.embedding(id, into: row)
                }
            }
        }
    }

    /// One transformer block, in place on `state.x`.
    public func block(_ l: Int, _ w: LayerWeights, _ batch: Batch, _ state: RunState) {
        let c = config
        let n = batch.count
        let s = state

        // Attention norm: xb = rmsnorm(x) ⊙ attn_norm
        Profile.measure(.attnNorm) { normRows(n, weight: w.attnNorm, s) }

        // Projections: q (n, qDim), k and v (n, kvDim)
        Profile.measure(.qkv) {
            matmul(sharing: s.xb.pointer, n: n, scratch: s.scratch,
                   [MatmulOutput(w.wq, s.q.pointer), MatmulOutput(w.wk, s.k.pointer), MatmulOutput(w.wv, s.v.pointer)])
        }

        // Rotary embeddings of q and k at each token's position
        Profile.measure(.rope) {
            for span in batch.spans {
                rotate(s.q.pointer + span.start * c.qDim, heads: c.headCount, span: span, s)
                rotate(s.k.pointer + span.start * c.kvDim, heads: c.kvHeadCount, span: span, s)
            }
        }

        // Keys and values of cached sequences join their slot's earlier positions
        if let cache = s.cache {
            Profile.measure(.kvCache) {
                for span in batch.spans {
                    guard let slot = span.cacheSlot else { continue }
                    let o = cache.offset(slot: slot, layer: l) + span.position * c.kvDim
                    (cache.keys.pointer + o).update(from: s.k.pointer + span.start * c.kvDim, count: span.count * c.kvDim)
                    (cache.values.pointer + o).update(from: s.v.pointer + span.start * c.kvDim, count: span.count * c.kvDim)
                }
            }
        }

        // Attention, per (block of queries, sequence, head), spread over threads. The
        // causal mask makes later query blocks longer, so they are handed out first;
        // items past a shorter sequence's last block are empty.
        Profile.measure(.attention) {
            let blocks = batch.spans.map { ($0.count + Self.queryBlock - 1) / Self.queryBlock }.max() ?? 0
            let perBlock = batch.spans.count * c.headCount
            BLAS.useOneThread()
            let run = { (item: Int, thread: Int) in
                let block = blocks - 1 - item / perBlock
                let span = batch.spans[item % perBlock / c.headCount]
                guard block * Self.queryBlock < span.count else { return }
                self.attend(span, head: item % c.headCount, queries: block * Self.queryBlock, layer: l, s,
                       scores: s.scores.pointer + thread * s.scoreStride)
            }
            if Parallel.threadCount <= s.threads {
                Parallel.forEachOnThread(blocks * perBlock, run)
            } else {
                for item in 0..<(blocks * perBlock) { run(item, 0) }
            }
        }

        // Output projection and residual: x += Wo · attention
        Profile.measure(.wo) { matmul(w.wo, s.attention.pointer, n: n, s.projected.pointer, scratch: s.scratch) }
        Profile.measure(.residual) { add(s.projected.pointer, into: s.x.pointer, count: n * c.dim) }

        // Feed-forward norm: xb = rmsnorm(x) ⊙ ffn_norm
        Profile.measure(.ffnNorm) { normRows(n, weight: w.ffnNorm, s) }

        // SwiGLU: gate = silu(Wgate·xb) ⊙ (Wup·xb)
        Profile.measure(.gateUp) {
            matmul(sharing: s.xb.pointer, n: n, scratch: s.scratch,
                   [MatmulOutput(w.wGate, s.gate.pointer), MatmulOutput(w.wUp, s.up.pointer)])
        }
        Profile.measure(.silu) {
            Parallel.forRanges(n * c.ffnDim, granule: 1024) { range in
                siluMultiply(s.gate.pointer + range.lowerBound, s.up.pointer + range.lowerBound, count: range.count)
            }
        }

        // Down projection and residual: x += Wdown · gate
        Profile.measure(.wDown) { matmul(w.wDown, s.gate.pointer, n: n, s.projected.pointer, scratch: s.scratch) }
        Profile.measure(.residual) { add(s.projected.pointer, into: s.x.pointer, count: n * c.dim) }
    }

    /// xb[t] = rmsnorm(x[t]) ⊙ weight for the first `n` rows, across threads.
    func normRows(_ n: Int, weight: UnsafePointer<Float>, _ state: RunState) {
        let c = config
        Parallel.forRanges(n) { range in
            for t in range {
                rmsNorm(state.x.pointer + t * c.dim, weight: weight, count: c.dim, eps: c.rmsEps, into: state.xb.pointer + t * c.dim)
            }
        }
    }

    /// Final norm: xb = rmsnorm(x) ⊙ output_norm, the input of the output projection.
    public func finalNorm(_ batch: Batch, _ state: RunState) {
        normRows(batch.count, weight: outputNorm.pointer, state)
    }

    /// Rotates each head of each token of `span` (rows of `heads × headDim` at `base`)
    /// by its position: pairs (2i, 2i+1), angle p · base^(−2i/ropeDim).
    private func rotate(_ base: UnsafeMutablePointer<Float>, heads: Int, span: SequenceSpan, _ s: RunState) {
        let hd = config.headDim
        let half = hd / 2
        for i in 0..<span.count {
            let cosp = s.ropeCos.pointer + (span.position + i) * half
            let sinp = s.ropeSin.pointer + (span.position + i) * half
            let row = base + i * heads * hd
            for h in 0..<heads {
                let v = row + h * hd
                for j in 0..<half {
                    let a = v[2 * j]
                    let b = v[2 * j + 1]
                    v[2 * j] = a * cosp[j] - b * sinp[j]
                    v[2 * j + 1] = a * sinp[j] + b * cosp[j]
                }
            }
        }
    }

    /// Queries per attention work item: small enough to balance two threads and to skip
    /// most of the masked half of the scores, large enough for sgemm to run at speed.
    static let queryBlock = 64

    /// Causal attention of one head over queries `queries..<queries + queryBlock` of one
    /// sequence, into `state.attention`. `scores` has room for queryBlock × keys.
    private func attend(_ span: SequenceSpan, head h: Int, queries first: Int, layer l: Int, _ s: RunState,
                        scores: UnsafeMutablePointer<Float>) {
        let c = config
        let hd = c.headDim
        let g = h / c.groupSize
        // Keys and values: the slot's cache up to the last new position, or the batch's own rows.
        let keys: UnsafePointer<Float>
        let values: UnsafePointer<Float>
        let keyCount: Int
        let firstKeyPosition: Int
        if let slot = span.cacheSlot, let cache = s.cache {
            let o = cache.offset(slot: slot, layer: l)
            keys = UnsafePointer(cache.keys.pointer + o + g * hd)
            values = UnsafePointer(cache.values.pointer + o + g * hd)
            keyCount = span.position + span.count
            firstKeyPosition = 0
        } else {
            keys = UnsafePointer(s.k.pointer + span.start * c.kvDim + g * hd)
            values = UnsafePointer(s.v.pointer + span.start * c.kvDim + g * hd)
            keyCount = span.count
            firstKeyPosition = span.position
        }
        let count = min(Self.queryBlock, span.count - first)
        let queries = s.q.pointer + (span.start + first) * c.qDim + h * hd
        let out = s.attention.pointer + (span.start + first) * c.qDim + h * hd
        // Keys the last query of the block can see; later keys are masked for every query here.
        let seen = min(keyCount, span.position + first + count - firstKeyPosition)

        let scale = 1 / Float(hd).squareRoot()
        if count < 4 {
            // A few queries (generation): dot products and a weighted sum of value rows,
            // cheaper than sgemm's packing at this size.
            for i in 0..<count {
                let visible = span.position + first + i - firstKeyPosition + 1
                let q = queries + i * c.qDim
                for j in 0..<visible { scores[j] = scale * dotF32(q, keys + j * c.kvDim, count: hd) }
                softmax(scores, count: visible)
                weightedSum(scores, rows: values, stride: c.kvDim, count: visible, width: hd, into: out + i * c.qDim)
            }
            return
        }

        // Scores (count, seen) = Q_h (count, hd) · K_g[0..<seen]ᵀ / √hd
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(count), Int32(seen), Int32(hd),
                    scale, queries, Int32(c.qDim), keys, Int32(c.kvDim), 0, scores, Int32(seen))

        // Causal mask and softmax: query i sees keys at positions ≤ its own; the rest weigh 0
        for i in 0..<count {
            let row = scores + i * seen
            let visible = span.position + first + i - firstKeyPosition + 1
            softmax(row, count: visible)
            for j in visible..<seen { row[j] = 0 }
        }

        // Output (count, hd) = P (count, seen) · V_g[0..<seen] (seen, hd)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(count), Int32(hd), Int32(seen),
                    1, scores, Int32(seen), values, Int32(c.kvDim), 0, out, Int32(c.qDim))
    }
}

/// y += x, 16 lanes at a time.
@inline(__always) func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
        let a = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
        let b = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self)
        UnsafeMutableRawPointer(y + i).storeBytes(of: a + b, as: SIMD16<Float>.self)
        i += 16
    }
    while i < count {
        y[i] += x[i]
        i += 1
    }
}
