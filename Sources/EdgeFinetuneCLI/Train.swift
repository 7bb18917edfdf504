// `edge-finetune train`: personalize a model with forward passes only.

import ArgumentParser
import Foundation
import GGUF
import Model
import MPICollective
import PluginHost
import Quant
import ZerothOrder

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Personalize a model with forward passes only (zeroth-order optimization).",
        discussion: """
            Methods: textual-inversion learns the embeddings of new tokens (--new-token) and
            leaves the model frozen; the training text uses the new tokens literally. qzo trains
            the block scales of the int4 weights; their 4-bit codes never change. Both can run
            together (--method qzo,textual-inversion). The data is JSONL as for `eval`.
            Under `mpirun -np N` (Open MPI), N ranks train one model: each measures its share of
            every step's micro-batches and the ranks exchange only loss sums; the adapter is the
            one a single process gives with the same --batch and --micro-batch.
            """)

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "Training data (JSONL).")
    var data: String

    @Option(name: .long, help: "Held-out data (JSONL) evaluated during training.")
    var evalData: String?

    @Option(name: .long, help: "Fraction of the training data held out for evaluation when --eval-data is not given.")
    var evalFraction: Double = 0

    @Option(name: .long, help: "What to train: textual-inversion (new tokens' embeddings), qzo (block scales of the int4 weights), or qzo,textual-inversion (both).")
    var method: String = "textual-inversion"

    @Option(name: .long, parsing: .singleValue, help: "A new token to learn (repeatable), e.g. \" <x>\".")
    var newToken: [String] = []

    @Option(name: .long, help: "Text of one existing token whose embedding the new tokens start from.")
    var initToken: String = " the"

    @Option(name: .long, help: "The new tokens' output rows: tied (the trained rows) or init (the init token's output row, fixed).")
    var newTokenOutput: String = "tied"

    @Flag(name: .long, inversion: .prefixedNo, help: "Textual inversion: run each example's positions before its first new token once for all points of a step (the same losses up to float32 rounding, less work).")
    var sharePrefix = false

    @Option(name: .long, help: "Training steps.")
    var steps = 1000

    @Option(name: .long, help: "Examples per step.")
    var batch = 8

    @Option(name: .long, help: "Learning rate, relative: one number for every trained set, or per set as textual-inversion=0.5,qzo=3e-3 (defaults: textual inversion 0.75 in units of the init token's row RMS, QZO 3e-3 relative to each scale; with a plugin and both sets, 3e-3 for both).")
    var lr: String?

    @Option(name: .long, help: "Perturbation size ε, relative as --lr: one number or per set as --lr (defaults: textual inversion 1e-2, QZO 1e-3; with a plugin and both sets, 1e-3 for both).")
    var eps: String?

    @Option(name: .long, help: "Learning-rate schedule over --steps: constant, cosine or linear (decay to --lr-min-ratio x the rate at the last step).")
    var lrSchedule: String = "constant"

    @Option(name: .long, help: "Steps of linear warm-up from 0 to the learning rate, before the schedule.")
    var warmup = 0

    @Option(name: .long, help: "Cosine and linear schedules: the rate at the last step as a fraction of --lr, in [0, 1].")
    var lrMinRatio: Double = 0

    @Option(name: .long, help: "QZO: comma-separated name patterns (* wildcards) of the tensors whose block scales are trained.")
    var tensors: String = "blk.*"

    @Option(name: .long, help: "Directional-derivative clipping bound C: each step's |d| is clipped to C; 0 turns clipping off (default: 100 when QZO trains, off for textual inversion alone).")
    var ddc: Float?

    @Option(name: .long, help: "Trust region: no step moves a trained group (a new token's row, a tensor's scales) by more than this fraction of its norm; a longer update is scaled onto that radius. 0: unbounded (default).")
    var maxUpdate: Double = 0

    @Flag(name: .long, help: "QZO: also train Q4_1 blocks' offsets m.")
    var trainOffsets = false

    @Option(name: .long, help: "QZO on K-quants: sub (every sub-block's scale and min, re-encoded on export; 16 values per 256 weights) or super (d and dmin per 256 weights, exact on export, 8-16x fewer values).")
    var kquantScales = "sub"

    @Option(name: .long, help: "Fraction in (0, 1] of the trained tensors each direction perturbs, chosen from its seed (the update is divided by the chosen share); 1 perturbs all. Needs the built-in zo-sgd.")
    var perturbFraction: Double = 1

    @Option(name: .long, help: "Perturbation directions per step, q.")
    var directions = 1

    @Option(name: .long, help: "Estimator: two-sided (SPSA, 2q forward passes) or one-sided (q + 1).")
    var estimator: String = "two-sided"

    @Option(name: .long, help: "Subspace for textual inversion: off, project (ZOODiP: project the estimate), perturb (perturb inside ZOODiP's kept subspace), embeddings (perturb along the top --subspace-rank principal directions of token_embd's rows).")
    var subspace: String = "off"

    @Option(name: .long, help: "--subspace embeddings: principal directions kept, 1 to the model's width (default: 64, or the width if smaller).")
    var subspaceRank: Int?

    @Option(name: .long, help: "Subspace refresh period and history length τ in steps.")
    var subspacePeriod = 128

    @Option(name: .long, help: "Variance share ν left out of the kept subspace.")
    var subspaceThreshold: Double = 1e-3

    @Option(name: .long, help: "Steps before the subspace is first used (default: the period τ).")
    var subspaceWarmup: Int?

    @Option(name: .long, help: "Training loss: nll (the data's next tokens) or kl (a --teacher model's next-token distributions).")
    var loss: String = "nll"

    @Option(name: .long, help: "Teacher model (GGUF) for --loss kl, e.g. the original of a requantized model.")
    var teacher: String?

    @Option(name: .long, help: "Teacher tokens kept per position for --loss kl.")
    var teacherTopK = 32

    @Option(name: .long, help: "Optimizer: zo-sgd (built in), or the NAME or PATH of an optimizer plugin, e.g. zo-adam, hizoo (see `plugins list`).")
    var optimizer: String = "zo-sgd"

    @Option(name: .long, parsing: .singleValue, help: "An optimizer option as name=value (repeatable), e.g. momentum=0.9; `plugins describe NAME` lists them.")
    var opt: [String] = []

    @Option(name: .long, help: "Seed of data order and perturbations.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Evaluate held-out NLL every K steps.")
    var evalEvery = 50

    @Option(name: .long, help: "Longest example in tokens.")
    var maxLength = 128

    @Option(name: .long, help: "Where to write the learned adapter (GGUF).")
    var out: String = "adapter.gguf"

    @Option(name: .long, help: "Write one JSON object per step to this file.")
    var logJson: String?

    @OptionGroup var budget: MemoryBudgetOptions

    @Option(name: .long, help: "Directory for crash-safe checkpoints (LZ4, checksummed).")
    var checkpointDir: String?

    @Option(name: .long, help: "Steps between checkpoints.")
    var checkpointEvery = 50

    @Flag(name: .long, help: "Continue from the newest valid checkpoint in --checkpoint-dir.")
    var resume = false

    @Option(name: .long, help: "Examples per forward pass at most (default: as many as the memory plan allows; under mpirun with N ranks at most ceil(batch/N), so every rank has work). N ranks give the same adapter as one process with the same --micro-batch.")
    var microBatch: Int?

    @Option(name: .long, help: "Under mpirun: seconds a rank waits for the others at one exchange before ending the run.")
    var rankTimeout: Double = 600

    @Flag(name: .long, help: "Keep the adapter of the best held-out evaluation: --out is written whenever the held-out NLL improves (from the start, step 0), not at the end. Needs --eval-data or --eval-fraction.")
    var keepBest = false

    /// Bounds of the counts: far beyond any run, small enough that no product of them overflows.
    static let maximumSteps = 1_000_000_000, maximumBatch = 1_000_000, maximumDirections = 10_000, maximumLength = 1 << 30

    func validate() throws {
        guard (1...Self.maximumSteps).contains(steps) else { throw ValidationError("--steps must be in 1...\(Self.maximumSteps) (got \(steps))") }
        guard (1...Self.maximumBatch).contains(batch) else { throw ValidationError("--batch must be in 1...\(Self.maximumBatch) (got \(batch))") }
        guard (1...Self.maximumDirections).contains(directions) else {
            throw ValidationError("--directions must be in 1...\(Self.maximumDirections) (got \(directions))")
        }
        guard (2...Self.maximumLength).contains(maxLength) else { throw ValidationError("--max-length must be in 2...\(Self.maximumLength) (got \(maxLength))") }
        guard (1...Self.maximumSteps).contains(evalEvery) else { throw ValidationError("--eval-every must be in 1...\(Self.maximumSteps) (got \(evalEvery))") }
        guard (2...65536).contains(subspacePeriod) else { throw ValidationError("--subspace-period must be in 2...65536 (got \(subspacePeriod))") }
        guard subspaceThreshold > 0, subspaceThreshold < 1 else {
            throw ValidationError("--subspace-threshold must be in (0, 1) (got \(subspaceThreshold))")
        }
        if let subspaceWarmup { guard (0...Self.maximumSteps).contains(subspaceWarmup) else {
            throw ValidationError("--subspace-warmup must be in 0...\(Self.maximumSteps) (got \(subspaceWarmup))")
        } }
        let trained = trainedSets
        if let lr { _ = try Self.perSetValues(lr, flag: "--lr", trained: trained, zeroAllowed: true) }
        if let eps { _ = try Self.perSetValues(eps, flag: "--eps", trained: trained, zeroAllowed: false) }
        guard let kind = LearningRateSchedule.Kind(rawValue: lrSchedule) else {
            throw ValidationError("--lr-schedule must be constant, cosine or linear (got \(lrSchedule))")
        }
        if let problem = LearningRateSchedule(kind: kind, warmup: warmup, minRatio: lrMinRatio, totalSteps: steps).problem {
            throw ValidationError(problem)
        }
        if let problem = PerturbationSubset.problem(perturbFraction) { throw ValidationError(problem) }
        if let ddc, !(ddc >= 0 && ddc.isFinite) { throw ValidationError("--ddc must be 0 (off) or a positive bound (got \(ddc))") }
        if let problem = TrainingSettings.maxUpdateProblem(maxUpdate) { throw ValidationError(problem) }
        guard evalFraction >= 0, evalFraction < 1 else { throw ValidationError("--eval-fraction must be in [0, 1) (got \(evalFraction))") }
        guard EstimatorKind(rawValue: estimator) != nil else {
            throw ValidationError("--estimator must be two-sided or one-sided (got \(estimator))")
        }
        guard subspace == "off" || SubspaceGradient.Mode(rawValue: subspace) != nil else {
            throw ValidationError("--subspace must be off, project, perturb or embeddings (got \(subspace))")
        }
        if let subspaceRank {
            guard subspace == "embeddings" else { throw ValidationError("--subspace-rank applies to --subspace embeddings (got --subspace \(subspace))") }
            guard subspaceRank >= 1 else { throw ValidationError("--subspace-rank must be at least 1 (got \(subspaceRank))") }
        }
        let methods = method.split(separator: ",").map(String.init)
        guard !methods.isEmpty, methods.allSatisfy({ $0 == "textual-inversion" || $0 == "qzo" }) else {
            throw ValidationError("--method must be textual-inversion, qzo, or both as qzo,textual-inversion (got \(method))")
        }
        if !methods.contains("textual-inversion") && !newToken.isEmpty {
            throw ValidationError("--new-token is for --method textual-inversion (or qzo,textual-inversion)")
        }
        if NewTokenOutputRow(rawValue: newTokenOutput) == nil {
            throw ValidationError("--new-token-output must be tied or init (got \(newTokenOutput))")
        }
        if sharePrefix && methods != ["textual-inversion"] {
            throw ValidationError("--share-prefix applies to --method textual-inversion alone: QZO's points differ in every weight, so no position is the same at both")
        }
        if methods.contains("textual-inversion") && newToken.isEmpty {
            throw ValidationError("textual inversion needs at least one --new-token, e.g. --new-token \" <x>\"")
        }
        if evalData != nil && evalFraction > 0 { throw ValidationError("give --eval-data or --eval-fraction, not both") }
        if resume && checkpointDir == nil { throw ValidationError("--resume needs --checkpoint-dir") }
        if keepBest && evalData == nil && evalFraction == 0 { throw ValidationError("--keep-best needs --eval-data or --eval-fraction") }
        guard KQuantGranularity(rawValue: kquantScales) != nil else { throw ValidationError("--kquant-scales must be super or sub (got \(kquantScales))") }
        guard loss == "nll" || loss == "kl" else { throw ValidationError("--loss must be nll or kl (got \(loss))") }
        if loss == "kl" && teacher == nil { throw ValidationError("--loss kl needs --teacher MODEL") }
        if loss == "nll" && teacher != nil { throw ValidationError("--teacher is used with --loss kl") }
        if loss == "kl" && methods.contains("textual-inversion") {
            // The teacher reads the same token ids, and a new token is not one of its ids.
            throw ValidationError("--loss kl cannot train --method textual-inversion: the teacher has no token \(newToken.first.map { "'\($0)'" } ?? "for a new token") to read; train new tokens with --loss nll")
        }
        guard (1...65536).contains(teacherTopK) else { throw ValidationError("--teacher-top-k must be in 1...65536 (got \(teacherTopK))") }
        if let microBatch { guard (1...Self.maximumBatch).contains(microBatch) else {
            throw ValidationError("--micro-batch must be in 1...\(Self.maximumBatch) (got \(microBatch))")
        } }
        guard rankTimeout.isFinite, rankTimeout > 0 else { throw ValidationError("--rank-timeout must be a positive number of seconds (got \(rankTimeout))") }
        guard (1...Self.maximumSteps).contains(checkpointEvery) else {
            throw ValidationError("--checkpoint-every must be in 1...\(Self.maximumSteps) (got \(checkpointEvery))")
        }
    }

    /// Where the loss curve goes: beside --out, as .svg.
    var curvePath: String { out.hasSuffix(".gguf") ? String(out.dropLast(5)) + ".svg" : out + ".svg" }

    func run() throws {
        // Under mpirun this process is one rank of the run; only rank 0 prints and writes.
        let mpi: MPICollective?
        do { mpi = try MPICollective.join() } catch { throw ValidationErrorText(error.description) }
        guard let mpi else { return try train(SingleProcess()) }
        mpi.timeoutSeconds = rankTimeout
        RankSignals.install(rank: mpi.rank)
        do {
            try train(mpi)
            mpi.finalize()
        } catch {
            // Errors every rank has (a failed step carried to all, disagreeing ranks, a
            // non-finite loss) print once, on rank 0; one rank's own error ends every rank.
            var shared = false
            if let e = error as? TrainingError {
                switch e {
                case .distributed: shared = true
                case .nonFiniteLoss, .nonFiniteUpdate, .optimizer: shared = RankSignals.started
                default: break
                }
            }
            if shared {
                mpi.finalize()
                if mpi.rank == 0 { throw error }
                throw ExitCode.failure
            }
            warn("Error: rank \(mpi.rank): \(error)")
            RankSignals.step(-1)
            mpi.abort(code: 1)
        }
    }

    func train(_ collective: Collective) throws {
        let lead = collective.rank == 0
        let note: (String) -> Void = lead ? warn : { _ in }
        // Nothing the user has is overwritten, and an unwritable output is found before step 1.
        var inputs = [NamedFile("--model", model.model), NamedFile("--data", data)]
        if let evalData { inputs.append(NamedFile("--eval-data", evalData)) }
        if let teacher { inputs.append(NamedFile("--teacher", teacher)) }
        if optimizer.contains("/") { inputs.append(NamedFile("--optimizer", optimizer)) }
        var outputs = [NamedFile("--out", out), NamedFile("the loss curve (beside --out)", curvePath)]
        if let logJson { outputs.append(NamedFile("--log-json", logJson)) }
        try checkFiles(outputs: outputs, inputs: inputs)

        model.applyThreads()
        let clock = ContinuousClock()
        let started = clock.now

        // Flags to options; everything else is the library's.
        let methods = Set(method.split(separator: ",").map(String.init))
        var o = TrainingRunOptions(modelPath: model.model, dataPath: data, method: TrainingMethod(
            textualInversion: methods.contains("textual-inversion") ? (newToken, initToken) : nil,
            qzo: methods.contains("qzo") ? (tensors.split(separator: ",").map(String.init), trainOffsets) : nil))
        o.method.newTokenOutput = NewTokenOutputRow(rawValue: newTokenOutput) ?? .tied
        o.method.kquantScales = KQuantGranularity(rawValue: kquantScales)!
        o.sharePrefix = sharePrefix
        o.evalPath = evalData
        o.evalFraction = evalFraction
        o.maxLength = maxLength
        o.settings.steps = steps
        o.settings.batchSize = batch
        o.settings.microBatchSize = batch
        // Each trained set at its own rate and ε unless --lr / --eps give one for all; the run's
        // own (what measures the directional derivative, and --ddc bounds) is QZO's when it trains.
        let sets = trainedSets
        let rates = try rateOfEachSet(lr, flag: "--lr", defaults: Self.defaultRates, sets: sets)
        let epsilons = try rateOfEachSet(eps, flag: "--eps", defaults: Self.defaultEpsilons, sets: sets)
        o.settings.learningRate = rates[sets[0]]!
        o.settings.epsilon = epsilons[sets[0]]!
        o.setLearningRates = rates
        o.setEpsilons = epsilons
        o.settings.lrSchedule = LearningRateSchedule.Kind(rawValue: lrSchedule)!
        o.settings.warmup = warmup
        o.settings.lrMinRatio = lrMinRatio
        o.settings.directions = directions
        o.settings.estimator = EstimatorKind(rawValue: estimator)!
        o.settings.seed = seed
        o.settings.evalEvery = evalEvery
        o.settings.perturbFraction = perturbFraction
        o.settings.maxUpdate = maxUpdate
        o.settings.clip = effectiveDDC > 0 ? effectiveDDC : nil
        o.subspace = SubspaceGradient.Mode(rawValue: subspace).map { ($0, subspacePeriod, subspaceThreshold, subspaceWarmup ?? subspacePeriod) }
        o.subspaceRank = subspaceRank
        o.teacher = teacher.map { ($0, teacherTopK) }
        o.memoryBudget = budget.bytes
        o.checkpointDirectory = checkpointDir
        o.checkpointEvery = checkpointEvery
        o.resume = resume
        o.extraIdentity = ["optimizer_options": opt.joined(separator: " ")]
        o.microBatchLimit = microBatch ?? (collective.size > 1 ? (batch + collective.size - 1) / collective.size : nil)
        if collective.size > 1, optimizer != "zo-sgd" { o.agreement = [("the optimizer plugin", try pluginDigest(optimizer))] }
        // What a plugin may allocate through the host: the run's budget at most (the planner
        // then counts what it did allocate, and refuses a plan that no longer fits).
        var modelInfo = stat()
        let pluginCap = budget.bytes ?? (stat(model.model, &modelInfo) == 0 ? Int(modelInfo.st_size) : 0) + TrainingRun.defaultBudgetMargin
        let run = try TrainingRun(o, collective: collective, makeOptimizer: { groups in
            // A plugin, or the built-in ZO-SGD.
            if optimizer == "zo-sgd" { return try ZOSGD.make(groupSizes: groups.map(\.count), options: opt) }
            return try PluginHost.load(optimizer).makeOptimizer(options: opt, groups: groups, memoryBudget: pluginCap)
        }, note: note)
        RankSignals.started = true

        // Per-set rates: the adapter and the log record each set's (the identity's "qzo=…,textual-inversion=…").
        let perSet = run.trainer.settings.groupLearningRates != nil
        /// Writes the adapter as it is after `step`, with the held-out NLL measured there.
        func writeAdapter(step: Int, heldOut: Double?) throws {
            guard lead else { return }
            var settings: [String: Any] = [
                "method": method, "steps": steps, "batch": batch, "lr": perSet ? run.identity["lr"]! : Double(o.settings.learningRate),
                "eps": perSet ? run.identity["eps"]! : Double(o.settings.epsilon), "seed": Int(seed), "directions": directions, "estimator": estimator,
                "subspace": subspace == "embeddings" ? "embeddings \(run.subspaceRank ?? 0)" : subspace, "init_token": initToken, "tensors": tensors, "ddc": Double(effectiveDDC),
                "data": data, "optimizer": run.optimizer.name, "optimizer_options": opt, "loss": loss, "teacher": teacher ?? "",
                "step": step,
            ]
            if sharePrefix { settings["share_prefix"] = true }
            if let heldOut { settings["held_out_nll"] = heldOut }
            if perturbFraction != 1 { settings["perturb_fraction"] = perturbFraction }
            if maxUpdate != 0 { settings["max_update"] = maxUpdate }
            if !o.settings.schedule.isConstant {
                settings["lr_schedule"] = lrSchedule
                settings["warmup"] = warmup
                settings["lr_min_ratio"] = lrMinRatio
            }
            try run.adapter(training: jsonText(settings)).write(to: out, dim: run.model.config.dim)
        }

        // The JSON log's rate of each set at each step, when the sets have their own.
        let perSetLog = !perSet ? [:] : Dictionary(uniqueKeysWithValues: rates.map { ($0.key.rawValue, $0.value) })
        let initialEval = try run.evaluate()
        if let initialEval { note("held-out NLL before training: \(fixed(initialEval))") }
        let log = try logJson.flatMap { lead ? try JSONLog(path: $0) : nil }
        if let initialEval { try log?.writeInitial(evalNLL: initialEval) }
        var progress = ProgressDisplay(total: steps, first: run.nextStep)
        var records = [StepRecord]()
        var lastEval = initialEval
        // --keep-best: the best held-out NLL so far and its step. A resumed run takes them
        // from the adapter it wrote before (the steps it replays give the same evaluations).
        var best: (step: Int, nll: Double)?
        if keepBest, let initialEval {
            if resume, let recorded = try recordedEvaluation(collective, lead: lead), recorded.step < run.nextStep {
                best = (recorded.step, recorded.heldOutNLL)
            } else {
                best = (run.nextStep - 1, initialEval)
                try writeAdapter(step: run.nextStep - 1, heldOut: initialEval)
            }
        }
        var lastStep = run.nextStep - 1
        var exchanges = [(bytes: Int, seconds: Double)]()
        while !run.isFinished {
            RankSignals.step(run.nextStep)
            let record: StepRecord
            let (sent, waited) = (collective.bytesSent, collective.secondsExchanging)
            do {
                record = try run.step()
                exchanges.append((collective.bytesSent - sent, collective.secondsExchanging - waited))
            } catch {
                // Keep what was learned up to the last good step (with --keep-best, the best one is on disk).
                switch error {
                case .nonFiniteLoss, .nonFiniteUpdate, .optimizer: if !keepBest { try? writeAdapter(step: lastStep, heldOut: nil) }
                default: break
                }
                throw error
            }
            records.append(record)
            lastStep = record.step
            if let e = record.evalLoss {
                lastEval = e
                if let b = best, e < b.nll {
                    best = (record.step, e)
                    try writeAdapter(step: record.step, heldOut: e)
                }
            }
            try log?.write(record, setRates: perSetLog.mapValues { Double($0) * record.rateFactor })
            if lead { progress.update(record, lastEval: lastEval) }
        }
        if lead { progress.finish() }
        guard lead else { return }

        if !keepBest { try writeAdapter(step: lastStep, heldOut: records.last?.evalLoss) }
        let seconds = (clock.now - started).seconds
        let curve = curvePath
        try LossCurve(records: records, initialEval: initialEval).write(to: curve)
        var summary = [["adapter", out], ["loss curve", curve],
                       ["time", String(format: "%.1f s (%.2f steps/s)", seconds, Double(records.count) / seconds)],
                       ["peak RSS", megabytes(peakRSS())]]
        if collective.size > 1 {
            // Medians over the steps: a step with a held-out evaluation exchanges more.
            let bytes = exchanges.map(\.bytes).sorted(), seconds = exchanges.map(\.seconds).sorted()
            summary.append(["ranks", String(format: "%d, %d bytes sent per step by rank 0, %.2f ms per step in the exchange (medians)",
                                            collective.size, bytes.isEmpty ? 0 : bytes[bytes.count / 2],
                                            seconds.isEmpty ? 0 : 1e3 * seconds[seconds.count / 2])])
        }
        // What a plugin holds through the host's allocation counter (its moments, windows, buffers).
        if let plugin = run.optimizer as? PluginOptimizer { summary.append(["plugin memory", "\(plugin.allocatedBytes) bytes (\(plugin.name), through the host)"]) }
        if let initialEval, let lastEval {
            summary.insert(["held-out NLL", "\(fixed(initialEval)) → \(fixed(lastEval)) nats"], at: 0)
        }
        if let best {
            summary.insert(["kept", "the adapter of step \(best.step), held-out NLL \(fixed(best.nll)) nats (--keep-best)"], at: 1)
        }
        if let first = records.first, let last = records.last {
            summary.insert(["train loss", "\(fixed(first.loss)) → \(fixed(last.loss)) (step \(first.step) → \(last.step))"], at: 0)
        }
        print(table(summary))
    }
}

