// Textual inversion: new tokens appended to the vocabulary, each with a learned
// embedding; the quantized model stays frozen (ZOODiP's setting, for a language model).
//
// The perturbation touches only the new tokens' embedding rows, not any weight, so all
// perturbed points of a step run as one batch ("dual forward"): each example appears
// once per point, reading its point's copy of the new rows, and every weight matrix is
// read once per step.
//
// Output row. The new rows are also the new tokens' output rows (the logit of a new token
// is its row · the final hidden state). On a tied model (SmolLM2, Gemma 3) that is what
// token_embd is for every token. Qwen2.5-Coder 0.5B and 1.5B carry a separate
// output.weight, but it is the same matrix as token_embd up to quantization (rows differ
// by 4.4% on the 0.5B file, Q5_0 against Q8_0, and 7.4% on the 1.5B, Q4_K against Q6_K:
// the models were trained tied), so the new token's output row is tied to its trained
// input row there too; training, evaluation (AppliedAdapter) and export (which appends the
// row to output.weight as well) all do the same. Measured against the alternative in
// bench/textual_inversion.py (README).
//
// Units. The trained values are the rows in units of ρ, the RMS of the init token's
// embedding row: θ = ρ·φ, φ starting at RMS 1. The learning rate and ε then act on φ,
// as QZO's act on the ratio of a scale to its file value, so one default fits files
// whose embeddings differ in size: SmolLM2's rows have RMS 0.12, Gemma 3's 0.041 (and
// are multiplied by √640 at the input, so the loss is far more sensitive to them),
// Qwen2.5's 0.015. With a step in absolute units (lr 1e-2 on θ) a Gemma step moved θ by
// twice its own RMS and the held-out NLL went from 4.14 to 12.2 in two steps.

import Foundation
import Model
import Quant

/// What a new token's output row (its logit = row · final hidden state) is.
public enum NewTokenOutputRow: String, Sendable, CaseIterable {
    /// The trained input row itself (what a tied model does for every token).
    case tied
    /// The init token's output row, fixed (output.weight's row on an untied model, so the
    /// new token is predicted like the init token).
    case initToken = "init"
}

/// New tokens appended to the vocabulary, with their trainable rows (the float32 master
/// copy, in units of the init row's RMS), each starting as an existing token's embedding.
public final class NewTokenRows {
    public let tokens: [String]
    /// The model's tokenizer with the new tokens appended.
    public let tokenizer: Tokenizer
    /// Id of the first new token (the base vocabulary size).
    public let firstID: Int
    /// The token each new embedding started from.
    public let initTokenID: Int32
    /// ρ: the RMS of the init token's embedding row; an embedding row is θ = ρ·φ.
    public let unit: Float
    /// (count, dim): φ, the trained values (θ / ρ).
    public let values: FloatBuffer
    public let dim: Int
    /// (count, dim): θ as of the last `currentRows()`, for evaluation.
    private let current: FloatBuffer
    public let outputRow: NewTokenOutputRow
    /// (count, dim): the fixed output rows, for `.initToken`.
    public let fixedOutputRows: FloatBuffer?

