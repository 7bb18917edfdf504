import CLZ4
import Foundation
import GGUF
import Model
import TestSupport
import Testing
@testable import ZerothOrder

/// An LZ4 frame (with its content checksum) of `payload`, as CheckpointStore writes one.
func lz4Frame(_ payload: [UInt8]) -> [UInt8] {
    var prefs = LZ4F_preferences_t()
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
    var out = [UInt8](repeating: 0, count: LZ4F_compressFrameBound(payload.count, &prefs))
    let n = out.withUnsafeMutableBytes { dst in
        payload.withUnsafeBytes { src in LZ4F_compressFrame(dst.baseAddress, dst.count, src.baseAddress, src.count, &prefs) }
    }
    return Array(out.prefix(n))
}

/// A checkpoint payload section: name (UInt32 length + UTF-8), bytes (UInt64 length + data).
func section(_ name: String, _ bytes: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
    var b = [UInt8]()
    withUnsafeBytes(of: UInt32(name.utf8.count).littleEndian) { b += $0 }
    b += Array(name.utf8)
    withUnsafeBytes(of: (declaredLength ?? UInt64(bytes.count)).littleEndian) { b += $0 }
    return b + bytes
}

@Suite struct CheckpointHardeningTests {
    func groups(_ count: Int) -> [ParameterGroup] {
        let values = UnsafeMutablePointer<Float>.allocate(capacity: count)
        values.initialize(repeating: 0, count: count)
        return [ParameterGroup(name: "g", values: values, count: count)]
    }

    func meta(step: Int = 3, groups: Int = 1) -> [UInt8] {
        Array("{\"groups\":\(groups),\"identity\":{\"run\":\"x\"},\"step\":\(step)}".utf8)
    }

    /// Section indices and lengths from the file are checked against both bounds: a group
    /// index of −1 (which passed a `g < count` check) or past the end, a length near 2⁶⁴,
    /// a repeated or unknown section, an impossible step: each a reason, nothing written.
    @Test func craftedSectionsAreRefused() throws {
        let dir = makeTemporaryDirectory("crafted")
        let target = groups(4)
        let values = [UInt8](repeating: 0x41, count: 16)
        let magic = Array("EFCKPT01".utf8)
        let cases: [(String, [UInt8])] = [
            ("negative group", section("meta", meta()) + section("group.-1", values)),
            ("group past the end", section("meta", meta()) + section("group.1", values)),
            ("signed group", section("meta", meta()) + section("group.+0", values)),
            ("huge group index", section("meta", meta()) + section("group.99999999999999999999", values)),
            ("huge length", section("meta", meta()) + section("optimizer", [], declaredLength: UInt64.max)),
            ("length beyond Int", section("meta", meta()) + section("group.0", values, declaredLength: 1 << 63)),
            ("unknown section", section("meta", meta()) + section("surprise", [1, 2, 3])),
            ("meta twice", section("meta", meta()) + section("meta", meta())),
            ("group twice", section("meta", meta()) + section("group.0", values) + section("group.0", values)),
            ("step 0", section("meta", meta(step: 0)) + section("group.0", values)),
            ("negative step", section("meta", meta(step: -7)) + section("group.0", values)),
            ("meta of wrong types", section("meta", Array("{\"groups\":\"1\",\"step\":[]}".utf8)) + section("group.0", values)),
        ]
        for (name, body) in cases {
            let path = dir + "/c.efck"
            FileManager.default.createFile(atPath: path, contents: Data(lz4Frame(magic + body + section("optimizer", []) + section("subspace", []))))
            switch CheckpointStore.load(path, into: target) {
            case .success: Issue.record("\(name): loaded")
            case .failure(let problem): #expect(!problem.description.isEmpty, "\(name)")
            }
        }
        // The well-formed payload loads.
        let good = magic + section("meta", meta()) + section("group.0", values) + section("optimizer", []) + section("subspace", [])
        FileManager.default.createFile(atPath: dir + "/c.efck", contents: Data(lz4Frame(good)))
        guard case .success(let c) = CheckpointStore.load(dir + "/c.efck", into: target) else { Issue.record("the good payload failed"); return }
        #expect(c.step == 3 && target[0].values[0] == Float(bitPattern: 0x4141_4141))
    }

