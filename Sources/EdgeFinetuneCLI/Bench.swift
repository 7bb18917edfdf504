// `edge-finetune bench`: tokens per second of prompt processing and generation, peak
// memory, and (with --profile) where the time goes, on one model file.
//
// Every figure is a workload: one untimed warm-up run, then `--runs` timed runs, and
// the median is reported. bench/compare_llamacpp.py runs this command alternately
// with llama.cpp on the same file and thread count.

import ArgumentParser
import Foundation
import Model
import ZerothOrder
import Quant

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prompt-processing and generation speed (tokens/s) and peak memory.",
        discussion: """
            Prompt processing is measured twice per length: with the negative log-likelihood of \
            every position (the output projection for every token, as a training or evaluation \
            loss needs) and with the last position's logits only (as generation needs). \
            Generation decodes one token per pass with a KV cache after a short prompt. \
            Prompts are fixed pseudo-random token ids. Each figure is the median of --runs timed \
            runs after one warm-up run.
            """)

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "Prompt lengths to measure, comma-separated.")
    var tokens = "128,512"

    @Option(name: .long, help: "Timed runs per figure, after one warm-up run.")
    var runs = 5

    @Option(name: .long, help: "Tokens generated per generation run; 0 skips generation.")
    var genTokens = 64

    @Option(name: .long, help: "Prompt tokens before generation starts.")
    var genPrompt = 16

    @Flag(name: .long, help: "Also print the time per operation (matmuls, attention, output projection, norms) of one run of each workload.")
    var profile = false

    @Flag(name: .long, help: "Only time the kernels alone: every block format's one-token and 512-token matmul on real-sized matrices against memory-bandwidth and sgemm floors, then (if --model is a model we run) its own shapes.")
    var kernels = false

    @Flag(name: .long, inversion: .prefixedNo, help: "Also time a forward pass of a training batch and one training step of each method.")
    var training = true

    @Option(name: .long, help: "Training-batch workloads on real data: the first 8 examples of this JSONL (its text uses --training-new-token literally) instead of 8 x 64 pseudo-random tokens; the QZO step is then left out.")
    var trainingData: String?

    @Option(name: .long, help: "The new token the text of --training-data uses.")
    var trainingNewToken = " <x>"

    @Flag(name: .long, help: "Also time the textual-inversion step with each example's positions before its first new token run once for both points (train --share-prefix).")
    var sharePrefix = false

    @Flag(name: .long, help: "Read the weights of the training-batch workloads from disk block by block, as a run under --memory-budget does, instead of from the mapping.")
    var streamWeights = false

    @Flag(name: .long, help: "Print one JSON object instead of a table (a NaN or infinite number is null).")
    var json = false

    func validate() throws {
        guard (1...100_000).contains(runs) else { throw ValidationError("--runs must be in 1...100000 (got \(runs))") }
        guard (0...(1 << 24)).contains(genTokens) else { throw ValidationError("--gen-tokens must be in 0...\(1 << 24) (got \(genTokens))") }
        guard (1...(1 << 24)).contains(genPrompt) else { throw ValidationError("--gen-prompt must be in 1...\(1 << 24) (got \(genPrompt))") }
        guard !promptLengths.isEmpty, promptLengths.allSatisfy({ $0 >= 2 && $0 <= 1 << 24 }) else {
            throw ValidationError("--tokens must be a comma-separated list of lengths of at least 2 (got '\(tokens)')")
        }
    }

    var promptLengths: [Int] {
        tokens.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    func run() throws {
        model.applyThreads()
        if kernels { return try BenchKernels(runs: runs, json: json).run(modelPath: model.model) }
        let m = try LlamaModel(path: model.model)
        let longest = promptLengths.max()!
        guard longest <= m.config.contextLength, genPrompt + genTokens <= m.config.contextLength else {
            throw ModelError.contextOverflow(tokens: max(longest, genPrompt + genTokens), contextLength: m.config.contextLength)
        }

        var workloads = [Workload]()
        for n in promptLengths {
            workloads.append(Workload.promptAllLogits(m, tokens: n))
            workloads.append(Workload.promptLastLogit(m, tokens: n))
        }
        if genTokens > 0 {
            workloads.append(Workload.generation(m, prompt: genPrompt, tokens: genTokens))
        }
        workloads += try additionalWorkloads(m)

        var results = [Result]()
        for w in workloads {
            var r = Result(workload: w, seconds: measure(w))
            if profile {
                Profile.reset()
                Profile.enabled = true
                w.run()
                Profile.enabled = false
                r.profile = Profile.totals
            }
            results.append(r)
            w.release()
        }
        report(results, peakRSS: peakResidentBytes())
    }

    /// One warm-up run, then `runs` timed runs: the seconds of each.
    func measure(_ w: Workload) -> [Double] {
        w.run()
        return (0..<runs).map { _ in
            let start = Profile.now()
            w.run()
            return w.ownSeconds?() ?? Double(Profile.now() - start) / 1e9
        }
    }

    func report(_ results: [Result], peakRSS: Int) {
        if json {
            var object: [String: Any] = [
                "model": model.model, "threads": model.threads, "runs": runs, "peak_rss_bytes": peakRSS,
                "results": results.map { r -> [String: Any] in
                    var o: [String: Any] = [
                        "name": r.workload.name, "tokens": r.workload.tokensPerRun,
                        "seconds": r.seconds, "median_seconds": r.medianSeconds,
                        "tokens_per_second": r.tokensPerSecond,
                    ]
                    if let p = r.profile {
                        o["profile"] = p.map { ["op": $0.op.name, "seconds": $0.seconds, "calls": $0.calls] as [String: Any] }
                    }
                    return o
                },
            ]
            object["version"] = EdgeFinetune.configuration.version
            print(jsonText(object))
            return
        }
        var rows = [["workload", "tokens/s", "median s/run", "min", "max", "runs"]]
        for r in results {
            rows.append([r.workload.title, fixed(r.tokensPerSecond, 1), fixed(r.medianSeconds, 4),
                         fixed(r.seconds.min()!, 4), fixed(r.seconds.max()!, 4), String(r.seconds.count)])
        }
        print("\(model.model), \(model.threads) threads")
        print(table(rows))
        print("peak RSS: \(megabytes(peakRSS))")
        for r in results {
            guard let p = r.profile else { continue }
            let total = p.reduce(0) { $0 + $1.seconds }
            print("\nprofile of one run of \(r.workload.title) (\(fixed(total * 1000, 1)) ms in timed ops)")
            var prof = [["op", "ms", "share", "calls"]]
            for e in p.sorted(by: { $0.seconds > $1.seconds }) {
                prof.append([e.op.name, fixed(e.seconds * 1000, 2), fixed(100 * e.seconds / total, 1) + "%", String(e.calls)])
            }
            print(table(prof))
        }
    }
}

