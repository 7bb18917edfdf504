import Foundation
import TestSupport
import Testing

/// The inference commands on the Q4_K_M files people actually have, run as a user runs them.
/// (Their arithmetic is checked against float64 in ModelTests' RealModelForwardTests; here:
/// the commands load them, answer, stop where the model means to, and evaluate.)
@Suite struct RealModelCommandTests {
    /// The number of generated tokens that `generate` reports on standard error.
    static func generatedCount(_ stderr: String) -> Int? {
        guard let range = stderr.range(of: #"(\d+) generated"#, options: .regularExpression) else { return nil }
        return Int(stderr[range].split(separator: " ")[0])
    }

    static let instructModels = [RealModel.qwen05, RealModel.qwen15]

    @Test(arguments: instructModels) func greedyChatAnswersAndStopsAtTheEndOfItsTurn(_ model: RealModel) throws {
        try #require(model.enabled, "run scripts/setup --all")
        let maxTokens = 40
        let r = try runCLI(["generate", "--model", model.path, "--chat", "--prompt", "What is the capital of France?",
                            "--temperature", "0", "--max-tokens", "\(maxTokens)"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Paris"), "\(r.stdout)")
        // The answer ends at <|im_end|>, well before the token limit, and no markup leaks out.
        let count = try #require(Self.generatedCount(r.stderr), "\(r.stderr)")
        #expect(count < maxTokens, "\(r.stdout)")
        #expect(!r.stdout.contains("<|im_"), "\(r.stdout)")
    }

    /// Gemma 3 270M here is the base model: it continues text (as llama.cpp does) rather than answering.
    @Test func gemmaContinuesAPrompt() throws {
        let model = RealModel.gemma270
        try #require(model.enabled, "run scripts/setup --all")
        let args = ["generate", "--model", model.path, "--prompt", "The capital of France is", "--temperature", "0",
                    "--max-tokens", "16"]
        let r = try runCLI(args)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("France") && !r.stdout.contains("<"), "\(r.stdout)")
        #expect(try runCLI(args).stdout == r.stdout)
    }

    @Test(arguments: RealModel.all) func inspectNamesArchitectureAndFormats(_ model: RealModel) throws {
        try #require(model.enabled, "run scripts/setup --all")
        let r = try runCLI(["inspect", model.path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(object["unsupported"] == nil, "\(r.stdout)")
        #expect(object["architecture"] as? String == (model.name.hasPrefix("gemma") ? "gemma3" : "qwen2"))
        let byType = object["bytes_by_type"] as! [String: [String: Int]]
        #expect(byType["Q4_K"] != nil && byType["Q6_K"] != nil)
        let text = try runCLI(["inspect", model.path])
        let gemma = model.name.hasPrefix("gemma")
        #expect(text.stdout.contains(gemma ? "llama (SentencePiece), 262144 tokens" : "gpt2 (BPE, pre-tokenizer qwen2)"), "\(text.stdout)")
        #expect(text.stdout.contains(gemma ? "chat template Gemma" : "chat template ChatML"), "\(text.stdout)")
    }

    /// Mean NLL of plain English paragraphs: a working model is far below the uniform
    /// distribution's log(vocabulary) (about 12 nats; a broken rope or norm gives 7 and more).
    @Test(arguments: RealModel.all) func evalGivesAFiniteNLLFarBelowUniform(_ model: RealModel) throws {
        try #require(model.enabled, "run scripts/setup --all")
        let r = try runCLI(["eval", "--model", model.path, "--data", Repository.path("examples/qzo/heldout.jsonl"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let nll = try #require(object["nll"] as? Double, "\(r.stdout)")
        #expect(nll.isFinite && nll > 0.5 && nll < 5, "\(model): NLL \(nll)")
    }
}
