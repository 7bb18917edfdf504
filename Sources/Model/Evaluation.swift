// Mean next-token negative log-likelihood over a set of examples, packed into passes
// of up to `capacity` tokens.

import Quant
#if canImport(Glibc)
import Glibc
#endif

/// A sum of per-token negative log-likelihoods and how many tokens it covers. Sums from
/// separate passes add up before dividing, so a mean does not depend on how the tokens
/// were split into passes.
public struct EvaluationResult: Sendable, Equatable {
    /// Scored positions.
    public var tokens: Int
    /// Sum of their negative log-likelihoods (nats).
    public var totalNLL: Double

    public init(tokens: Int = 0, totalNLL: Double = 0) {
        self.tokens = tokens
        self.totalNLL = totalNLL
    }

    /// Mean NLL per scored token (nats).
    public var nll: Double { tokens > 0 ? totalNLL / Double(tokens) : .nan }
    public var perplexity: Double { exp(nll) }

    public static func + (a: EvaluationResult, b: EvaluationResult) -> EvaluationResult {
        EvaluationResult(tokens: a.tokens + b.tokens, totalNLL: a.totalNLL + b.totalNLL)
    }
}

/// Evaluates examples with reusable buffers.
public final class Evaluator {
    public let model: LlamaModel
    public let state: RunState
    public let output: OutputScratch
    /// Where weights are read from (nil: the mapped file).
    public var weights: WeightSource?

    /// `capacity`: tokens per pass (at least the longest example).
    public init(model: LlamaModel, capacity: Int, contextLength: Int) {
        self.model = model
        state = RunState(config: model.config, capacity: capacity, contextLength: contextLength)
        output = OutputScratch(dim: model.config.dim, capacity: min(capacity, 256))
    }

    /// Evaluates with buffers shared with other work (e.g. a training objective's).
    public init(model: LlamaModel, state: RunState, output: OutputScratch) {
        self.model = model
        self.state = state
        self.output = output
    }

    /// Per-example (scored tokens, NLL sum), in input order.
    public func perExample(_ examples: [Example], extra: ExtraTokens? = nil, variant: Int = 0) throws(ModelError) -> [EvaluationResult] {
        var results = [EvaluationResult]()
        var i = 0
        while i < examples.count {
            // Pack whole examples into one pass.
            var group = [Example]()
            var tokens = 0
            while i < examples.count, tokens + examples[i].tokens.count <= state.capacity {
                tokens += examples[i].tokens.count
                group.append(examples[i])
                i += 1
            }
            guard !group.isEmpty else {
                throw .contextOverflow(tokens: examples[i].tokens.count, contextLength: state.capacity)
            }
            let batch = Batch(sequences: group.map(\.tokens), variants: Array(repeating: variant, count: group.count))
            try model.validate(batch, state, extra: extra)
            model.forward(batch, state, extra: extra, weights: weights)
            let targets = group.flatMap(\.targets)
            let nll = model.negativeLogLikelihoods(batch, state, targets: targets, extra: extra, scratch: output, weights: weights)
            for span in batch.spans {
                var r = EvaluationResult()
                for t in span.start..<(span.start + span.count) where targets[t] >= 0 {
                    r.tokens += 1
                    r.totalNLL += Double(nll[t])
                }
                results.append(r)
            }
        }
        return results
    }

    /// Totals over all examples.
    public func evaluate(_ examples: [Example], extra: ExtraTokens? = nil, variant: Int = 0) throws(ModelError) -> EvaluationResult {
        try perExample(examples, extra: extra, variant: variant).reduce(EvaluationResult(), +)
    }
}

extension Evaluator {
    /// Mean KL(reference ‖ model) of the next-token distributions over the scored positions
    /// of `examples`: how far this model's predictions are from `reference`'s (e.g. a
    /// requantized model against the original). Both models must share the vocabulary.
    public func klDivergence(from reference: Evaluator, _ examples: [Example], extra: ExtraTokens? = nil) throws(ModelError) -> Double {
        let vocab = model.config.vocabSize
        guard reference.model.config.vocabSize == vocab else {
            throw .unsupportedFeature("the reference model's vocabulary (\(reference.model.config.vocabSize)) differs from this model's (\(vocab))")
        }
        let p = FloatBuffer(count: vocab)
        let q = FloatBuffer(count: vocab)
        var total = 0.0
        var count = 0
        for example in examples {
            let batch = Batch(sequences: [example.tokens])
            try model.validate(batch, state, extra: extra)
            try reference.model.validate(batch, reference.state)
            model.forward(batch, state, extra: extra, weights: weights)
            reference.model.forward(batch, reference.state, weights: reference.weights)
            for t in 0..<example.tokens.count where example.targets[t] >= 0 {
                reference.model.logits(reference.state, token: t, into: p.pointer, weights: reference.weights)
                model.logits(state, token: t, into: q.pointer, weights: weights)
                softmax(p.pointer, count: vocab)
                softmax(q.pointer, count: vocab)
                var kl = 0.0
                for v in 0..<vocab where p[v] > 0 {
                    kl += Double(p[v]) * (log(Double(p[v])) - log(max(Double(q[v]), 1e-45)))
                }
                total += kl
                count += 1
            }
        }
        return count > 0 ? total / Double(count) : .nan
    }
}