// MARK: - Workloads

/// One thing to time: `run` does one complete run (its state is allocated up front).
struct Workload {
    /// Short key for JSON: pp512_all, pp512_last, tg64.
    var name: String
    var title: String
    /// Tokens each run processes (prompt tokens, or generated tokens).
    var tokensPerRun: Int
    var run: () -> Void
    /// Frees the workload's buffers once it has been measured (called once).
    var release: () -> Void = {}

    /// Fixed pseudo-random token ids (bench/compare_llamacpp.py uses the same formula).
    static func promptIDs(_ count: Int, vocabulary: Int) -> [Int32] {
        (0..<count).map { Int32((1 + $0 * 7919) % vocabulary) }
    }

    /// A prompt of `tokens` ids through the forward pass, then the NLL of every position:
    /// the output projection for every token, as a loss needs.
    static func promptAllLogits(_ m: LlamaModel, tokens n: Int) -> Workload {
        let ids = promptIDs(n + 1, vocabulary: m.config.vocabSize)
        var state: RunState? = RunState(config: m.config, capacity: n, contextLength: n)
        var output: OutputScratch? = OutputScratch(dim: m.config.dim, capacity: min(n, 512))
        let batch = Batch(sequences: [Array(ids.prefix(n))])
        let targets = Array(ids.dropFirst())
        return Workload(name: "pp\(n)_all", title: "prompt \(n), NLL at every position", tokensPerRun: n, run: {
            m.forward(batch, state!)
            _ = m.negativeLogLikelihoods(batch, state!, targets: targets, scratch: output!)
        }, release: {
            state = nil
            output = nil
        })
    }

