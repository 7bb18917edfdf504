// `edge-finetune export`: bake an adapter into a complete GGUF model that llama.cpp loads.

import ArgumentParser
import GGUF
import Model
import ZerothOrder

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a complete GGUF model with an adapter baked in, in the base model's block formats.")

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "The adapter (GGUF) written by `train`.")
    var adapter: String

    @Option(name: .long, help: "Where to write the exported model.")
    var out: String

    @Option(name: .long, help: "Held-out data (JSONL): report the exported model's NLL on it, computed with the rounded values it holds.")
    var evalData: String?

    @Option(name: .long, help: "Longest example in tokens for --eval-data.")
    var maxLength = 512

    func validate() throws {
        guard (2...(1 << 30)).contains(maxLength) else { throw ValidationError("--max-length must be in 2...\(1 << 30) (got \(maxLength))") }
    }

    func run() throws {
        var inputs = [NamedFile("--model", model.model), NamedFile("--adapter", adapter)]
        if let evalData { inputs.append(NamedFile("--eval-data", evalData)) }
        try checkFiles(outputs: [NamedFile("--out", out)], inputs: inputs)
        model.applyThreads()
        let m = try LlamaModel(path: model.model)
        let a = try Adapter.read(path: adapter, for: m)
        let changes = try Export.write(model: m, adapter: a, to: out)
        print("\(out): \(changes)")
        if let evalData {
            // The adapter as the file holds it (half-precision scales, requantized rows).
            let applied = try AppliedAdapter(Export.rounded(a, for: m), model: m)
            let length = min(maxLength, m.config.contextLength)
            let examples = try Dataset.load(path: evalData, tokenizer: applied.tokenizer, maxLength: length,
                                            chatTemplate: m.chatTemplateText)
            let longest = examples.map(\.tokens.count).max() ?? 1
            let result = try Evaluator(model: m, capacity: max(longest, min(256, examples.reduce(0) { $0 + $1.tokens.count })),
                                       contextLength: longest)
                .evaluate(examples, extra: applied.extra)
            print("held-out NLL of the exported model: \(fixed(result.nll)) nats over \(result.tokens) tokens")
        }
    }
}