    /// A directory or a FIFO named like a checkpoint is skipped with a reason, without blocking.
    @Test func nonRegularCheckpointFilesAreSkipped() throws {
        let dir = makeTemporaryDirectory("nonregular")
        let store = try CheckpointStore(directory: dir, run: "abc")
        try FileManager.default.createDirectory(atPath: store.path(completed: 9), withIntermediateDirectories: false)
        #expect(mkfifo(store.path(completed: 8), 0o644) == 0)
        var warnings = [String]()
        #expect(store.loadNewest(into: groups(4), warn: { warnings.append($0) }) == nil)
        #expect(warnings.count == 2 && warnings[0].contains("directory") && warnings[1].contains("FIFO"), "\(warnings)")
    }

    /// Runs sharing a directory keep their own files: pruning, loading and listing see only
    /// the run's own; foreign ones are listed apart; a second store on the directory is refused.
    @Test func runsSharingADirectoryKeepTheirCheckpoints() throws {
        let dir = makeTemporaryDirectory("shared")
        let g = groups(4)
        do {
            let a = try CheckpointStore(directory: dir, run: "aaaa")
            for step in 2...5 { try a.save(Checkpoint(step: step, identity: ["run": "a"], groups: g, optimizerState: [], subspaceState: [])) }
            #expect(a.files().map(\.completed) == [4, 3])
            // While `a` is open, nobody else may use the directory.
            #expect(throws: TrainingError.self) { try CheckpointStore(directory: dir, run: "bbbb") }
        }
        let b = try CheckpointStore(directory: dir, run: "bbbb")
        for step in 2...6 { try b.save(Checkpoint(step: step, identity: ["run": "b"], groups: g, optimizerState: [], subspaceState: [])) }
        #expect(b.files().map(\.completed) == [5, 4])
        #expect(b.foreignFiles().map(\.completed) == [4, 3] && b.foreignFiles().allSatisfy { $0.run == "aaaa" })
        #expect(CheckpointStore.identity(atPath: b.foreignFiles()[0].path) == ["run": "a"])
        #expect(b.loadNewest(into: g, warn: { _ in })?.identity == ["run": "b"])
    }

    /// The run's digest depends on every identity entry.
    @Test func runDigestNamesTheSettings() {
        let a = TrainingRun.runDigest(["lr": "0.01", "data_sha256": "ab"])
        #expect(a.count == 16)
        #expect(a == TrainingRun.runDigest(["data_sha256": "ab", "lr": "0.01"]))
        #expect(a != TrainingRun.runDigest(["lr": "0.02", "data_sha256": "ab"]))
        #expect(a != TrainingRun.runDigest(["lr": "0.01", "data_sha256": "ac"]))
    }

    /// The subspace state's positions, ranks and counts are checked before they index anything.
    @Test func malformedSubspaceStateIsRefused() throws {
        let s = SubspaceGradient(groups: 1, dim: 4, mode: .projectEstimate, period: 2)
        let good = s.saveState()
        try s.loadState(good)
        func patched(_ body: (inout [UInt8]) -> Void) -> [UInt8] { var b = good; body(&b); return b }
        func int64(_ v: Int64, at o: Int) -> [UInt8] { patched { b in withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } } } }
        func float(_ v: Float, at index: Int) -> [UInt8] { patched { b in withUnsafeBytes(of: v) { for (i, x) in $0.enumerated() { b[16 + 4 * index + i] = x } } } }
        let bad = [int64(-1, at: 0), int64(3, at: 0), int64(2, at: 8), int64(-1, at: 8), int64(.min, at: 8),
                   float(.nan, at: 8), float(-1, at: 8), float(1e30, at: 8), float(2.5, at: 8), float(.nan, at: 9), float(1e9, at: 9), float(3, at: 9),
                   Array(good.dropLast(4)), good + [0, 0, 0, 0]]
        for (i, b) in bad.enumerated() {
            #expect(throws: TrainingError.self, "case \(i)") { try s.loadState(b) }
        }
    }
}

