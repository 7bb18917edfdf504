// Textual inversion: new tokens appended to the vocabulary, each with a learned
// embedding; the quantized model stays frozen (ZOODiP's setting, for a language model).
//
// The perturbation touches only the new tokens' embedding rows, not any weight, so all
// perturbed points of a step run as one batch ("dual forward"): each example appears
// once per point, reading its point's copy of the new rows, and every weight matrix is
// read once per step. With a tied output matrix (token_embd doubles as the output
// projection, as in SmolLM2) the new rows are also the new tokens' output rows.

import Model
import Quant

public final class TextualInversion: TrainableSet, Objective {
    public let model: LlamaModel
    /// The model's tokenizer with the new tokens appended.
    public let tokenizer: Tokenizer
    public let newTokens: [String]
    /// Id of the first new token (the base vocabulary size).
    public let firstID: Int
    /// The token each new embedding started from.
    public let initTokenID: Int32
    /// (count, dim): the float32 master copy of the new rows.
    public let values: FloatBuffer
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

    public var dim: Int { model.config.dim }
    public var passCapacity: Int { state.capacity }

    /// Adds `newTokens` to the vocabulary, each initialised from the embedding of `initToken`
    /// (text that must be exactly one token of the vocabulary).
    /// `tokenizer`: the model's tokenizer with `newTokens` already added, when the caller
    /// has it (one fewer copy of the vocabulary tables in memory).
    public init(model: LlamaModel, newTokens: [String], initToken: String, microBatchTokens: Int, maxPoints: Int,
                contextLength: Int, tileRows: Int = RunState.tileRows, tokenizer: Tokenizer? = nil) throws(TrainingError) {
        guard !newTokens.isEmpty else { throw .newToken("give at least one --new-token") }
        guard model.outputIsTied else {
            throw .newToken("textual inversion needs a model whose output matrix is tied to its token embedding (this model has its own output.weight)")
        }
        self.model = model
        self.newTokens = newTokens
        firstID = model.config.vocabSize
        // The new tokens take the ids after the embedding's rows: either the model was loaded
        // with them (one tokenizer in memory), or they are added here.
        let vocab = model.config.vocabSize
        for t in newTokens {
            if let id = model.tokenizer.id(of: t), Int(id) < vocab {
                throw .newToken("the token \"\(t)\" already exists in the vocabulary (id \(id)); choose a new string such as \"<my-concept>\"")
            }
        }
        if model.tokenizer.count == vocab + newTokens.count,
           newTokens.enumerated().allSatisfy({ model.tokenizer.id(of: $1) == Int32(vocab + $0) }) {
            self.tokenizer = model.tokenizer
        } else if let tokenizer, tokenizer.count == vocab + newTokens.count,
                  newTokens.enumerated().allSatisfy({ tokenizer.id(of: $1) == Int32(vocab + $0) }) {
            self.tokenizer = tokenizer
        } else if model.tokenizer.count == vocab {
            do { self.tokenizer = try model.tokenizer.adding(tokens: newTokens) } catch { throw .newToken("\(error)") }
        } else {
            throw .newToken("the tokenizer has \(model.tokenizer.count) tokens but token_embd has \(vocab) rows; new tokens would get mismatched ids")
        }
        let initIDs = model.tokenizer.encode(initToken, addSpecial: false, parseSpecial: false)
        guard initIDs.count == 1 else {
            let pieces = initIDs.map { "\"\(model.tokenizer.decode([$0]))\"" }.joined(separator: " + ")
            throw .newToken("--init-token \"\(initToken)\" is \(initIDs.count) tokens (\(pieces)); give text that is a single token, e.g. \" the\"")
        }
        initTokenID = initIDs[0]

        // Each new row starts as the init token's embedding.
        let dim = model.config.dim
        values = FloatBuffer(count: newTokens.count * dim)
        let embedding = model.weight(model.tokenEmbedding)
        for i in 0..<newTokens.count {
            embedding.dequantize(rows: Int(initTokenID)..<(Int(initTokenID) + 1), into: values.pointer + i * dim)
        }
        let base = values.pointer
        let groups = newTokens.indices.map {
            ParameterGroup(name: "token \(newTokens[$0])", values: base + $0 * dim, count: dim)
        }

        self.microBatchTokens = microBatchTokens
        self.maxPoints = maxPoints
        state = RunState(config: model.config, capacity: microBatchTokens * maxPoints, contextLength: contextLength, tileRows: tileRows)
        output = OutputScratch(dim: dim, capacity: min(state.capacity, 256))
        pointTables = FloatBuffer(count: maxPoints * newTokens.count * dim)
        self.groups = groups
    }

