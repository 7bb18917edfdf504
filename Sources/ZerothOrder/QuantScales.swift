// QZO ("Fine-tuning Quantized Neural Networks with Zeroth-order Optimization", 2025) on
// GGUF blocks: a quantized weight is d × code (Q4_0: d·(q − 8); Q4_1: d·q + m; Q8_0:
// d·q), and only the continuous per-block scales d are trained; the codes never change.
//
// Parameterization. Each trainable scale is d = d₀ · r, with d₀ the file's value and r
// (one float per block, starting at 1) the trainable master copy. So the perturbation
// r ± εz moves every scale by the same fraction whatever its magnitude (GGUF scales span
// orders of magnitude: one learning rate fits all), and the sign of d — GGUF Q4_0 and Q8_0
// scales carry one, about half are negative — is fixed by d₀: the update keeps r ≥ rMin > 0,
// so no scale flips sign or collapses to zero. Q4_1's offsets m, when trained, move in units
// of the block's scale: m = m₀ + |d₀| · u, u starting at 0.
//
// K-quants (Q2_K … Q6_K). A super-block of 256 weights has a half-precision d (and dmin for
// Q2_K, Q4_K, Q5_K) over small integer sub-block scales (and mins). Two granularities
// (`KQuantGranularity`):
//   super  d and dmin per super-block, each as its own ratio (d = d₀ · r, dmin = dmin₀ · ρ):
//          dmin is a scale of the mins, positive like d, not an offset like Q4_1's m, so it
//          gets the same relative steps. Exact on export (two halves per 256 weights).
//   sub    the effective sub-block scales s_k = d₀ · sc_k (and mins m_k = dmin₀ · mn_k), each
//          as a ratio in float32: 16 values per 256 weights for Q4_K/Q5_K (8 scales, 8 mins),
//          16 for Q3_K/Q6_K, 32 for Q2_K; re-encoded into d, dmin and the integer scales on
//          export (lossy, see Quant's KQuantScales.swift). A sub-block whose file scale is 0
//          stays 0.
// The codes never change in either.
//
// Forward passes. The file is never written and no dequantized copy of the model exists:
// block by block, each perturbed point's scales for that block are computed into a small
// buffer (d₀ · (r + sign·ε·z)) that the kernels read instead of the file's half-precision
// d, and each point's hidden states go through the block back to back (one stream per
// point), so the block's codes are read once per step from cache. θ itself is never
// modified by a perturbation, so nothing needs restoring. The block's weights are read
// once (from the mapping, or from disk when streaming) for all points.

import GGUF
import Model
import Quant

/// What QZO trains of a K-quant super-block: its d and dmin, or its sub-block scales and mins.
public enum KQuantGranularity: String, Sendable, CaseIterable {
    case superBlock = "super"
    case subBlock = "sub"
}

public final class QuantScales: TrainableSet, Objective {
    /// One trainable tensor: which tensor, where its r (and u) values live.
    public struct Target {
        public let tensor: MatrixTensor
        public let layer: Int
        /// The file's blocks (of 32 weights, or K-quant super-blocks of 256).
        public let blocks: Int
        /// Trained scale values per block: 1, or the sub-blocks of a K-quant at sub granularity.
        public let perBlock: Int
        /// Group index of its r values; of its u values when offsets are trained (Q4_1), or
        /// of the ratios of its dmin (or sub-block mins) for the K-quants that have mins.
        public let scaleGroup: Int
        public let offsetGroup: Int?
        /// Its position in `LayerTensors.matrices` (and `LayerWeights[matrix:]`).
        public let matrixIndex: Int

        /// Scale values trained (blocks × perBlock), and as many offsets when there are.
        public var count: Int { blocks * perBlock }
        /// Whether the values are K-quant sub-block scales.
        public var isSubBlock: Bool { perBlock > 1 }
        /// Whether the offsets are ratios (K-quant dmin or mins) rather than Q4_1's m.
        public var offsetsAreRatios: Bool { tensor.info.type.subBlocks != nil }
    }

    /// Whether QZO trains tensors of `type`: a scale per 32 weights, or a K-quant.
    public static func trains(_ type: GGMLType) -> Bool { type.hasBlockScales || type.subBlocks != nil }

    /// (blocks, values per block, whether offsets are trained) of a trainable tensor.
    static func shape(_ info: GGUFTensorInfo, trainOffsets: Bool, kquant: KQuantGranularity) -> (blocks: Int, perBlock: Int, offsets: Bool) {
        let type = info.type
        let blocks = info.elementCount / type.blockSize
        if let sub = type.subBlocks {
            return (blocks, kquant == .subBlock ? sub.count : 1, sub.hasMins)
        }
        return (blocks, 1, trainOffsets && type == .q4_1)
    }

