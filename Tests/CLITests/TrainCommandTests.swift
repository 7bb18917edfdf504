import Foundation
import GGUF
import TestSupport
import Testing

/// `train`, `export`, adapters and checkpoints, run as a user runs them, on a tiny model.
@Suite struct TrainCommandTests {
    let model = Repository.path("models/tiny-q4_1.gguf")
    let data = Repository.path("examples/paris/train.jsonl")
    let held = Repository.path("examples/paris/heldout.jsonl")

    func train(_ extra: [String], out: String) throws -> ProcessResult {
        try runCLI(["train", "--model", model, "--data", data, "--new-token", " <x>", "--steps", "12", "--batch", "4",
                    "--lr", "0.05", "--eps", "0.01", "--out", out] + extra)
    }

    @Test func textualInversionWritesAnAdapterOthersCanUse() throws {
        let dir = makeTemporaryDirectory("train")
        let r = try train(["--eval-data", held, "--eval-every", "4", "--log-json", dir + "/log.jsonl"], out: dir + "/a.gguf")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("held-out NLL"))
        #expect(FileManager.default.fileExists(atPath: dir + "/a.svg"))
        let svg = try String(contentsOfFile: dir + "/a.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("held-out NLL"))
        let log = try String(contentsOfFile: dir + "/log.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(log.count == 13, "step 0 (initial evaluation) and 12 steps")

        // Same seed, same data, same flags: the same adapter, bit for bit.
        let again = try train(["--eval-data", held, "--eval-every", "4"], out: dir + "/b.gguf")
        #expect(again.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/a.gguf")) == Data(contentsOf: URL(fileURLWithPath: dir + "/b.gguf")))

        // eval and generate apply the adapter; another model refuses it.
        let e = try runCLI(["eval", "--model", model, "--data", held, "--adapter", dir + "/a.gguf", "--json"])
        #expect(e.status == 0, "\(e.stderr)")
        let g = try runCLI(["generate", "--model", model, "--prompt", "the <x>", "--max-tokens", "5", "--adapter", dir + "/a.gguf"])
        #expect(g.status == 0, "\(g.stderr)")
        let wrong = try runCLI(["eval", "--model", Repository.path("models/tiny-q4_0.gguf"), "--data", held, "--adapter", dir + "/a.gguf"])
        #expect(wrong.status != 0 && wrong.stderr.contains("trained on the model"), "\(wrong.stderr)")
    }

    /// --keep-best keeps the adapter of the lowest held-out NLL in the run's log (here an
    /// evaluation in the middle of the run), records its step, and a run interrupted and
    /// resumed keeps the same one.
    @Test func keepBestKeepsTheBestEvaluation() throws {
        let dir = makeTemporaryDirectory("keep-best")
        func run(_ steps: Int, _ out: String, _ extra: [String] = []) throws -> ProcessResult {
            try runCLI(["train", "--model", model, "--data", data, "--eval-data", held, "--new-token", " <x>", "--steps", "\(steps)",
                        "--batch", "4", "--lr", "0.05", "--eps", "0.01", "--eval-every", "4", "--keep-best", "--out", out] + extra)
        }
        let r = try run(40, dir + "/a.gguf", ["--log-json", dir + "/log.jsonl"])
        #expect(r.status == 0, "\(r.stderr)")
        let evals = try String(contentsOfFile: dir + "/log.jsonl", encoding: .utf8).split(separator: "\n").compactMap { line in
            (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]).flatMap { j in
                (j["eval_nll"] as? Double).map { (step: j["step"] as! Int, nll: $0) }
            }
        }
        let best = evals.min { $0.nll < $1.nll }!
        #expect(best.step > 0 && best.step < 40, "this setting's best evaluation is mid-run: \(evals)")
        let kept = try #require(recordedEvaluation(dir + "/a.gguf"))
        #expect(kept.step == best.step && kept.nll == best.nll)
        let e = try runCLI(["eval", "--model", model, "--data", held, "--adapter", dir + "/a.gguf", "--json"])
        let nll = (try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Double])["nll"]!
        #expect(abs(nll - best.nll) < 1e-4, "eval of the kept adapter \(nll), recorded \(best.nll)")

