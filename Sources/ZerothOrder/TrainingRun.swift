// A training run, wired: the model, the data, the method's trainable set and objective,
// the memory plan, the optimizer, checkpoints. The command line fills in `TrainingRunOptions`
// from its flags and drives `step()`; everything between lives here.

import GGUF
import Model
import Quant
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What to train: new tokens' embeddings (textual inversion), the block scales of the
/// int4 weights (QZO), or both in one run.
public struct TrainingMethod: Sendable {
    /// New tokens, and the token whose embedding they start from.
    public var textualInversion: (newTokens: [String], initToken: String)?
    /// Name patterns of the tensors whose block scales are trained, and whether Q4_1 offsets are too.
    public var qzo: (patterns: [String], trainOffsets: Bool)?
    /// The new tokens' output rows.
    public var newTokenOutput = NewTokenOutputRow.tied
    /// QZO on K-quants: their super-blocks' d and dmin, or their sub-block scales and mins.
    public var kquantScales: KQuantGranularity = .superBlock

    public init(textualInversion: (newTokens: [String], initToken: String)?, qzo: (patterns: [String], trainOffsets: Bool)?) {
        self.textualInversion = textualInversion
        self.qzo = qzo
    }

    public static func textualInversion(newTokens: [String], initToken: String) -> TrainingMethod {
        TrainingMethod(textualInversion: (newTokens, initToken), qzo: nil)
    }

    public static func qzo(patterns: [String], trainOffsets: Bool) -> TrainingMethod {
        TrainingMethod(textualInversion: nil, qzo: (patterns, trainOffsets))
    }

    public var name: String {
        [qzo.map { _ in "qzo" }, textualInversion.map { _ in "textual-inversion" }].compactMap { $0 }.joined(separator: ",")
    }
}

/// The sets of values a method trains, each with its own learning rate and ε.
public enum TrainedSet: String, Sendable, CaseIterable {
    /// QZO's block scales (and offsets): rates relative to each scale.
    case qzo
    /// New tokens' rows: rates in units of the init row's RMS.
    case textualInversion = "textual-inversion"
}

public struct TrainingRunOptions: Sendable {
    public var modelPath: String
    public var dataPath: String
    public var evalPath: String?
    /// Held out from the training data when `evalPath` is nil.
    public var evalFraction = 0.0
    public var method: TrainingMethod
    public var settings = TrainingSettings()
    /// Per trained set, its base learning rate and ε when it has its own (a set not named
    /// uses `settings.learningRate` and `settings.epsilon`, which also measure the directional
    /// derivative and so the --ddc bound). Only the built-in ZO-SGD takes rates that differ.
    public var setLearningRates: [TrainedSet: Float] = [:]
    public var setEpsilons: [TrainedSet: Float] = [:]
    public var maxLength = 128
    /// Subspace gradient (textual inversion): mode, period τ, threshold ν, warm-up steps.
    public var subspace: (mode: SubspaceGradient.Mode, period: Int, threshold: Double, warmup: Int)?
    /// Directions kept by `.embeddings` (the top principal directions of token_embd's rows);
    /// nil: 64, or the model's width if it is smaller.
    public var subspaceRank: Int?
    /// Textual inversion: run each example's positions before its first new token once for
    /// all points of a step (`TextualInversion.sharePrefix`): the same losses up to float32
    /// rounding, less work.
    public var sharePrefix = false
    /// Distillation: teacher model and tokens kept per position.
    public var teacher: (path: String, topK: Int)?
    /// Bytes the run may keep resident (nil: the model file's size plus 40 MB, about what
    /// inference with the weights mapped needs).
    public var memoryBudget: Int?
    public var checkpointDirectory: String?
    public var checkpointEvery = 50
    public var resume = false
    /// Flags that fix the trajectory besides the ones above (e.g. the optimizer's options):
    /// they go into checkpoints, and a resume must match them.
    public var extraIdentity: [String: String] = [:]
    /// Examples per forward pass at most (the memory plan may choose fewer). A data-parallel
    /// run and a one-process run with the same micro-batch size give the same adapter.
    public var microBatchLimit: Int?
    /// Digests the ranks of a data-parallel run must agree on besides the model, the data and
    /// the flags (e.g. the optimizer plugin's file), with what each names.
    public var agreement: [(name: String, digest: String)] = []