    /// The one-line error for patterns that select nothing QZO trains.
    public static func nothingTrainable(model: LlamaModel, patterns: [String]) -> TrainingError {
        let all = model.file.tensors.filter { t in patterns.contains { wildcardMatch($0, t.name) } }
        let seen = all.prefix(3).map { "\($0.name) (\($0.type))" }.joined(separator: ", ") + (all.count > 3 ? ", …" : "")
        return .invalidSetting("--tensors \(patterns.joined(separator: ",")) matches no trainable tensor: QZO trains the block-format matrices of the transformer blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K), e.g. --tensors 'blk.*'"
            + (all.isEmpty ? "; it matches no tensor of the model" : "; it matches only \(seen)"))
    }

    public let model: LlamaModel
    public let targets: [Target]
    /// New tokens trained together with the scales (QZO and textual inversion in one run);
    /// their groups follow the scales' groups.
    public let newTokens: NewTokenRows?
    /// (maxPoints, tokens, dim): each point's copy of the new rows.
    private let pointTables: FloatBuffer?
    public let trainsOffsets: Bool
    /// What is trained of the K-quants' super-blocks.
    public let kquantGranularity: KQuantGranularity
    /// Smallest allowed r: a scale keeps its sign and at least this fraction of its magnitude.
    public let minimumRatio: Float
    /// Per group: the master values (r, or u for offsets).
    private let values: [FloatBuffer]
    public let groups: [ParameterGroup]
    /// d₀ and m₀ of the current layer's targets, read from the file when needed (no copy
    /// of the model's scales is kept).
    private let layerOriginalScales: FloatBuffer
    private let layerOriginalOffsets: FloatBuffer

    public let microBatchTokens: Int
    public let maxPoints: Int
    /// One forward-pass state per point (stream).
    private let streams: [RunState]
    private let output: OutputScratch
    /// Per point: effective scales of the current layer's targets, concatenated.
    private let layerScratch: [FloatBuffer]
    private let layerScratchOffsets: [FloatBuffer]

    public var passCapacity: Int { microBatchTokens }
    /// Where weights are read from (nil: the mapped file).
    public var weights: WeightSource?
    public var parameters: TrainableSet { self }

    /// The trainable groups QZO makes for `patterns` (name and value count, in group order),
    /// without allocating anything: what the optimizer and the memory planner need first.
    public static func groupLayout(model: LlamaModel, patterns: [String], trainOffsets: Bool,
                                   kquant: KQuantGranularity = .superBlock) -> [GroupLayout] {
        var out = [GroupLayout]()
        for layer in model.layers {
            for t in layer.matrices where trains(t.info.type) && patterns.contains(where: { wildcardMatch($0, t.name) }) {
                let (blocks, perBlock, offsets) = shape(t.info, trainOffsets: trainOffsets, kquant: kquant)
                let suffix = perBlock > 1 ? ".sub" : ""
                // (rows, scales per row): the scales are stored row by row.
                let rows = max(1, t.info.rowCount), count = blocks * perBlock
                let dims = count % rows == 0 ? [rows, count / rows] : [count]
                out.append(GroupLayout(name: t.name + suffix + ".d", count: count, shape: dims, tensors: [t.name]))
                if offsets { out.append(GroupLayout(name: t.name + suffix + ".m", count: count, shape: dims, tensors: [t.name])) }
            }
        }
        return out
    }

    /// Bytes of the per-layer scale buffers a run with `points` points allocates besides the
    /// trained values (each point's scales of one block, and the block's original scales).
    public static func scratchBytes(model: LlamaModel, patterns: [String], trainOffsets: Bool, points: Int,
                                    kquant: KQuantGranularity = .superBlock) -> Int {
        let perLayer = model.layers.map { layer in
            layer.matrices.filter { t in trains(t.info.type) && patterns.contains { wildcardMatch($0, t.name) } }
                .reduce(0) { $0 + shape($1.info, trainOffsets: trainOffsets, kquant: kquant).blocks
                    * shape($1.info, trainOffsets: trainOffsets, kquant: kquant).perBlock }
        }.max() ?? 0
        return 4 * perLayer * 2 * (points + 1)
    }