    /// `initToken`: text that must be exactly one token of the vocabulary. `tokenizer`: the
    /// model's tokenizer with `tokens` added, when the caller has it.
    public init(model: LlamaModel, tokens: [String], initToken: String, tokenizer: Tokenizer? = nil,
                outputRow: NewTokenOutputRow = .tied) throws(TrainingError) {
        guard !tokens.isEmpty else { throw .newToken("give at least one --new-token") }
        if outputRow == .initToken && model.outputIsTied {
            throw .newToken("--new-token-output init needs a model with its own output.weight; this one ties its output to token_embd, so an exported file could not hold an output row apart from the trained row (use tied)")
        }
        self.tokens = tokens
        self.outputRow = outputRow
        dim = model.config.dim
        firstID = model.config.vocabSize
        // The new tokens take the ids after the embedding's rows: either the model was loaded
        // with them (one tokenizer in memory), or they are added here.
        let vocab = model.config.vocabSize
        for t in tokens {
            if t.isEmpty {
                throw .newToken("--new-token \"\" is empty; a new token needs at least one character, such as \"<my-concept>\"")
            }
            // compared in the vocabulary's own encoding: " the" is the existing "Ġthe" (BPE) or "▁the" (SentencePiece)
            // (the model may have been loaded with the new tokens already: only ids below token_embd's rows count)
            let storedID = model.tokenizer.id(of: t).flatMap { Int($0) < vocab ? $0 : nil }
            if let id = storedID ?? model.tokenizer.existingToken(renderingAs: t, below: Int32(vocab)) {
                let stored = model.tokenizer.text(of: id)
                let storedNote = stored == t ? "" : ", stored as \"\(stored)\""
                throw .newToken("the token \"\(t)\" already exists in the vocabulary (id \(id)\(storedNote)); choose a new string such as \"<my-concept>\"")
            }
        }
        if Set(tokens).count != tokens.count {
            throw .newToken("--new-token is given twice with the same text (\(tokens.map { "\"\($0)\"" }.joined(separator: ", "))); each new token needs its own string")
        }
        if model.tokenizer.count == vocab + tokens.count,
           tokens.enumerated().allSatisfy({ model.tokenizer.id(of: $1) == Int32(vocab + $0) }) {
            self.tokenizer = model.tokenizer
        } else if let tokenizer, tokenizer.count == vocab + tokens.count,
                  tokens.enumerated().allSatisfy({ tokenizer.id(of: $1) == Int32(vocab + $0) }) {
            self.tokenizer = tokenizer
        } else if model.tokenizer.count == vocab {
            do { self.tokenizer = try model.tokenizer.adding(tokens: tokens) } catch { throw .newToken("\(error)") }
        } else {
            throw .newToken("the tokenizer has \(model.tokenizer.count) tokens but token_embd has \(vocab) rows; new tokens would get mismatched ids")
        }
        let initIDs = model.tokenizer.encode(initToken, addSpecial: false, parseSpecial: false)
        guard initIDs.count == 1 else {
            let pieces = initIDs.map { "\"\(model.tokenizer.decode([$0]))\"" }.joined(separator: " + ")
            throw .newToken("--init-token \"\(initToken)\" is \(initIDs.count) tokens (\(pieces)); give text that is a single token, e.g. \" the\"")
        }
        initTokenID = initIDs[0]

        // Each new row starts as the init token's embedding, in units of its RMS.
        let row = FloatBuffer(count: dim)
        model.embedding(Int(initTokenID), into: row.pointer)
        var sumSquares: Double = 0
        for j in 0..<dim { sumSquares += Double(row[j]) * Double(row[j]) }
        let rms = Float((sumSquares / Double(dim)).squareRoot())
        guard rms.isFinite, rms > 0 else {
            throw .newToken("--init-token \"\(initToken)\" (id \(initTokenID)) has an all-zero embedding row; choose a token the model uses, e.g. \" the\"")
        }
        unit = rms
        values = FloatBuffer(count: tokens.count * dim)
        current = FloatBuffer(count: tokens.count * dim)
        for i in 0..<tokens.count {
            for j in 0..<dim { values[i * dim + j] = row[j] / rms }
        }
        fixedOutputRows = outputRow == .tied ? nil : Self.initOutputRows(model, Int(initTokenID), count: tokens.count)
    }

    /// The init token's row of the output matrix, once per new token.
    static func initOutputRows(_ model: LlamaModel, _ id: Int, count: Int) -> FloatBuffer {
        let dim = model.config.dim
        let out = FloatBuffer(count: count * dim)
        model.outputRows(id..<(id + 1), thread: 0).dequantize(rows: 0..<1, into: out.pointer)
        for i in 1..<max(1, count) { (out.pointer + i * dim).update(from: out.pointer, count: dim) }
        return out
    }

    /// One group per token.
    public var groups: [ParameterGroup] {
        tokens.indices.map { ParameterGroup(name: "token \(tokens[$0])", values: values.pointer + $0 * dim, count: dim) }
    }

    /// The rows as the forward pass takes them, reading `table` ((count, dim) embeddings θ).
    public func extraTokens(_ table: UnsafePointer<Float>) -> ExtraTokens {
        ExtraTokens(firstID: firstID, count: tokens.count, tables: [table], outputTable: fixedOutputRows.map { UnsafePointer($0.pointer) })
    }

    /// The embeddings θ = ρ·φ of the current values, (count, dim) row-major.
    public func embeddings() -> [Float] {
        (0..<(tokens.count * dim)).map { unit * values[$0] }
    }

    /// θ = ρ·φ of the current values in a buffer owned by these rows (valid until the next
    /// call), for evaluating the current point.
    public func currentRows() -> UnsafePointer<Float> {
        for i in 0..<(tokens.count * dim) { current[i] = unit * values[i] }
        return UnsafePointer(current.pointer)
    }

    /// `table` = ρ·(φ + sign·ε·s⊙T(z)) for `point`: the embeddings of the perturbed point;
    /// group g of the rows is perturbation group `firstGroup + g`.
    func perturbed(_ point: PerturbedPoint, epsilon: Float, shape: PerturbationShape, firstGroup: Int,
                   into table: UnsafeMutablePointer<Float>) {
        let n = tokens.count * dim
        table.update(from: values.pointer, count: n)
        if let seed = point.seed {
            for g in tokens.indices {
                shape.apply(alpha: point.sign * shape.epsilon(epsilon, group: firstGroup + g), seed: seed, group: firstGroup + g, to: table + g * dim, count: dim)
            }
        }
        for i in 0..<n { table[i] *= unit }
    }
}

