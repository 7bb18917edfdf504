import Foundation
import TestSupport
import Testing

/// `eval` and `train` on chat-format data ({"messages": [...]}) with the tiny ChatML model (committed).
@Suite struct ChatDataCommandTests {
    static let tiny = Repository.path("models/tiny-q4_0.gguf")

    static let conversations = [
        #"{"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris, on the Seine."}]}"#,
        #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue"}, {"role": "user", "content": "Another"}, {"role": "assistant", "content": "Green, like grass."}]}"#,
    ]

    /// The same scored tokens as prompt/completion lines, in the tiny model's ChatML written by hand as its Jinja
    /// template renders it (no default system message): one line per assistant message, the prompt ending where its
    /// content starts, the completion its content and `<|im_end|>`.
    static let promptCompletion: [[String: String]] = {
        let q1 = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        let q2 = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour<|im_end|>\n<|im_start|>assistant\n"
        let q3 = q2 + "Blue<|im_end|>\n<|im_start|>user\nAnother<|im_end|>\n<|im_start|>assistant\n"
        return [["prompt": q1, "completion": "Paris, on the Seine.<|im_end|>"],
                ["prompt": q2, "completion": "Blue<|im_end|>"],
                ["prompt": q3, "completion": "Green, like grass.<|im_end|>"]]
    }()

    static func write(_ lines: [String], _ name: String) -> String {
        let path = makeTemporaryDirectory("chat-cli") + "/" + name
        FileManager.default.createFile(atPath: path, contents: Data((lines.joined(separator: "\n") + "\n").utf8))
        return path
    }

    static func eval(_ data: String) throws -> [String: Double] {
        let r = try runCLI(["eval", "--model", tiny, "--data", data, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Double]
    }

    /// The causal model gives a token the same probability whatever follows it, so the two files score the same tokens
    /// with the same NLL; only the float32 rounding of passes of other lengths differs.
    @Test func evalOfMessagesEqualsEvalOfTheEquivalentPromptCompletionLines() throws {
        let messages = Self.write(Self.conversations, "chat.jsonl")
        let pc = Self.write(try Self.promptCompletion.map {
            String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self)
        }, "pc.jsonl")
        let a = try Self.eval(messages), b = try Self.eval(pc)
        #expect(a["tokens"] == b["tokens"] && (a["tokens"] ?? 0) > 10, "\(a) vs \(b)")
        #expect(abs(a["nll"]! - b["nll"]!) < 1e-4, "\(a) vs \(b)")
    }

    @Test func trainingOnMessagesLowersTheirLoss() throws {
        let data = Self.write(Self.conversations, "chat.jsonl")
        let out = makeTemporaryDirectory("chat-train") + "/scales.gguf"
        let r = try runCLI(["train", "--method", "qzo", "--model", Self.tiny, "--data", data, "--eval-data", data,
                            "--steps", "40", "--batch", "2", "--lr", "0.01", "--eps", "0.01", "--out", out])
        #expect(r.status == 0, "\(r.stderr)")
        // The summary's line "held-out NLL  a → b nats".
        let line = try #require((r.stdout + r.stderr).split(separator: "\n").first { $0.contains("held-out NLL") && $0.contains("→") },
                                "\(r.stdout)\(r.stderr)")
        let parts = line.split(separator: "→")
        let before = try #require(Double(parts[0].split(separator: " ").last ?? ""), "\(line)")
        let after = try #require(Double(parts[1].split(separator: " ").first ?? ""), "\(line)")
        #expect(after < before, "\(line)")
    }

    @Test func badConversationIsOneLineNamingFileAndLine() throws {
        let data = Self.write([Self.conversations[0], #"{"messages": [{"role": "user", "content": "hi"}]}"#], "bad.jsonl")
        let r = try runCLI(["eval", "--model", Self.tiny, "--data", data])
        #expect(r.status == 1)
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("bad.jsonl:2: ") && r.stderr.contains("no assistant message"),
                "\(r.stderr)")
    }
}
