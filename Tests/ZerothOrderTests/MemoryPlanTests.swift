import Foundation
import Model
import Testing
import ZerothOrder

/// The planner's part for the directions of an optimizer's perturbation hook.
@Suite struct MemoryPlanDirectionTests {
    func request(budget: Int, directionBytes: Int) throws -> MemoryRequest {
        let model = try tinyModel()
        return MemoryRequest(budget: budget, config: model.config, fileBytes: model.file.fileSize, largestLayerBytes: 1 << 16,
                             outputRowBytes: 64, vocabularyEntries: 1000, batchSize: 2, exampleLengths: [10, 20],
                             points: 2, pointsShareAPass: false, contextLength: 64, trainableValues: 1_000_000,
                             optimizerStateBytes: 0, perturbationDirectionBytes: directionBytes)
    }

    /// q floats per trained value, one buffer of at least one float per group and direction,
    /// as Trainer.runStep allocates them.
    @Test func directionBytesAreQFloatsPerValue() {
        #expect(MemoryPlanner.perturbationDirectionBytes(groupCounts: [1000, 30, 0], directions: 3) == 4 * 3 * 1031)
        #expect(MemoryPlanner.perturbationDirectionBytes(groupCounts: [5], directions: 0) == 0)
    }

    /// A budget that fits without the directions and not with them is refused, naming them as
    /// the largest part; the plan shows them as a part of their own.
    @Test func directionsAreCountedAndNamed() throws {
        let directions = 4 * 16 * 1_000_000  // 16 directions of 1 M values: 64 MB, more than any other part
        let without = try request(budget: 1 << 40, directionBytes: 0)
        guard case .success(let small) = MemoryPlanner.plan(without) else { Issue.record("no plan"); return }
        #expect(!small.description.contains("perturbation directions"))
        let budget = small.total + directions / 2
        guard case .success = MemoryPlanner.plan(try request(budget: budget, directionBytes: 0)) else {
            Issue.record("the budget does not fit the plan without directions"); return
        }
        switch MemoryPlanner.plan(try request(budget: budget, directionBytes: directions)) {
        case .success(let p): Issue.record("planned \(p) under \(budget) bytes")
        case .failure(let e):
            #expect(e.smallest.largestPart.name == "perturbation directions" && e.smallest.largestPart.bytes == directions)
            #expect(e.description.contains("the largest part is perturbation directions (64.0 MB)"), "\(e)")
        }
        guard case .success(let big) = MemoryPlanner.plan(try request(budget: 1 << 40, directionBytes: directions)) else {
            Issue.record("no plan"); return
        }
        #expect(big.description.contains("perturbation directions 64.0 MB"), "\(big)")
        // Counted inside the margin's 3% too, as every other part is.
        #expect(abs((big.total - small.total) - (directions + 3 * directions / 100)) <= 1)
    }
}
