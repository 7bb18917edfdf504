// `edge-finetune generate`: continue a prompt, streaming the text as it is produced.

import ArgumentParser
import Foundation
import GGUF
import Model
import ZerothOrder

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt, streaming it as it is produced.")

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "The prompt.")
    var prompt: String

    @Option(name: .long, help: "Most tokens to generate.")
    var maxTokens = 128

    @Option(name: .long, help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0.7

    @Option(name: .long, help: "Sample among the k most likely tokens; 0 for all.")
    var topK = 40

    @Option(name: .long, help: "Sample among the most likely tokens whose probabilities sum to p.")
    var topP: Float = 0.95

    @Option(name: .long, help: "Seed of the sampler; the same seed gives the same text.")
    var seed: UInt64 = 0

    @Flag(name: .long, help: "Wrap the prompt in the model's chat format (ChatML, Gemma or Llama 3, from its template).")
    var chat = false

    @Option(name: .long, help: "System message for --chat (default: the template's own).")
    var system: String?

    @Option(name: .long, help: "An adapter (GGUF) written by `train` to apply to the model.")
    var adapter: String?

    @OptionGroup var budget: MemoryBudgetOptions

    func validate() throws {
        guard (1...(1 << 24)).contains(maxTokens) else { throw ValidationError("--max-tokens must be in 1...\(1 << 24) (got \(maxTokens))") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 or more (got \(temperature))") }
        guard topK >= 0, topK <= 1 << 24 else { throw ValidationError("--top-k must be 0 or more (got \(topK))") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1] (got \(topP))") }
        if system != nil && !chat { throw ValidationError("--system needs --chat") }
    }

    func run() throws {
        var inputs = [NamedFile("--model", model.model)]
        if let adapter { inputs.append(NamedFile("--adapter", adapter)) }
        try checkFiles(outputs: [], inputs: inputs)
        model.applyThreads()
        let m = try LlamaModel(path: model.model, addedTokens: try adapter.map { try Adapter.newTokens(atPath: $0) } ?? [])
        let applied = try adapter.map { try AppliedAdapter.load(path: $0, model: m) }
        let tokenizer = applied?.tokenizer ?? m.tokenizer
        var text = prompt
        if chat {
            let template = try ChatTemplate(template: m.file.metadata.string("tokenizer.chat_template"),
                                            hasToken: { tokenizer.id(of: $0) != nil })
            text = template.prompt(user: prompt, system: system)
        }
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: chat)
        guard ids.count + maxTokens <= m.config.contextLength else {
            throw ModelError.contextOverflow(tokens: ids.count + maxTokens, contextLength: m.config.contextLength)
        }
        let context = ids.count + maxTokens
        var streamer: WeightStreamer?
        if let budgetBytes = budget.bytes {
            let cache = 4 * 2 * m.config.layerCount * context * m.config.kvDim + 4 * m.vocabularySize(extra: applied?.extra)
            let plan = try inferencePlan(model: m, budget: budgetBytes, lengths: [min(ids.count, 512)],
                                         contextLength: context, otherBytes: cache)
            warn("memory plan: \(plan.description)")
            if plan.streaming {
                streamer = WeightStreamer(model: m)
                m.file.mapping.release(0..<m.file.fileSize)
            }
        }
        let generator = Generator(model: m, contextLength: context, promptCapacity: min(ids.count, 512), extra: applied?.extra)
        generator.weights = streamer
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        let start = Date()
        // Streamed to standard output token by token; a write that fails (a full disk, a
        // closed pipe) stops generation with that error.
        var writeError: Error?
        let produced = try generator.generate(
            prompt: ids, maxTokens: maxTokens,
            sampling: SamplingOptions(temperature: temperature, topK: topK, topP: topP, seed: seed)
        ) { token in
            do { try Console.writeOutput(decoder.append(token)) } catch {
                writeError = error
                return false
            }
            return true
        }
        if let writeError { throw writeError }
        try Console.writeOutput(decoder.finish() + "\n")
        let seconds = Date().timeIntervalSince(start)
        warn("[\(ids.count) prompt tokens, \(produced.count) generated in \(String(format: "%.2f", seconds)) s]")
    }
}
