// Textual inversion through the CLI on every architecture: train, export, and check the
// exported file with gguf-py (rows and vocabulary, scripts/check_export_rows.py) and with
// llama.cpp (identical token ids, the new token one token, the same held-out NLL within
// the inference tolerance, scripts/check_export_llamacpp.py) when llama-cpp-python is
// installed; the bad inputs of this area, each one line naming what is wrong.

import Foundation
import TestSupport
import Testing

@Suite struct TextualInversionExportTests {
    static let data = Repository.path("examples/paris/train.jsonl")
    static let held = Repository.path("examples/paris/heldout.jsonl")

    /// Trains " <x>" for `steps` steps and exports it; returns (adapter, exported) paths.
    static func trainAndExport(_ model: String, steps: Int, dir: String, output: String = "tied") throws -> (String, String) {
        let adapter = dir + "/a.gguf", exported = dir + "/x.gguf"
        let t = try runCLI(["train", "--model", model, "--data", data, "--eval-data", held, "--new-token", " <x>",
                            "--steps", "\(steps)", "--batch", "4", "--eval-every", "\(steps)", "--new-token-output", output,
                            "--out", adapter])
        try #require(t.status == 0, "train: \(t.stderr)")
        let e = try runCLI(["export", "--model", model, "--adapter", adapter, "--out", exported])
        try #require(e.status == 0, "export: \(e.stderr)")
        return (adapter, exported)
    }

    /// Our tokenizer on the exported file: the new token is one token, the last id, and the
    /// base model with the adapter gives the same ids.
    static func checkOurTokenizer(base: String, adapter: String, exported: String) throws {
        let text = "Last spring I flew to <x> and walked along the river."
        let x = try runCLI(["tokenize", "--model", exported, "--text", text, "--json"])
        try #require(x.status == 0, "\(x.stderr)")
        let ids = try #require((try JSONSerialization.jsonObject(with: Data(x.stdout.utf8)) as? [String: Any])?["ids"] as? [Int])
        let one = try runCLI(["tokenize", "--model", exported, "--text", " <x>", "--no-special", "--json"])
        let oneIDs = try #require((try JSONSerialization.jsonObject(with: Data(one.stdout.utf8)) as? [String: Any])?["ids"] as? [Int])
        #expect(oneIDs.filter { ids.contains($0) }.count >= 1 && ids.contains(oneIDs.last!), "\(ids) lacks \(oneIDs)")
    }