    public init(modelPath: String, dataPath: String, method: TrainingMethod) {
        self.modelPath = modelPath
        self.dataPath = dataPath
        self.method = method
    }
}

public final class TrainingRun {
    /// Without a budget, a run may use the model file's size plus this.
    public static let defaultBudgetMargin = 40_000_000

    public let options: TrainingRunOptions
    public let model: LlamaModel
    public let train: [Example]
    public let held: [Example]
    public let plan: MemoryPlan?
    public let trainer: Trainer
    public let optimizer: Optimizer
    /// The base model's identity (for adapters).
    public let base: (name: String, sha256: String)
    /// Flags that must match to resume, stored in checkpoints.
    public let identity: [String: String]
    /// The ranks this run's steps and evaluations are shared by.
    public let collective: Collective
    /// The directions `--subspace embeddings` keeps (nil for other subspaces).
    public let subspaceRank: Int?
    private let store: CheckpointStore?
    private let evaluateNow: (() throws(TrainingError) -> Double)?
    private let makeAdapter: () -> Adapter
    private let describeMethod: String

    /// Sets the run up. `makeOptimizer` builds the optimizer for the trainable groups (name
    /// and size of each, in order); `note` receives one-line progress notes.
    public init(_ o: TrainingRunOptions, collective: Collective = SingleProcess(),
                makeOptimizer: ([GroupLayout]) throws -> Optimizer, note: (String) -> Void) throws {
        options = o
        self.collective = collective
        var settings = o.settings
        let newTokens = o.method.textualInversion?.newTokens ?? []
        // New tokens join the vocabulary as the model loads: one tokenizer in memory.
        let m = try LlamaModel(path: o.modelPath, addedTokens: newTokens)
        model = m
        let length = min(o.maxLength, m.config.contextLength)

        // Data, tokenized with any new tokens.
        var train = try Dataset.load(path: o.dataPath, tokenizer: m.tokenizer, maxLength: length, chatTemplate: m.chatTemplateText)
        var held: [Example] = []
        if let evalPath = o.evalPath {
            held = try Dataset.load(path: evalPath, tokenizer: m.tokenizer, maxLength: length, chatTemplate: m.chatTemplateText)
        } else if o.evalFraction > 0 {
            var rng = SeededGenerator(seed: settings.seed ^ 0xE7A1)
            train.shuffle(using: &rng)
            let n = max(1, Int(Double(train.count) * o.evalFraction))
            held = Array(train.prefix(n))
            train.removeFirst(n)
        }

        // Buffers that grow with the context (rotation tables, attention scores) are sized
        // for the longest example, not for --max-length.
        let context = max(1, (train + held).map(\.tokens.count).max() ?? 1)

        // The trainable groups, known before anything is allocated: the optimizer and the
        // memory planner need them first.
        var layout: [GroupLayout] = []
        if let q = o.method.qzo {
            layout = QuantScales.groupLayout(model: m, patterns: q.patterns, trainOffsets: q.trainOffsets, kquant: o.method.kquantScales)
            guard !layout.isEmpty else { throw QuantScales.nothingTrainable(model: m, patterns: q.patterns) }
        }
        layout += newTokens.map { GroupLayout(name: "token \($0)", count: m.config.dim) }
        optimizer = try makeOptimizer(layout)
        // Each group's own rate and ε, when its set's differ from the run's.
        let qzoGroups = layout.count - newTokens.count
        let setOf = { (g: Int) in g < qzoGroups ? TrainedSet.qzo : .textualInversion }
        let groupRates = layout.indices.map { o.setLearningRates[setOf($0)] ?? settings.learningRate }
        let groupEpsilons = layout.indices.map { o.setEpsilons[setOf($0)] ?? settings.epsilon }
        let perSet = groupRates.contains { $0 != settings.learningRate } || groupEpsilons.contains { $0 != settings.epsilon }
        if perSet {
            // The ABI hands a plugin one learning rate and one ε per step. Reparametrizing
            // a set (θ = c·ψ) would give plain SGD a per-set rate of c², but not Adam (invariant
            // to the gradient's scale), HiZOO or any other plugin whose step is not linear in
            // the estimate, so no rescaling means "this set's rate" for every plugin: refuse.
            guard optimizer is ZOSGD else {
                let values = TrainedSet.allCases.compactMap { set -> String? in
                    guard layout.indices.contains(where: { setOf($0) == set }) else { return nil }
                    return "\(set.rawValue) lr \(o.setLearningRates[set] ?? settings.learningRate) eps \(o.setEpsilons[set] ?? settings.epsilon)"
                }
                throw TrainingError.invalidSetting("optimizer plugin \(optimizer.name) gets one learning rate and one epsilon per step, and the trained sets have their own (\(values.joined(separator: ", "))); per-set rates need the built-in zo-sgd, or give one --lr and one --eps")
            }
            settings.groupLearningRates = groupRates
            settings.groupEpsilons = groupEpsilons
        }
        let points = settings.pointCount(needsUnperturbed: optimizer.needsUnperturbedLoss)
        // Textual inversion alone runs its points as one batch; with QZO, each point is a stream.
        let pointsShareAPass = o.method.qzo == nil

        let subspaceRank = o.subspace?.mode == .embeddings ? (o.subspaceRank ?? min(64, m.config.dim)) : nil
        self.subspaceRank = subspaceRank
        // The memory plan: examples per pass, and mapped or streamed weights.
        let trainable = layout.reduce(0) { $0 + $1.count }
        var plan: MemoryPlan?
        do {
            let budget = o.memoryBudget ?? m.file.fileSize + TrainingRun.defaultBudgetMargin
            let request = MemoryRequest(
                budget: budget, config: m.config, fileBytes: m.file.fileSize,
                largestLayerBytes: m.layerBytes.max() ?? 0, outputRowBytes: m.output.info.type.rowBytes(m.config.dim)!,
                vocabularyEntries: m.tokenizer.count + m.tokenizer.vocabulary.merges.count,
                batchSize: min(settings.batchSize, o.microBatchLimit ?? .max),
                exampleLengths: train.map(\.tokens.count) + held.map(\.tokens.count), points: points, pointsShareAPass: pointsShareAPass,
                contextLength: context, trainableValues: trainable, optimizerStateBytes: optimizer.stateByteCount,
                otherBytes: (o.subspace.map {
                    $0.mode == .embeddings
                        ? EmbeddingBasis.basisBytes(rank: subspaceRank ?? 0, dim: m.config.dim) + EmbeddingBasis.scratchBytes(dim: m.config.dim)
                        : 4 * $0.period * trainable + 4 * trainable
                } ?? 0)
                    + (o.method.qzo.map { QuantScales.scratchBytes(model: m, patterns: $0.patterns, trainOffsets: $0.trainOffsets,
                                                                  points: points, kquant: o.method.kquantScales)
                                        + QuantScales.exportBytes(model: m, patterns: $0.patterns, trainOffsets: $0.trainOffsets,
                                                                  kquant: o.method.kquantScales) } ?? 0),
                tokenizerBytes: MemoryPlanner.tokenizerBytes(model: m),
                perturbationDirectionBytes: optimizer.providesPerturbation
                    ? MemoryPlanner.perturbationDirectionBytes(groupCounts: layout.map(\.count), directions: settings.directions) : 0)
            switch MemoryPlanner.plan(request) {
            case .success(let p): plan = p
            case .failure(let e): throw e
            }
            note("memory plan\(o.memoryBudget == nil ? " (default budget: the model file plus 40 MB)" : ""): \(plan!.description)")
        }
        self.plan = plan
        settings.microBatchSize = min(plan?.microBatchSize ?? settings.batchSize, o.microBatchLimit ?? .max)
        let tileRows = plan?.tileRows ?? RunState.tileRows
        let streamer = plan?.streaming == true ? WeightStreamer(model: m) : nil
        if streamer != nil {
            // Metadata and norms were copied at load; no page of the mapping is needed now.
            m.file.mapping.release(0..<m.file.fileSize)
        }

        // Distillation: the teacher's distributions on the training text, computed once.
        if let teacher = o.teacher {
            if let token = newTokens.first {
                throw TrainingError.invalidSetting("distillation cannot train the new token '\(token)': the teacher \(teacher.path) has no such token to read")
            }
            let t = try LlamaModel(path: teacher.path)
            guard t.config.vocabSize == m.config.vocabSize, t.tokenizer.count == m.tokenizer.count - newTokens.count else {
                throw TrainingError.invalidSetting("the teacher \(teacher.path) does not share the model's vocabulary")
            }
            try Distillation.attachTeacher(t, to: &train, k: teacher.topK, contextLength: context,
                                           weights: streamer == nil ? nil : WeightStreamer(model: t))
            note("distillation: the teacher's \(teacher.topK) most likely tokens at every position; their entropy is \(String(format: "%.4f", Distillation.teacherEntropy(train))) nats (the training loss minus this is the KL divergence)")
        }
        self.train = train
        self.held = held

        // Buffers sized for the largest micro-batch the data can form.
        let longest = train.map(\.tokens.count).sorted(by: >)
        let microBatchTokens = max(longest.prefix(settings.microBatchSize).reduce(0, +), held.map(\.tokens.count).max() ?? 0)

        // The method: its objective, held-out evaluation and adapter.
        let base = Adapter.identity(of: m)
        self.base = base
        let objective: Objective
        var subspaceGradient: SubspaceGradient?
        var rows: NewTokenRows?
        if let q = o.method.qzo {
            if o.sharePrefix {
                throw TrainingError.invalidSetting("--share-prefix applies to textual inversion alone (the method is \(o.method.name)): QZO's points differ in every weight, so no position is the same at both")
            }
            if o.subspace?.mode == .embeddings {
                throw TrainingError.invalidSetting("--subspace embeddings applies to textual inversion alone (the method is \(o.method.name))")
            }
            if let t = o.method.textualInversion {
                rows = try NewTokenRows(model: m, tokens: t.newTokens, initToken: t.initToken, outputRow: o.method.newTokenOutput)
            }
            let qzo = try QuantScales(model: m, patterns: q.patterns, trainOffsets: q.trainOffsets, kquant: o.method.kquantScales, microBatchTokens: microBatchTokens,
                                      maxPoints: points, contextLength: context, tileRows: tileRows, newTokens: rows)
            qzo.weights = streamer
            objective = qzo
            // Held-out passes as QuantScales packs them, shared by the ranks, added in order.
            let passes = greedyGroups(held, capacity: microBatchTokens)
            evaluateNow = held.isEmpty ? nil : { () throws(TrainingError) -> Double in
                let units = try collective.gatherLossSums(units: passes.count, width: 1, step: -1) { u throws(TrainingError) in
                    try qzo.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: Array(held[passes[u]]))
                }
                return combineInOrder(units, width: 1)[0].nll
            }
            makeAdapter = {
                var a = Adapter(method: rows == nil ? ["qzo"] : ["qzo", "textual-inversion"], baseName: base.name, baseSHA256: base.sha256)
                a.scaleProducers = qzo.targets.enumerated().map { i, t in
                    (name: t.tensor.name, blocks: t.blocks, perBlock: t.perBlock, hasOffsets: t.offsetGroup != nil, tuned: { qzo.tunedScales(i) })
                }
                if let rows {
                    a.newTokens = rows.tokens
                    a.embeddings = rows.embeddings()
                    a.newTokenOutput = rows.outputRow == .tied ? nil : (rows.outputRow.rawValue, rows.initTokenID)
                }
                return a
            }
            describeMethod = "QZO: \(qzo.parameterCount) values: block scales of \(qzo.targets.count) tensors"
                + (rows.map { " and \($0.tokens.count) new token(s)" } ?? "")
                + " (\(String(format: "%.1f MB", Double(qzo.parameterCount * 4) / 1e6)) master copy)"
        } else {
            let t = o.method.textualInversion!
            let ti = try TextualInversion(model: m, newTokens: t.newTokens, initToken: t.initToken, microBatchTokens: microBatchTokens,
                                          maxPoints: points, contextLength: context, tileRows: tileRows,
                                          outputRow: o.method.newTokenOutput)
            ti.weights = streamer
            ti.sharePrefix = o.sharePrefix
            rows = ti.rows
            objective = ti
            let evaluator = ti.evaluator
            // Held-out passes as the evaluator packs them, shared by the ranks; the per-example
            // sums are added in example order, as `Evaluator.evaluate` does.
            let passes = greedyGroups(held, capacity: evaluator.state.capacity)
            let widest = passes.map(\.count).max() ?? 0
            evaluateNow = held.isEmpty ? nil : { () throws(TrainingError) -> Double in
                let units = try collective.gatherLossSums(units: passes.count, width: widest, step: -1) { u throws(TrainingError) in
                    var perExample: [LossSum]
                    do throws(ModelError) { perExample = try evaluator.perExample(Array(held[passes[u]]), extra: ti.currentExtraTokens()) } catch { throw .model(error) }
                    perExample += Array(repeating: LossSum(), count: widest - perExample.count)
                    return perExample
                }
                var total = LossSum()
                for (u, unit) in units.enumerated() { for sum in unit.prefix(passes[u].count) { total = total + sum } }
                return total.nll
            }
            if o.subspace?.mode == .embeddings {
                let clock = ContinuousClock()
                let start = clock.now
                let b = try EmbeddingBasis.principalDirections(of: m, rank: subspaceRank ?? 0)
                let elapsed = clock.now - start
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                subspaceGradient = SubspaceGradient(groups: t.newTokens.count, fixedBasis: b.basis, rank: b.rank, dim: b.dim)
                note("embedding subspace: the top \(b.rank) of \(b.dim) principal directions of token_embd's \(b.rows) rows (\(String(format: "%.1f", 100 * b.varianceShare))% of their variance), computed in \(String(format: "%.2f", seconds)) s; basis \(b.rank)×\(b.dim) floats (\(String(format: "%.0f", Double(EmbeddingBasis.basisBytes(rank: b.rank, dim: b.dim)) / 1024)) KB), \(String(format: "%.1f", Double(EmbeddingBasis.scratchBytes(dim: b.dim)) / 1e6)) MB while computed")
            } else {
            subspaceGradient = o.subspace.map {
                SubspaceGradient(groups: t.newTokens.count, dim: m.config.dim, mode: $0.mode, period: $0.period, threshold: $0.threshold,
                                 warmup: $0.warmup)
            }
            }
            makeAdapter = {
                var a = Adapter(method: ["textual-inversion"], baseName: base.name, baseSHA256: base.sha256)
                a.newTokens = t.newTokens
                a.embeddings = ti.rows.embeddings()
                a.newTokenOutput = ti.rows.outputRow == .tied ? nil : (ti.rows.outputRow.rawValue, ti.initTokenID)
                return a
            }
            var described = "textual inversion: \(t.newTokens.count) new token(s) of \(m.config.dim) values, starting from \"\(t.initToken)\""
            if o.sharePrefix {
                let (shared, total) = ti.sharedPositions(train)
                described += String(format: "; shared prefix: %d of %d training positions (%.1f%%) come before the first new token and run once for the %d points of a step",
                                    shared, total, 100 * Double(shared) / Double(max(total, 1)), points)
            }
            describeMethod = described
        }
        if let rows {
            let newIDs = Set((0..<rows.tokens.count).map { Int32(rows.firstID + $0) })
            guard train.contains(where: { $0.tokens.contains(where: newIDs.contains) }) else {
                throw TrainingError.newToken("no training example contains a new token (\(rows.tokens.map { "\"\($0)\"" }.joined(separator: ", "))); the training text must use it literally")
            }
        }
        precondition(objective.parameters.groups.map(\.count) == layout.map(\.count), "group layout mismatch")
        trainer = try Trainer(objective: objective, optimizer: optimizer, settings: settings, train: train,
                              subspace: subspaceGradient, evaluate: evaluateNow)
        trainer.collective = collective

        // Checkpoints: the flags that fix the trajectory must match to resume. The data is
        // identified by the digest of its content, so a changed file at the same path does
        // not resume silently.
        let s = o.settings
        var identity: [String: String] = [
            "model_sha256": base.sha256, "method": o.method.name, "data_sha256": try fileDigest(o.dataPath), "batch": "\(s.batchSize)",
            "lr": perSet ? Self.perSetText(o.setLearningRates, s.learningRate, o.method) : "\(s.learningRate)",
            "eps": perSet ? Self.perSetText(o.setEpsilons, s.epsilon, o.method) : "\(s.epsilon)", "directions": "\(s.directions)", "estimator": s.estimator.rawValue,
            "seed": "\(s.seed)", "ddc": "\(s.clip ?? 0)", "optimizer": optimizer.name, "max_length": "\(length)",
            "subspace": o.subspace.map {
                $0.mode == .embeddings ? "embeddings \(subspaceRank ?? 0)" : "\($0.mode.rawValue) \($0.period) \($0.threshold) \($0.warmup)"
            } ?? "off",
            "teacher": try o.teacher.map { "\(try fileDigest($0.path)) \($0.topK)" } ?? "",
            "eval_fraction": "\(o.evalFraction)",
        ]
        if let t = o.method.textualInversion {
            identity["new_tokens"] = t.newTokens.joined(separator: "\u{1F}")
            identity["init_token"] = t.initToken
            identity["new_token_units"] = "init-row-rms"
            identity["new_token_output"] = o.method.newTokenOutput.rawValue
            // Only when on: the checkpoints of runs without it keep their names.
            if o.sharePrefix { identity["share_prefix"] = "on" }
        }
        if let q = o.method.qzo {
            identity["tensors"] = q.patterns.joined(separator: ",")
            identity["train_offsets"] = "\(q.trainOffsets)"
            if o.method.kquantScales != .superBlock { identity["kquant_scales"] = o.method.kquantScales.rawValue }
        }
        if !s.schedule.isConstant { identity["lr_schedule"] = s.schedule.identity }
        if s.perturbFraction != 1 { identity["perturb_fraction"] = "\(s.perturbFraction)" }
        if s.maxUpdate != 0 { identity["max_update"] = "\(s.maxUpdate)" }
        identity.merge(o.extraIdentity) { $1 }
        self.identity = identity
        let run = TrainingRun.runDigest(identity)
        // Rank 0 locks and writes the checkpoints; the other ranks only read them to resume.
        store = try o.checkpointDirectory.map { try CheckpointStore(directory: $0, run: run, locking: collective.rank == 0) }
        if o.resume, let store {
            if let c = store.loadNewest(into: trainer.groups, warn: note) {
                for (key, value) in identity.sorted(by: { $0.key < $1.key }) where c.identity[key] != value {
                    throw TrainingError.checkpoint(path: store.path(completed: c.step - 1),
                                                   message: "cannot resume: it was trained with \(key) = \(c.identity[key] ?? "(none)"), this run has \(value)")
                }
                try trainer.restore(c)
                note("resuming from \(store.path(completed: c.step - 1)) at step \(c.step)")
            } else if store.files().isEmpty, let foreign = store.foreignFiles().first {
                // Only other runs' checkpoints: resuming from step 1 would look like a resume and is not one.
                let theirs = CheckpointStore.identity(atPath: foreign.path)
                // Keys either run has (a setting recorded only when it is not the default, such
                // as share_prefix, is missing from the other run's identity).
                let difference = theirs.flatMap { t in Set(identity.keys).union(t.keys).sorted().first { t[$0] != identity[$0] } }
                    .map { " (that run has \($0) = \(theirs?[$0] ?? "(none)"), this one \(identity[$0] ?? "(none)"))" } ?? ""
                throw TrainingError.checkpoint(path: store.directory,
                                               message: "cannot resume: the checkpoints here belong to another run with other settings\(difference), e.g. \(foreign.path); give the same flags as that run, or another --checkpoint-dir")
            } else {
                note("no valid checkpoint of this run in \(store.directory); starting from step 1")
            }
        }
        // The ranks of a data-parallel run must agree on everything that fixes the trajectory.
        if collective.size > 1 {
            var flags = identity.filter { !["model_sha256", "data_sha256", "teacher"].contains($0.key) }
            flags["steps"] = "\(settings.steps)"
            flags["eval_every"] = "\(settings.evalEvery)"
            flags["micro_batch"] = "\(settings.microBatchSize)"
            flags["plan"] = plan.map { "\($0.tileRows) \($0.passTokens)" } ?? ""
            var theta = SHA256()
            for g in trainer.groups { theta.update(UnsafeRawBufferPointer(start: g.values, count: 4 * g.count)) }
            try collective.checkAgreement([
                ("the model file", base.sha256), ("the training data", identity["data_sha256"]!),
                ("the held-out data", try o.evalPath.map(fileDigest) ?? ""), ("the teacher model", identity["teacher"]!),
                ("the flags", TrainingRun.runDigest(flags)),
            ] + o.agreement + [
                ("the checkpoint resumed from", "\(trainer.step) \(SHA256.hexString(theta.finalize()))"),
            ])
            note("\(collective.size) ranks share each step's \((settings.batchSize + settings.microBatchSize - 1) / settings.microBatchSize) micro-batch(es) of up to \(settings.microBatchSize) example(s)")
        }
        note(describeMethod)
        note("\(train.count) training examples (\(held.count) held out), \(settings.steps) steps of \(settings.batchSize), \(points) forward points per step")
    }

    public var isFinished: Bool { trainer.isFinished }
    /// The next step to run.
    public var nextStep: Int { trainer.step }

    /// Held-out NLL at the current parameters, when there is held-out data.
    public func evaluate() throws(TrainingError) -> Double? { try evaluateNow?() }

    /// Runs the next step, then saves a checkpoint when one is due.
    public func step() throws(TrainingError) -> StepRecord {
        let record = try trainer.runStep()
        if let store, collective.rank == 0, record.step % options.checkpointEvery == 0 || record.step == trainer.settings.steps {
            try store.save(trainer.checkpoint(identity: identity))
        }
        return record
    }

    /// What was learned, as an adapter recording `training` (the run's settings as JSON).
    public func adapter(training: String) -> Adapter {
        var a = makeAdapter()
        a.training = training
        return a
    }
}