    /// Bytes the adapter's export holds for its largest tensor (`tunedScales` and the writer):
    /// the tensor read back from the file, d₀ and m₀, the tuned d (and m), and the writer's copy.
    public static func exportBytes(model: LlamaModel, patterns: [String], trainOffsets: Bool,
                                   kquant: KQuantGranularity = .superBlock) -> Int {
        model.layers.flatMap(\.matrices).filter { t in trains(t.info.type) && patterns.contains { wildcardMatch($0, t.name) } }
            .map { t in
                let (blocks, perBlock, offsets) = shape(t.info, trainOffsets: trainOffsets, kquant: kquant)
                return t.info.byteCount + 4 * blocks * perBlock * (offsets ? 5 : 4)
            }.max() ?? 0
    }

    /// Trains the block scales of every tensor whose name matches one of `patterns`
    /// (shell-style `*` wildcards) and has block scales.
    public init(model: LlamaModel, patterns: [String], trainOffsets: Bool, kquant: KQuantGranularity = .superBlock,
                minimumRatio: Float = 0.05, microBatchTokens: Int, maxPoints: Int, contextLength: Int,
                tileRows: Int = RunState.tileRows, newTokens: NewTokenRows? = nil) throws(TrainingError) {
        self.model = model
        self.newTokens = newTokens
        self.trainsOffsets = trainOffsets
        self.kquantGranularity = kquant
        self.minimumRatio = minimumRatio
        var targets = [Target]()
        var values = [FloatBuffer]()
        var groups = [ParameterGroup]()
        for (l, layer) in model.layers.enumerated() {
            for (matrixIndex, t) in layer.matrices.enumerated() where patterns.contains(where: { wildcardMatch($0, t.name) }) {
                guard Self.trains(t.info.type) else { continue }
                let (blocks, perBlock, offsets) = Self.shape(t.info, trainOffsets: trainOffsets, kquant: kquant)
                let count = blocks * perBlock
                let suffix = perBlock > 1 ? ".sub" : ""
                let r = FloatBuffer([Float](repeating: 1, count: count))
                values.append(r)
                groups.append(ParameterGroup(name: t.name + suffix + ".d", values: r.pointer, count: count))
                var offsetGroup: Int?
                if offsets {
                    // Q4_1's u starts at 0; the K-quants' ratios at 1.
                    let u = FloatBuffer([Float](repeating: t.info.type.subBlocks != nil ? 1 : 0, count: count))
                    values.append(u)
                    offsetGroup = groups.count
                    groups.append(ParameterGroup(name: t.name + suffix + ".m", values: u.pointer, count: count))
                }
                targets.append(Target(tensor: t, layer: l, blocks: blocks, perBlock: perBlock,
                                      scaleGroup: groups.count - (offsetGroup == nil ? 1 : 2),
                                      offsetGroup: offsetGroup, matrixIndex: matrixIndex))
            }
        }
        guard !targets.isEmpty else { throw Self.nothingTrainable(model: model, patterns: patterns) }
        self.targets = targets
        self.values = values
        self.groups = groups + (newTokens?.groups ?? [])
        pointTables = newTokens.map { FloatBuffer(count: maxPoints * $0.tokens.count * $0.dim) }
        self.microBatchTokens = microBatchTokens
        self.maxPoints = maxPoints
        streams = (0..<maxPoints).map { _ in
            RunState(config: model.config, capacity: microBatchTokens, contextLength: contextLength, tileRows: tileRows)
        }
        output = OutputScratch(dim: model.config.dim, capacity: min(microBatchTokens, 256))
        let perLayer = (0..<model.config.layerCount).map { l in targets.filter { $0.layer == l }.reduce(0) { $0 + $1.count } }.max() ?? 0
        let anyOffsets = targets.contains { $0.offsetGroup != nil }
        layerScratch = (0..<maxPoints).map { _ in FloatBuffer(count: perLayer) }
        layerScratchOffsets = (0..<maxPoints).map { _ in FloatBuffer(count: anyOffsets ? perLayer : 0) }
        layerOriginalScales = FloatBuffer(count: perLayer)
        layerOriginalOffsets = FloatBuffer(count: perLayer)
    }

    /// d₀ (and m₀) of target `t` from the file (or from `data`, its bytes in a streamed block) into `d` (and `m`).
    /// For K-quant sub-block targets, the effective sub-block scales d₀ · sc_k and mins dmin₀ · mn_k.
    private func readOriginal(_ t: Target, d: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>?,
                              data: UnsafeRawPointer? = nil) {
        let src = data ?? model.file.bytes(of: t.tensor.info).baseAddress!
        if t.isSubBlock {
            readSubBlockScales(t.tensor.info.type, src, blocks: t.blocks, s: d, m: m)
        } else {
            readBlockScales(t.tensor.info.type, src, blocks: t.blocks, d: d, m: m)
        }
    }