    /// A prompt of `tokens` ids, then the logits of its last position.
    static func promptLastLogit(_ m: LlamaModel, tokens n: Int) -> Workload {
        let ids = promptIDs(n, vocabulary: m.config.vocabSize)
        var state: RunState? = RunState(config: m.config, capacity: n, contextLength: n)
        let logits = FloatBuffer(count: m.config.vocabSize)
        let batch = Batch(sequences: [ids])
        return Workload(name: "pp\(n)_last", title: "prompt \(n), last logits only", tokensPerRun: n, run: {
            m.forward(batch, state!)
            m.logits(state!, token: n - 1, into: logits.pointer)
        }, release: { state = nil })
    }

    /// After an untimed prompt of `prompt` tokens, `tokens` greedy decoding steps with a KV cache.
    static func generation(_ m: LlamaModel, prompt: Int, tokens: Int) -> Workload {
        let ids = promptIDs(prompt, vocabulary: m.config.vocabSize)
        var state: RunState? = RunState(config: m.config, capacity: prompt, contextLength: prompt + tokens, cacheSlots: 1)
        let logits = FloatBuffer(count: m.config.vocabSize)
        let vocab = m.config.vocabSize
        // The prompt is part of each run but not of the timed span: `run` times itself.
        var seconds = 0.0
        return Workload(name: "tg\(tokens)", title: "generate \(tokens) after \(prompt)", tokensPerRun: tokens, run: {
            let s = state!
            m.forward(Batch(tokens: ids, spans: [SequenceSpan(start: 0, count: prompt, cacheSlot: 0)]), s)
            m.logits(s, token: prompt - 1, into: logits.pointer)
            Profile.reset()  // a profile covers the timed span only
            let start = Profile.now()
            for i in 0..<tokens {
                var best = 0
                for v in 1..<vocab where logits[v] > logits[best] { best = v }
                m.forward(Batch(tokens: [Int32(best)], spans: [SequenceSpan(start: 0, count: 1, position: prompt + i, cacheSlot: 0)]), s)
                m.logits(s, token: 0, into: logits.pointer)
            }
            seconds = Double(Profile.now() - start) / 1e9
        }, release: { state = nil }).timedBy { seconds }
    }

    /// A copy whose runs report `seconds()` (the workload's own timed span) instead of the
    /// wall time of the whole run.
    func timedBy(_ seconds: @escaping () -> Double) -> Workload {
        var w = self
        w.ownSeconds = seconds
        return w
    }

    var ownSeconds: (() -> Double)?
}

struct Result {
    var workload: Workload
    var seconds: [Double]
    var profile: [(op: Profile.Op, seconds: Double, calls: Int)]?

    init(workload: Workload, seconds: [Double]) {
        self.workload = workload
        self.seconds = seconds
    }