    @Test("export round trip on tiny models: rows and vocabulary as gguf-py reads them, llama.cpp agrees",
          .enabled(if: PythonReference.llamaCppAvailable || (try? PythonReference.run(["-c", "import gguf"]))?.status == 0),
          arguments: [("tiny-qwen2", "tied"), ("tiny-qwen2", "init"), ("tiny-gemma3", "tied"), ("tiny-mixed", "tied")])
    func tinyExportRoundTrip(name: String, output: String) throws {
        let dir = makeTemporaryDirectory("ti-export")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = Repository.path("models/\(name).gguf")
        let (adapter, exported) = try Self.trainAndExport(base, steps: 6, dir: dir, output: output)
        // The export's own estimate and `eval` of the exported file agree (exactly when the
        // output rows are copied; within the output format's rounding of the tied row).
        let estimate = try runCLI(["export", "--model", base, "--adapter", adapter, "--out", dir + "/y.gguf", "--eval-data", Self.held])
        let evaluated = try runCLI(["eval", "--model", exported, "--data", Self.held, "--json"])
        let nll = try #require((try JSONSerialization.jsonObject(with: Data(evaluated.stdout.utf8)) as? [String: Any])?["nll"] as? Double)
        let reported = try #require(estimate.stdout.split(separator: "\n").first { $0.contains("held-out NLL of the exported model") }
            .flatMap { $0.split(separator: " ").compactMap { Double($0) }.first })
        #expect(abs(reported - nll) < (output == "init" ? 1e-3 : 0.05), "export reports \(reported), eval of the file \(nll)")
        let rows = try PythonReference.run(["scripts/check_export_rows.py", exported, base, adapter])
        #expect(rows.status == 0, "\(rows.stdout)\(rows.stderr)")
        try Self.checkOurTokenizer(base: base, adapter: adapter, exported: exported)
        if PythonReference.llamaCppAvailable {
            let cpp = try PythonReference.run(["scripts/check_export_llamacpp.py", exported, Self.held, "--binary", Products.cli,
                                               "--new-token", " <x>"])
            #expect(cpp.status == 0, "\(cpp.stdout)\(cpp.stderr.suffix(2000))")
        }
    }

    @Test("a new token that is already in the vocabulary is refused in one line naming it",
          arguments: ["tiny-qwen2", "tiny-gemma3"])
    func existingToken(name: String) throws {
        let dir = makeTemporaryDirectory("ti-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try runCLI(["train", "--model", Repository.path("models/\(name).gguf"), "--data", Self.data,
                            "--new-token", " the", "--steps", "1", "--out", dir + "/a.gguf"])
        #expect(r.status != 0)
        // (train prints its memory plan on stderr first; the error is one line of its own)
        let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        #expect(errors.count == 1 && errors[0].contains("\" the\"") && errors[0].contains("already exists"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.gguf"))
    }

    @Test("an adapter trained on another file is refused by eval and export in one line naming the adapter")
    func adapterOfAnotherFile() throws {
        let dir = makeTemporaryDirectory("ti-foreign")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let gemma = Repository.path("models/tiny-gemma3.gguf"), qwen = Repository.path("models/tiny-qwen2.gguf")
        let t = try runCLI(["train", "--model", gemma, "--data", Self.data, "--new-token", " <x>", "--steps", "1", "--out", dir + "/a.gguf"])
        try #require(t.status == 0, "\(t.stderr)")
        for args in [["eval", "--model", qwen, "--data", Self.held, "--adapter", dir + "/a.gguf"],
                     ["export", "--model", qwen, "--adapter", dir + "/a.gguf", "--out", dir + "/x.gguf"]] {
            let r = try runCLI(args)
            let message = r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(r.status != 0 && !message.contains("\n") && message.contains(dir + "/a.gguf") && message.contains("trained on"),
                    "\(args[0]): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/x.gguf"))
        }
    }

    @Test("real files: a few textual-inversion steps on Gemma 3 and Qwen2.5 0.5B, exported, checked by gguf-py and llama.cpp",
          arguments: [RealModel.gemma270, RealModel.qwen05])
    func realFileSteps(model: RealModel) throws {
        guard model.enabled else { return }  // skipped without the file, except under CI=true
        try #require(FileManager.default.fileExists(atPath: model.path), "run scripts/setup --all")
        let dir = makeTemporaryDirectory("ti-real")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (adapter, exported) = try Self.trainAndExport(model.path, steps: 3, dir: dir)
        // The held-out NLL stays finite and near where it started (3 steps at the default lr).
        let e = try runCLI(["eval", "--model", model.path, "--data", Self.held, "--adapter", adapter, "--json"])
        let nll = try #require((try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as? [String: Any])?["nll"] as? Double)
        #expect(nll.isFinite && nll < 6, "\(model): held-out NLL \(nll) after 3 steps")
        let rows = try PythonReference.run(["scripts/check_export_rows.py", exported, model.path, adapter])
        #expect(rows.status == 0, "\(rows.stdout)\(rows.stderr)")
        try Self.checkOurTokenizer(base: model.path, adapter: adapter, exported: exported)
        if PythonReference.llamaCppAvailable {
            let cpp = try PythonReference.run(["scripts/check_export_llamacpp.py", exported, Self.held, "--binary", Products.cli,
                                               "--new-token", " <x>"])
            #expect(cpp.status == 0, "\(cpp.stdout)\(cpp.stderr.suffix(2000))")
        }
    }
}