public final class TextualInversion: TrainableSet, Objective {
    public let model: LlamaModel
    public let rows: NewTokenRows
    public var tokenizer: Tokenizer { rows.tokenizer }
    public var newTokens: [String] { rows.tokens }
    public var firstID: Int { rows.firstID }
    public var initTokenID: Int32 { rows.initTokenID }
    /// (count, dim): the float32 master copy of the new rows, in units of `rows.unit`.
    public var values: FloatBuffer { rows.values }
    public let groups: [ParameterGroup]

    /// Tokens per micro-batch of examples; a pass holds this many per point.
    public let microBatchTokens: Int
    /// Points per pass (2 for two-sided SPSA with one direction, plus one for HiZOO's θ).
    public let maxPoints: Int
    /// Forward-pass buffers, also lent to held-out evaluation (`evaluator`).
    public let state: RunState
    public let output: OutputScratch
    /// (maxPoints, count, dim): each point's copy of the new rows.
    private let pointTables: FloatBuffer

    /// Where weights are read from (nil: the mapped file).
    public var weights: WeightSource?

    /// Whether a step runs each example's positions before its first new token once for
    /// all points (they are the same at every point: only the new rows differ) and only
    /// the rest once per point. The loss sums are the same up to float32 rounding, so this
    /// only saves work; it is off by default because it changes the rounding, and so the
    /// trajectory of a run (`train --share-prefix`; docs/notes/shared-prefix.md).
    public var sharePrefix = false

    /// Positions of `examples` that a step with `sharePrefix` runs once for all its points
    /// (those before each example's first new token; a whole example without one), and all
    /// positions.
    public func sharedPositions(_ examples: [Example]) -> (shared: Int, total: Int) {
        var shared = 0, total = 0
        for e in examples {
            shared += e.tokens.firstIndex { Int($0) >= firstID } ?? e.tokens.count
            total += e.tokens.count
        }
        return (shared, total)
    }

    public var dim: Int { model.config.dim }
    public var passCapacity: Int { state.capacity }

    /// Adds `newTokens` to the vocabulary, each initialised from the embedding of `initToken`
    /// (text that must be exactly one token of the vocabulary).
    /// `tokenizer`: the model's tokenizer with `newTokens` already added, when the caller
    /// has it (one fewer copy of the vocabulary tables in memory).
    public init(model: LlamaModel, newTokens: [String], initToken: String, microBatchTokens: Int, maxPoints: Int,
                contextLength: Int, tileRows: Int = RunState.tileRows, tokenizer: Tokenizer? = nil,
                outputRow: NewTokenOutputRow = .tied) throws(TrainingError) {
        self.model = model
        rows = try NewTokenRows(model: model, tokens: newTokens, initToken: initToken, tokenizer: tokenizer, outputRow: outputRow)
        groups = rows.groups
        self.microBatchTokens = microBatchTokens
        self.maxPoints = maxPoints
        state = RunState(config: model.config, capacity: microBatchTokens * maxPoints, contextLength: contextLength, tileRows: tileRows)
        output = OutputScratch(dim: model.config.dim, capacity: min(state.capacity, 256))
        pointTables = FloatBuffer(count: maxPoints * newTokens.count * model.config.dim)
    }

    public var parameters: TrainableSet { self }

    @discardableResult public func constrain() -> Int { 0 }

    /// The new tokens as the forward pass takes them, reading `table` ((count, dim) embeddings).
    public func extraTokens(_ table: UnsafePointer<Float>) -> ExtraTokens { rows.extraTokens(table) }

    /// The new tokens at the current values, for held-out evaluation.
    public func currentExtraTokens() -> ExtraTokens { rows.extraTokens(rows.currentRows()) }

    /// Held-out evaluation sharing this objective's buffers.
    public var evaluator: Evaluator {
        let e = Evaluator(model: model, state: state, output: output)
        e.weights = weights
        return e
    }

