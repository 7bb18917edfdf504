// Text generation with a KV cache: the prompt goes through in one batched pass, then
// one token per pass, each sampled from the last position's logits.

import Quant

/// Generates a continuation of a prompt token by token.
public final class Generator {
    public let model: LlamaModel
    public let state: RunState
    public let extra: ExtraTokens?
    /// Where weights are read from (nil: the mapped file).
    public var weights: WeightSource?
    private var logits: FloatBuffer

    /// Room for `contextLength` positions (prompt plus generated tokens).
    public init(model: LlamaModel, contextLength: Int, promptCapacity: Int, extra: ExtraTokens? = nil) {
        self.model = model
        self.extra = extra
        state = RunState(config: model.config, capacity: max(1, promptCapacity), contextLength: contextLength, cacheSlots: 1)
        logits = FloatBuffer(count: model.vocabularySize(extra: extra))
    }

    /// Runs the prompt, then samples up to `maxTokens` tokens, calling `onToken` with each;
    /// stops early at an end-of-generation token (not passed on) or when `onToken` returns false.
    /// Returns the generated ids.
    @discardableResult
    public func generate(prompt: [Int32], maxTokens: Int, sampling: SamplingOptions,
                         onToken: (Int32) -> Bool) throws(ModelError) -> [Int32] {
        guard !prompt.isEmpty else { throw .emptyInput("the prompt has no tokens") }
        guard prompt.count + maxTokens <= state.contextLength else {
            throw .contextOverflow(tokens: prompt.count + maxTokens, contextLength: state.contextLength)
        }
        var sampler = Sampler(sampling)
        var output = [Int32]()

        // Prompt: in chunks of the state's capacity, each appended to cache slot 0.
        var position = 0
        while position < prompt.count {
            let count = min(state.capacity, prompt.count - position)
            let batch = Batch(tokens: Array(prompt[position..<(position + count)]),
                              spans: [SequenceSpan(start: 0, count: count, position: position, cacheSlot: 0)])
            try model.validate(batch, state, extra: extra)
            model.forward(batch, state, extra: extra, weights: weights)
            position += count
            if position == prompt.count {
                model.logits(state, token: count - 1, extra: extra, into: logits.pointer, weights: weights)
            }
        }

        // One token at a time.
        while output.count < maxTokens {
            // Padding rows of the embedding are no tokens: never sampled.
            for id in model.paddingRows { logits[id] = -.infinity }
            let next = sampler.sample(logits.pointer, count: logits.count)
            if model.tokenizer.isEndOfGeneration(next) { break }
            output.append(next)
            guard onToken(next), output.count < maxTokens else { break }
            let batch = Batch(tokens: [next], spans: [SequenceSpan(start: 0, count: 1, position: position, cacheSlot: 0)])
            model.forward(batch, state, extra: extra, weights: weights)
            model.logits(state, token: 0, extra: extra, into: logits.pointer, weights: weights)
            position += 1
        }
        return output
    }
}