        // Interrupted after 20 steps, resumed to 40: the same kept adapter, bit for bit.
        let ckpt = ["--checkpoint-dir", dir + "/ckpt", "--checkpoint-every", "10"]
        #expect(try run(20, dir + "/b.gguf", ckpt).status == 0)
        let resumed = try run(40, dir + "/b.gguf", ckpt + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        // The kept values bit for bit, and the same recorded evaluation. (When the best
        // evaluation falls in the first segment, its settings record that segment's --steps 20.)
        let ea = try GGUFFile(path: dir + "/a.gguf"), eb = try GGUFFile(path: dir + "/b.gguf")
        let ta = try #require(ea.tensor(named: "textual_inversion.embedding")), tb = try #require(eb.tensor(named: "textual_inversion.embedding"))
        #expect(Array(ea.bytes(of: ta)) == Array(eb.bytes(of: tb)))
        #expect(recordedEvaluation(dir + "/b.gguf")?.step == kept.step && recordedEvaluation(dir + "/b.gguf")?.nll == kept.nll)
    }

    /// The step and held-out NLL an adapter records in its training settings.
    func recordedEvaluation(_ path: String) -> (step: Int, nll: Double)? {
        guard let file = try? GGUFFile(path: path), let text = file.metadata.string("edge_finetune.training"),
              let training = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let step = training["step"] as? Int, let nll = training["held_out_nll"] as? Double else { return nil }
        return (step, nll)
    }

