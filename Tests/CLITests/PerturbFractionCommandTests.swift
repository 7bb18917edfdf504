import Foundation
import TestSupport
import Testing

/// `train --perturb-fraction`, as a user runs it, on a tiny model.
@Suite struct PerturbFractionCommandTests {
    let model = Repository.path("models/tiny-q4_0.gguf")
    let data = Repository.path("examples/paris/train.jsonl")

    func train(_ fraction: String, out: String) throws -> ProcessResult {
        try runCLI(["train", "--method", "qzo", "--model", model, "--data", data, "--steps", "3", "--batch", "4",
                    "--perturb-fraction=\(fraction)", "--out", out])
    }

    /// A fraction outside (0, 1] is a one-line usage error naming the flag; a valid one trains.
    @Test func badFractionsAreUsageErrorsAndAGoodOneTrains() throws {
        let dir = makeTemporaryDirectory("perturb-fraction")
        for bad in ["0", "-0.5", "1.5", "nan", "inf"] {
            let r = try train(bad, out: dir + "/bad.gguf")
            let first = r.stderr.split(separator: "\n").first.map(String.init) ?? ""
            #expect(r.status != 0 && first.contains("--perturb-fraction") && first.contains("(0, 1]"), "\(bad): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/bad.gguf"))
        }
        let good = try train("0.5", out: dir + "/good.gguf")
        #expect(good.status == 0, "\(good.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/good.gguf"))
    }
}
