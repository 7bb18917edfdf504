import Foundation
import TestSupport
import Testing

/// `--subspace embeddings` as a user runs it, on a tiny model (width 64).
@Suite struct EmbeddingSubspaceCLITests {
    let model = Repository.path("models/tiny-q4_1.gguf")
    let data = Repository.path("examples/paris/train.jsonl")

    func train(_ extra: [String], out: String) throws -> ProcessResult {
        try runCLI(["train", "--model", model, "--data", data, "--new-token", " <x>", "--steps", "3", "--batch", "2",
                    "--lr", "0.05", "--eps", "0.01", "--out", out] + extra)
    }

    /// The error line of a refused run: one line, naming the flag.
    func errorLine(_ r: ProcessResult) -> String? {
        r.stderr.split(separator: "\n").first { $0.hasPrefix("Error:") }.map(String.init)
    }

    @Test func badRanksAreRefusedInOneLineNamingTheFlag() throws {
        let dir = makeTemporaryDirectory("emb-bad")
        for (extra, expected) in [(["--subspace", "embeddings", "--subspace-rank", "0"], "--subspace-rank must be at least 1"),
                                  (["--subspace", "embeddings", "--subspace-rank", "65"], "--subspace-rank must be in 1...64"),
                                  (["--subspace-rank", "8"], "--subspace-rank applies to --subspace embeddings")] {
            let r = try train(extra, out: dir + "/x.gguf")
            #expect(r.status != 0)
            let line = errorLine(r)
            #expect(line?.contains(expected) == true, "\(extra): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/x.gguf"))
        }
    }

    /// The run says what the basis cost; the same flags give the same adapter.
    @Test func reportsTheBasisAndIsDeterministic() throws {
        let dir = makeTemporaryDirectory("emb-run")
        let a = try train(["--subspace", "embeddings", "--subspace-rank", "8"], out: dir + "/a.gguf")
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stderr.contains("embedding subspace: the top 8 of 64 principal directions"), "\(a.stderr)")
        let b = try train(["--subspace", "embeddings", "--subspace-rank", "8", "--threads", "1"], out: dir + "/b.gguf")
        #expect(b.status == 0, "\(b.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/a.gguf")) == Data(contentsOf: URL(fileURLWithPath: dir + "/b.gguf")))
        let off = try train([], out: dir + "/off.gguf")
        #expect(off.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/a.gguf")) != Data(contentsOf: URL(fileURLWithPath: dir + "/off.gguf")))
    }
}
