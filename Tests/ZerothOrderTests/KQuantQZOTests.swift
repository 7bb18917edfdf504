import Foundation
import GGUF
import Model
import Quant
import TestSupport
import Testing
import ZerothOrder

/// QZO on the K-quants (Q2_K … Q6_K), at both granularities, on tiny models that llama.cpp's
/// own quantizer made (scripts/reference/make_tiny_models.py).
@Suite(.serialized) struct KQuantQZOTests {
    static let models = ["tiny-q4_k_m", "tiny-q5_k_m", "tiny-q3_k_m", "tiny-q2_k"]
    static let cases: [(String, KQuantGranularity)] = models.flatMap { m in KQuantGranularity.allCases.map { (m, $0) } }

    let texts = ["the cat sat on the mat and looked at the door", "a dog ran to the park in the morning",
                 "we walked past the river after lunch", "the house was quiet at night"]

    func setup(_ name: String, _ kquant: KQuantGranularity) throws -> (LlamaModel, QuantScales, [Example]) {
        let model = try tinyModel(name)
        let qzo = try QuantScales(model: model, patterns: ["blk.*"], trainOffsets: false, kquant: kquant, microBatchTokens: 128,
                                  maxPoints: 2, contextLength: 64)
        return (model, qzo, try examples(texts, model.tokenizer))
    }