    var medianSeconds: Double {
        let s = seconds.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    var tokensPerSecond: Double { Double(workload.tokensPerRun) / medianSeconds }
}

// MARK: - Further workloads

extension Bench {
    /// Workloads measured after the built-in ones, with the same warm-up, runs and median,
    /// and reported in the same table and JSON: one forward pass (with the loss) of a
    /// training batch of 8 sequences of 64 tokens, and one zero-order training step on that
    /// batch for each method (two-sided SPSA: two perturbed points). Their tokens per run
    /// are the batch's, so "tokens/s" compares directly: a step that costs two forwards
    /// shows half the forward's rate. With --training-data the batch is that file's first 8
    /// examples, and with --share-prefix the textual-inversion step is timed shared as well.
    func additionalWorkloads(_ m: LlamaModel) throws -> [Workload] {
        guard training else { return [] }
        var sequences = 8, length = min(64, m.config.contextLength)
        let plain = (0..<sequences).map { s -> Example in
            let ids = Workload.promptIDs(length + s, vocabulary: m.config.vocabSize).suffix(length).map { $0 }
            return Example(tokens: ids, targets: Array(ids.dropFirst()) + [-1], line: s + 1)
        }
        var workloads = [Workload]()
        var examples = plain
        var shape = "8 x 64"
        // --training-data: its first 8 examples, tokenized with the new token added.
        let newToken = trainingData == nil ? "<bench-token>" : trainingNewToken
        var tokenizer: Tokenizer?
        if let trainingData {
            let added = try m.tokenizer.adding(tokens: [newToken])
            examples = Array(try Dataset.load(path: trainingData, tokenizer: added, maxLength: min(128, m.config.contextLength),
                                              chatTemplate: m.chatTemplateText).prefix(sequences))
            guard !examples.isEmpty else { throw ValidationErrorText("--training-data \(trainingData) has no examples") }
            sequences = examples.count
            length = examples.map(\.tokens.count).max()!
            shape = "\(sequences) of \(trainingData) (\(examples.map(\.tokens.count).reduce(0, +)) tokens)"
            tokenizer = added
        }
        let tokens = examples.map(\.tokens.count).reduce(0, +)
        // --stream-weights: every workload below reads its blocks through one streamer.
        let source: WeightStreamer? = streamWeights ? WeightStreamer(model: m) : nil

        // Textual inversion: one new token in every sequence (or the data's); both points in one batch.
        // (Refused data is an error; the pseudo-random batch skips what a model cannot do.)
        let make = { () throws -> TextualInversion in
            try TextualInversion(model: m, newTokens: [newToken], initToken: " the", microBatchTokens: tokens,
                                 maxPoints: 2, contextLength: length, tokenizer: tokenizer)
        }
        let ti = trainingData == nil ? try? make() : try make()
        if let ti, trainingData == nil {
            for i in examples.indices {
                examples[i].tokens[length / 2] = Int32(ti.firstID)
                examples[i].targets[length / 2 - 1] = Int32(ti.firstID)
            }
        }

        // One forward pass of the batch, with the loss at every position (the data's new
        // token at its initial row).
        var state: RunState? = RunState(config: m.config, capacity: tokens, contextLength: length)
        var output: OutputScratch? = OutputScratch(dim: m.config.dim, capacity: 256)
        let forwardExamples = trainingData == nil ? plain : examples
        let batch = Batch(sequences: forwardExamples.map(\.tokens))
        let targets = forwardExamples.flatMap(\.targets)
        let extra = trainingData == nil ? nil : ti?.currentExtraTokens()
        workloads.append(Workload(name: trainingData == nil ? "forward_8x64" : "forward_data", title: "forward + loss, batch \(shape)", tokensPerRun: tokens, run: {
            m.forward(batch, state!, extra: extra, weights: source)
            _ = m.negativeLogLikelihoods(batch, state!, targets: targets, extra: extra, scratch: output!, weights: source)
        }, release: {
            state = nil
            output = nil
        }))

        var settings = TrainingSettings()
        settings.steps = Int.max
        settings.batchSize = sequences
        settings.microBatchSize = sequences

        if let ti {
            ti.weights = source
            // With --share-prefix, the step as `train --share-prefix` runs it too, on its own trainer.
            for shared in sharePrefix ? [false, true] : [false] {
                var trainer = try? Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [m.config.dim]), settings: settings, train: examples)
                let suffix = trainingData == nil ? "_8x64" : "_data"
                workloads.append(Workload(name: (shared ? "ti_step_shared" : "ti_step") + suffix,
                                          title: "textual-inversion step\(shared ? ", shared prefix" : ""), batch \(shape) (2 points, one pass)",
                                          tokensPerRun: tokens, run: {
                    ti.sharePrefix = shared
                    do { try trainer!.runStep() } catch { warn("bench: training step failed: \(error)") }
                },
                                          release: { trainer = nil }))
            }
        }
        guard trainingData == nil else { return workloads }