    /// Bytes this objective holds besides the model: run state, output scratch, point tables.
    public var byteCount: Int { state.byteCount + output.byteCount + pointTables.byteCount + values.byteCount }

    public func accumulateLosses(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                                 examples: [Example], into totals: inout [LossSum]) throws(TrainingError) {
        precondition(points.count <= maxPoints, "more points than the objective was sized for")
        precondition(totals.count == points.count, "one loss sum per point")
        let dim = self.dim
        let k = newTokens.count

        // Each point's copy of the new rows: ρ·(φ + sign·ε·s⊙T(z)).
        var tables = [UnsafePointer<Float>]()
        for (p, point) in points.enumerated() {
            let table = pointTables.pointer + p * k * dim
            rows.perturbed(point, epsilon: epsilon, shape: shape, firstGroup: 0, into: table)
            tables.append(UnsafePointer(table))
        }
        var extra = rows.extraTokens(tables[0])
        extra.tables = tables

        // Examples × points in passes of at most `passCapacity` tokens. With `sharePrefix`,
        // an example's positions before its first new token are run once and each point
        // runs only the rest, reading the prefix's keys and values; the prefix's final
        // hidden states are then scored at each point with that point's new rows (on a
        // tied output they enter every position's softmax), so each point's loss sum is
        // the unshared one up to float rounding.
        var sums = totals
        var tokens = [Int32]()
        var spans = [SequenceSpan]()
        var targets = [Int32]()
        var soft = [SoftTarget?]()
        // Shared prefixes to score again for another point: batch rows from..<from+count.
        var copies = [(from: Int, count: Int, variant: Int)]()
        let distilled = examples.first?.soft != nil
        // Batch row of a shared prefix's sequence → the prefix's length.
        var prefixLength = [Int: Int]()
        func add(_ losses: [Float], _ batch: Batch, _ targets: [Int32]) {
            for span in batch.spans {
                for t in span.start..<(span.start + span.count) where targets[t] >= 0 {
                    sums[span.variant].tokens += 1
                    sums[span.variant].totalNLL += Double(losses[t])
                }
            }
        }
        // The shared prefixes' positions at every point. Their final hidden states h are
        // the same at each point; only the new tokens' logits (their output rows · h)
        // differ. So the vocabulary's log-sum-exp is computed once per position, by the
        // tiled head without the new tokens (scoring a vocabulary token s: it gives
        // LSE − logit(s), and logit(s) is one row · h), and each point folds in its own
        // new tokens' logits.
        func scorePrefixes(_ prefixes: [SequenceSpan]) throws(TrainingError) {
            var surrogate = [Int32](repeating: -1, count: tokens.count)
            for span in prefixes {
                for t in span.start..<(span.start + span.count) where targets[t] >= 0 {
                    surrogate[t] = Int(targets[t]) < firstID ? targets[t] : 0
                }
            }
            let batch = Batch(tokens: tokens, spans: prefixes)
            let partial = model.negativeLogLikelihoods(batch, state, targets: surrogate, extra: nil, scratch: output, weights: weights)
            let source: WeightSource = weights ?? model
            withUnsafeTemporaryAllocation(of: Float.self, capacity: dim + k) { buffer in
                let row = buffer.baseAddress!, logits = buffer.baseAddress! + dim
                for span in prefixes {
                    for t in span.start..<(span.start + span.count) where targets[t] >= 0 {
                        let h = UnsafePointer(state.xb.pointer + t * dim)
                        let s = Int(surrogate[t])
                        source.outputRows(s..<(s + 1), thread: 0).dequantize(rows: 0..<1, into: row)
                        let surrogateLogit = dotF32(row, h, count: dim)
                        // In double precision from here: the points' losses then differ by
                        // their new logits, not by the rounding of a float log-sum-exp.
                        let vocabularyLSE = Double(partial[t]) + Double(surrogateLogit)
                        for p in points.indices {
                            for e in 0..<k { logits[e] = dotF32(extra.outputRows(p) + e * dim, h, count: dim) }
                            var mx = vocabularyLSE
                            for e in 0..<k { mx = max(mx, Double(logits[e])) }
                            var sum = exp(vocabularyLSE - mx)
                            for e in 0..<k { sum += exp(Double(logits[e]) - mx) }
                            let target = Int(targets[t])
                            let targetLogit = target >= firstID ? Double(logits[target - firstID]) : Double(surrogateLogit)
                            sums[p].tokens += 1
                            sums[p].totalNLL += mx + log(sum) - targetLogit
                        }
                    }
                }
            }
        }
        func flush() throws(TrainingError) {
            guard !spans.isEmpty else { return }
            let batch = Batch(tokens: tokens, spans: spans)
            do { try model.validate(batch, state, extra: extra) } catch { throw .model(error) }
            model.forward(batch, state, extra: extra, weights: weights)
            if distilled {
                // Soft targets: each shared prefix scored again per point, its final hidden
                // states copied after the pass's rows (the packing keeps the unshared row
                // count within the state's capacity).
                var lossTokens = tokens, lossSoft = soft, lossTargets = targets
                var lossSpans = spans.map { SequenceSpan(start: $0.start, count: $0.count, position: $0.position, variant: $0.variant) }
                for c in copies {
                    let at = lossTokens.count
                    (state.xb.pointer + at * dim).update(from: state.xb.pointer + c.from * dim, count: c.count * dim)
                    lossTokens.append(contentsOf: tokens[c.from..<(c.from + c.count)])
                    lossTargets.append(contentsOf: targets[c.from..<(c.from + c.count)])
                    lossSoft.append(contentsOf: soft[c.from..<(c.from + c.count)])
                    lossSpans.append(SequenceSpan(start: at, count: c.count, variant: c.variant))
                }
                let scored = Batch(tokens: lossTokens, spans: lossSpans)
                let losses = model.crossEntropies(scored, state, soft: lossSoft, extra: extra, scratch: output, weights: weights)
                add(losses, scored, lossTargets)
            } else {
                // Rows past each shared prefix, scored with their point's new rows.
                var own = [SequenceSpan]()
                var prefixes = [SequenceSpan]()
                for span in spans {
                    if let c = prefixLength[span.start], c > 0 {
                        prefixes.append(SequenceSpan(start: span.start, count: c))
                        if c < span.count { own.append(SequenceSpan(start: span.start + c, count: span.count - c, variant: span.variant)) }
                    } else {
                        own.append(SequenceSpan(start: span.start, count: span.count, variant: span.variant))
                    }
                }
                let scored = Batch(tokens: tokens, spans: own)
                add(model.negativeLogLikelihoods(scored, state, targets: targets, extra: extra, scratch: output, weights: weights),
                    scored, targets)
                if !prefixes.isEmpty { try scorePrefixes(prefixes) }
            }
            tokens.removeAll(keepingCapacity: true)
            spans.removeAll(keepingCapacity: true)
            targets.removeAll(keepingCapacity: true)
            soft.removeAll(keepingCapacity: true)
            copies.removeAll(keepingCapacity: true)
            prefixLength.removeAll(keepingCapacity: true)
        }
        func append(_ example: Example, from first: Int, to end: Int? = nil, variant: Int, prefixStart: Int?) {
            let n = end ?? example.tokens.count
            spans.append(SequenceSpan(start: tokens.count, count: n - first, position: first, variant: variant,
                                      prefixStart: prefixStart))
            tokens.append(contentsOf: example.tokens[first..<n])
            targets.append(contentsOf: example.targets[first..<n])
            if distilled {
                if let s = example.soft { soft.append(contentsOf: s[first..<n]) } else { soft.append(contentsOf: Array(repeating: nil, count: n - first)) }
            }
        }
        var used = 0  // rows to score in the pass (the unshared pass's size)
        for example in examples {
            let n = example.tokens.count
            guard n * points.count <= state.capacity || n <= state.capacity else {
                throw .invalidSetting("an example of \(n) tokens does not fit a pass of \(state.capacity)")
            }
            let shared = sharePrefix && points.count > 1 ? example.tokens.firstIndex { Int($0) >= firstID } ?? n : 0
            if shared > 0 && n * points.count <= state.capacity {
                if used + n * points.count > state.capacity {
                    try flush()
                    used = 0
                }
                // The prefix once, then every point's rest reading it (point 0's too, so that
                // all points' rest goes through the same arithmetic and their losses differ
                // only through the new rows, not through rounding).
                let start = tokens.count
                append(example, from: 0, to: shared, variant: 0, prefixStart: nil)
                prefixLength[start] = shared
                for p in 1..<points.count { copies.append((from: start, count: shared, variant: p)) }
                if shared < n {
                    for p in points.indices { append(example, from: shared, variant: p, prefixStart: start) }
                }
                used += n * points.count
                continue
            }
            for p in points.indices {
                if used + n > state.capacity {
                    try flush()
                    used = 0
                }
                append(example, from: 0, variant: p, prefixStart: nil)
                used += n
            }
        }
        try flush()
        totals = sums
    }
}
