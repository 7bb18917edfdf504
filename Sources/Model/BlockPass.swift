// The shared steps a transformer block is made of. An architecture's `block` calls them
// in its order (Architectures/*.swift); what differs between architectures inside a step
// is data: the block's optional vectors (biases, q/k norms) and the config's choices
// (rotation mode, attention scale and window, activation).
//
// Buffers of the run state, for n tokens:
//   x (n, dim) residual stream    xb (n, dim) input of a sub-block    projected (n, dim) its output
//   q (n, qDim), k and v (n, kvDim), attention (n, qDim), gate and up (n, ffnDim)

import COpenBLAS
import Quant

/// One block of one forward pass: the model, the block's weights, the batch, the buffers.
public struct BlockPass {
    public let model: LlamaModel
    public let layer: Int
    public let w: LayerWeights
    public let batch: Batch
    public let state: RunState

    var c: LlamaConfig { model.config }
    var n: Int { batch.count }

    /// xb = rmsnorm(x) ⊙ weight: the input of the next sub-block.
    public func normInput(_ weight: UnsafePointer<Float>) {
        Profile.measure(.attnNorm) {
            model.normRows(n, state.x.pointer, weight: weight, width: c.dim, into: state.xb.pointer)
        }
    }

    /// projected = rmsnorm(projected) ⊙ weight: a norm of a sub-block's output before its residual add.
    public func normOutput(_ weight: UnsafePointer<Float>) {
        Profile.measure(.ffnNorm) {
            model.normRows(n, state.projected.pointer, weight: weight, width: c.dim, into: state.projected.pointer)
        }
    }

    /// x += projected.
    public func addResidual() {
        Profile.measure(.residual) { add(state.projected.pointer, into: state.x.pointer, count: n * c.dim) }
    }

    /// projected = Wo · attention(xb): projections, biases, per-head norms, rotation, the
    /// KV cache, grouped-query attention (causal, windowed when the block has a window).
    public func attention() {
        let s = state
        let c = self.c

        // Projections: q (n, qDim), k and v (n, kvDim)
        Profile.measure(.qkv) {
            matmul(sharing: s.xb.pointer, n: n, scratch: s.scratch,
                   [MatmulOutput(w.wq, s.q.pointer), MatmulOutput(w.wk, s.k.pointer), MatmulOutput(w.wv, s.v.pointer)])
        }

        // Biases, before the rotation
        Profile.measure(.qkv) {
            for (bias, out, width) in [(w.qBias, s.q.pointer, c.qDim), (w.kBias, s.k.pointer, c.kvDim), (w.vBias, s.v.pointer, c.kvDim)] {
                guard let bias else { continue }
                for t in 0..<n { add(bias, into: out + t * width, count: width) }
            }
        }

        // Per-head RMSNorm of q and k, before the rotation
        Profile.measure(.attnNorm) {
            if let qNorm = w.qNorm { model.normRows(n * c.headCount, s.q.pointer, weight: qNorm, width: c.headDim, into: s.q.pointer) }
            if let kNorm = w.kNorm { model.normRows(n * c.kvHeadCount, s.k.pointer, weight: kNorm, width: c.headDim, into: s.k.pointer) }
        }

        // Rotary embeddings of q and k at each token's position
        Profile.measure(.rope) {
            let table = s.ropeTable[layer]
            for span in batch.spans {
                rotate(s.q.pointer + span.start * c.qDim, heads: c.headCount, span: span, table: table)
                rotate(s.k.pointer + span.start * c.kvDim, heads: c.kvHeadCount, span: span, table: table)
            }
        }

        // Keys and values of cached sequences join their slot's earlier positions
        if let cache = s.cache {
            Profile.measure(.kvCache) {
                for span in batch.spans {
                    guard let slot = span.cacheSlot else { continue }
                    let o = cache.offset(slot: slot, layer: layer) + span.position * c.kvDim
                    (cache.keys.pointer + o).update(from: s.k.pointer + span.start * c.kvDim, count: span.count * c.kvDim)
                    (cache.values.pointer + o).update(from: s.v.pointer + span.start * c.kvDim, count: span.count * c.kvDim)
                }
            }
        }

        // Attention, per (block of queries, sequence, head), spread over threads. The
        // causal mask makes later query blocks longer, so they are handed out first;
        // items past a shorter sequence's last block are empty.
        Profile.measure(.attention) {
            let q = LlamaModel.queryBlock
            let blocks = batch.spans.map { ($0.count + q - 1) / q }.max() ?? 0
            let perBlock = batch.spans.count * c.headCount
            BLAS.useOneThread()
            let model = self.model, layer = self.layer, batch = self.batch
            let run = { (item: Int, thread: Int) in
                let block = blocks - 1 - item / perBlock
                let span = batch.spans[item % perBlock / c.headCount]
                guard block * q < span.count else { return }
                model.attend(span, head: item % c.headCount, queries: block * q, layer: layer, s,
                             scores: s.scores.pointer + thread * s.scoreStride)
            }
            if Parallel.threadCount <= s.threads {
                Parallel.forEachOnThread(blocks * perBlock, run)
            } else {
                for item in 0..<(blocks * perBlock) { run(item, 0) }
            }
        }

        // Output projection: projected = Wo · attention
        Profile.measure(.wo) { matmul(w.wo, s.attention.pointer, n: n, s.projected.pointer, scratch: s.scratch) }
    }

    /// projected = Wdown · (act(Wgate·xb) ⊙ Wup·xb), act = SiLU or tanh-GELU.
    public func feedForward() {
        let s = state
        let c = self.c
        Profile.measure(.gateUp) {
            matmul(sharing: s.xb.pointer, n: n, scratch: s.scratch,
                   [MatmulOutput(w.wGate, s.gate.pointer), MatmulOutput(w.wUp, s.up.pointer)])
        }
        Profile.measure(.silu) {
            let activation = c.activation
            Parallel.forRanges(n * c.ffnDim, granule: 1024) { range in
                let g = s.gate.pointer + range.lowerBound, u = s.up.pointer + range.lowerBound
                switch activation {
                case .silu: siluMultiply(g, u, count: range.count)
                case .geluTanh: geluTanhMultiply(g, u, count: range.count)
                }
            }
        }
        Profile.measure(.wDown) { matmul(w.wDown, s.gate.pointer, n: n, s.projected.pointer, scratch: s.scratch) }
    }

    /// Rotates each head of each token of `span` (rows of `heads × headDim` at `base`) by
    /// its position, pair i by angle p · base^(−2i/ropeDim): pairs (2i, 2i+1) in
    /// `.adjacentPairs` mode, (i, i + headDim/2) in `.halves` mode.
    private func rotate(_ base: UnsafeMutablePointer<Float>, heads: Int, span: SequenceSpan, table: Int) {
        let hd = c.headDim
        let half = hd / 2
        let (first, step) = c.ropeMode == .adjacentPairs ? (2, 1) : (1, half)
        let cosTable = state.ropeCos[table].pointer, sinTable = state.ropeSin[table].pointer
        for i in 0..<span.count {
            let cosp = cosTable + (span.position + i) * half
            let sinp = sinTable + (span.position + i) * half
            let row = base + i * heads * hd
            for h in 0..<heads {
                let v = row + h * hd
                for j in 0..<half {
                    // element a at first·j, its partner b `step` further
                    let ia = first * j, ib = first * j + step
                    let a = v[ia]
                    let b = v[ib]
                    v[ia] = a * cosp[j] - b * sinp[j]
                    v[ib] = a * sinp[j] + b * cosp[j]
                }
            }
        }
    }
}
