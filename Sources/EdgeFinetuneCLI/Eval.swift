// `edge-finetune eval`: mean next-token NLL and perplexity over a JSONL file.

import ArgumentParser
import GGUF
import Model
import Quant
import ZerothOrder

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mean next-token negative log-likelihood (nats) and perplexity over a JSONL data file.",
        discussion: """
            Each line is {"text": ...} (loss on every token after the first), \
            {"prompt": ..., "completion": ...} (loss on the completion only) or \
            {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]} (a conversation in the \
            model's chat format; loss on each assistant message's content and end-of-turn token).
            """)

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "JSONL data file.")
    var data: String

    @Option(name: .long, help: "Longest example in tokens.")
    var maxLength = 512

    @Option(name: .long, help: "An adapter (GGUF) written by `train` to apply to the model.")
    var adapter: String?

    @Option(name: .long, help: "Also report the mean KL divergence from this model's next-token distributions (e.g. the original of a requantized model).")
    var referenceModel: String?

    @OptionGroup var budget: MemoryBudgetOptions

    @Flag(name: .long, help: "Print {\"tokens\": N, \"nll\": x, \"ppl\": y} (a NaN or infinite value is null).")
    var json = false

    func validate() throws {
        guard (2...(1 << 30)).contains(maxLength) else { throw ValidationError("--max-length must be in 2...\(1 << 30) (got \(maxLength))") }
    }

    func run() throws {
        var inputs = [NamedFile("--model", model.model), NamedFile("--data", data)]
        if let adapter { inputs.append(NamedFile("--adapter", adapter)) }
        if let referenceModel { inputs.append(NamedFile("--reference-model", referenceModel)) }
        try checkFiles(outputs: [], inputs: inputs)
        model.applyThreads()
        let m = try LlamaModel(path: model.model, addedTokens: try adapter.map { try Adapter.newTokens(atPath: $0) } ?? [])
        let applied = try adapter.map { try AppliedAdapter.load(path: $0, model: m) }
        let length = min(maxLength, m.config.contextLength)
        let examples = try Dataset.load(path: data, tokenizer: applied?.tokenizer ?? m.tokenizer, maxLength: length,
                                        chatTemplate: m.chatTemplateText)
        // Buffers sized from the data, not from --max-length: passes of up to 256 tokens (or
        // the longest example), a context as long as the longest example.
        let longest = examples.map(\.tokens.count).max() ?? 1
        let totalTokens = examples.reduce(0) { $0 + $1.tokens.count }
        var capacity = max(longest, min(256, totalTokens))
        var streamer: WeightStreamer?
        var tileRows = RunState.tileRows
        if let budgetBytes = budget.bytes {
            let plan = try inferencePlan(model: m, budget: budgetBytes,
                                         lengths: examples.map(\.tokens.count), contextLength: longest)
            warn("memory plan: \(plan.description)")
            capacity = max(plan.passTokens, longest)
            tileRows = plan.tileRows
            if plan.streaming {
                streamer = WeightStreamer(model: m)
                m.file.mapping.release(0..<m.file.fileSize)
            }
        }
        let evaluator = Evaluator(model: m, state: RunState(config: m.config, capacity: capacity, contextLength: longest, tileRows: tileRows),
                                  output: OutputScratch(dim: m.config.dim, capacity: min(capacity, 256)))
        evaluator.weights = streamer
        let result = try evaluator.evaluate(examples, extra: applied?.extra)
        var kl: Double?
        if let referenceModel {
            let reference = try LlamaModel(path: referenceModel)
            kl = try evaluator.klDivergence(from: Evaluator(model: reference, capacity: longest, contextLength: longest), examples,
                                            extra: applied?.extra)
        }
        if json {
            var object: [String: Any] = ["tokens": result.tokens, "nll": result.nll, "ppl": result.perplexity]
            if let kl { object["kl"] = kl }
            print(jsonText(object))
        } else {
            print("\(examples.count) examples, \(result.tokens) scored tokens: NLL \(fixed(result.nll)) nats, perplexity \(fixed(result.perplexity, 2))"
                  + (kl.map { ", KL from the reference \(fixed($0, 5)) nats" } ?? ""))
        }
    }
}

/// The memory plan of an inference command: one stream, nothing trained; `otherBytes`
/// carries what the command adds (a KV cache, a logits row).
func inferencePlan(model m: LlamaModel, budget: Int, lengths: [Int], contextLength: Int, otherBytes: Int = 0) throws -> MemoryPlan {
    let request = MemoryRequest(
        budget: budget, config: m.config, fileBytes: m.file.fileSize, largestLayerBytes: m.layerBytes.max() ?? 0,
        outputRowBytes: m.output.info.type.rowBytes(m.config.dim)!,
        vocabularyEntries: m.tokenizer.count + m.tokenizer.vocabulary.merges.count, batchSize: max(1, lengths.count),
        exampleLengths: lengths, points: 1, pointsShareAPass: true, contextLength: contextLength, trainableValues: 0,
        optimizerStateBytes: 0, otherBytes: otherBytes, tokenizerBytes: MemoryPlanner.tokenizerBytes(model: m))
    switch MemoryPlanner.plan(request) {
    case .success(let p): return p
    case .failure(let e): throw e
    }
}