    public var parameters: TrainableSet { self }

    @discardableResult public func constrain() -> Int { 0 }

    /// The new tokens as the forward pass takes them, reading `table` ((count, dim)).
    public func extraTokens(_ table: UnsafePointer<Float>) -> ExtraTokens {
        ExtraTokens(firstID: firstID, count: newTokens.count, tables: [table])
    }

    /// Held-out evaluation sharing this objective's buffers.
    public var evaluator: Evaluator {
        let e = Evaluator(model: model, state: state, output: output)
        e.weights = weights
        return e
    }

    /// Bytes this objective holds besides the model: run state, output scratch, point tables.
    public var byteCount: Int { state.byteCount + output.byteCount + pointTables.byteCount + values.byteCount }

    public func lossSums(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                         examples: [Example]) throws(TrainingError) -> [LossSum] {
        precondition(points.count <= maxPoints, "more points than the objective was sized for")
        let dim = self.dim
        let k = newTokens.count

        // Each point's copy of the new rows: θ + sign·ε·s⊙T(z).
        var tables = [UnsafePointer<Float>]()
        for (p, point) in points.enumerated() {
            let table = pointTables.pointer + p * k * dim
            table.update(from: values.pointer, count: k * dim)
            if let seed = point.seed {
                for g in 0..<k {
                    shape.apply(alpha: point.sign * epsilon, seed: seed, group: g, to: table + g * dim, count: dim)
                }
            }
            tables.append(UnsafePointer(table))
        }
        let extra = ExtraTokens(firstID: firstID, count: k, tables: tables)

        // Examples × points in passes of at most `passCapacity` tokens.
        var sums = [LossSum](repeating: LossSum(), count: points.count)
        var sequences = [[Int32]]()
        var targets = [Int32]()
        var soft = [SoftTarget?]()
        var variants = [Int]()
        let distilled = examples.first?.soft != nil
        func flush() throws(TrainingError) {
            guard !sequences.isEmpty else { return }
            let batch = Batch(sequences: sequences, variants: variants)
            do { try model.validate(batch, state, extra: extra) } catch { throw .model(error) }
            model.forward(batch, state, extra: extra, weights: weights)
            let losses = distilled
                ? model.crossEntropies(batch, state, soft: soft, extra: extra, scratch: output, weights: weights)
                : model.negativeLogLikelihoods(batch, state, targets: targets, extra: extra, scratch: output, weights: weights)
            for span in batch.spans {
                for t in span.start..<(span.start + span.count) where targets[t] >= 0 {
                    sums[span.variant].tokens += 1
                    sums[span.variant].totalNLL += Double(losses[t])
                }
            }
            sequences.removeAll(keepingCapacity: true)
            targets.removeAll(keepingCapacity: true)
            soft.removeAll(keepingCapacity: true)
            variants.removeAll(keepingCapacity: true)
        }
        var used = 0
        for example in examples {
            guard example.tokens.count * points.count <= state.capacity || example.tokens.count <= state.capacity else {
                throw .invalidSetting("an example of \(example.tokens.count) tokens does not fit a pass of \(state.capacity)")
            }
            for p in points.indices {
                if used + example.tokens.count > state.capacity {
                    try flush()
                    used = 0
                }
                sequences.append(example.tokens)
                targets.append(contentsOf: example.targets)
                if distilled { soft.append(contentsOf: example.soft ?? Array(repeating: nil, count: example.tokens.count)) }
                variants.append(p)
                used += example.tokens.count
            }
        }
        try flush()
        return sums
    }
}
