import Foundation
import Model
import TestSupport
import Testing
import ZerothOrder

/// L(θ) = ½ Σ (θ − c)² over two groups, for checking a step against its closed form.
final class TwoGroupQuadratic: TrainableSet, Objective {
    let counts = [5, 7]
    let values: [UnsafeMutablePointer<Float>]
    let centre: [[Double]]
    let groups: [ParameterGroup]

    init() {
        let counts = [5, 7]
        let storage = counts.map { n in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0.25, count: n)
            return p
        }
        values = storage
        centre = counts.enumerated().map { g, n in (0..<n).map { sin(Double(7 * g + $0) * 1.3) } }
        groups = counts.enumerated().map { g, n in ParameterGroup(name: "g\(g)", values: storage[g], count: n) }
    }
    deinit { values.forEach { $0.deallocate() } }

    var parameters: TrainableSet { self }
    var passCapacity: Int { 1 << 20 }
    func constrain() -> Int { 0 }
    var snapshot: [[Float]] { counts.enumerated().map { g, n in Array(UnsafeBufferPointer(start: values[g], count: n)) } }

    func accumulateLosses(at points: [PerturbedPoint], epsilon: Float, shape: PerturbationShape,
                          examples: [Example], into sums: inout [LossSum]) throws(TrainingError) {
        for (k, point) in points.enumerated() {
            var v = snapshot
            if let seed = point.seed {
                for g in v.indices {
                    v[g].withUnsafeMutableBufferPointer {
                        shape.apply(alpha: point.sign * shape.epsilon(epsilon, group: g), seed: seed, group: g, to: $0.baseAddress!, count: $0.count)
                    }
                }
            }
            var total = 0.0
            for g in v.indices { for i in v[g].indices { let e = Double(v[g][i]) - centre[g][i]; total += 0.5 * e * e } }
            sums[k] = sums[k] + LossSum(tokens: 1, totalNLL: total)
        }
    }
}

