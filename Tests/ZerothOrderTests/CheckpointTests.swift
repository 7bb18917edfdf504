import Foundation
import Model
import TestSupport
import Testing
import ZerothOrder

@Suite struct CheckpointTests {
    func trainer(_ ti: TextualInversion, _ data: [Example], steps: Int) throws -> Trainer {
        var settings = TrainingSettings()
        settings.steps = steps
        settings.batchSize = 3
        settings.learningRate = 0.05
        settings.epsilon = 1e-2
        settings.seed = 17
        return try Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [ti.dim], momentum: 0.9), settings: settings, train: data,
                           subspace: SubspaceGradient(groups: 1, dim: ti.dim, mode: .projectEstimate, period: 4))
    }

    /// Stopping after any step, saving, and resuming in a fresh process state gives the
    /// same parameters as an uninterrupted run, bit for bit (momentum and subspace included).
    @Test func resumeIsBitIdentical() throws {
        let model = try tinyModel()
        let (tiA, data) = try textualInversion(model)
        let full = try trainer(tiA, data, steps: 14)
        while !full.isFinished { try full.runStep() }

        let store = try CheckpointStore(directory: makeTemporaryDirectory("ckpt"))
        let (tiB, _) = try textualInversion(model)
        let first = try trainer(tiB, data, steps: 14)
        for _ in 0..<9 { try first.runStep() }
        try store.save(first.checkpoint(identity: ["run": "x"]))

        let (tiC, _) = try textualInversion(model)
        let resumed = try trainer(tiC, data, steps: 14)
        let loaded = try #require(store.loadNewest(into: resumed.groups, warn: { _ in }))
        #expect(loaded.step == 10 && loaded.identity == ["run": "x"])
        try resumed.restore(loaded)
        while !resumed.isFinished { try resumed.runStep() }
        #expect(tiC.values.array == tiA.values.array)
    }

    /// A truncated or corrupted newest checkpoint is skipped, with a warning naming it.
    @Test func corruptedCheckpointFallsBackToThePrevious() throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        let t = try trainer(ti, data, steps: 10)
        let store = try CheckpointStore(directory: makeTemporaryDirectory("ckpt2"))
        try t.runStep()
        try store.save(t.checkpoint(identity: [:]))
        try t.runStep()
        try store.save(t.checkpoint(identity: [:]))
        #expect(store.files().map(\.completed) == [2, 1])

        for damage in ["truncate", "flip"] {
            let newest = store.path(completed: 2)
            let original = try Data(contentsOf: URL(fileURLWithPath: newest))
            var bytes = [UInt8](original)
            if damage == "truncate" { bytes.removeLast(bytes.count / 3) } else { bytes[bytes.count / 2] ^= 0x5A }
            try Data(bytes).write(to: URL(fileURLWithPath: newest))
            var warnings = [String]()
            let loaded = store.loadNewest(into: t.groups, warn: { warnings.append($0) })
            #expect(loaded?.step == 2, "\(damage): falls back to the checkpoint after step 1")
            #expect(warnings.count == 1 && warnings[0].contains("checkpoint-00000002.efck"), "\(warnings)")
            try original.write(to: URL(fileURLWithPath: newest))
        }
        // Only the newest two are kept.
        try t.runStep()
        try store.save(t.checkpoint(identity: [:]))
        #expect(store.files().map(\.completed) == [3, 2])
    }
}