    /// Per group, its tensor: a matrix's scales and offsets are one unit, each new token's
    /// row another (in group order), for a sparse perturbation.
    public var perturbationUnits: [Int] {
        var units = [Int](repeating: 0, count: groups.count)
        for (i, t) in targets.enumerated() {
            units[t.scaleGroup] = i
            if let og = t.offsetGroup { units[og] = i }
        }
        for g in values.count..<groups.count { units[g] = targets.count + (g - values.count) }
        return units
    }

    /// Trainable values.
    public var parameterCount: Int { groups.reduce(0) { $0 + $1.count } }

    /// Bytes held besides the model: master copies, streams, scratch.
    public var byteCount: Int {
        values.reduce(0) { $0 + $1.byteCount } + streams.reduce(0) { $0 + $1.byteCount } + output.byteCount
            + layerScratch.reduce(0) { $0 + $1.byteCount } + layerScratchOffsets.reduce(0) { $0 + $1.byteCount }
            + layerOriginalScales.byteCount + layerOriginalOffsets.byteCount
    }

    /// Keeps r ≥ rMin: the scale's sign stays that of the file, its magnitude away from 0.
    @discardableResult public func constrain() -> Int {
        var changed = 0
        for t in targets {
            for g in [t.scaleGroup] + (t.offsetsAreRatios ? [t.offsetGroup].compactMap { $0 } : []) {
                let r = groups[g].values
                for i in 0..<t.count where !(r[i] >= minimumRatio) {
                    r[i] = minimumRatio
                    changed += 1
                }
            }
        }
        return changed
    }

