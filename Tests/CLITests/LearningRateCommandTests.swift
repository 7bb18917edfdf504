import Foundation
import TestSupport
import Testing

/// `train --lr-schedule/--warmup/--lr-min-ratio` and per-set `--lr`/`--eps`, as a user runs them.
@Suite struct LearningRateCommandTests {
    let model = Repository.path("models/tiny-q4_1.gguf")
    let data = Repository.path("examples/paris/train.jsonl")

    func train(_ extra: [String], out: String) throws -> ProcessResult {
        try runCLI(["train", "--model", model, "--data", data, "--new-token", " <x>", "--steps", "10", "--batch", "4",
                    "--out", out] + extra)
    }

    func log(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// The JSON log records each step's rate: 0.8 warming up over 2 steps, then a straight
    /// line to 0.8 × 0.25 at step 10.
    @Test func theLogRecordsEachStepsRate() throws {
        let dir = makeTemporaryDirectory("lr-log")
        let r = try train(["--lr", "0.8", "--lr-schedule", "linear", "--warmup", "2", "--lr-min-ratio", "0.25",
                           "--log-json", dir + "/l.jsonl"], out: dir + "/a.gguf")
        #expect(r.status == 0, "\(r.stderr)")
        let rates: [Double] = try log(dir + "/l.jsonl").map { $0["lr"] as! Double }
        var want: [Double] = [0.4, 0.8]
        for t in 3...10 { want.append(0.8 - 0.6 * Double(t - 2) / 8) }
        #expect(rates.count == 10)
        for (got, w) in zip(rates, want) { #expect(abs(got - w) < 1e-6, "\(rates)") }
        // The constant default logs the base rate at every step.
        let c = try train(["--lr", "0.8", "--log-json", dir + "/c.jsonl"], out: dir + "/c.gguf")
        #expect(c.status == 0, "\(c.stderr)")
        let constant: [Double] = try log(dir + "/c.jsonl").map { $0["lr"] as! Double }
        #expect(constant.count == 10 && constant.allSatisfy { abs($0 - 0.8) < 1e-7 }, "\(constant)")
    }

    /// Bad values are refused before any work, in one line naming the flag.
    @Test(arguments: [
        (["--warmup=-1"], "--warmup"), (["--warmup", "11"], "--warmup"), (["--lr-schedule", "step"], "--lr-schedule"),
        (["--lr-min-ratio", "1.5"], "--lr-min-ratio"), (["--lr-min-ratio=-0.5"], "--lr-min-ratio"),
        (["--lr", "bogus=1"], "--lr"), (["--lr", "qzo=1"], "--lr"), (["--lr", "textual-inversion=x"], "--lr"),
        (["--lr", "textual-inversion"], "--lr"), (["--eps", "textual-inversion=0"], "--eps"), (["--lr", "-1"], "--lr"),
        (["--lr", "textual-inversion=1,textual-inversion=2"], "--lr"),
    ])
    func badValuesAreRefusedInOneLine(_ flags: [String], _ flag: String) throws {
        let dir = makeTemporaryDirectory("lr-bad")
        let r = try train(flags, out: dir + "/a.gguf")
        let first = r.stderr.split(separator: "\n").first.map(String.init) ?? ""
        #expect(r.status != 0 && first.hasPrefix("Error: ") && first.contains(flag), "\(flags): \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.gguf"))
    }

    /// The combined method: per-set values reach the log; an optimizer plugin refuses rates
    /// that differ, naming itself and the built-in zo-sgd, and takes one rate for both sets.
    @Test func perSetRatesOnTheCommandLine() throws {
        let dir = makeTemporaryDirectory("lr-sets")
        let combined = ["--method", "qzo,textual-inversion", "--steps", "3"]
        let r = try train(combined + ["--lr", "qzo=0,textual-inversion=0.5", "--lr-schedule", "cosine", "--log-json", dir + "/l.jsonl"],
                          out: dir + "/a.gguf")
        #expect(r.status == 0, "\(r.stderr)")
        let first = try #require(try log(dir + "/l.jsonl").first)
        let sets = try #require(first["lr_sets"] as? [String: Double])
        let factor = 0.5 * (1 + cos(Double.pi / 3))     // step 1 of a 3-step cosine
        #expect(sets["qzo"] == 0 && abs(sets["textual-inversion"]! - 0.5 * factor) < 1e-6, "\(sets)")
        let plugin = try train(combined + ["--optimizer", "zo-adam", "--lr", "textual-inversion=0.5"], out: dir + "/b.gguf")
        let line = plugin.stderr.split(separator: "\n").first.map(String.init) ?? ""
        #expect(plugin.status != 0 && line.contains("zo-adam") && line.contains("zo-sgd"), "\(plugin.stderr)")
        let one = try train(combined + ["--optimizer", "zo-adam", "--log-json", dir + "/one.jsonl"], out: dir + "/c.gguf")
        #expect(one.status == 0, "\(one.stderr)")
        let lines = try log(dir + "/one.jsonl")
        #expect(lines.allSatisfy { $0["lr_sets"] == nil })
    }
}