extension TrainingRun {
    /// "qzo=0.003,textual-inversion=0.75": each set the method trains, with its value.
    static func perSetText(_ values: [TrainedSet: Float], _ common: Float, _ method: TrainingMethod) -> String {
        var sets = [TrainedSet]()
        if method.qzo != nil { sets.append(.qzo) }
        if method.textualInversion != nil { sets.append(.textualInversion) }
        return sets.map { "\($0.rawValue)=\(values[$0] ?? common)" }.joined(separator: ",")
    }

    /// The name a run's checkpoint files carry: 16 hex digits of the SHA-256 of its identity.
    public static func runDigest(_ identity: [String: String]) -> String {
        var h = SHA256()
        for (key, value) in identity.sorted(by: { $0.key < $1.key }) { h.update(Array("\(key)=\(value)\n".utf8)) }
        return String(SHA256.hexString(h.finalize()).prefix(16))
    }
}

/// SHA-256 of a file's content, read in chunks.
func fileDigest(_ path: String) throws(TrainingError) -> String {
    do throws(GGUFError) {
        let fd = try FileSafety.openRegularFile(path)
        defer { close(fd) }
        var h = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw GGUFError.system("read", path: path) }
            if n == 0 { break }
            chunk.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return SHA256.hexString(h.finalize())
    } catch {
        throw .file(error)
    }
}