    @Test func qzoTrainsExportsAndTheExportEvaluatesAsReported() throws {
        let dir = makeTemporaryDirectory("qzo")
        let q = Repository.path("models/tiny-q4_0.gguf")
        let text = Repository.path("examples/qzo/train.jsonl")
        let r = try runCLI(["train", "--method", "qzo", "--model", q, "--data", text, "--steps", "6", "--batch", "4",
                            "--lr", "0.05", "--eps", "0.01", "--out", dir + "/q.gguf"])
        #expect(r.status == 0, "\(r.stderr)")
        let x = try runCLI(["export", "--model", q, "--adapter", dir + "/q.gguf", "--out", dir + "/exported.gguf",
                            "--eval-data", Repository.path("examples/qzo/heldout.jsonl")])
        #expect(x.status == 0, "\(x.stderr)")
        let reported = x.stdout.split(separator: "\n").first { $0.contains("held-out NLL") }.flatMap { line in
            line.split(separator: " ").compactMap { Double($0) }.first
        }
        let e = try runCLI(["eval", "--model", dir + "/exported.gguf", "--data", Repository.path("examples/qzo/heldout.jsonl"), "--json"])
        let nll = (try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Double])["nll"]!
        #expect(reported != nil && abs(reported! - nll) < 1e-4, "export reported \(String(describing: reported)), eval gives \(nll)")
    }

    /// QZO and textual inversion in one run: scales and the new token, one adapter, one export.
    @Test func combinedMethodTrainsBoth() throws {
        let dir = makeTemporaryDirectory("combined")
        let r = try train(["--method", "qzo,textual-inversion", "--eval-data", held], out: dir + "/c.gguf")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("block scales") && r.stderr.contains("new token"))
        let x = try runCLI(["export", "--model", model, "--adapter", dir + "/c.gguf", "--out", dir + "/x.gguf"])
        #expect(x.status == 0 && x.stdout.contains("new token") && x.stdout.contains("block scales"), "\(x.stdout)\(x.stderr)")
        let a = try runCLI(["eval", "--model", model, "--adapter", dir + "/c.gguf", "--data", held, "--json"])
        let b = try runCLI(["eval", "--model", dir + "/x.gguf", "--data", held, "--json"])
        let na = (try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as! [String: Double])["nll"]!
        let nb = (try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as! [String: Double])["nll"]!
        // The export rounds scales to half precision and the new row to Q8_0: close, not equal.
        #expect(abs(na - nb) < 0.01, "adapter \(na), exported \(nb)")
    }

    @Test func badInputsGiveClearErrors() throws {
        let dir = makeTemporaryDirectory("bad")
        try "".write(toFile: dir + "/empty.jsonl", atomically: true, encoding: .utf8)
        let empty = try runCLI(["train", "--model", model, "--data", dir + "/empty.jsonl", "--new-token", " <x>", "--out", dir + "/x.gguf"])
        #expect(empty.status != 0 && empty.stderr.contains("empty"), "\(empty.stderr)")
        let dup = try runCLI(["train", "--model", model, "--data", data, "--new-token", "<|im_end|>", "--out", dir + "/x.gguf"])
        #expect(dup.status != 0 && dup.stderr.contains("already exists"), "\(dup.stderr)")
        let multi = try runCLI(["train", "--model", model, "--data", data, "--new-token", " <x>", "--init-token", "two words here",
                                "--out", dir + "/x.gguf"])
        #expect(multi.status != 0 && multi.stderr.contains("--init-token"), "\(multi.stderr)")
        let noToken = try runCLI(["train", "--model", model, "--data", Repository.path("examples/qzo/train.jsonl"), "--new-token", " <x>",
                                  "--out", dir + "/x.gguf"])
        #expect(noToken.status != 0 && noToken.stderr.contains("literally"), "\(noToken.stderr)")
        // An update that overflows: stop, say at which step, keep the last good adapter.
        let nan = try train(["--lr", "3e38"], out: dir + "/nan.gguf")
        #expect(nan.status != 0 && nan.stderr.contains("at step"), "\(nan.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/nan.gguf"))
    }

    /// --share-prefix changes only the rounding: every step's loss (and so the trajectory)
    /// is the unshared run's within float32 noise. The run says how many positions it
    /// shares; it is part of the run's identity, so a resume with the other setting is
    /// refused, naming it; QZO refuses it.
    @Test func sharePrefixGivesTheUnsharedLosses() throws {
        let dir = makeTemporaryDirectory("share-prefix")
        let ckpt = ["--checkpoint-dir", dir + "/ck", "--checkpoint-every", "4"]
        func losses(_ path: String) throws -> [Double] {
            try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
                (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["loss"] as? Double
            }
        }
        let off = try train(["--log-json", dir + "/off.jsonl"], out: dir + "/off.gguf")
        let on = try train(["--share-prefix", "--log-json", dir + "/on.jsonl"] + ckpt, out: dir + "/on.gguf")
        #expect(off.status == 0 && on.status == 0, "\(off.stderr)\(on.stderr)")
        #expect(!off.stderr.contains("shared prefix"))
        // The Paris lines put " <x>" (Paris) after a few words: some positions, not all, are shared.
        let said = on.stderr.split(separator: "\n").first { $0.contains("shared prefix: ") }
        let counts = said.map { $0.components(separatedBy: "shared prefix: ")[1].split(separator: " ").compactMap { Int($0) } }
        #expect(counts.map { $0.count >= 2 && $0[0] > 0 && $0[0] < $0[1] } == true, "\(on.stderr)")
        let a = try losses(dir + "/off.jsonl"), b = try losses(dir + "/on.jsonl")
        #expect(a.count == 12 && b.count == 12)
        for (x, y) in zip(a, b) { #expect(abs(x - y) <= 1e-5 * abs(x), "step losses \(a) vs \(b)") }

        // The adapter records it; a resume with the other setting is another run.
        let training = try GGUFFile(path: dir + "/on.gguf").metadata.string("edge_finetune.training") ?? ""
        #expect(training.contains("\"share_prefix\":true"), "\(training)")
        let other = try train(["--no-share-prefix", "--resume", "--steps", "16"] + ckpt, out: dir + "/on.gguf")
        #expect(other.status != 0 && other.stderr.contains("another run") && other.stderr.contains("share_prefix"), "\(other.stderr)")
        let same = try train(["--share-prefix", "--resume", "--steps", "16"] + ckpt, out: dir + "/on.gguf")
        #expect(same.status == 0 && same.stderr.contains("resuming from"), "\(same.stderr)")

        let qzo = try train(["--share-prefix", "--method", "qzo,textual-inversion"], out: dir + "/q.gguf")
        #expect(qzo.status != 0 && qzo.stderr.contains("--share-prefix"), "\(qzo.stderr)")
    }

    /// --ddc bounds textual inversion's directional derivatives too: step 1 (the same θ,
    /// batch and z in both runs) logs the unclipped run's d cut to ±C, and no step's |d|
    /// exceeds C. Without --ddc, textual inversion alone does not clip.
    @Test func ddcClipsTextualInversionWhenAsked() throws {
        let dir = makeTemporaryDirectory("ddc-ti")
        func derivatives(_ path: String) throws -> [Float] {
            try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
                ((try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["d"] as? [Double])?.first.map(Float.init)
            }
        }
        let free = try train(["--steps", "4", "--log-json", dir + "/free.jsonl"], out: dir + "/free.gguf")
        #expect(free.status == 0, "\(free.stderr)")
        let d = try derivatives(dir + "/free.jsonl")
        #expect(d.count == 4 && d[0] != 0, "\(d)")   // (--ddc 0 would mean no clipping)
        let c = abs(d[0]) / 2
        let clipped = try train(["--steps", "4", "--ddc", "\(c)", "--log-json", dir + "/clipped.jsonl"], out: dir + "/clipped.gguf")
        #expect(clipped.status == 0, "\(clipped.stderr)")
        let e = try derivatives(dir + "/clipped.jsonl")
        #expect(e.count == 4 && e[0] == (d[0] < 0 ? -c : c), "\(d) \(e)")
        #expect(e.allSatisfy { abs($0) <= c }, "\(e)")
        let training = try GGUFFile(path: dir + "/free.gguf").metadata.string("edge_finetune.training") ?? ""
        #expect(training.contains("\"ddc\":0"), "\(training)")
    }

    /// `--max-update` reaches the run: a rate that would throw the row far is bounded at every
    /// step (the log says so), the adapter records the bound, and a bad value is refused.
    @Test func maxUpdateBoundsEveryLongStep() throws {
        let dir = makeTemporaryDirectory("max-update")
        let r = try train(["--steps", "3", "--lr", "50", "--max-update", "0.1", "--log-json", dir + "/log.jsonl"], out: dir + "/a.gguf")
        #expect(r.status == 0, "\(r.stderr)")
        let steps = try String(contentsOfFile: dir + "/log.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["d"] != nil }
        #expect(steps.count == 3 && steps.allSatisfy { $0["bounded"] as? Int == 1 }, "\(steps)")
        let training = try GGUFFile(path: dir + "/a.gguf").metadata.string("edge_finetune.training") ?? ""
        #expect(training.contains("\"max_update\":0.1"), "\(training)")
        let bad = try train(["--max-update", "-1"], out: dir + "/b.gguf")
        #expect(bad.status != 0 && bad.stderr.contains("--max-update") && !FileManager.default.fileExists(atPath: dir + "/b.gguf"), "\(bad.stderr)")
    }

    /// A run killed with SIGKILL at a random step and resumed ends with the same adapter
    /// as an uninterrupted run; a damaged newest checkpoint is skipped with a warning.
    @Test func killedRunResumesToTheSameAdapter() throws {
        let dir = makeTemporaryDirectory("kill")
        let steps = 2000
        func args(_ out: String, _ ckpt: String) -> [String] {
            ["train", "--model", model, "--data", data, "--new-token", " <x>", "--steps", "\(steps)", "--batch", "2",
             "--lr", "0.05", "--eps", "0.01", "--optimizer", "zo-sgd", "--opt", "momentum=0.9", "--subspace", "project",
             "--subspace-period", "16", "--out", out, "--checkpoint-dir", ckpt, "--checkpoint-every", "7",
             "--log-json", out + ".jsonl"]
        }
        let full = try runCLI(args(dir + "/full.gguf", dir + "/ck-full"))
        #expect(full.status == 0, "\(full.stderr)")

        // Start the same run and kill it once its log shows a random step.
        let target = Int.random(in: 100...(steps - 300))
        var pid: pid_t = 0
        let argv = ([Products.cli] + args(dir + "/part.gguf", dir + "/ck")).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        #expect(posix_spawn(&pid, Products.cli, nil, nil, argv, environ) == 0)
        var reached = 0
        while reached < target {
            usleep(2000)
            let log = (try? String(contentsOfFile: dir + "/part.gguf.jsonl", encoding: .utf8)) ?? ""
            reached = log.split(separator: "\n").count - 1
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { break }
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(reached < steps, "the run was killed before it finished (at step \(reached) of \(steps))")

        // Damage the newest checkpoint: resume must skip it, naming it.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/ck").filter { $0.hasSuffix(".efck") }.sorted()
        #expect(files.count >= 1)
        if files.count >= 2 {
            let newest = dir + "/ck/" + files.last!
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: newest)))
            bytes[bytes.count / 2] ^= 0xFF
            try Data(bytes).write(to: URL(fileURLWithPath: newest))
        }
        let resumed = try runCLI(args(dir + "/part.gguf", dir + "/ck") + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming from"), "\(resumed.stderr)")
        if files.count >= 2 { #expect(resumed.stderr.contains("skipping checkpoint") && resumed.stderr.contains(files.last!)) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/full.gguf")) == Data(contentsOf: URL(fileURLWithPath: dir + "/part.gguf")),
                "killed at step \(reached), resumed: the adapter must equal the uninterrupted run's")
    }
}
