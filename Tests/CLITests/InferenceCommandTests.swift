import Foundation
import TestSupport
import Testing

/// The inference commands, run as a user runs them.
@Suite struct InferenceCommandTests {
    static let tinyModels = ["tiny-q4_0", "tiny-q4_1", "tiny-mixed"]

    @Test(arguments: tinyModels) func inspectTinyModel(_ name: String) throws {
        let r = try runCLI(["inspect", Repository.path("models/\(name).gguf"), "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(object["architecture"] as? String == "llama")
        #expect((object["hyperparameters"] as? [String: Any])?["layers"] as? Int == 2)
        #expect(object["unsupported"] == nil)
    }

    @Test(.enabled(if: ReferenceModel.enabled)) func inspectReferenceModel() throws {
        let r = try runCLI(["inspect", ReferenceModel.path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(object["tensor_count"] as? Int == 272)
        let byType = object["bytes_by_type"] as! [String: [String: Int]]
        #expect(byType["Q4_1"]?["count"] == 210)
        #expect(byType["F32"]?["count"] == 61)
        #expect(byType["Q8_0"]?["count"] == 1)
        let text = try runCLI(["inspect", ReferenceModel.path])
        #expect(text.stdout.contains("30 layers, width 576, 9 heads (3 KV, 64 wide)"))
        #expect(text.stdout.contains("chat template ChatML"))
    }

    @Test func inspectBadFileSaysWhatAndWhere() throws {
        let dir = makeTemporaryDirectory("cli")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Repository.path("models/tiny-q4_0.gguf")))
        let path = dir + "/truncated.gguf"
        try bytes.prefix(100).write(to: URL(fileURLWithPath: path))
        let r = try runCLI(["inspect", path])
        #expect(r.status != 0)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("truncated.gguf") && r.stderr.contains("at byte 8"))
        #expect(!r.stderr.contains("Fatal") && !r.stderr.contains("Stack"))
    }

    @Test(.enabled(if: ReferenceModel.enabled && PythonReference.llamaCppAvailable, "needs llama-cpp-python, the reference"))
    func greedyChatAnswersTheCapitalOfFrance() throws {
        let args = ["generate", "--model", ReferenceModel.path, "--chat", "--prompt", "What is the capital of France?",
                    "--temperature", "0", "--max-tokens", "24"]
        let r = try runCLI(args)
        #expect(r.status == 0, "\(r.stderr)")
        // Generation rounds activations to 8 bits for the tied Q8_0 output matrix, as
        // llama.cpp does, and then this 135M model answers as llama.cpp's greedy chat does
        // on the same file ("L'Étoile, …"), not "Paris" (which the float path gave): the
        // reference is llama.cpp's answer, asked live through llama-cpp-python.
        let reference = try llamaCppGreedyChat(ReferenceModel.path, prompt: "What is the capital of France?", maxTokens: 24)
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == reference.trimmingCharacters(in: .whitespacesAndNewlines),
                "ours: \(r.stdout)\nllama.cpp: \(reference)")
        // Greedy decoding is deterministic.
        #expect(try runCLI(args).stdout == r.stdout)
    }

    /// llama.cpp's greedy chat answer (llama-cpp-python, loaded as scripts/reference does).
    func llamaCppGreedyChat(_ model: String, prompt: String, maxTokens: Int) throws -> String {
        let script = """
            import json, sys
            sys.path.insert(0, "scripts/reference")
            from llamacpp_golden import load_llama
            llm = load_llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False, seed=0)
            out = llm.create_chat_completion(messages=[{"role": "user", "content": sys.argv[2]}], temperature=0, max_tokens=int(sys.argv[3]))
            print(json.dumps(out["choices"][0]["message"]["content"]))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, model, prompt, "\(maxTokens)"]
        process.currentDirectoryURL = URL(fileURLWithPath: Repository.root)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "llama-cpp-python failed")
        return try JSONDecoder().decode(String.self, from: data)
    }

    @Test(.enabled(if: ReferenceModel.enabled)) func sameSeedSameText() throws {
        let args = ["generate", "--model", ReferenceModel.path, "--prompt", "Once upon a time", "--temperature", "0.9",
                    "--max-tokens", "20", "--seed", "7"]
        let a = try runCLI(args)
        let b = try runCLI(args)
        let c = try runCLI(Array(args.dropLast()) + ["8"])
        #expect(a.status == 0 && a.stdout == b.stdout)
        #expect(a.stdout != c.stdout)
    }

    @Test func tokenizeJSON() throws {
        let r = try runCLI(["tokenize", "--model", Repository.path("models/tiny-q4_1.gguf"), "--text", "<|im_start|>hi", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((object["ids"] as! [Int]).first == 1)
        #expect((object["pieces"] as! [String]).joined() == "<|im_start|>hi")
    }

    @Test func evalReportsNLLAndRejectsBadData() throws {
        let dir = makeTemporaryDirectory("eval")
        let model = Repository.path("models/tiny-q4_0.gguf")
        let good = dir + "/good.jsonl"
        try "{\"text\": \"the cat sat on the mat\"}\n{\"prompt\": \"a b\", \"completion\": \" c d\"}\n".write(toFile: good, atomically: true, encoding: .utf8)
        let r = try runCLI(["eval", "--model", model, "--data", good, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Double]
        #expect(object["tokens"]! > 0 && object["nll"]! > 0 && abs(object["ppl"]! - exp(object["nll"]!)) < 1e-6 * object["ppl"]!)

        let empty = dir + "/empty.jsonl"
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        let e = try runCLI(["eval", "--model", model, "--data", empty])
        #expect(e.status != 0 && e.stderr.contains("empty"))

        let malformed = dir + "/bad.jsonl"
        try "{\"text\": \"ok\"}\n{\"text\": \"missing quote}\n".write(toFile: malformed, atomically: true, encoding: .utf8)
        let m = try runCLI(["eval", "--model", model, "--data", malformed])
        #expect(m.status != 0 && m.stderr.contains("bad.jsonl:2"), "\(m.stderr)")
    }

    @Test func promptLongerThanContextIsRefused() throws {
        let long = String(repeating: "word ", count: 400)
        let r = try runCLI(["generate", "--model", Repository.path("models/tiny-q4_0.gguf"), "--prompt", long, "--max-tokens", "10"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("context"), "\(r.stderr)")
    }

    @Test func unsupportedArchitectureIsRefused() throws {
        // A copy of a tiny model whose metadata names another architecture.
        let dir = makeTemporaryDirectory("arch")
        let path = dir + "/gpt2.gguf"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: Repository.path("models/tiny-q4_0.gguf")))
        let needle = Data("llama".utf8)
        if let range = bytes.range(of: needle) { bytes.replaceSubrange(range, with: Data("mamba".utf8)) }
        try bytes.write(to: URL(fileURLWithPath: path))
        let r = try runCLI(["generate", "--model", path, "--prompt", "hi"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("architecture 'mamba' is not supported"), "\(r.stderr)")
    }
}
