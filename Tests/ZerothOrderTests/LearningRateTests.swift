import Foundation
import Model
import TestSupport
import Testing
import ZerothOrder

/// ZO-SGD that records the rates each step was given.
final class RateRecorder: Optimizer {
    let inner: ZOSGD
    var rates: [Float] = []
    var bases: [Float?] = []
    var groupRates: [[Float]?] = []
    init(groupSizes: [Int], momentum: Float = 0) { inner = ZOSGD(groupSizes: groupSizes, momentum: momentum) }
    var name: String { "rate-recorder" }
    var needsUnperturbedLoss: Bool { false }
    func perturbationScale(group: Int) -> UnsafePointer<Float>? { nil }
    func step(_ context: StepContext, _ groups: [ParameterGroup]) throws(OptimizerError) {
        rates.append(context.learningRate)
        bases.append(context.baseLearningRate)
        groupRates.append(context.groupLearningRates)
        try inner.step(context, groups)
    }
    var stateByteCount: Int { inner.stateByteCount }
    func saveState() throws(OptimizerError) -> [UInt8] { try inner.saveState() }
    func loadState(_ bytes: [UInt8]) throws(OptimizerError) { try inner.loadState(bytes) }
}

/// The rate of step t (1-based) written out case by case: warm-up as the fraction of W
/// steps done, linear as the straight line from the base at step W to r·base at step T,
/// cosine as r·base + (1 − r)·base·cos²(π/2 · (t − W)/(T − W)).
func expectedRate(_ t: Int, base: Double, kind: String, warmup w: Int, minRatio r: Double, steps n: Int) -> Double {
    if t <= w { return base * Double(t) / Double(w) }
    if kind == "constant" { return base }
    let done = Double(t - w), span = Double(n - w)
    if kind == "linear" { return base - (base - r * base) * done / span }
    let c = cos(Double.pi / 2 * done / span)
    return r * base + (1 - r) * base * c * c
}

@Suite struct LearningRateTests {
    func settings(steps: Int, lr: Float = 0.05, kind: LearningRateSchedule.Kind = .constant, warmup: Int = 0,
                  minRatio: Double = 0) -> TrainingSettings {
        var s = TrainingSettings()
        s.steps = steps
        s.batchSize = 3
        s.microBatchSize = 3
        s.learningRate = lr
        s.epsilon = 1e-2
        s.seed = 5
        s.lrSchedule = kind
        s.warmup = warmup
        s.lrMinRatio = minRatio
        return s
    }