@Suite struct CheckpointFuzzTests {
    /// A seeded, bounded fuzz run of the checkpoint reader: truncations at every byte of the
    /// header and section boundaries, huge values over every field position, random flips,
    /// each re-framed (so the mutation reaches the parser past the checksum) and also
    /// damaged in its compressed form. Every variant loads or is refused with a reason.
    @Test func mutatedCheckpointsNeverCrash() throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        var settings = TrainingSettings()
        settings.steps = 4
        settings.batchSize = 2
        settings.seed = 3
        let trainer = try Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [ti.dim], momentum: 0.9), settings: settings, train: data,
                                  subspace: SubspaceGradient(groups: 1, dim: ti.dim, mode: .projectEstimate, period: 2))
        try trainer.runStep()
        try trainer.runStep()
        let checkpoint = try trainer.checkpoint(identity: ["run": "fuzz"])
        var payload = [UInt8]()
        checkpoint.pieces { payload += $0; return true }
        // Section boundaries: magic, then each header's fields.
        var boundaries = [0, 8]
        var o = 8
        while o + 4 <= payload.count {
            let n = Int(payload.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt32.self)) })
            let lengthAt = o + 4 + n
            guard lengthAt + 8 <= payload.count else { break }
            let length = Int(payload.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: lengthAt, as: UInt64.self)) })
            boundaries += [o, o + 4, lengthAt, lengthAt + 8]
            o = lengthAt + 8 + length
        }
        let headerPositions = boundaries.flatMap { b in (max(0, b - 4)...(b + 8)).filter { $0 < payload.count - 8 } }
        let dir = makeTemporaryDirectory("ckpt-fuzz")
        let path = dir + "/c.efck"
        let target = ti.parameters.groups
        var rng = SplitMix64(state: 0xC4EC_4B01)
        var variants = 0, loaded = 0
        func check(_ file: [UInt8]) {
            variants += 1
            FileManager.default.createFile(atPath: path, contents: Data(file))
            if case .success(let c) = CheckpointStore.load(path, into: target) {
                loaded += 1
                // A loaded checkpoint restores cleanly or is refused with an error.
                do { try trainer.restore(c) } catch { #expect(!error.description.isEmpty) }
            }
        }
        check(lz4Frame(payload))
        #expect(loaded == 1, "the unmodified checkpoint loads")
        for cut in Set(boundaries + (0..<min(payload.count, 200))).sorted() where cut < payload.count { check(lz4Frame(Array(payload.prefix(cut)))) }
        for p in Set(headerPositions).sorted() {
            for huge: UInt64 in [.max, 1 << 63, 1 << 40, UInt64(UInt32.max), 0xFFFF_FFFF_FFFF_FF00] {
                var b = payload
                withUnsafeBytes(of: huge.littleEndian) { for (i, v) in $0.enumerated() { b[p + i] = v } }
                check(lz4Frame(b))
            }
        }
        for _ in 0..<400 {
            var b = payload
            for _ in 0..<Int.random(in: 1...4, using: &rng) { b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
            check(lz4Frame(b))
        }
        let frame = lz4Frame(payload)
        for _ in 0..<300 {
            var b = frame
            b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            if Bool.random(using: &rng) { b.removeLast(Int.random(in: 0..<b.count, using: &rng)) }
            check(b)
        }
        #expect(variants >= 1000)
        #expect(loaded < variants)
    }
}

