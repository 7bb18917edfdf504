// `edge-finetune eval`: mean next-token NLL and perplexity over a JSONL file.

import ArgumentParser
import Model
import ZerothOrder

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mean next-token negative log-likelihood (nats) and perplexity over a JSONL data file.",
        discussion: """
            Each line is {"text": ...} (loss on every token after the first) or \
            {"prompt": ..., "completion": ...} (loss on the completion only).
            """)

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "JSONL data file.")
    var data: String

    @Option(name: .long, help: "Longest example in tokens (default: 512).")
    var maxLength = 512

    @Option(name: .long, help: "An adapter (GGUF) written by `train` to apply to the model.")
    var adapter: String?

    @Flag(name: .long, help: "Print {\"tokens\": N, \"nll\": x, \"ppl\": y}.")
    var json = false

    func validate() throws {
        guard maxLength >= 2 else { throw ValidationError("--max-length must be at least 2 (got \(maxLength))") }
    }

    func run() throws {
        model.applyThreads()
        let m = try LlamaModel(path: model.model)
        let applied = try adapter.map { try AppliedAdapter.load(path: $0, model: m) }
        let length = min(maxLength, m.config.contextLength)
        let examples = try Dataset.load(path: data, tokenizer: applied?.tokenizer ?? m.tokenizer, maxLength: length)
        let evaluator = Evaluator(model: m, capacity: max(length, 256), contextLength: length)
        let result = try evaluator.evaluate(examples, extra: applied?.extra)
        if json {
            print(jsonText(["tokens": result.tokens, "nll": result.nll, "ppl": result.perplexity]))
        } else {
            print("\(examples.count) examples, \(result.tokens) scored tokens: NLL \(fixed(result.nll)) nats, perplexity \(fixed(result.perplexity, 2))")
        }
    }
}
