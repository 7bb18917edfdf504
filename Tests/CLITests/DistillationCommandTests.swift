import Foundation
import TestSupport
import Testing

/// `train --loss kl`, as a user runs it, on a tiny model.
@Suite struct DistillationCommandTests {
    let model = Repository.path("models/tiny-q4_0.gguf")
    let data = Repository.path("examples/paris/train.jsonl")

    /// A teacher reads the student's token ids, and a new token is none of its ids: distilling
    /// while training a new token is refused before any work, with a first line naming the loss and
    /// the token, and no adapter is written. QZO with the same teacher trains.
    @Test func newTokensCannotBeDistilled() throws {
        let dir = makeTemporaryDirectory("distillation")
        for method in ["textual-inversion", "qzo,textual-inversion"] {
            let r = try runCLI(["train", "--method", method, "--model", model, "--data", data, "--new-token", " <x>",
                                "--loss", "kl", "--teacher", model, "--steps", "2", "--batch", "2", "--out", dir + "/ti.gguf"])
            let first = r.stderr.split(separator: "\n").first.map(String.init) ?? ""
            #expect(r.status != 0 && first.contains("--loss kl") && first.contains("' <x>'"),
                    "\(method): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/ti.gguf"))
        }
        let qzo = try runCLI(["train", "--method", "qzo", "--model", model, "--data", data, "--loss", "kl", "--teacher", model,
                              "--steps", "2", "--batch", "2", "--out", dir + "/qzo.gguf"])
        #expect(qzo.status == 0, "\(qzo.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/qzo.gguf"))
    }
}