@Suite struct AdapterHardeningTests {
    /// An adapter for `model` with one new token and the tuned scales of one tensor.
    func adapter(_ model: LlamaModel, tokens: [String] = ["<new>"], method: [String] = ["qzo", "textual-inversion"],
                 embeddings: [Float]? = nil) -> Adapter {
        let base = Adapter.identity(of: model)
        var a = Adapter(method: method, baseName: base.name, baseSHA256: base.sha256)
        a.newTokens = tokens
        a.embeddings = embeddings ?? (0..<(model.config.dim * tokens.count)).map { Float($0 % 7) * 0.01 }
        if method.contains("qzo"), let t = model.file.tensors.first(where: { $0.type.hasBlockScales && $0.name.hasPrefix("blk.") }) {
            a.scales[t.name] = [Float](repeating: 0.5, count: t.elementCount / 32)
        }
        return a
    }

    func readError(_ a: Adapter, _ model: LlamaModel) throws -> String? {
        let path = makeTemporaryDirectory("adapter") + "/a.gguf"
        try a.write(to: path, dim: model.config.dim)
        do {
            _ = try Adapter.read(path: path, for: model)
            _ = try Adapter.newTokens(atPath: path)
            return nil
        } catch {
            return error.description
        }
    }

    /// One validation for every command: what eval refuses, export (Adapter.read) refuses.
    @Test func invalidAdaptersAreRefused() throws {
        let model = try tinyModel()
        #expect(try readError(adapter(model), model) == nil)
        let dim = model.config.dim
        #expect(try readError(adapter(model, tokens: ["<a>", "<a>"]), model)?.contains("appears twice") == true)
        #expect(try readError(adapter(model, tokens: ["<a>", ""]), model)?.contains("is empty") == true)
        #expect(try readError(adapter(model, embeddings: [.nan] + [Float](repeating: 0, count: dim - 1)), model)?.contains("nan") == true)
        #expect(try readError(adapter(model, embeddings: [Float](repeating: 0, count: dim - 1) + [.infinity]), model)?.contains("finite") == true)
        #expect(try readError(adapter(model, method: ["qzo", "bogus"]), model)?.contains("unknown method") == true)
        #expect(try readError(adapter(model, tokens: ["<|im_end|>"]), model)?.contains("already in the base model's vocabulary") == true)
        var noScales = adapter(model, method: ["qzo", "textual-inversion"])
        noScales.scales = [:]
        #expect(try readError(noScales, model)?.contains("no <tensor>.qzo_d") == true)
        var nanScale = adapter(model)
        if let name = nanScale.scales.keys.first { nanScale.scales[name]![3] = .nan }
        #expect(try readError(nanScale, model)?.contains("finite") == true)
    }

    /// A seeded, bounded fuzz run of the adapter reader: huge values over every header
    /// position, truncations, random flips. Every variant is read or refused with an error;
    /// whatever is read has finite values of the model's shapes.
    @Test func mutatedAdaptersNeverCrash() throws {
        let model = try tinyModel()
        let dir = makeTemporaryDirectory("adapter-fuzz")
        let basePath = dir + "/base.gguf"
        try adapter(model).write(to: basePath, dim: model.config.dim)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: basePath)))
        let headerEnd = try GGUFFile(path: basePath).dataOffset
        let path = dir + "/variant.gguf"
        var rng = SplitMix64(state: 0xADA9_7E12)
        var variants = 0, loaded = 0
        func check(_ b: [UInt8]) {
            variants += 1
            FileManager.default.createFile(atPath: path, contents: Data(b))
            do {
                let a = try Adapter.read(path: path, for: model)
                loaded += 1
                #expect(a.embeddings.count == a.newTokens.count * model.config.dim)
                #expect(a.embeddings.allSatisfy(\.isFinite) && a.scales.values.allSatisfy { $0.allSatisfy(\.isFinite) })
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
        check(bytes)
        #expect(loaded == 1)
        for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 300)) { check(Array(bytes.prefix(cut))) }
        for p in stride(from: 0, to: headerEnd - 8, by: 2) {
            for huge: UInt64 in [.max, 1 << 60, UInt64(UInt32.max)] {
                var b = bytes
                withUnsafeBytes(of: huge.littleEndian) { for (i, v) in $0.enumerated() { b[p + i] = v } }
                check(b)
            }
        }
        for _ in 0..<500 {
            var b = bytes
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let limit = Bool.random(using: &rng) ? headerEnd : b.count
                b[Int.random(in: 0..<limit, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            }
            check(b)
        }
        #expect(variants >= 1000)
        #expect(loaded < variants)
    }
}