        // QZO: every block scale of the transformer blocks; the points go block by block.
        if let qzo = try? QuantScales(model: m, patterns: ["blk.*"], trainOffsets: false, microBatchTokens: sequences * length,
                                      maxPoints: 2, contextLength: length) {
            qzo.weights = source
            var trainer = try? Trainer(objective: qzo, optimizer: ZOSGD(groupSizes: qzo.groups.map(\.count)), settings: settings,
                                       train: plain)
            workloads.append(Workload(name: "qzo_step_8x64", title: "QZO step, batch 8 x 64 (2 points, block by block)",
                                      tokensPerRun: sequences * length, run: {
                do { try trainer!.runStep() } catch { warn("bench: training step failed: \(error)") }
            },
                                      release: { trainer = nil }))
        }
        return workloads
    }
}

/// Peak resident set size of this process, in bytes (getrusage; Linux reports kilobytes).
func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
}

// MARK: - Kernel micro-benchmarks (--kernels)

/// Seconds of the fastest of `runs` (at least 3) timed runs of `body`, after one warm-up.
func bestSeconds(runs: Int, _ body: () -> Void) -> Double {
    body()
    var b = Double.infinity
    for _ in 0..<max(runs, 3) {
        let t0 = Profile.now()
        body()
        b = min(b, Double(Profile.now() - t0) / 1e9)
    }
    return b
}

import COpenBLAS

