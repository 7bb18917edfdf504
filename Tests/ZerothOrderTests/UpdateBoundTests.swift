import Foundation
import TestSupport
import Testing
import ZerothOrder

/// `--max-update R`: no step moves a group by more than R times its norm before the step.
@Suite struct UpdateBoundTests {
    /// A textual-inversion run on the tiny model whose first step moves the new row far
    /// (a rate far above the default), bounded at `maxUpdate`.
    func run(maxUpdate: Double, method: TrainingMethod = .textualInversion(newTokens: ["<x>"], initToken: " the"),
             rate: Float = 50) throws -> TrainingRun {
        var o = tinyRunOptions(model: "tiny-q4_0.gguf", method: method)
        o.settings.steps = 3
        o.settings.learningRate = rate
        o.settings.epsilon = 1e-2
        o.settings.clip = nil
        o.settings.maxUpdate = maxUpdate
        return try TrainingRun(o, makeOptimizer: { try ZOSGD.make(groupSizes: $0.map(\.count), options: []) }, note: { _ in })
    }

    func values(_ r: TrainingRun) -> [[Double]] {
        r.trainer.groups.map { g in (0..<g.count).map { Double(g.values[$0]) } }
    }

    func norm(_ v: [Double]) -> Double { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    /// The bounded step is the unbounded one scaled onto the radius R·‖θ₀‖, in the same
    /// direction; a radius the step does not reach changes nothing, bit for bit.
    @Test func aLongStepIsScaledOntoTheRadius() throws {
        let free = try run(maxUpdate: 0)
        let start = values(free)
        let unbounded = try free.step()
        let freeDelta = zip(values(free)[0], start[0]).map { $0 - $1 }
        let ratio = norm(freeDelta) / norm(start[0])
        #expect(unbounded.boundedGroups == 0 && ratio > 0.2, "the unbounded step moves the row by \(ratio) of its norm")

        let r = 0.1
        let bounded = try run(maxUpdate: r)
        #expect(values(bounded) == start)
        let record = try bounded.step()
        #expect(record.boundedGroups == 1)
        #expect(record.derivatives == unbounded.derivatives, "the bound acts on the update, not on the measurement")
        let delta = zip(values(bounded)[0], start[0]).map { $0 - $1 }
        #expect(abs(norm(delta) - r * norm(start[0])) < 1e-5 * norm(start[0]), "moved \(norm(delta) / norm(start[0])) of the norm")
        let f = r / ratio
        #expect(zip(delta, freeDelta).allSatisfy { abs($0 - f * $1) < 1e-5 }, "the bounded step keeps the unbounded step's direction")

        // A radius above the step: the same values as the unbounded run, bit for bit.
        let wide = try run(maxUpdate: 2 * ratio)
        let wideRecord = try wide.step()
        #expect(wideRecord.boundedGroups == 0)
        #expect(parameterBits(wide) == parameterBits(free))
        #expect(wide.identity["max_update"] == "\(2 * ratio)" && free.identity["max_update"] == nil,
                "a checkpoint of a bounded run does not resume an unbounded one")
    }

    /// On QZO every tensor's ratios are a group: each step's update of each is within R of
    /// its norm, and the steps that the default rate takes are far inside such a radius.
    @Test func everyGroupStaysWithinTheRadius() throws {
        let method = TrainingMethod.qzo(patterns: ["blk.*"], trainOffsets: false)
        let r = 1e-3
        let bounded = try run(maxUpdate: r, method: method, rate: 1)
        for _ in 0..<3 {
            let before = values(bounded)
            let record = try bounded.step()
            #expect(record.boundedGroups > 0)
            for (a, b) in zip(values(bounded), before) {
                #expect(norm(zip(a, b).map { $0 - $1 }) <= r * norm(b) * (1 + 1e-5))
            }
        }
        let defaultRate = try run(maxUpdate: 0.01, method: method, rate: 3e-3)
        #expect(try defaultRate.step().boundedGroups == 0)
    }

    /// Bad bounds are refused in one line naming the flag.
    @Test func badBoundsAreRefused() throws {
        for bad in [-0.5, .nan, .infinity] {
            do {
                _ = try run(maxUpdate: bad)
                Issue.record("--max-update \(bad) was accepted")
            } catch {
                #expect("\(error)".contains("--max-update") && !"\(error)".contains("\n"), "\(error)")
            }
        }
    }
}