extension Train {
    /// The sets --method trains, QZO first (the run's own rate and ε are the first set's).
    var trainedSets: [TrainedSet] {
        let methods = method.split(separator: ",").map(String.init)
        return (methods.contains("qzo") ? [TrainedSet.qzo] : []) + (methods.contains("textual-inversion") ? [.textualInversion] : [])
    }

    /// --ddc, or its default: QZO's C = 100 when QZO trains, no clipping for textual inversion alone.
    var effectiveDDC: Float { ddc ?? (trainedSets.contains(.qzo) ? 100 : 0) }

    /// Measured on the benchmarks: QZO's 3.3 M scales take smaller steps than one token's 576
    /// values. Textual inversion's 0.75 and 1e-2 are the former absolute 1e-2 and 1e-3 on
    /// SmolLM2's " the" row (RMS 0.117), now in units of the init row's RMS on every file.
    static let defaultRates: [TrainedSet: Float] = [.qzo: 3e-3, .textualInversion: 0.75]
    static let defaultEpsilons: [TrainedSet: Float] = [.qzo: 1e-3, .textualInversion: 1e-2]

    /// --lr or --eps: one positive number (every set), or `set=value` pairs separated by
    /// commas; a pair's value may be 0 for --lr (that set stays as it is).
    static func perSetValues(_ text: String, flag: String, trained: [TrainedSet], zeroAllowed: Bool) throws -> (all: Float?, perSet: [TrainedSet: Float]) {
        if !text.contains("=") {
            guard let v = Float(text), v.isFinite, v > 0 else { throw ValidationError("\(flag) must be a positive number or set=value pairs such as textual-inversion=0.5,qzo=3e-3 (got \(text))") }
            return (v, [:])
        }
        var out = [TrainedSet: Float]()
        for pair in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("\(flag): '\(pair)' is not set=value (e.g. textual-inversion=0.5,qzo=3e-3)")
            }
            guard let set = TrainedSet(rawValue: parts[0]) else {
                throw ValidationError("\(flag): no trained set '\(parts[0])' (sets: qzo, textual-inversion)")
            }
            guard trained.contains(set) else {
                throw ValidationError("\(flag): \(set.rawValue) is not trained by this --method (\(trained.map(\.rawValue).joined(separator: ",")))")
            }
            guard out[set] == nil else { throw ValidationError("\(flag): \(set.rawValue) is given twice") }
            guard let v = Float(parts[1]), v.isFinite, zeroAllowed ? v >= 0 : v > 0 else {
                throw ValidationError("\(flag): the value of \(set.rawValue) must be a \(zeroAllowed ? "number of at least 0" : "positive number") (got '\(parts[1])')")
            }
            out[set] = v
        }
        return (nil, out)
    }

    /// Each trained set's value of --lr or --eps. A set not named takes its own default, or,
    /// with an optimizer plugin, the default of the first set for all: a plugin gets one rate
    /// per step (ABI 1.1), and the run refuses sets whose rates differ with a plugin.
    func rateOfEachSet(_ text: String?, flag: String, defaults: [TrainedSet: Float], sets: [TrainedSet]) throws -> [TrainedSet: Float] {
        let given = try text.map { try Self.perSetValues($0, flag: flag, trained: sets, zeroAllowed: flag == "--lr") } ?? (all: nil, perSet: [:])
        var out = [TrainedSet: Float]()
        for set in sets {
            out[set] = given.all ?? given.perSet[set] ?? (optimizer == "zo-sgd" ? defaults[set]! : defaults[sets[0]]!)
        }
        return out
    }

    /// --keep-best on resume: the evaluation recorded in the adapter rank 0 wrote before,
    /// sent to every rank (they must take the same decisions and only rank 0 can read --out).
    private func recordedEvaluation(_ collective: Collective, lead: Bool) throws -> (step: Int, heldOutNLL: Double)? {
        let mine = lead ? Adapter.recordedEvaluation(atPath: out) : nil
        guard collective.size > 1 else { return mine }
        var bytes = [UInt8](repeating: 0, count: 17)
        if let mine {
            bytes[0] = 1
            withUnsafeBytes(of: Int64(mine.step).littleEndian) { bytes.replaceSubrange(1..<9, with: $0) }
            withUnsafeBytes(of: mine.heldOutNLL.bitPattern.littleEndian) { bytes.replaceSubrange(9..<17, with: $0) }
        }
        let first = try collective.allgather(bytes, step: 0)[0]
        guard first[0] == 1 else { return nil }
        let step = first[1..<9].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let nll = first[9..<17].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return (Int(Int64(bitPattern: step)), Double(bitPattern: nll))
    }
}

