import Foundation
import Model
import Quant
import TestSupport
import Testing
import ZerothOrder

/// `--perturb-fraction`: each direction perturbs a seeded subset of the trained tensors.
@Suite struct SparsePerturbationTests {
    let texts = ["the cat sat on the mat and looked at the door", "a dog ran to the park in the morning",
                 "we walked past the river after lunch", "the house was quiet at night"]

    func qzo(_ name: String = "tiny-q4_0", offsets: Bool = false) throws -> (QuantScales, [Example]) {
        let model = try tinyModel(name)
        let qzo = try QuantScales(model: model, patterns: ["blk.*"], trainOffsets: offsets, microBatchTokens: 128,
                                  maxPoints: 2, contextLength: 64)
        return (qzo, try examples(texts, model.tokenizer))
    }

    func settings(fraction: Double, steps: Int = 1, seed: UInt64 = 5) -> TrainingSettings {
        var s = TrainingSettings()
        s.steps = steps
        s.batchSize = 4
        s.learningRate = 0.05
        s.epsilon = 1e-2
        s.seed = seed
        s.perturbFraction = fraction
        return s
    }

    func snapshot(_ groups: [ParameterGroup]) -> [[Float]] {
        groups.map { Array(UnsafeBufferPointer(start: $0.values, count: $0.count)) }
    }