/// Times of the building blocks on the model's own shapes, to see what each costs alone.
func kernelReport(_ m: LlamaModel, runs: Int) -> [[String]] {
    func best(_ body: () -> Void) -> Double { bestSeconds(runs: runs, body) }
    var rows = [["kernel", "shape", "ms", "rate"]]
    let c = m.config
    let w = m.layerWeights(0)
    for n in [512, 64, 1] {
        let x = FloatBuffer(count: n * c.ffnDim)
        for i in 0..<x.count { x[i] = Float(i % 17) * 0.01 - 0.08 }
        let y = FloatBuffer(count: n * c.ffnDim)
        let scratch = MatmulScratch(tileRows: RunState.tileRows, cols: c.ffnDim)
        for (name, mat) in [("Wup", w.wUp), ("Wdown", w.wDown), ("Wq", w.wq)] {
            let s = best { matmul(mat, x.pointer, n: n, y.pointer, scratch: scratch) }
            rows.append(["matmul \(name) \(mat.type.name)", "\(n)x\(mat.cols) · \(mat.rows)x\(mat.cols)ᵀ", fixed(s * 1000, 3),
                         fixed(2 * Double(n * mat.rows * mat.cols) / s / 1e9, 1) + " GFLOP/s"])
        }
    }
    // Plain sgemm on the biggest block shape, for the ceiling.
    let n = 512
    let a = FloatBuffer(count: n * c.dim)
    let b = FloatBuffer(count: c.ffnDim * c.dim)
    let out = FloatBuffer(count: n * c.ffnDim)
    let s = best {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(c.ffnDim), Int32(c.dim), 1,
                    a.pointer, Int32(c.dim), b.pointer, Int32(c.dim), 0, out.pointer, Int32(c.ffnDim))
    }
    rows.append(["cblas_sgemm 1 thread", "\(n)x\(c.dim) · \(c.ffnDim)x\(c.dim)ᵀ", fixed(s * 1000, 3),
                 fixed(2 * Double(n * c.ffnDim * c.dim) / s / 1e9, 1) + " GFLOP/s"])
    // The alternative to our row split: OpenBLAS's own threads on the whole product.
    openblas_set_num_threads(Int32(Parallel.threadCount))
    let s2 = best {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(c.ffnDim), Int32(c.dim), 1,
                    a.pointer, Int32(c.dim), b.pointer, Int32(c.dim), 0, out.pointer, Int32(c.ffnDim))
    }
    openblas_set_num_threads(1)
    rows.append(["cblas_sgemm \(Parallel.threadCount) OpenBLAS threads", "\(n)x\(c.dim) · \(c.ffnDim)x\(c.dim)ᵀ", fixed(s2 * 1000, 3),
                 fixed(2 * Double(n * c.ffnDim * c.dim) / s2 / 1e9, 1) + " GFLOP/s"])
    // Dequantization of one matrix.
    let d = best { w.wUp.dequantize(rows: 0..<w.wUp.rows, into: b.pointer) }
    rows.append(["dequantize Wup", "\(w.wUp.rows)x\(w.wUp.cols)", fixed(d * 1000, 3),
                 fixed(Double(w.wUp.rows * w.wUp.cols) / d / 1e9, 2) + " Gweights/s"])
    let e = best { siluMultiply(out.pointer, b.pointer, count: n * c.ffnDim / 2) }
    rows.append(["siluMultiply", "\(n * c.ffnDim / 2)", fixed(e * 1000, 3), fixed(Double(n * c.ffnDim / 2) / e / 1e9, 2) + " G/s"])
    // Output head shapes: one vocabulary tile against 512 hidden states, single-threaded.
    let hidden = FloatBuffer(count: 512 * c.dim)
    let tile = FloatBuffer(count: 1024 * c.dim)
    let logits = FloatBuffer(count: 512 * 1024)
    BLAS.useOneThread()
    for rowsPerTile in [128, 256, 512, 1024] {
        let s = best {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 512, Int32(rowsPerTile), Int32(c.dim), 1,
                        hidden.pointer, Int32(c.dim), tile.pointer, Int32(c.dim), 0, logits.pointer, Int32(rowsPerTile))
        }
        rows.append(["sgemm 1 thread", "512x\(c.dim) · \(rowsPerTile)x\(c.dim)ᵀ", fixed(s * 1000, 3),
                     fixed(2 * Double(512 * rowsPerTile * c.dim) / s / 1e9, 1) + " GFLOP/s"])
    }
    let head = m.weight(m.output)
    let o1 = best { matmul(head, hidden.pointer, n: 1, logits.pointer, scratch: MatmulScratch(tileRows: 16, cols: c.dim)) }
    rows.append(["matmul output \(head.type.name)", "1x\(c.dim) · \(head.rows)x\(c.dim)ᵀ", fixed(o1 * 1000, 3),
                 fixed(Double(head.byteCount) / o1 / 1e9, 1) + " GB/s"])
    // Fused dot products on one thread, no pool: the kernels' own speed.
    let sums = FloatBuffer(count: c.ffnDim / 32)
    blockSums(hidden.pointer, count: c.dim, into: sums.pointer)
    for (name, mat) in [("Wup", w.wUp), ("output", head)] {
        let s = best { for _ in 0..<4 { mat.dots(rows: 0..<min(mat.rows, 8192), hidden.pointer, sums.pointer, into: logits.pointer) } }
        let bytes = 4 * min(mat.rows, 8192) * mat.rowBytes
        rows.append(["dots 1 thread \(mat.type.name) (\(name))", "\(min(mat.rows, 8192)) rows x4", fixed(s * 1000, 3),
                     fixed(Double(bytes) / s / 1e9, 1) + " GB/s"])
    }
    let ordered = FloatBuffer(count: c.dim)
    nibbleOrder(hidden.pointer, count: c.dim, into: ordered.pointer)
    let rowBytes = w.wUp.rowBytes
    let so = best {
        for _ in 0..<4 {
            for r in 0..<w.wUp.rows {
                logits[r] = dotQ4_1Ordered(w.wUp.data + r * rowBytes, ordered.pointer, sums.pointer, blocks: c.dim / 32)
            }
        }
    }
    rows.append(["dotQ4_1Ordered 1 thread (Wup)", "\(w.wUp.rows) rows x4", fixed(so * 1000, 3),
                 fixed(Double(4 * w.wUp.byteCount) / so / 1e9, 1) + " GB/s"])
    let p = best { for _ in 0..<1000 { Parallel.forRanges(64) { _ in } } }
    let q = best { for _ in 0..<1000 { DispatchQueue.concurrentPerform(iterations: Parallel.threadCount) { _ in } } }
    rows.append(["DispatchQueue.concurrentPerform (empty)", "x1000", fixed(q * 1000, 3), fixed(q * 1e6 / 1000, 2) + " µs/call"])
    rows.append(["Parallel.forRanges (empty)", "x1000", fixed(p * 1000, 3), fixed(p * 1e6 / 1000, 2) + " µs/call"])
    return rows
}