    /// The tuned scales of target `i` (d₀ · r), and offsets (m₀ + |d₀| · u) when trained; for
    /// the K-quants dmin₀ · ρ, or at sub-block granularity the effective sub-block scales and
    /// mins (blocks × sub-blocks, block by block).
    public func tunedScales(_ i: Int) -> (d: [Float], m: [Float]?) {
        let t = targets[i]
        let d0 = FloatBuffer(count: t.count)
        let m0 = FloatBuffer(count: t.count)
        // Read the tensor with pread: a streaming run keeps the mapping's pages out of memory.
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: t.tensor.info.byteCount, alignment: 64)
        defer { bytes.deallocate() }
        let data: UnsafeRawPointer? = model.file.read(t.tensor.info, into: bytes) ? UnsafeRawPointer(bytes) : nil
        readOriginal(t, d: d0.pointer, m: t.offsetGroup != nil ? m0.pointer : nil, data: data)
        let r = groups[t.scaleGroup].values
        let d = (0..<t.count).map { d0[$0] * r[$0] }
        var m: [Float]?
        if let og = t.offsetGroup {
            let u = groups[og].values
            m = t.offsetsAreRatios ? (0..<t.count).map { m0[$0] * u[$0] } : (0..<t.count).map { m0[$0] + abs(d0[$0]) * u[$0] }
        }
        return (d, m)
    }

    public func accumulateLosses(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                                 examples: [Example], into sums: inout [LossSum]) throws(TrainingError) {
        precondition(points.count <= maxPoints, "more points than the objective was sized for")
        precondition(sums.count == points.count, "one loss sum per point")
        // Micro-batches of whole examples that fit a stream.
        var group = [Example]()
        var used = 0
        for example in examples {
            guard example.tokens.count <= microBatchTokens else {
                throw .invalidSetting("an example of \(example.tokens.count) tokens does not fit a pass of \(microBatchTokens)")
            }
            if used + example.tokens.count > microBatchTokens {
                try run(group, points, epsilon, shape, into: &sums)
                group.removeAll()
                used = 0
            }
            group.append(example)
            used += example.tokens.count
        }
        if !group.isEmpty { try run(group, points, epsilon, shape, into: &sums) }
    }

    /// One pass of `examples` at every point, block by block.
    private func run(_ examples: [Example], _ points: [PerturbedPoint], _ epsilon: Float, _ shape: PerturbationShape,
                     into sums: inout [LossSum]) throws(TrainingError) {
        let batch = Batch(sequences: examples.map(\.tokens))
        let targetsFlat = examples.flatMap(\.targets)
        let source = weights ?? model
        // Each point's copy of the new tokens' rows, when there are new tokens.
        var extras = [ExtraTokens?](repeating: nil, count: points.count)
        if let rows = newTokens, let tables = pointTables {
            for (p, point) in points.enumerated() {
                let table = tables.pointer + p * rows.tokens.count * rows.dim
                rows.perturbed(point, epsilon: epsilon, shape: shape, firstGroup: values.count, into: table)
                extras[p] = rows.extraTokens(UnsafePointer(table))
            }
        }
        for p in points.indices {
            do { try model.validate(batch, streams[p], extra: extras[p]) } catch { throw .model(error) }
            model.embed(batch, streams[p], extra: extras[p], weights: source)
        }
        // Each block is read once; every point's stream goes through it with its own scales.
        for l in 0..<model.config.layerCount {
            let block = source.layer(l)
            for (p, point) in points.enumerated() {
                var w = block
                setLayerScales(&w, layer: l, point: point, epsilon: epsilon, shape: shape, scratch: p)
                model.block(l, w, batch, streams[p])
            }
        }
        let soft: [SoftTarget?]? = examples.first?.soft != nil
            ? examples.flatMap { $0.soft ?? Array(repeating: nil, count: $0.tokens.count) } : nil
        for p in points.indices {
            model.finalNorm(batch, streams[p])
            let nll = soft.map { model.crossEntropies(batch, streams[p], soft: $0, extra: extras[p], scratch: output, weights: source) }
                ?? model.negativeLogLikelihoods(batch, streams[p], targets: targetsFlat, extra: extras[p], scratch: output,
                                                weights: source)
            for (t, target) in targetsFlat.enumerated() where target >= 0 {
                sums[p].tokens += 1
                sums[p].totalNLL += Double(nll[t])
            }
        }
    }

    /// Points block `l`'s target matrices in `w` at point `point`'s scales:
    /// d = d₀ · (r + sign·ε·s⊙T(z)), m = m₀ + |d₀| · (u + sign·ε·s⊙T(z)) (Q4_1), or for the
    /// K-quants dmin = dmin₀ · (ρ + sign·ε·s⊙T(z)); per sub-block at sub-block granularity.
    private func setLayerScales(_ w: inout LayerWeights, layer l: Int, point: PerturbedPoint, epsilon: Float,
                                shape: PerturbationShape, scratch p: Int) {
        var offset = 0
        for t in targets where t.layer == l {
            let n = t.count
            let d = layerScratch[p].pointer + offset
            let d0 = layerOriginalScales.pointer + offset
            let m0 = layerOriginalOffsets.pointer + offset
            readOriginal(t, d: d0, m: t.offsetGroup != nil ? m0 : nil, data: w[matrix: t.matrixIndex].data)
            let r = groups[t.scaleGroup].values
            d.update(from: r, count: n)
            if let seed = point.seed {
                shape.apply(alpha: point.sign * shape.epsilon(epsilon, group: t.scaleGroup), seed: seed, group: t.scaleGroup, to: d, count: n)
            }
            for b in 0..<n { d[b] *= d0[b] }
            var m: UnsafeMutablePointer<Float>?
            if let og = t.offsetGroup {
                let mp = layerScratchOffsets[p].pointer + offset
                mp.update(from: groups[og].values, count: n)
                if let seed = point.seed {
                    shape.apply(alpha: point.sign * shape.epsilon(epsilon, group: og), seed: seed, group: og, to: mp, count: n)
                }
                if t.offsetsAreRatios {
                    for b in 0..<n { mp[b] *= m0[b] }
                } else {
                    for b in 0..<n { mp[b] = m0[b] + abs(d0[b]) * mp[b] }
                }
                m = mp
            }
            w[matrix: t.matrixIndex].scales = t.isSubBlock
                ? BlockScales(sub: UnsafePointer(d), subMin: m.map { UnsafePointer($0) }, subPerBlock: t.perBlock)
                : BlockScales(d: UnsafePointer(d), m: m.map { UnsafePointer($0) })
            offset += n
        }
    }
}

/// Shell-style match with `*` for any run of characters.
public func wildcardMatch(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern.utf8), t = Array(text.utf8)
    var pi = 0, ti = 0, star = -1, mark = 0
    while ti < t.count {
        if pi < p.count && (p[pi] == t[ti] || p[pi] == UInt8(ascii: "?")) {
            pi += 1; ti += 1
        } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
            star = pi; mark = ti; pi += 1
        } else if star >= 0 {
            pi = star + 1; mark += 1; ti = mark
        } else {
            return false
        }
    }
    while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
    return pi == p.count
}
