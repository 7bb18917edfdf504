import Foundation
import GGUF
import TestSupport
import Testing

/// The commands as a hostile user runs them: outputs over inputs, devices, FIFOs and
/// directories where files belong, full disks on stdout and stderr, absurd numbers, shared
/// checkpoint directories, bad adapters. Each ends with one line and a clear exit status.
@Suite struct HardeningCommandTests {
    let model = Repository.path("models/tiny-q4_1.gguf")
    let data = Repository.path("examples/paris/train.jsonl")
    let held = Repository.path("examples/paris/heldout.jsonl")

    func digest(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// A copy of the tiny model in `dir` (so a test that fails cannot damage the repository's).
    func copyOfModel(_ dir: String, _ name: String = "m.gguf") throws -> String {
        try FileManager.default.copyItem(atPath: model, toPath: dir + "/" + name)
        return dir + "/" + name
    }

    /// The tiny model with metadata values replaced.
    func modelWith(_ dir: String, _ changes: [String: GGUFValue]) throws -> String {
        let file = try GGUFFile(path: model)
        var w = GGUFWriter(metadata: file.metadata)
        for (k, v) in changes { w.metadata[k] = v }
        for t in file.tensors { w.addTensor(name: t.name, type: t.type, shape: t.shape, source: .view(file.bytes(of: t))) }
        let path = dir + "/changed-\(UInt32.random(in: 0...UInt32.max)).gguf"
        try w.write(to: path)
        return path
    }

    func train(_ extra: [String], out: String, model m: String? = nil, data d: String? = nil) throws -> ProcessResult {
        try runCLI(["train", "--model", m ?? model, "--data", d ?? data, "--new-token", " <x>", "--steps", "8", "--batch", "4",
                    "--lr", "0.05", "--eps", "0.01", "--out", out] + extra)
    }

    func isOneLineError(_ r: ProcessResult) -> Bool {
        r.status != 0 && r.status < 128 && r.stderr.split(separator: "\n").count == 1
    }

    /// Every output compared with every input by file identity before any work.
    @Test func outputsNeverOverwriteInputs() throws {
        let dir = makeTemporaryDirectory("outputs")
        let m = try copyOfModel(dir)
        let d = dir + "/d.jsonl"
        try FileManager.default.copyItem(atPath: data, toPath: d)
        let before = try digest(m), dataBefore = try digest(d)
        let attempts: [[String]] = [
            ["train", "--model", m, "--data", d, "--new-token", " <x>", "--steps", "2", "--out", m],
            ["train", "--model", m, "--data", d, "--new-token", " <x>", "--steps", "2", "--out", dir + "/./m.gguf"],
            ["train", "--model", m, "--data", d, "--new-token", " <x>", "--steps", "2", "--out", d],
            ["train", "--model", m, "--data", d, "--new-token", " <x>", "--steps", "2", "--out", dir + "/a.gguf", "--log-json", m],
            ["train", "--model", m, "--data", d, "--new-token", " <x>", "--steps", "2", "--out", dir + "/a.gguf", "--log-json", d],
            ["requantize", "--model", m, "--type", "q8_0", "--out", m],
            ["export", "--model", m, "--adapter", dir + "/none.gguf", "--out", m],
        ]
        for args in attempts {
            let r = try runProcess(Products.cli, args)
            #expect(isOneLineError(r) && r.stderr.contains("same file as"), "\(args): \(r.status) \(r.stderr)")
        }
        #expect(try digest(m) == before && digest(d) == dataBefore, "the inputs are untouched")

        // An adapter given as export's --out; /dev/null and directories as destinations.
        let a = dir + "/a.gguf"
        #expect(try train([], out: a, model: m, data: d).status == 0)
        let adapterBefore = try digest(a)
        let x = try runCLI(["export", "--model", m, "--adapter", a, "--out", a])
        #expect(isOneLineError(x) && x.stderr.contains("same file as --adapter"), "\(x.stderr)")
        #expect(try digest(a) == adapterBefore)
        for destination in ["/dev/null", dir] {
            let r = try runCLI(["requantize", "--model", m, "--type", "q8_0", "--out", destination])
            #expect(isOneLineError(r) && r.stderr.contains("not a regular file"), "\(destination): \(r.stderr)")
        }
        var s = stat()
        #expect(stat("/dev/null", &s) == 0 && (s.st_mode & S_IFMT) == S_IFCHR)
    }

    /// An output whose directory is missing is found before step 1, not after the last.
    @Test func unwritableOutputIsFoundBeforeTraining() throws {
        let dir = makeTemporaryDirectory("unwritable")
        let r = try train(["--steps", "100000"], out: dir + "/missing/a.gguf")
        #expect(isOneLineError(r) && r.stderr.contains("does not exist"), "\(r.stderr)")
        #expect(!r.stderr.contains("memory plan"), "refused before the model was loaded")
    }

    /// Standard output on a full device, standard error on a full device: exit status 74
    /// (EX_IOERR), never a signal; what the command writes to files is still complete.
    @Test func fullDevicesEndWithAnIOErrorStatus() throws {
        let g = try runCLI(["generate", "--model", model, "--prompt", "the", "--max-tokens", "8"], stdoutFile: "/dev/full")
        #expect(g.status == 74 && g.stderr.contains("cannot write to standard output"), "\(g.status) \(g.stderr)")
        #expect(g.stderr.split(separator: "\n").filter { $0.contains("cannot write") }.count == 1, "\(g.stderr)")
        let j = try runCLI(["inspect", model, "--json"], stdoutFile: "/dev/full")
        #expect(j.status == 74, "\(j.status) \(j.stderr)")
        let dir = makeTemporaryDirectory("fullerr")
        let t = try runCLI(["train", "--model", model, "--data", data, "--new-token", " <x>", "--steps", "4", "--batch", "2",
                            "--out", dir + "/a.gguf"], stderrFile: "/dev/full")
        #expect(t.status == 74, "\(t.status)")
        #expect(FileManager.default.fileExists(atPath: dir + "/a.gguf"))
        let help = try runCLI(["--help"], stdoutFile: "/dev/full")
        #expect(help.status == 74, "\(help.status)")
    }

    /// JSON with non-finite numbers stays valid JSON (null).
    @Test func jsonWithNonFiniteNumbersIsValid() throws {
        let dir = makeTemporaryDirectory("nan-json")
        for changes: [String: GGUFValue] in [["llama.attention.layer_norm_rms_epsilon": .float32(.nan)], ["llama.rope.freq_base": .float32(.infinity)]] {
            let path = try modelWith(dir, changes)
            let r = try runCLI(["inspect", path, "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) != nil, "not JSON: \(r.stdout.prefix(300))")
        }
        // A NaN held-out loss in the log.
        let nan = try modelWith(dir, ["llama.attention.layer_norm_rms_epsilon": .float32(.nan)])
        let r = try runCLI(["eval", "--model", nan, "--data", held, "--json"])
        if r.status == 0 {
            let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            #expect(object?["nll"] is NSNull, "\(r.stdout)")
        } else {
            #expect(isOneLineError(r), "\(r.stderr)")
        }
    }

    /// A directory where a file is expected, or a FIFO: one line, no signal, no hang.
    @Test func directoriesAndFIFOsWhereFilesBelong() throws {
        let dir = makeTemporaryDirectory("dirs")
        #expect(mkfifo(dir + "/pipe.gguf", 0o644) == 0)
        for args in [["inspect", dir + "/pipe.gguf"], ["inspect", dir], ["eval", "--model", model, "--data", dir],
                     ["eval", "--model", model, "--data", dir + "/pipe.gguf"],
                     ["train", "--model", model, "--data", data, "--new-token", " <x>", "--optimizer", dir + "/", "--out", dir + "/a.gguf"]] {
            let r = try runCLI(args)
            #expect(isOneLineError(r) && (r.stderr.contains("directory") || r.stderr.contains("FIFO")), "\(args): \(r.status) \(r.stderr)")
        }
        let check = try runCLI(["plugins", "check", dir])
        #expect(check.status == 1 && check.stdout.contains("FAIL") && check.stdout.contains("directory"), "\(check.status) \(check.stdout)")
    }

    /// Sizes and counts beyond any run are refused before any work, with the flag named.
    @Test func absurdNumbersAreRefused() throws {
        let dir = makeTemporaryDirectory("numbers")
        for (extra, flag) in [(["--memory-budget", "1e99G"], "--memory-budget"), (["--steps", "99999999999999"], "--steps"),
                              (["--batch", "1000000000"], "--batch"), (["--max-length", "100000000000"], "--max-length"),
                              (["--eval-every", "0"], "--eval-every")] {
            let r = try train(extra, out: dir + "/a.gguf")
            #expect(r.status != 0 && r.status < 128 && r.stderr.contains(flag), "\(extra): \(r.stderr)")
        }
        for bad in ["momentum=-1", "weight_decay=-1"] {
            let r = try train(["--opt", bad], out: dir + "/a.gguf")
            #expect(isOneLineError(r) && r.stderr.contains("must be in [0, 1)"), "\(bad): \(r.stderr)")
        }
        let mib = try runCLI(["eval", "--model", model, "--data", held, "--memory-budget", "512MiB"])
        #expect(mib.status == 0 && mib.stderr.contains("memory plan"), "\(mib.stderr)")
    }

    /// Two runs with other settings in one --checkpoint-dir keep their own checkpoints;
    /// a --resume that finds only another run's is refused, naming a differing setting;
    /// a changed data file at the same path is another run.
    @Test func sharedCheckpointDirectories() throws {
        let dir = makeTemporaryDirectory("shared-ckpt")
        let ckpt = ["--checkpoint-dir", dir + "/ck", "--checkpoint-every", "2"]
        let d = dir + "/d.jsonl"
        try FileManager.default.copyItem(atPath: data, toPath: d)
        #expect(try train(ckpt, out: dir + "/a.gguf", data: d).status == 0)
        let afterA = try FileManager.default.contentsOfDirectory(atPath: dir + "/ck").filter { $0.hasSuffix(".efck") }
        #expect(afterA.count == 2)
        #expect(try train(ckpt + ["--lr", "0.02"], out: dir + "/b.gguf", data: d).status == 0)
        let afterB = try FileManager.default.contentsOfDirectory(atPath: dir + "/ck").filter { $0.hasSuffix(".efck") }
        #expect(afterB.count == 4 && Set(afterA).isSubset(of: afterB), "run B kept run A's files: \(afterB)")

        let foreign = try train(ckpt + ["--lr", "0.03", "--resume"], out: dir + "/c.gguf", data: d)
        #expect(foreign.status != 0 && foreign.stderr.contains("another run") && foreign.stderr.contains("lr"), "\(foreign.stderr)")
        let same = try train(ckpt + ["--resume", "--steps", "10"], out: dir + "/a.gguf", data: d)
        #expect(same.status == 0 && same.stderr.contains("resuming from"), "\(same.stderr)")

        // The same path with other content.
        try (String(contentsOfFile: d, encoding: .utf8) + "{\"text\": \"the <x> is new\"}\n").write(toFile: d, atomically: true, encoding: .utf8)
        let changed = try train(ckpt + ["--resume", "--steps", "12"], out: dir + "/a.gguf", data: d)
        #expect(changed.status != 0 && changed.stderr.contains("data_sha256"), "\(changed.stderr)")
    }

    /// What eval refuses, export refuses: duplicate or empty tokens, NaN values, unknown methods.
    @Test func exportRefusesWhatEvalRefuses() throws {
        let dir = makeTemporaryDirectory("bad-adapter")
        let good = dir + "/good.gguf"
        #expect(try train([], out: good).status == 0)
        let file = try GGUFFile(path: good)
        let dim = file.tensor(named: "textual_inversion.embedding")!.shape[0]
        func variant(_ name: String, tokens: [String], method: String = "textual-inversion", values: (Int) -> Float = { _ in 0.01 }) throws -> String {
            var w = GGUFWriter(metadata: file.metadata)
            w.metadata["edge_finetune.textual_inversion.tokens"] = .array(.string(tokens))
            w.metadata["edge_finetune.adapter.method"] = .string(method)
            w.addTensor(name: "textual_inversion.embedding", shape: [dim, tokens.count], floats: (0..<(dim * tokens.count)).map(values))
            let path = dir + "/" + name + ".gguf"
            try w.write(to: path)
            return path
        }
        let bad = [try variant("dup", tokens: [" <x>", " <x>"]), try variant("empty", tokens: [" <x>", ""]),
                   try variant("nan", tokens: [" <x>"], values: { $0 == 3 ? .nan : 0 }), try variant("method", tokens: [" <x>"], method: "magic")]
        for path in bad {
            let e = try runCLI(["eval", "--model", model, "--data", held, "--adapter", path])
            let x = try runCLI(["export", "--model", model, "--adapter", path, "--out", dir + "/x.gguf"])
            #expect(isOneLineError(e), "eval \(path): \(e.stderr)")
            #expect(isOneLineError(x), "export \(path): \(x.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/x.gguf"))
        }
    }

    /// CRLF data reads as LF data; a huge line is refused as it is read.
    @Test func crlfAndOverlongLines() throws {
        let dir = makeTemporaryDirectory("lines")
        let text = try String(contentsOfFile: held, encoding: .utf8)
        try text.replacingOccurrences(of: "\n", with: "\r\n").write(toFile: dir + "/crlf.jsonl", atomically: true, encoding: .utf8)
        let lf = try runCLI(["eval", "--model", model, "--data", held, "--json"])
        let crlf = try runCLI(["eval", "--model", model, "--data", dir + "/crlf.jsonl", "--json"])
        #expect(crlf.status == 0 && crlf.stdout == lf.stdout, "\(crlf.stderr)")

        let long = "{\"text\": \"the capital is paris\"}\n{\"text\": \"" + String(repeating: "paris ", count: 4_000_000) + "\"}\n"
        try long.write(toFile: dir + "/long.jsonl", atomically: true, encoding: .utf8)
        let r = try runCLI(["eval", "--model", model, "--data", dir + "/long.jsonl", "--memory-budget", "40M"])
        #expect(isOneLineError(r) && r.stderr.contains("long.jsonl:2:"), "\(r.stderr)")
        #expect(r.peakRSS < 150_000_000, "peak RSS \(r.peakRSS)")
    }

    /// eval sizes its buffers from the examples: a model declaring a context of 10⁸ with a
    /// --max-length as large evaluates in the memory its short examples need.
    @Test func evalBuffersFollowTheData() throws {
        let dir = makeTemporaryDirectory("context")
        let big = try modelWith(dir, ["llama.context_length": .uint32(100_000_000)])
        let r = try runCLI(["eval", "--model", big, "--data", held, "--max-length", "100000000", "--json"])
        let reference = try runCLI(["eval", "--model", model, "--data", held, "--json"])
        #expect(r.status == 0 && r.stdout == reference.stdout, "\(r.stderr)")
        #expect(r.peakRSS < 500_000_000, "peak RSS \(r.peakRSS)")
    }

    /// Temporary files of killed writes are removed at the next write to the same place.
    @Test func staleTemporariesAreCleanedByTheNextWrite() throws {
        let dir = makeTemporaryDirectory("stale-cli")
        let stale = dir + "/x.gguf.tmp-99999999"
        FileManager.default.createFile(atPath: stale, contents: Data(count: 4096))
        let r = try runCLI(["requantize", "--model", model, "--type", "q8_0", "--out", dir + "/x.gguf"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale))
    }
}
