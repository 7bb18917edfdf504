// The forward pass of every architecture; reference: llama.cpp's llm_build_* graphs.
//
// One token's path, top to bottom:
//   x = token_embd[token] · embeddingScale                  (dim)
//   for each block: the architecture's `block` (Architectures/), made of the steps in
//     BlockPass.swift: norms, attention (projections, biases, per-head norms, rotation,
//     grouped-query attention with an optional window), gated feed-forward, residual adds
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
    /// Batch row of position 0 of another sequence of the batch whose positions
    /// 0..<`position` are this sequence's too (a prefix computed once and shared): this
    /// sequence's queries read those rows' keys and values for positions below `position`.
    /// nil: positions below `position` come from the cache slot (or there are none).
    public var prefixStart: Int?

    public init(start: Int, count: Int, position: Int = 0, variant: Int = 0, cacheSlot: Int? = nil,
                prefixStart: Int? = nil) {
        self.start = start
        self.count = count
        self.position = position
        self.variant = variant
        self.cacheSlot = cacheSlot
        self.prefixStart = prefixStart
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
    /// The output rows when they are not `tables` (an output row kept apart from the
    /// trained input row): (count, dim), the same for every variant.
    public var outputTable: UnsafePointer<Float>?

    public init(firstID: Int, count: Int, tables: [UnsafePointer<Float>], outputTable: UnsafePointer<Float>? = nil) {
        self.firstID = firstID
        self.count = count
        self.tables = tables
        self.outputTable = outputTable
    }

    /// The output rows of `variant`.
    @inline(__always) public func outputRows(_ variant: Int) -> UnsafePointer<Float> { outputTable ?? tables[variant] }
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
    /// Per distinct rotary base (`config.ropeBases`): (ctx, headDim / 2) cosines and sines.
    let ropeCos: [FloatBuffer]
    let ropeSin: [FloatBuffer]
    /// Per block: its table in ropeCos/ropeSin.
    let ropeTable: [Int]
    public let scratch: MatmulScratch
    public let cache: KVCache?
    let threads: Int

    /// Rows of a weight matrix one thread dequantizes per tile in the many-token path.
    public static let tileRows = 512

    /// `tileRows`: rows of a weight matrix each thread dequantizes at a time (smaller saves memory).
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

        // Rotation angles: position p, pair i turns by p · base^(−2i / ropeDim), in double
        // precision, one table per rotary base.
        let half = c.headDim / 2
        let bases = c.ropeBases
        ropeTable = c.layerAttention.map { a in bases.firstIndex(of: a.ropeBase)! }
        var cosines = [FloatBuffer](), sines = [FloatBuffer]()
        for base in bases {
            let cosTable = FloatBuffer(count: contextLength * half)
            let sinTable = FloatBuffer(count: contextLength * half)
            for p in 0..<contextLength {
                for i in 0..<half {
                    let theta = Double(p) * pow(Double(base), -2 * Double(i) / Double(c.ropeDim))
                    cosTable[p * half + i] = Float(cos(theta))
                    sinTable[p * half + i] = Float(sin(theta))
                }
            }
            cosines.append(cosTable)
            sines.append(sinTable)
        }
        ropeCos = cosines
        ropeSin = sines
        cache = cacheSlots > 0 ? KVCache(config: c, slots: cacheSlots, contextLength: contextLength) : nil
    }

    /// Bytes of every buffer this state owns.
    public var byteCount: Int {
        ([x, xb, q, k, v, attention, projected, gate, up, scores] + ropeCos + ropeSin).reduce(0) { $0 + $1.byteCount }
            + scratch.byteCount + (cache?.byteCount ?? 0)
    }

    /// Bytes a state of this shape will allocate, without allocating it.
    public static func estimatedBytes(config c: LlamaConfig, capacity: Int, contextLength: Int, cacheSlots: Int = 0,
                                      tileRows: Int = RunState.tileRows) -> Int {
        let perToken = 3 * c.dim + 2 * c.qDim + 2 * c.kvDim + 2 * c.ffnDim
        let scores = max(1, Parallel.threadCount) * min(capacity, contextLength, LlamaModel.queryBlock) * contextLength
        let rope = contextLength * c.headDim * c.ropeBases.count
        let tile = max(1, Parallel.threadCount) * tileRows * max(c.dim, c.ffnDim, c.qDim)
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
        for s in batch.spans {
            guard let prefix = s.prefixStart else { continue }
            guard s.cacheSlot == nil, prefix >= 0, prefix + s.position <= batch.count else {
                throw .emptyInput("a sequence at batch row \(s.start) shares positions 0..<\(s.position) from row \(prefix), which the batch of \(batch.count) tokens does not hold (or it also has a cache slot)")
            }
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

    /// x[t] = embedding of token t (extra tokens from their variant's table), times the
    /// architecture's embedding scale.
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
                if config.embeddingScale != 1 {
                    for j in 0..<dim { row[j] *= config.embeddingScale }
                }
            }
        }
    }

    /// One transformer block, in place on `state.x`: the architecture's steps.
    public func block(_ l: Int, _ w: LayerWeights, _ batch: Batch, _ state: RunState) {
        architecture.block(BlockPass(model: self, layer: l, w: w, batch: batch, state: state))
    }

    /// Final norm: xb = rmsnorm(x) ⊙ output_norm, the input of the output projection.
    public func finalNorm(_ batch: Batch, _ state: RunState) {
        normRows(batch.count, state.x.pointer, weight: outputNorm.pointer, width: config.dim, into: state.xb.pointer)
    }

    /// out[t] = rmsnorm(x[t]) ⊙ weight for `n` rows of `width`, across threads (in place allowed).
    func normRows(_ n: Int, _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, width: Int,
                  into out: UnsafeMutablePointer<Float>) {
        let eps = config.rmsEps
        Parallel.forRanges(n) { range in
            for t in range {
                rmsNorm(x + t * width, weight: weight, count: width, eps: eps, into: out + t * width)
            }
        }
    }

    /// Queries per attention work item: small enough to balance two threads and to skip
    /// most of the masked half of the scores, large enough for sgemm to run at speed.
    static let queryBlock = 64

    /// Causal attention of one head over queries `queries..<queries + queryBlock` of one
    /// sequence, into `state.attention`. `scores` has room for queryBlock × keys. A query
    /// at position p sees keys at positions p − window < k ≤ p (window: the block's, or none).
    func attend(_ span: SequenceSpan, head h: Int, queries first: Int, layer l: Int, _ s: RunState,
                scores: UnsafeMutablePointer<Float>) {
        let c = config
        let hd = c.headDim
        let g = h / c.groupSize
        // Keys and values: the slot's cache up to the last new position, or the batch's own rows.
        let keys: UnsafePointer<Float>
        let values: UnsafePointer<Float>
        let keyCount: Int
        let firstKeyPosition: Int
        // A shared prefix: key indices below `split` are the prefix sequence's rows, the
        // rest this sequence's own rows (`keys` then starts at key index `split`).
        var split = 0
        var prefixKeys = UnsafePointer(s.k.pointer), prefixValues = UnsafePointer(s.v.pointer)
        if let prefix = span.prefixStart {
            prefixKeys = UnsafePointer(s.k.pointer + prefix * c.kvDim + g * hd)
            prefixValues = UnsafePointer(s.v.pointer + prefix * c.kvDim + g * hd)
            split = span.position
            keys = UnsafePointer(s.k.pointer + span.start * c.kvDim + g * hd)
            values = UnsafePointer(s.v.pointer + span.start * c.kvDim + g * hd)
            keyCount = span.position + span.count
            firstKeyPosition = 0
        } else if let slot = span.cacheSlot, let cache = s.cache {
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
        let window = c.layerAttention[l].window ?? Int.max
        // Keys (as indices into `keys`) that query i of the block sees: lower(i)..<upper(i).
        func upper(_ i: Int) -> Int { span.position + first + i - firstKeyPosition + 1 }
        func lower(_ i: Int) -> Int { window == Int.max ? 0 : max(0, upper(i) - window) }
        // Keys some query of the block sees: from the first query's lowest to the last one's highest.
        let low = lower(0)
        let seen = min(keyCount, upper(count - 1)) - low

        let scale = c.attentionScale
        if count < 4 {
            // A few queries (generation): dot products and a weighted sum of value rows,
            // cheaper than sgemm's packing at this size.
            for i in 0..<count {
                let lo = lower(i), visible = upper(i) - lo
                let q = queries + i * c.qDim
                if split == 0 {
                    for j in 0..<visible { scores[j] = scale * dotF32(q, keys + (lo + j) * c.kvDim, count: hd) }
                    softmax(scores, count: visible)
                    weightedSum(scores, rows: values + lo * c.kvDim, stride: c.kvDim, count: visible, width: hd,
                                into: out + i * c.qDim)
                    continue
                }
                // Keys lo..<lo+a from the prefix, the rest from this sequence's rows.
                let a = max(0, min(split, lo + visible) - lo)
                for j in 0..<a { scores[j] = scale * dotF32(q, prefixKeys + (lo + j) * c.kvDim, count: hd) }
                let b0 = lo + a - split
                for j in a..<visible { scores[j] = scale * dotF32(q, keys + (b0 + j - a) * c.kvDim, count: hd) }
                softmax(scores, count: visible)
                let o = out + i * c.qDim
                withUnsafeTemporaryAllocation(of: Float.self, capacity: hd) { part in
                    for d in 0..<hd { o[d] = 0 }
                    if a > 0 {
                        weightedSum(scores, rows: prefixValues + lo * c.kvDim, stride: c.kvDim, count: a, width: hd, into: o)
                    }
                    if visible > a {
                        weightedSum(scores + a, rows: values + b0 * c.kvDim, stride: c.kvDim, count: visible - a, width: hd,
                                    into: part.baseAddress!)
                        add(part.baseAddress!, into: o, count: hd)
                    }
                }
            }
            return
        }

        // Key columns 0..<a of the scores from the prefix's rows, a..<seen from this
        // sequence's own rows (a = 0 without a shared prefix).
        let a = max(0, min(split, low + seen) - low)
        let ownFirst = low + a - split

        // Scores (count, seen) = scale · Q_h (count, hd) · K_g[low..<low+seen]ᵀ
        if a > 0 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(count), Int32(a), Int32(hd),
                        scale, queries, Int32(c.qDim), prefixKeys + low * c.kvDim, Int32(c.kvDim), 0, scores, Int32(seen))
        }
        if seen > a {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(count), Int32(seen - a), Int32(hd),
                        scale, queries, Int32(c.qDim), keys + ownFirst * c.kvDim, Int32(c.kvDim), 0, scores + a, Int32(seen))
        }

        // Mask and softmax: query i sees keys lower(i)..<upper(i); the rest weigh 0
        for i in 0..<count {
            let row = scores + i * seen
            let lo = lower(i) - low, hi = upper(i) - low
            for j in 0..<lo { row[j] = 0 }
            softmax(row + lo, count: hi - lo)
            for j in hi..<seen { row[j] = 0 }
        }

        // Output (count, hd) = P (count, seen) · V_g[low..<low+seen] (seen, hd)
        if a > 0 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(count), Int32(hd), Int32(a),
                        1, scores, Int32(seen), prefixValues + low * c.kvDim, Int32(c.kvDim), 0, out, Int32(c.qDim))
        }
        if seen > a {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(count), Int32(hd), Int32(seen - a),
                        1, scores + a, Int32(seen), values + ownFirst * c.kvDim, Int32(c.kvDim), a > 0 ? 1 : 0, out, Int32(c.qDim))
        }
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