/// SHA-256 of the optimizer plugin's file, for the ranks' agreement check.
func pluginDigest(_ optimizer: String) throws -> String {
    let path = try PluginHost.resolve(optimizer)
    guard let data = FileManager.default.contents(atPath: path) else { throw ValidationErrorText("cannot read the optimizer plugin \(path)") }
    var h = SHA256()
    h.update(Array(data))
    return SHA256.hexString(h.finalize())
}

/// Under mpirun: the line a rank leaves when mpirun stops it because another rank ended.
/// The message is formatted before each step, so the handler only writes it.
enum RankSignals {
    /// Set once the ranks have agreed and training has started.
    nonisolated(unsafe) static var started = false
    nonisolated(unsafe) private static var rank = 0
    nonisolated(unsafe) private static let line = UnsafeMutablePointer<CChar>.allocate(capacity: 256)
    nonisolated(unsafe) private static var length = 0

    static func install(rank r: Int) {
        rank = r
        step(0)
        signal(SIGTERM) { _ in
            // Only rank 0 prints, as for every other message of a run.
            if RankSignals.rank == 0 { _ = write(STDERR_FILENO, RankSignals.line, RankSignals.length) }
            _exit(1)
        }
    }

    /// The line for step `s` (0: before training; -1: none, this rank is ending the run itself).
    static func step(_ s: Int) {
        if s < 0 {
            length = 0
            return
        }
        let text = s == 0
            ? "Error: rank \(rank): stopped by mpirun before training (another rank ended, or mpirun was interrupted)\n"
            : "Error: rank \(rank): stopped by mpirun at step \(s) (another rank ended, or mpirun was interrupted)\n"
        let bytes = Array(text.utf8.prefix(255))
        length = 0
        bytes.withUnsafeBufferPointer { b in
            for (i, c) in b.enumerated() { line[i] = CChar(bitPattern: c) }
        }
        length = bytes.count
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// Peak resident set of this program: VmHWM of /proc/self/status. (getrusage's maxrss is
/// not used: Linux carries it across exec, so it reports the parent's size when a large
/// process started this one.)
func peakRSS() -> Int {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
       let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
        return kb * 1024
    }
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}