    /// Every step's rate, as the optimizer receives it, against the closed form; the base
    /// is passed alongside.
    @Test(arguments: [("constant", 0, 0.0), ("constant", 3, 0.0), ("cosine", 0, 0.0), ("cosine", 4, 0.1),
                      ("linear", 0, 0.0), ("linear", 5, 0.25), ("cosine", 12, 0.0)])
    func theRateFollowsTheClosedForm(_ kind: String, _ warmup: Int, _ minRatio: Double) throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        let recorder = RateRecorder(groupSizes: [ti.dim])
        let s = settings(steps: 12, kind: LearningRateSchedule.Kind(rawValue: kind)!, warmup: warmup, minRatio: minRatio)
        let trainer = try Trainer(objective: ti, optimizer: recorder, settings: s, train: data)
        while !trainer.isFinished { try trainer.runStep() }
        #expect(recorder.rates.count == 12)
        for (i, rate) in recorder.rates.enumerated() {
            let want = expectedRate(i + 1, base: Double(s.learningRate), kind: kind, warmup: warmup, minRatio: minRatio, steps: 12)
            #expect(abs(Double(rate) - want) <= 1e-6 * Double(s.learningRate), "step \(i + 1): \(rate), expected \(want)")
            #expect(recorder.bases[i] == s.learningRate)
        }
        if kind != "constant" && warmup < 12 {
            #expect(abs(Double(recorder.rates[11]) - minRatio * Double(s.learningRate)) <= 1e-9, "the last step is at the floor")
        }
    }

    /// Values the command line refuses, named by flag.
    @Test func badSchedulesAreRefused() {
        #expect(LearningRateSchedule(kind: .cosine, warmup: -1, totalSteps: 10).problem?.hasPrefix("--warmup") == true)
        #expect(LearningRateSchedule(kind: .cosine, warmup: 11, totalSteps: 10).problem?.hasPrefix("--warmup") == true)
        #expect(LearningRateSchedule(kind: .linear, minRatio: 1.5, totalSteps: 10).problem?.hasPrefix("--lr-min-ratio") == true)
        #expect(LearningRateSchedule(kind: .linear, minRatio: -0.1, totalSteps: 10).problem?.hasPrefix("--lr-min-ratio") == true)
        #expect(LearningRateSchedule(kind: .linear, warmup: 10, minRatio: 1, totalSteps: 10).problem == nil)
    }

    /// ZO-SGD written out from its definition (θ ← θ − η_t · (L₊ − L₋)/2ε · z, one direction,
    /// batch = micro-batch), with the rate of step t given.
    func referenceRun(_ ti: TextualInversion, _ data: [Example], _ s: TrainingSettings, rate: (Int) -> Float) throws -> [Float] {
        let order = try Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [ti.dim]), settings: s, train: data)
        let v = ti.parameters.groups[0].values
        for t in 1...s.steps {
            let batch = order.batchIndices(step: t).map { data[$0] }
            let seed = Perturbation.directionSeed(runSeed: s.seed, step: t, direction: 0)
            let sums = try ti.lossSums(at: [PerturbedPoint(seed: seed, sign: 1), PerturbedPoint(seed: seed, sign: -1)],
                                       epsilon: s.epsilon, shape: PerturbationShape(scales: [nil]), examples: batch)
            let d = Float((sums[0].nll - sums[1].nll) / (2 * Double(s.epsilon)))
            var z = [Float](repeating: 0, count: ti.dim)
            z.withUnsafeMutableBufferPointer { Perturbation.fill(seed: seed, group: 0, start: 0, count: ti.dim, into: $0.baseAddress!) }
            let eta = rate(t)
            for i in 0..<ti.dim { v[i] -= eta * (d * z[i]) }
            ti.parameters.constrain()
        }
        return ti.values.array
    }

    /// The constant schedule is the ZO-SGD of before schedules, bit for bit; a cosine schedule
    /// with warm-up is the same loop with the schedule's rate at each step.
    @Test func zoSGDStepsAtTheSchedulesRate() throws {
        let model = try tinyModel()
        for (kind, warmup) in [(LearningRateSchedule.Kind.constant, 0), (.cosine, 3)] {
            let s = settings(steps: 9, kind: kind, warmup: warmup)
            let (tiA, data) = try textualInversion(model)
            let trainer = try Trainer(objective: tiA, optimizer: ZOSGD(groupSizes: [tiA.dim]), settings: s, train: data)
            while !trainer.isFinished { try trainer.runStep() }
            let (tiB, _) = try textualInversion(model)
            let reference = try referenceRun(tiB, data, s, rate: { kind == .constant ? s.learningRate : s.schedule.rate(step: $0, base: s.learningRate) })
            #expect(tiA.values.array.map(\.bitPattern) == reference.map(\.bitPattern), "\(kind)")
            #expect(tiA.values.array != (try textualInversion(model)).0.values.array, "the run moved the row")
        }
    }

    /// A cosine run stopped mid-run and resumed from its checkpoint equals the uninterrupted
    /// run, bit for bit (the resumed steps take the rates of their own step numbers).
    @Test func aResumedCosineRunEqualsTheUninterruptedOne() throws {
        let model = try tinyModel()
        let s = settings(steps: 14, kind: .cosine, warmup: 4, minRatio: 0.1)
        let (tiA, data) = try textualInversion(model)
        let full = try Trainer(objective: tiA, optimizer: ZOSGD(groupSizes: [tiA.dim], momentum: 0.9), settings: s, train: data)
        while !full.isFinished { try full.runStep() }

        let store = try CheckpointStore(directory: makeTemporaryDirectory("ckpt-cosine"))
        let (tiB, _) = try textualInversion(model)
        let first = try Trainer(objective: tiB, optimizer: ZOSGD(groupSizes: [tiB.dim], momentum: 0.9), settings: s, train: data)
        for _ in 0..<8 { try first.runStep() }
        try store.save(first.checkpoint(identity: ["run": "cosine"]))

        let (tiC, _) = try textualInversion(model)
        let resumed = try Trainer(objective: tiC, optimizer: ZOSGD(groupSizes: [tiC.dim], momentum: 0.9), settings: s, train: data)
        let loaded = try #require(store.loadNewest(into: resumed.groups, warn: { _ in }))
        try resumed.restore(loaded)
        #expect(resumed.step == 9)
        while !resumed.isFinished { try resumed.runStep() }
        #expect(tiC.values.array.map(\.bitPattern) == tiA.values.array.map(\.bitPattern))
        // And the schedule mattered: the constant run ends elsewhere.
        let (tiD, _) = try textualInversion(model)
        let constant = try Trainer(objective: tiD, optimizer: ZOSGD(groupSizes: [tiD.dim], momentum: 0.9), settings: settings(steps: 14), train: data)
        while !constant.isFinished { try constant.runStep() }
        #expect(tiD.values.array != tiA.values.array)
    }
}