@Suite struct InputHardeningTests {
    /// The built-in ZO-SGD refuses what the zo-sgd plugin refuses.
    @Test func builtInSGDRefusesOutOfRangeOptions() throws {
        for bad in ["momentum=-1", "weight_decay=-1", "momentum=1", "weight_decay=nan", "momentum=0.5x", "beta=0.1", "momentum"] {
            #expect(throws: OptimizerError.self, "\(bad)") { try ZOSGD.make(groupSizes: [3], options: [bad]) }
        }
        let sgd = try ZOSGD.make(groupSizes: [3], options: ["momentum=0.9", "weight_decay=0.01"])
        #expect(sgd.momentum == 0.9 && sgd.weightDecay == 0.01)
    }

    /// An optimizer whose perturbation scale is 0, negative, huge or NaN stops the step
    /// before any value is perturbed, naming group, index and step.
    @Test(arguments: [Float(0), -1, 1e30, .nan, .infinity])
    func badPerturbationScalesAreRefused(_ bad: Float) throws {
        final class ScaledSGD: Optimizer {
            let name = "scaled"
            let needsUnperturbedLoss = false
            let scale: UnsafeMutablePointer<Float>
            let inner: ZOSGD
            init(dim: Int, bad: Float) {
                scale = .allocate(capacity: dim)
                scale.initialize(repeating: 1, count: dim)
                scale[dim / 2] = bad
                inner = ZOSGD(groupSizes: [dim])
            }
            func perturbationScale(group: Int) -> UnsafePointer<Float>? { UnsafePointer(scale) }
            func step(_ context: StepContext, _ groups: [ParameterGroup]) throws(OptimizerError) { try inner.step(context, groups) }
            var stateByteCount: Int { 0 }
            func saveState() throws(OptimizerError) -> [UInt8] { [] }
            func loadState(_ bytes: [UInt8]) throws(OptimizerError) {}
        }
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        var settings = TrainingSettings()
        settings.steps = 2
        settings.batchSize = 2
        let before = ti.values.array
        let trainer = try Trainer(objective: ti, optimizer: ScaledSGD(dim: ti.dim, bad: bad), settings: settings, train: data)
        do {
            try trainer.runStep()
            Issue.record("a step ran with scale \(bad)")
        } catch {
            #expect(error.description.contains("perturbation scale") && error.description.contains("index \(ti.dim / 2)"), "\(error)")
        }
        #expect(ti.values.array == before)
    }