    /// The subset is the same for the same seed, differs between seeds, always has
    /// max(1, round(f·T)) units, and includes each unit equally often (π = k/T).
    @Test func subsetIsAFunctionOfTheSeed() throws {
        let s = try PerturbationSubset(fraction: 0.25, unitOfGroup: Array(0..<210))
        #expect(s.chosenCount == 53)
        #expect(s.estimateScale == Float(210) / 53)
        #expect(s.units(seed: 42) == s.units(seed: 42))
        let subsets = (0..<20).map { s.units(seed: Perturbation.directionSeed(runSeed: 0, step: $0 + 1, direction: 0)) }
        #expect(Set(subsets).count == 20, "twenty seeds, twenty different subsets")
        #expect(subsets.allSatisfy { $0.count == 53 && Set($0).count == 53 && $0.allSatisfy((0..<210).contains) })
        // Inclusion frequency over 4000 seeds: binomial(4000, 53/210), σ ≈ 27.5; 5σ bounds.
        var counts = [Int](repeating: 0, count: 210)
        for seed in 0..<4000 { for u in s.units(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15) { counts[u] += 1 } }
        let mean = 4000.0 * 53 / 210
        #expect(counts.allSatisfy { abs(Double($0) - mean) < 5 * (mean * (1 - 53.0 / 210)).squareRoot() },
                "inclusion counts from \(counts.min()!) to \(counts.max()!), expected about \(mean)")
        // At least one unit, whatever the fraction; all of them at f = 1.
        #expect(try PerturbationSubset(fraction: 1e-9, unitOfGroup: Array(0..<7)).units(seed: 3).count == 1)
        #expect(try PerturbationSubset(fraction: 1, unitOfGroup: Array(0..<7)).units(seed: 3) == Array(0..<7))
        // Groups of one unit (a Q4_1 matrix's scales and offsets) are chosen together.
        let paired = try PerturbationSubset(fraction: 0.5, unitOfGroup: [0, 0, 1, 1, 2, 2, 3])
        for seed in UInt64(0)..<50 {
            let g = paired.perturbedGroups(seed: seed)
            #expect(g[0] == g[1] && g[2] == g[3] && g[4] == g[5])
            #expect(g.filter { $0 }.count == paired.units(seed: seed).map { $0 < 3 ? 2 : 1 }.reduce(0, +))
        }
    }

    /// Bad fractions are refused in one line naming the flag.
    @Test func badFractionsAreRefused() throws {
        let (q, data) = try qzo()
        for f in [0, -0.5, 1.5, .nan, .infinity] {
            #expect(PerturbationSubset.problem(f)?.contains("--perturb-fraction") == true, "\(f)")
            do {
                _ = try Trainer(objective: q, optimizer: ZOSGD(groupSizes: q.groups.map(\.count)), settings: settings(fraction: f), train: data)
                Issue.record("fraction \(f) was accepted")
            } catch {
                #expect(error.description.contains("--perturb-fraction") && !error.description.contains("\n"), "\(error)")
            }
        }
        #expect(PerturbationSubset.problem(1) == nil && PerturbationSubset.problem(0.1) == nil)
    }

    /// One step at f < 1 against the SPSA step written out: the two losses are measured
    /// with z on the chosen tensors only (θ set by hand to 1 ± ε·z there, 1 elsewhere), the
    /// chosen tensors move by −η·d·(T/k)·z, every other scale stays 1 bit for bit. At f = 1
    /// the same reference with every tensor chosen and factor 1.
    @Test(arguments: [0.25, 1.0]) func oneStepIsTheSparseSPSAStep(fraction: Double) throws {
        let (q, data) = try qzo()
        let s = settings(fraction: fraction)
        let trainer = try Trainer(objective: q, optimizer: ZOSGD(groupSizes: q.groups.map(\.count)), settings: s, train: data)
        #expect((trainer.subset == nil) == (fraction == 1))
        let batch = trainer.batchIndices(step: 1).map { data[$0] }
        let record = try trainer.runStep()
        let after = snapshot(q.groups)

        let seed = Perturbation.directionSeed(runSeed: s.seed, step: 1, direction: 0)
        let T = q.targets.count
        let subset = try PerturbationSubset(fraction: fraction, unitOfGroup: Array(0..<T))   // Q4_0: one group per tensor
        let chosen = subset.perturbedGroups(seed: seed)
        let k = chosen.filter { $0 }.count
        #expect(k == (fraction == 1 ? T : max(1, Int((fraction * Double(T)).rounded()))))
        if fraction < 1 { #expect(k < T) }
        let z = q.groups.enumerated().map { g, group in (0..<group.count).map { Perturbation.value(seed: seed, group: UInt32(g), index: UInt64($0)) } }

        // The two losses with θ set by hand on a fresh copy of the model's scales.
        let (fresh, _) = try qzo()
        func loss(sign: Float) throws -> Double {
            for (g, group) in fresh.groups.enumerated() {
                for i in 0..<group.count { group.values[i] = chosen[g] ? 1 + sign * s.epsilon * z[g][i] : 1 }
            }
            return try fresh.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: batch)[0].nll
        }
        let d = (try loss(sign: 1) - loss(sign: -1)) / (2 * Double(s.epsilon))
        #expect(abs(Double(record.derivatives[0]) - d) <= 1e-3 * max(1, abs(d)), "derivative \(record.derivatives[0]), by hand \(d)")

        let w = Double(T) / Double(k)
        for g in after.indices {
            if !chosen[g] {
                #expect(after[g].allSatisfy { $0 == 1 }, "group \(g) was not chosen and moved")
                continue
            }
            #expect(after[g].contains { $0 != 1 }, "group \(g) was chosen and did not move")
            for i in after[g].indices {
                let want = max(Double(q.minimumRatio), 1 - Double(s.learningRate) * Double(record.derivatives[0]) * w * Double(z[g][i]))
                #expect(abs(Double(after[g][i]) - want) <= 1e-6 * max(1, abs(want - 1) * 1e3), "group \(g) value \(i): \(after[g][i]), expected \(want)")
            }
        }
    }

    /// f = 1 is the run without the option, bit for bit, and its identity is unchanged (old
    /// checkpoints stay valid); f < 1 names itself in the identity, and a checkpoint of one
    /// fraction does not resume a run of another.
    @Test func fractionOneIsTheDenseRunAndOthersAreInTheIdentity() throws {
        func run(_ fraction: Double?, steps: Int = 3, dir: String? = nil, resume: Bool = false) throws -> TrainingRun {
            var o = tinyRunOptions(model: "tiny-q4_0.gguf", method: .qzo(patterns: ["blk.*"], trainOffsets: false))
            o.settings.steps = steps
            if let fraction { o.settings.perturbFraction = fraction }
            o.checkpointDirectory = dir
            o.checkpointEvery = 2
            o.resume = resume
            return try runToEnd(o)
        }
        let bits = parameterBits
        let plain = try run(nil)
        let one = try run(1)
        #expect(bits(one) == bits(plain))
        #expect(one.identity == plain.identity && plain.identity["perturb_fraction"] == nil)

        // Resume through the run's checkpoints: 2 steps, then on to 5, equals 5 straight.
        let dir = makeTemporaryDirectory("sparse-ckpt")
        let straight = try run(0.3, steps: 5)
        #expect(straight.identity["perturb_fraction"] == "0.3")
        #expect(bits(straight) != bits(try run(1, steps: 5)))
        do {
            _ = try run(0.3, steps: 2, dir: dir)
            let resumed = try run(0.3, steps: 5, dir: dir, resume: true)
            #expect(bits(resumed) == bits(straight))
        }
        do {
            _ = try run(0.5, steps: 5, dir: dir, resume: true)
            Issue.record("a checkpoint of --perturb-fraction 0.3 resumed a run of 0.5")
        } catch {
            #expect("\(error)".contains("another run") || "\(error)".contains("perturb_fraction"), "\(error)")
        }
    }

    /// Sparse QZO (scales and offsets of Q4_1, chosen together) lowers the training loss.
    @Test func sparseTrainingLowersTheLoss() throws {
        let (q, data) = try qzo("tiny-q4_1", offsets: true)
        var s = settings(fraction: 0.3, steps: 40)
        s.clip = 2
        let trainer = try Trainer(objective: q, optimizer: ZOSGD(groupSizes: q.groups.map(\.count)), settings: s, train: data)
        let before = try q.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0].nll
        while !trainer.isFinished { try trainer.runStep() }
        let after = try q.lossSums(at: [.unperturbed], epsilon: 0, shape: PerturbationShape(scales: []), examples: data)[0].nll
        #expect(after < before, "\(before) → \(after)")
        // The units pair each matrix's scales with its offsets.
        let units = q.perturbationUnits
        for t in q.targets { #expect(units[t.scaleGroup] == units[t.offsetGroup!]) }
    }

    /// Resuming a sparse run with momentum after any step gives the uninterrupted run's
    /// parameters, and the run does not depend on the thread count.
    @Test func sparseRunResumesBitIdenticallyOnAnyThreadCount() throws {
        func trainer(_ q: QuantScales, _ data: [Example]) throws -> Trainer {
            try Trainer(objective: q, optimizer: ZOSGD(groupSizes: q.groups.map(\.count), momentum: 0.9),
                        settings: settings(fraction: 0.4, steps: 8, seed: 11), train: data)
        }
        let (qA, data) = try qzo()
        let full = try trainer(qA, data)
        while !full.isFinished { try full.runStep() }

        let store = try CheckpointStore(directory: makeTemporaryDirectory("sparse-resume"))
        let (qB, _) = try qzo()
        let first = try trainer(qB, data)
        for _ in 0..<5 { try first.runStep() }
        try store.save(first.checkpoint(identity: [:]))
        let (qC, _) = try qzo()
        let resumed = try trainer(qC, data)
        try resumed.restore(try #require(store.loadNewest(into: resumed.groups, warn: { _ in })))
        while !resumed.isFinished { try resumed.runStep() }
        #expect(snapshot(qC.groups) == snapshot(qA.groups))

        let saved = Parallel.threadCount
        Parallel.threadCount = saved == 1 ? 2 : 1
        defer { Parallel.threadCount = saved }
        let (qD, _) = try qzo()
        let other = try trainer(qD, data)
        while !other.isFinished { try other.runStep() }
        #expect(snapshot(qD.groups) == snapshot(qA.groups))
    }

    /// An optimizer other than the built-in ZO-SGD would regenerate dense z from the seeds:
    /// refused in one line naming the flag.
    @Test func otherOptimizersAreRefused() throws {
        final class Other: Optimizer {
            let name = "other"
            let needsUnperturbedLoss = false
            func perturbationScale(group: Int) -> UnsafePointer<Float>? { nil }
            func step(_ context: StepContext, _ groups: [ParameterGroup]) throws(OptimizerError) {}
            var stateByteCount: Int { 0 }
            func saveState() throws(OptimizerError) -> [UInt8] { [] }
            func loadState(_ bytes: [UInt8]) throws(OptimizerError) {}
        }
        let (q, data) = try qzo()
        do {
            _ = try Trainer(objective: q, optimizer: Other(), settings: settings(fraction: 0.5), train: data)
            Issue.record("another optimizer was accepted with a sparse perturbation")
        } catch {
            #expect(error.description.contains("--perturb-fraction") && error.description.contains("other"), "\(error)")
        }
        _ = try Trainer(objective: q, optimizer: Other(), settings: settings(fraction: 1), train: data)
    }
}
