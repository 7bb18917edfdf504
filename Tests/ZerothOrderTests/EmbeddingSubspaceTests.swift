import Foundation
import Model
import TestSupport
import Testing
import ZerothOrder

/// Whether gguf-py and numpy can be imported (the float64 reference needs nothing else).
private let ggufAvailable: Bool = ProcessInfo.processInfo.environment["CI"] == "true"
    || ((try? PythonReference.run(["-c", "import gguf, numpy"]))?.status == 0)

/// |x − BᵀB x| / |x| for x in float64: how far x is from span(B) (B's rows orthonormal).
private func residualOutsideSpan(_ x: [Float], basis: [Float], rank: Int, dim: Int) -> Double {
    var inside = [Double](repeating: 0, count: dim)
    for r in 0..<rank {
        var c = 0.0
        for i in 0..<dim { c += Double(basis[r * dim + i]) * Double(x[i]) }
        for i in 0..<dim { inside[i] += c * Double(basis[r * dim + i]) }
    }
    let outside = (0..<dim).reduce(0.0) { $0 + pow(Double(x[$1]) - inside[$1], 2) }.squareRoot()
    let norm = x.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    return outside / norm
}

@Suite struct EmbeddingSubspaceTests {
    /// The basis is orthonormal, and equals the principal directions numpy finds in float64
    /// from gguf-py's dequantization of the same rows, up to sign; the variances agree; the
    /// sign convention holds (each direction's largest-magnitude value is positive).
    @Test(.enabled(if: ggufAvailable), arguments: [("tiny-q4_1", 16), ("tiny-q4_k_m", 24)])
    func basisIsOrthonormalAndMatchesAFloat64Reference(_ name: String, _ rank: Int) throws {
        let model = try tinyModel(name)
        let b = try EmbeddingBasis.principalDirections(of: model, rank: rank)
        let dim = model.config.dim
        #expect(b.rank == rank && b.dim == dim && b.basis.count == rank * dim && b.rows == model.config.vocabSize)
        for p in 0..<rank {
            for q in p..<rank {
                let dot = (0..<dim).reduce(0.0) { $0 + Double(b.basis[p * dim + $1]) * Double(b.basis[q * dim + $1]) }
                #expect(abs(dot - (p == q ? 1 : 0)) < 1e-5, "row \(p) · row \(q) = \(dot)")
            }
            let row = b.basis[(p * dim)..<((p + 1) * dim)]
            let largest = row.max { abs($0) < abs($1) }!
            #expect(largest > 0, "direction \(p): its largest-magnitude value is \(largest)")
        }

        let r = try PythonReference.run(["scripts/reference/embedding_pca.py", Repository.path("models/\(name).gguf"), "\(rank)"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let variances = try #require(json["variances"] as? [Double])
        let directions = try #require(json["directions"] as? [[Double]])
        #expect(variances.count == dim && b.variances.count == dim)
        for (ours, theirs) in zip(b.variances, variances) {
            #expect(abs(ours - theirs) <= 1e-5 * variances[0], "variance \(ours) against \(theirs)")
        }
        for p in 0..<rank {
            // The reference's eigenvalues around p are distinct enough for one direction to be defined.
            let gap = min(p > 0 ? variances[p - 1] - variances[p] : .infinity, variances[p] - variances[p + 1])
            #expect(gap > 1e-4 * variances[0], "the reference's direction \(p) is not isolated (gap \(gap))")
            let dot = (0..<dim).reduce(0.0) { $0 + Double(b.basis[p * dim + $1]) * directions[p][$1] }
            #expect(abs(abs(dot) - 1) < 1e-4, "direction \(p): |cos| with the float64 reference is \(abs(dot))")
        }
    }

    /// The shaped perturbation is √(dim/r)·Bᵀu with u the first r values of the seed's stream
    /// (computed here from `Perturbation.value`), and lies in span(B); its mean squared norm
    /// over many seeds is dim, as the full z's.
    @Test func perturbationIsBTransposeUInsideTheSpan() throws {
        let model = try tinyModel()
        let dim = model.config.dim, rank = 8
        let b = try EmbeddingBasis.principalDirections(of: model, rank: rank)
        let s = SubspaceGradient(groups: 2, fixedBasis: b.basis, rank: rank, dim: dim)
        #expect(s.isActive && s.transformsPerturbation)
        let shape = PerturbationShape(scales: [nil, nil]) { g, z, n in s.shapePerturbation(group: g, z, count: n) }
        for (seed, group) in [(UInt64(3), 0), (UInt64(0xDEAD_BEEF_1234), 1)] {
            var v = [Float](repeating: 0, count: dim)
            shape.apply(alpha: 1, seed: seed, group: group, to: &v, count: dim)
            var expected = [Double](repeating: 0, count: dim)
            for k in 0..<rank {
                let u = (Double(dim) / Double(rank)).squareRoot() * Double(Perturbation.value(seed: seed, group: UInt32(group), index: UInt64(k)))
                for i in 0..<dim { expected[i] += u * Double(b.basis[k * dim + i]) }
            }
            for i in 0..<dim { #expect(abs(Double(v[i]) - expected[i]) < 1e-5, "seed \(seed) index \(i): \(v[i]) against \(expected[i])") }
            #expect(residualOutsideSpan(v, basis: b.basis, rank: rank, dim: dim) < 1e-5)
        }
        // E|z|² = dim: over 4000 seeds the mean of |z|²/dim = χ²_r/r has standard error √(2/r/4000) ≈ 0.008.
        var total = 0.0
        for seed in 0..<UInt64(4000) {
            var v = [Float](repeating: 0, count: dim)
            shape.apply(alpha: 1, seed: seed, group: 0, to: &v, count: dim)
            total += v.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(dim)
        }
        #expect(abs(total / 4000 - 1) < 0.05, "mean |z|²/dim = \(total / 4000)")
    }

    func trainer(_ ti: TextualInversion, _ data: [Example], steps: Int, rank: Int, momentum: Float = 0.9) throws -> Trainer {
        var settings = TrainingSettings()
        settings.steps = steps
        settings.batchSize = 3
        settings.microBatchSize = 3
        settings.learningRate = 0.5
        settings.epsilon = 1e-2
        settings.seed = 23
        let b = try EmbeddingBasis.principalDirections(of: ti.model, rank: rank)
        return try Trainer(objective: ti, optimizer: ZOSGD(groupSizes: [ti.dim], momentum: momentum), settings: settings, train: data,
                           subspace: SubspaceGradient(groups: 1, fixedBasis: b.basis, rank: rank, dim: ti.dim))
    }

    /// Training moves the new row only inside span(B) (ZO-SGD with momentum on the dense
    /// estimate), and does move it.
    @Test func trainingMovesTheRowOnlyInsideTheSpan() throws {
        let model = try tinyModel()
        let (ti, data) = try textualInversion(model)
        let start = ti.values.array
        let t = try trainer(ti, data, steps: 6, rank: 8)
        while !t.isFinished { try t.runStep() }
        let moved = zip(ti.values.array, start).map { $0 - $1 }
        #expect(moved.contains { $0 != 0 })
        let b = try EmbeddingBasis.principalDirections(of: model, rank: 8)
        #expect(residualOutsideSpan(moved, basis: b.basis, rank: 8, dim: ti.dim) < 1e-4)
        // Without the subspace the same run leaves it.
        let (free, _) = try textualInversion(model)
        var settings = t.settings
        settings.steps = 6
        let u = try Trainer(objective: free, optimizer: ZOSGD(groupSizes: [free.dim], momentum: 0.9), settings: settings, train: data)
        while !u.isFinished { try u.runStep() }
        #expect(residualOutsideSpan(zip(free.values.array, start).map { $0 - $1 }, basis: b.basis, rank: 8, dim: ti.dim) > 0.5)
    }

    /// The same run twice gives the same row bit for bit; stopped after step 4, saved and
    /// resumed, it ends where the uninterrupted run does; a checkpoint of another rank is refused.
    @Test func deterministicAndResumeIsBitIdentical() throws {
        let model = try tinyModel()
        let (tiA, data) = try textualInversion(model)
        let full = try trainer(tiA, data, steps: 9, rank: 12)
        while !full.isFinished { try full.runStep() }
        let (tiB, _) = try textualInversion(model)
        let again = try trainer(tiB, data, steps: 9, rank: 12)
        while !again.isFinished { try again.runStep() }
        #expect(tiB.values.array == tiA.values.array)

        let store = try CheckpointStore(directory: makeTemporaryDirectory("emb-ckpt"))
        let (tiC, _) = try textualInversion(model)
        let first = try trainer(tiC, data, steps: 9, rank: 12)
        for _ in 0..<4 { try first.runStep() }
        try store.save(first.checkpoint(identity: ["run": "e"]))
        let (tiD, _) = try textualInversion(model)
        let resumed = try trainer(tiD, data, steps: 9, rank: 12)
        let loaded = try #require(store.loadNewest(into: resumed.groups, warn: { _ in }))
        try resumed.restore(loaded)
        while !resumed.isFinished { try resumed.runStep() }
        #expect(tiD.values.array == tiA.values.array)

        let (tiE, _) = try textualInversion(model)
        let other = try trainer(tiE, data, steps: 9, rank: 6)
        let wrong = try #require(store.loadNewest(into: other.groups, warn: { _ in }))
        #expect(throws: TrainingError.self) { try other.restore(wrong) }
    }

    /// Rank 0 and a rank above the model's width are refused in one line naming the flag.
    @Test func badRanksAreRefused() throws {
        let model = try tinyModel()
        for rank in [0, -3, model.config.dim + 1] {
            do {
                _ = try EmbeddingBasis.principalDirections(of: model, rank: rank)
                Issue.record("rank \(rank) was accepted")
            } catch {
                let message = "\(error)"
                #expect(message.contains("--subspace-rank") && message.contains("\(model.config.dim)") && !message.contains("\n"), "\(message)")
            }
        }
        // The full width is allowed: a rotation of every direction.
        #expect(try EmbeddingBasis.principalDirections(of: model, rank: model.config.dim).rank == model.config.dim)
    }
}