    /// Sizes: decimal and binary units, stated; overflow and nonsense refused.
    @Test func sizesParseWithUnitsAndWithoutOverflow() {
        let cases: [(String, Int?)] = [
            ("96M", 96_000_000), ("96MB", 96_000_000), ("96mb", 96_000_000), ("96MiB", 96 << 20), ("1.5G", 1_500_000_000),
            ("2GiB", 2 << 30), ("512k", 512_000), ("1KiB", 1024), ("3T", 3_000_000_000_000), ("1TiB", 1 << 40),
            ("100000000", 100_000_000), ("7B", 7), (" 40M ", 40_000_000),
            ("1e99G", nil), ("9e18", nil), ("5EB", nil), ("0", nil), ("-5M", nil), ("0.1", nil), ("nanM", nil), ("infG", nil),
            ("M", nil), ("", nil), ("12Q", nil),
        ]
        for (text, expected) in cases { #expect(MemoryPlanner.parseSize(text) == expected, "\(text)") }
    }

    /// A batch far larger than the data plans at once (one estimate stands for every
    /// micro-batch size above the example count) and keeps the batch size.
    @Test func hugeBatchPlansAtOnce() throws {
        let model = try tinyModel()
        let request = MemoryRequest(budget: 1 << 40, config: model.config, fileBytes: model.file.fileSize, largestLayerBytes: 1 << 16,
                                    outputRowBytes: 64, vocabularyEntries: 1000, batchSize: 1_000_000_000, exampleLengths: [10, 20, 30],
                                    points: 2, pointsShareAPass: true, contextLength: 64, trainableValues: 64, optimizerStateBytes: 0)
        guard case .success(let plan) = MemoryPlanner.plan(request) else { Issue.record("no plan"); return }
        #expect(plan.microBatchSize == 1_000_000_000 && plan.passTokens == 2 * 60)
        #expect(plan.total == MemoryPlanner.estimate(request, microBatch: 3, streaming: false).total)
    }
}

@Suite struct DatasetHardeningTests {
    let tokenizer: Tokenizer

    init() throws { tokenizer = try tinyModel().tokenizer }

    @Test func crlfLinesReadAsLF() throws {
        let dir = makeTemporaryDirectory("crlf")
        let lines = ["{\"text\": \"the cat sat\"}", "{\"prompt\": \"a\", \"completion\": \" b c\"}", "", "{\"text\": \"last line\"}"]
        try lines.joined(separator: "\n").write(toFile: dir + "/lf.jsonl", atomically: true, encoding: .utf8)
        try lines.joined(separator: "\r\n").appending("\r\n").write(toFile: dir + "/crlf.jsonl", atomically: true, encoding: .utf8)
        let lf = try Dataset.load(path: dir + "/lf.jsonl", tokenizer: tokenizer, maxLength: 64)
        let crlf = try Dataset.load(path: dir + "/crlf.jsonl", tokenizer: tokenizer, maxLength: 64)
        #expect(lf.count == 3 && lf == crlf)
        #expect(crlf.map(\.line) == [1, 2, 4])
    }

    /// A line far longer than any example of --max-length tokens is refused as it is read,
    /// naming the line; memory stays far below the line's size.
    @Test func overlongLineIsRefusedWhileReading() throws {
        let dir = makeTemporaryDirectory("long")
        let limit = Dataset.lineByteLimit(tokenizer: tokenizer, maxLength: 32)
        #expect(limit < 1 << 20)
        var text = "{\"text\": \"short\"}\n{\"text\": \""
        text += String(repeating: "word ", count: 2_000_000) + "\"}\n"
        try text.write(toFile: dir + "/long.jsonl", atomically: true, encoding: .utf8)
        do {
            _ = try Dataset.load(path: dir + "/long.jsonl", tokenizer: tokenizer, maxLength: 32)
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains("long.jsonl:2:") && error.description.contains("--max-length"), "\(error)")
        }
    }

    @Test func fifoAndDirectoryAreRefused() throws {
        let dir = makeTemporaryDirectory("data-fifo")
        #expect(mkfifo(dir + "/pipe", 0o644) == 0)
        for path in [dir + "/pipe", dir] {
            #expect(throws: ModelError.self, "\(path)") { try Dataset.load(path: path, tokenizer: tokenizer, maxLength: 32) }
        }
        let badUTF8 = dir + "/bad.jsonl"
        FileManager.default.createFile(atPath: badUTF8, contents: Data(Array("{\"text\": \"ok\"}\n{\"text\": \"".utf8) + [0xFF, 0xFE] + Array("\"}\n".utf8)))
        do {
            _ = try Dataset.load(path: badUTF8, tokenizer: tokenizer, maxLength: 32)
            Issue.record("loaded invalid UTF-8")
        } catch {
            #expect(error.description.contains("bad.jsonl:2:") && error.description.contains("UTF-8"), "\(error)")
        }
    }
}