@Suite struct PerSetRateTests {
    /// One step with each group at its own rate η_g and ε_g moves group g by
    /// −η_g · (L₊ − L₋)/(2ε_g) · z_g, where L± = L(θ ± (ε_g z_g)_g): computed here in float64
    /// from the quadratic itself.
    @Test func eachGroupStepsAtItsOwnRateAndEpsilon() throws {
        let objective = TwoGroupQuadratic()
        var s = TrainingSettings()
        s.steps = 3
        s.batchSize = 1
        s.microBatchSize = 1
        s.learningRate = 0.05
        s.epsilon = 1e-2
        s.seed = 9
        s.groupLearningRates = [0.05, 0.4]
        s.groupEpsilons = [1e-2, 1e-3]
        s.lrSchedule = .linear
        s.lrMinRatio = 0.5
        let trainer = try Trainer(objective: objective, optimizer: ZOSGD(groupSizes: objective.counts), settings: s,
                                  train: [Example(tokens: [1, 2], targets: [2, -1], line: 1)])
        for t in 1...3 {
            let before = objective.snapshot.map { $0.map(Double.init) }
            let seed = Perturbation.directionSeed(runSeed: s.seed, step: t, direction: 0)
            let z = objective.counts.enumerated().map { g, n in
                var out = [Float](repeating: 0, count: n)
                out.withUnsafeMutableBufferPointer { Perturbation.fill(seed: seed, group: UInt32(g), start: 0, count: n, into: $0.baseAddress!) }
                return out.map(Double.init)
            }
            func loss(_ sign: Double) -> Double {
                var total = 0.0
                for g in before.indices {
                    for i in before[g].indices {
                        let e = before[g][i] + sign * Double(s.groupEpsilons![g]) * z[g][i] - objective.centre[g][i]
                        total += 0.5 * e * e
                    }
                }
                return total
            }
            let difference = loss(1) - loss(-1)
            let factor = 1 - 0.5 * Double(t) / 3       // linear from 1 to 0.5 over 3 steps
            try trainer.runStep()
            let after = objective.snapshot
            for g in before.indices {
                let eta = Double(s.groupLearningRates![g]) * factor
                for i in before[g].indices {
                    let want = before[g][i] - eta * difference / (2 * Double(s.groupEpsilons![g])) * z[g][i]
                    #expect(abs(Double(after[g][i]) - want) <= 2e-4 * max(1, abs(want - before[g][i]) * 100),
                            "step \(t) group \(g) value \(i): \(after[g][i]), expected \(want)")
                }
            }
        }
    }

    func run(_ configure: (inout TrainingRunOptions) -> Void, steps: Int = 3,
             optimizer: (([GroupLayout]) throws -> Optimizer)? = nil) throws -> TrainingRun {
        var o = tinyRunOptions(model: "tiny-q4_1.gguf",
                               method: TrainingMethod(textualInversion: ([" <x>"], " the"), qzo: (["blk.*"], false)))
        configure(&o)
        o.settings.steps = steps
        return try runToEnd(o, optimizer: optimizer)
    }

    func values(_ r: TrainingRun) -> [[UInt32]] { parameterBits(r) }

    /// qzo=0 leaves every block scale as it was, bit for bit, while the new token's row moves;
    /// textual-inversion=0 the other way round.
    @Test func aSetsRateReachesOnlyThatSet() throws {
        let start = values(try run({ _ in }, steps: 0))      // the values before training
        let groupCount = start.count
        let frozenScales = try run({ $0.setLearningRates = [.qzo: 0, .textualInversion: 0.75]; $0.setEpsilons = [.qzo: 1e-3, .textualInversion: 1e-2] })
        let a = values(frozenScales)
        #expect(a.count == groupCount)
        #expect(Array(a.dropLast()) == Array(start.dropLast()), "the scales are unchanged")
        #expect(a.last != start.last, "the new row moved")
        #expect(frozenScales.identity["lr"] == "qzo=0.0,textual-inversion=0.75")
        let frozenRow = try run({ $0.setLearningRates = [.qzo: 3e-3, .textualInversion: 0] })
        let b = values(frozenRow)
        #expect(b.last == start.last, "the new row is unchanged")
        #expect(Array(b.dropLast()) != Array(start.dropLast()), "the scales moved")
    }

    /// One number for every set is the run without per-set values, bit for bit, and takes no
    /// per-group path.
    @Test func oneRateForAllSetsIsTheSingleRateRun() throws {
        let plain = try run({ _ in })
        let same = try run({ $0.setLearningRates = [.qzo: 3e-3, .textualInversion: 3e-3]; $0.setEpsilons = [.qzo: 1e-3, .textualInversion: 1e-3] })
        #expect(same.trainer.settings.groupLearningRates == nil && same.trainer.settings.groupEpsilons == nil)
        #expect(values(same) == values(plain))
        #expect(same.identity == plain.identity)
        let perSet = try run({ $0.setLearningRates = [.qzo: 3e-3, .textualInversion: 0.75] })
        #expect(values(perSet).last != values(plain).last)
    }

    /// An optimizer other than the built-in ZO-SGD gets one rate per step: differing per-set
    /// rates are refused in one line naming it.
    @Test func perSetRatesNeedTheBuiltInZOSGD() throws {
        do {
            _ = try run({ $0.setLearningRates = [.qzo: 3e-3, .textualInversion: 0.75] },
                        optimizer: { RateRecorder(groupSizes: $0.map(\.count)) })
            Issue.record("a per-set run with another optimizer was accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains("rate-recorder") && text.contains("zo-sgd") && !text.contains("\n"), "\(text)")
        }
        // The same rates for both sets are fine.
        _ = try run({ $0.setLearningRates = [.qzo: 3e-3, .textualInversion: 3e-3] }, steps: 1,
                    optimizer: { RateRecorder(groupSizes: $0.map(\.count)) })
    }
}