    func nll(_ qzo: QuantScales, _ data: [Example]) throws -> Double {
        try qzo.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0].nll
    }

    /// Every K-quant matrix of the blocks is trained, with the values each format has.
    @Test(arguments: cases) func countsTheTrainableValues(_ name: String, _ kquant: KQuantGranularity) throws {
        let (model, qzo, _) = try setup(name, kquant)
        let kTensors = model.layers.flatMap(\.matrices).filter { $0.info.type.subBlocks != nil }
        #expect(!kTensors.isEmpty)
        #expect(qzo.targets.count == model.layers.flatMap(\.matrices).filter { QuantScales.trains($0.info.type) }.count)
        for t in qzo.targets where t.tensor.info.type.subBlocks != nil {
            let sub = t.tensor.info.type.subBlocks!
            let superBlocks = t.tensor.info.elementCount / 256
            #expect(t.blocks == superBlocks)
            #expect(qzo.groups[t.scaleGroup].count == superBlocks * (kquant == .subBlock ? sub.count : 1))
            #expect((t.offsetGroup != nil) == sub.hasMins, "\(t.tensor.name): dmin or mins trained exactly where the format has them")
        }
        #expect(QuantScales.groupLayout(model: model, patterns: ["blk.*"], trainOffsets: false, kquant: kquant).map(\.count)
                == qzo.groups.map(\.count))
    }

    /// At r = 1 the scales the kernels read reproduce the file: the loss is the model's own.
    /// At sub-block granularity this checks the unpacking of every format's sub-block scales.
    @Test(arguments: cases) func unperturbedEqualsTheModel(_ name: String, _ kquant: KQuantGranularity) throws {
        let (model, qzo, data) = try setup(name, kquant)
        let ours = try qzo.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0]
        let reference = try Evaluator(model: model, capacity: 128, contextLength: 64).evaluate(data)
        #expect(ours.tokens == reference.tokens)
        #expect(abs(ours.nll - reference.nll) < 1e-6, "\(ours.nll) vs \(reference.nll)")
    }

    /// Dequantizing through float sub-block scales equal to the file's (d · sc_k, dmin · mn_k)
    /// is bit-identical to the file's own dequantization (which the Quant tests hold to gguf-py).
    @Test(arguments: models) func subBlockOverridesAtTheFileScalesAreExact(_ name: String) throws {
        let model = try tinyModel(name)
        for t in model.layers.flatMap(\.matrices) {
            let type = t.info.type
            guard let sub = type.subBlocks else { continue }
            let blocks = t.info.elementCount / 256
            let src = model.file.bytes(of: t.info).baseAddress!
            var s = [Float](repeating: 0, count: blocks * sub.count), m = s
            readSubBlockScales(type, src, blocks: blocks, s: &s, m: &m)
            var file = [Float](repeating: 0, count: t.info.elementCount), ours = file
            dequantizeRowGeneric(type, src, count: t.info.elementCount, into: &file)
            s.withUnsafeBufferPointer { sp in
                m.withUnsafeBufferPointer { mp in
                    let scales = BlockScales(sub: sp.baseAddress!, subMin: sub.hasMins ? mp.baseAddress! : nil, subPerBlock: sub.count)
                    dequantizeRow(type, src, count: t.info.elementCount, into: &ours, scales: scales)
                }
            }
            let differing = zip(file, ours).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(t.name) (\(type)): \(differing) of \(file.count) values differ")
        }
    }

    /// llama.cpp's encoding of scales, applied to the scales llama.cpp itself encoded, gives the
    /// file's bytes back: the re-encoder follows quantize_row_q*_K_ref and packs the fields as
    /// ggml does.
    @Test(arguments: models) func reencodingTheFileScalesReproducesTheFile(_ name: String) throws {
        let model = try tinyModel(name)
        var checked = 0
        for t in model.layers.flatMap(\.matrices) {
            let type = t.info.type
            guard let sub = type.subBlocks else { continue }
            let blocks = t.info.elementCount / 256
            let bytes = model.file.bytes(of: t.info)
            var s = [Float](repeating: 0, count: blocks * sub.count), m = s
            readSubBlockScales(type, bytes.baseAddress!, blocks: blocks, s: &s, m: &m)
            var copy = [UInt8](bytes)
            copy.withUnsafeMutableBytes { writeSubBlockScales(type, $0.baseAddress!, blocks: blocks, s: s, m: sub.hasMins ? m : nil) }
            let mismatched = (0..<blocks).filter { b in
                let r = (b * type.bytesPerBlock)..<((b + 1) * type.bytesPerBlock)
                return Array(copy[r]) != Array(bytes[r])
            }
            #expect(mismatched.isEmpty, "\(t.name) (\(type)): \(mismatched.count) of \(blocks) blocks differ, first \(mismatched.first ?? -1)")
            checked += blocks
        }
        #expect(checked > 0)
    }

    /// Training moves the loss down at both granularities, on every K-quant format.
    @Test(arguments: cases) func trainingLowersTheLoss(_ name: String, _ kquant: KQuantGranularity) throws {
        let (_, qzo, data) = try setup(name, kquant)
        var settings = TrainingSettings()
        settings.steps = 30
        settings.batchSize = 4
        settings.learningRate = 0.05
        settings.epsilon = 1e-2
        let trainer = try Trainer(objective: qzo, optimizer: ZOSGD(groupSizes: qzo.groups.map(\.count)), settings: settings, train: data)
        let before = try nll(qzo, data)
        while !trainer.isFinished { try trainer.runStep() }
        let after = try nll(qzo, data)
        #expect(after < before, "\(name) \(kquant): \(before) → \(after)")
    }

    /// Ratios are kept ≥ rMin: no scale, dmin, sub-block scale or min changes sign.
    @Test(arguments: [("tiny-q4_k_m", KQuantGranularity.subBlock), ("tiny-q4_k_m", .superBlock), ("tiny-q3_k_m", .subBlock)])
    func constraintKeepsSigns(_ name: String, _ kquant: KQuantGranularity) throws {
        let (_, qzo, _) = try setup(name, kquant)
        let before = qzo.targets.indices.map { qzo.tunedScales($0) }
        for g in qzo.groups { for i in 0..<g.count { g.values[i] = i % 2 == 0 ? -0.5 : 0 } }
        #expect(qzo.constrain() == qzo.groups.reduce(0) { $0 + $1.count })
        for (i, t) in qzo.targets.enumerated() {
            let after = qzo.tunedScales(i)
            for (a, b) in zip(after.d, before[i].d) {
                #expect(a == b * qzo.minimumRatio, "\(t.tensor.name)")
            }
            if let m = after.m, let m0 = before[i].m {
                for (a, b) in zip(m, m0) { #expect(a == b * qzo.minimumRatio) }
            }
        }
    }

    /// A resumed run is bit-identical to an uninterrupted one at sub-block granularity.
    @Test func resumeIsBitIdentical() throws {
        func trainer(_ qzo: QuantScales, _ data: [Example]) throws -> Trainer {
            var settings = TrainingSettings()
            settings.steps = 8
            settings.batchSize = 2
            settings.learningRate = 0.05
            settings.epsilon = 1e-2
            settings.seed = 5
            return try Trainer(objective: qzo, optimizer: ZOSGD(groupSizes: qzo.groups.map(\.count), momentum: 0.9),
                               settings: settings, train: data)
        }
        let (_, a, data) = try setup("tiny-q4_k_m", .subBlock)
        let full = try trainer(a, data)
        while !full.isFinished { try full.runStep() }

        let store = try CheckpointStore(directory: makeTemporaryDirectory("kqzo-ckpt"))
        let (_, b, _) = try setup("tiny-q4_k_m", .subBlock)
        let first = try trainer(b, data)
        for _ in 0..<5 { try first.runStep() }
        try store.save(first.checkpoint(identity: ["run": "k"]))
        let (_, c, _) = try setup("tiny-q4_k_m", .subBlock)
        let resumed = try trainer(c, data)
        try resumed.restore(try #require(store.loadNewest(into: resumed.groups, warn: { _ in })))
        while !resumed.isFinished { try resumed.runStep() }
        let values = { (q: QuantScales) in q.groups.map { Array(UnsafeBufferPointer(start: $0.values, count: $0.count)).map(\.bitPattern) } }
        #expect(values(c) == values(a))
        #expect(values(a) != values(try setup("tiny-q4_k_m", .subBlock).1), "training moved the values")
    }

    /// Export at both granularities: the file gguf-py reads back dequantizes to the trained
    /// values after the format's rounding (halves for super, llama.cpp's re-encoding for sub),
    /// bit for bit; its codes are the original ones; and evaluating it equals evaluating the
    /// rounded adapter.
    @Test(.enabled(if: ggufPy), arguments: cases) func exportRoundTripsThroughGGUFPy(_ name: String, _ kquant: KQuantGranularity) throws {
        let (model, qzo, data) = try setup(name, kquant)
        // Scales moved by a few percent, differently per value.
        for g in qzo.groups { for i in 0..<g.count { g.values[i] = 1 + 0.03 * Float((i * 7919) % 11 - 5) / 5 } }
        let identity = Adapter.identity(of: model)
        var adapter = Adapter(method: ["qzo"], baseName: identity.name, baseSHA256: identity.sha256)
        for (i, t) in qzo.targets.enumerated() {
            let tuned = qzo.tunedScales(i)
            adapter.scales[t.tensor.name] = tuned.d
            adapter.offsets[t.tensor.name] = tuned.m
            if t.isSubBlock { adapter.subBlocks[t.tensor.name] = t.perBlock }
        }
        let dir = makeTemporaryDirectory("kqzo-export")
        try adapter.write(to: dir + "/a.gguf", dim: model.config.dim)
        let read = try Adapter.read(path: dir + "/a.gguf", for: model)
        #expect(read.scales == adapter.scales && read.subBlocks == adapter.subBlocks)
        try Export.write(model: model, adapter: read, to: dir + "/exported.gguf")

        // What gguf-py dequantizes the exported file to.
        let names = try runReference(["scripts/reference/kquant_dequant.py", dir + "/exported.gguf", dir + "/f32"])
        let rounded = Export.rounded(read, for: model)
        var compared = 0
        for t in qzo.targets where t.tensor.info.type.subBlocks != nil {
            #expect(names.contains(t.tensor.name))
            let theirs = try Data(contentsOf: URL(fileURLWithPath: dir + "/f32/" + t.tensor.name + ".f32"))
            let count = t.tensor.info.elementCount
            #expect(theirs.count == 4 * count)
            var ours = [Float](repeating: 0, count: count)
            let d = rounded.scales[t.tensor.name]!, m = rounded.offsets[t.tensor.name]
            d.withUnsafeBufferPointer { dp in
                (m ?? []).withUnsafeBufferPointer { mp in
                    let scales = t.isSubBlock
                        ? BlockScales(sub: dp.baseAddress!, subMin: m == nil ? nil : mp.baseAddress!, subPerBlock: t.perBlock)
                        : BlockScales(d: dp.baseAddress!, m: m == nil ? nil : mp.baseAddress!)
                    dequantizeRow(t.tensor.info.type, model.file.bytes(of: t.tensor.info).baseAddress!, count: count, into: &ours, scales: scales)
                }
            }
            let theirBits = theirs.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
            let differing = zip(ours.map(\.bitPattern), theirBits).filter { $0 != $1 }.count
            #expect(differing == 0, "\(t.tensor.name): \(differing) of \(count) values differ from gguf-py's")
            // The rounding is what the format imposes, not more: super scales are the halves
            // of the trained ones; sub-block scales are within the 6-bit (or 4-, 8-bit) grid.
            if !t.isSubBlock {
                #expect(d == adapter.scales[t.tensor.name]!.map { Float(Float16($0)) })
            } else {
                let trained = adapter.scales[t.tensor.name]!
                for b in 0..<t.blocks {
                    let block = (b * t.perBlock)..<((b + 1) * t.perBlock)
                    let top = trained[block].map(abs).max()!
                    let levels: Float = t.tensor.info.type == .q2_K ? 15 : (t.tensor.info.type == .q6_K ? 128 : (t.tensor.info.type == .q3_K ? 32 : 63))
                    // Half a step of the integer grid, a whole one where llama.cpp's encoding
                    // clamps (+128 → 127 for the signed scales), plus d's half precision.
                    let step = top / levels * (t.tensor.info.type == .q6_K || t.tensor.info.type == .q3_K ? 1 : 0.5)
                    for k in block {
                        #expect(abs(d[k] - trained[k]) <= step * 1.01 + top * 2e-3, "\(t.tensor.name) (\(t.tensor.info.type)) block \(b)")
                    }
                }
            }
            compared += 1
        }
        #expect(compared > 0)
        // The codes are untouched (the dequantization agreeing above needs them; check bytes too
        // for Q4_K, whose codes sit at 16..<144).
        let exported = try LlamaModel(path: dir + "/exported.gguf")
        for t in model.file.tensors where t.type == .q4_K {
            let x = model.file.bytes(of: t), y = exported.file.bytes(named: t.name)!
            for block in stride(from: 0, to: x.count, by: 144) {
                #expect(Array(x[(block + 16)..<(block + 144)]) == Array(y[(block + 16)..<(block + 144)]))
            }
        }
        // Evaluating the export equals evaluating the rounded adapter.
        let viaFile = try Evaluator(model: exported, capacity: 128, contextLength: 64).evaluate(data).nll
        let applied = try AppliedAdapter(rounded, model: model)
        let viaAdapter = try Evaluator(model: model, capacity: 128, contextLength: 64).evaluate(data).nll
        withExtendedLifetime(applied) {}
        #expect(abs(viaFile - viaAdapter) < 1e-6, "\(viaFile) vs \(viaAdapter)")
        // And the unrounded adapter: exactly so for super (halves), within the re-encoding for sub.
        let appliedRaw = try AppliedAdapter(read, model: model)
        let raw = try Evaluator(model: model, capacity: 128, contextLength: 64).evaluate(data).nll
        withExtendedLifetime(appliedRaw) {}
        #expect(abs(raw - viaFile) < (kquant == .superBlock ? 5e-3 : 0.1), "\(raw) vs \(viaFile)")
    }

    /// llama.cpp loads a K-quant QZO export (trained by the CLI for a few steps), tokenizes as
    /// we do and gives our NLL (scripts/check_export_llamacpp.py), when llama-cpp-python is there.
    @Test(.enabled(if: llamaCppPy), arguments: [("tiny-q4_k_m", "super"), ("tiny-q4_k_m", "sub"), ("tiny-q2_k", "sub")])
    func llamaCppLoadsTheExport(_ name: String, _ mode: String) throws {
        let dir = makeTemporaryDirectory("kqzo-llamacpp")
        let model = Repository.path("models/\(name).gguf")
        let data = dir + "/data.jsonl"
        try texts.map { "{\"text\": \"\($0)\"}\n" }.joined().write(toFile: data, atomically: true, encoding: .utf8)
        let train = try runCLI(["train", "--method", "qzo", "--model", model, "--data", data, "--steps", "5", "--batch", "2",
                                "--lr", "0.05", "--eps", "0.01", "--kquant-scales", mode, "--out", dir + "/a.gguf"])
        #expect(train.status == 0, "\(train.stderr)")
        let export = try runCLI(["export", "--model", model, "--adapter", dir + "/a.gguf", "--out", dir + "/x.gguf"])
        #expect(export.status == 0, "\(export.stderr)")
        let check = try runProcess("/usr/bin/env", ["python3", Repository.path("scripts/check_export_llamacpp.py"), dir + "/x.gguf", data,
                                                    "--binary", Products.cli])
        #expect(check.status == 0 && check.stdout.contains("PASS"), "\(check.stdout)")
    }

    /// --tensors that select nothing QZO trains: one line naming the pattern and what it matched.
    @Test func patternMatchingNothingTrainableIsNamed() throws {
        let model = try tinyModel("tiny-q4_k_m")
        for pattern in ["output*", "nothing.like.this"] {
            do {
                _ = try QuantScales(model: model, patterns: [pattern], trainOffsets: false, microBatchTokens: 64, maxPoints: 2, contextLength: 32)
                Issue.record("\(pattern) was accepted")
            } catch {
                let text = "\(error)"
                #expect(text.contains("--tensors \(pattern)") && !text.contains("\n"), "\(text)")
                #expect(text.contains(pattern == "output*" ? "output_norm.weight (F32)" : "matches no tensor of the model"), "\(text)")
            }
        }
    }

    /// An adapter giving a scale to a sub-block whose file scale is 0 is refused, naming it.
    @Test func subBlockScaleWhereTheFileHasNoneIsRefused() throws {
        let model = try tinyModel("tiny-q2_k")
        guard let (t, index) = model.layers.flatMap(\.matrices).lazy.compactMap({ t -> (MatrixTensor, Int)? in
            guard let sub = t.info.type.subBlocks else { return nil }
            var s = [Float](repeating: 0, count: t.info.elementCount / 256 * sub.count)
            readSubBlockScales(t.info.type, model.file.bytes(of: t.info).baseAddress!, blocks: t.info.elementCount / 256, s: &s, m: nil)
            return s.firstIndex(of: 0).map { (t, $0) }
        }).first else { return }  // no zero sub-block scale in this file: nothing to refuse
        let identity = Adapter.identity(of: model)
        var adapter = Adapter(method: ["qzo"], baseName: identity.name, baseSHA256: identity.sha256)
        var s = [Float](repeating: 0, count: t.info.elementCount / 256 * t.info.type.subBlocks!.count)
        readSubBlockScales(t.info.type, model.file.bytes(of: t.info).baseAddress!, blocks: t.info.elementCount / 256, s: &s, m: nil)
        s[index] = 0.01
        adapter.scales[t.name] = s
        adapter.subBlocks[t.name] = t.info.type.subBlocks!.count
        let dir = makeTemporaryDirectory("kqzo-zero")
        try adapter.write(to: dir + "/a.gguf", dim: model.config.dim)
        #expect(throws: TrainingError.self) { try Adapter.read(path: dir + "/a.gguf", for: model) }
    }

    /// Gemma 3 270M's Q4_K_M file: a few QZO steps at each granularity on its K-quant tensors
    /// (and its Q5_0/Q8_0 ones), starting from the model's own loss.
    @Test(.enabled(if: RealModel.gemma270.enabled), arguments: KQuantGranularity.allCases)
    func realGemmaTrains(_ kquant: KQuantGranularity) throws {
        let model = try LlamaModel(path: RealModel.gemma270.path)
        let qzo = try QuantScales(model: model, patterns: ["blk.*"], trainOffsets: false, kquant: kquant, microBatchTokens: 128,
                                  maxPoints: 2, contextLength: 64)
        let types = Set(qzo.targets.map(\.tensor.info.type))
        #expect(types.isSuperset(of: [.q4_K, .q6_K, .q5_0, .q8_0]), "\(types)")
        let data = try examples(texts, model.tokenizer)
        let start = try nll(qzo, data)
        let reference = try Evaluator(model: model, capacity: 128, contextLength: 64).evaluate(data).nll
        #expect(abs(start - reference) < 1e-5, "\(start) vs \(reference)")
        var settings = TrainingSettings()
        settings.steps = 3
        settings.batchSize = 4
        settings.learningRate = 3e-3
        let trainer = try Trainer(objective: qzo, optimizer: ZOSGD(groupSizes: qzo.groups.map(\.count)), settings: settings, train: data)
        var derivatives = [Float]()
        while !trainer.isFinished { derivatives += try trainer.runStep().derivatives }
        #expect(derivatives.allSatisfy(\.isFinite) && derivatives.contains { $0 != 0 })
        let after = try nll(qzo, data)
        #expect(after.isFinite && after != start)
    }
}

/// Whether gguf-py is importable (always assumed under CI=true, where its absence must fail).
let ggufPy: Bool = ProcessInfo.processInfo.environment["CI"] == "true"
    || ((try? runProcess("/usr/bin/env", ["python3", "-c", "import gguf"]))?.status == 0)

/// Whether llama-cpp-python is importable (the llama.cpp check is skipped without it).
let llamaCppPy: Bool = (try? runProcess("/usr/bin/env", ["python3", "-c", "import llama_cpp"]))?.status == 0

/// Runs a reference script of the repository; its standard output's lines.
func runReference(_ arguments: [String]) throws -> [String] {
    let r = try runProcess("/usr/bin/env", ["python3", Repository.path(arguments[0])] + arguments.dropFirst())
    guard r.status == 0 else { throw PythonError(message: r.stderr) }
    return r.stdout.split(separator: "\n").map(String.init)
}

struct PythonError: Error, CustomStringConvertible {
    let message: String
    var description: String { "python3 failed: \(message)" }
}
