// Subspace gradient (ZOODiP, "Efficient Personalization of Quantized Diffusion Model
// without Backpropagation", CVPR 2025), per trainable vector (one new token's embedding):
//
//   keep a ring buffer B (τ, dim) of the vector's values after each update;
//   every τ steps: standardise each column of B, (B − mean) / std; take its SVD; find the
//   smallest i with Σ_{j≤i} λⱼ / Σλ > 1 − ν; the right singular vectors after i are the
//   low-variance directions P;
//   afterwards project each estimate: ĝ′ = ĝ (I − PᵀP).
//
// Since (I − PᵀP) projects onto the span of the first i right singular vectors K, this
// keeps K (i, dim) and computes ĝ′ = (ĝ Kᵀ) K. The SVD comes from the eigenvectors of
// the small Gram matrix B Bᵀ (τ, τ): v = Bᵀu / σ.
//
// Two ways to use the subspace, both measured in the benchmark:
//   .projectEstimate  the paper's: perturb with z as usual, project the estimate;
//   .perturbInside    perturb with the projected z (T(z) = (z Kᵀ) K), so each forward pass
//                     spends its signal inside the kept subspace; the estimate d·T(z) is
//                     already in it.
//
// And a third, whose subspace is fixed and comes from the model (EmbeddingSubspace.swift):
//   .embeddings       z = √(dim/r)·Bᵀu, u ~ N(0, I_r) the first r values of the seed's stream, with
//                     B the top r principal directions of token_embd's rows; the estimate
//                     d·z is in span(B).

import COpenBLAS
import Quant
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class SubspaceGradient {
    public enum Mode: String, Sendable, CaseIterable {
        case projectEstimate = "project"
        case perturbInside = "perturb"
        case embeddings
    }

    public let mode: Mode
    /// Steps between subspace refreshes, and the ring buffer's length (τ).
    public let period: Int
    /// Variance share left out (ν).
    public let threshold: Double
    /// Steps before the first projection (the ring buffer must be full at least once).
    public let warmup: Int
    public let dim: Int
    /// Per group: ring buffer (period, dim).
    private var history: [[Float]]
    private var filled: Int = 0
    private var next: Int = 0
    /// Per group: kept directions (rank, dim), row-major; empty before the first refresh.
    public private(set) var bases: [[Float]]
    public private(set) var ranks: [Int]

    public init(groups: Int, dim: Int, mode: Mode, period: Int = 128, threshold: Double = 1e-3, warmup: Int = 0) {
        self.mode = mode
        self.period = period
        self.threshold = threshold
        self.warmup = max(warmup, period)
        self.dim = dim
        history = Array(repeating: [Float](repeating: 0, count: period * dim), count: groups)
        bases = Array(repeating: [], count: groups)
        ranks = Array(repeating: dim, count: groups)
    }

    /// A fixed subspace for every group: `basis` (rank, dim), orthonormal rows (`.embeddings`).
    public init(groups: Int, fixedBasis basis: [Float], rank: Int, dim: Int) {
        precondition(rank >= 1 && rank <= dim && basis.count == rank * dim, "basis shape")
        mode = .embeddings
        period = 1
        threshold = 0
        warmup = 0
        self.dim = dim
        history = []
        bases = Array(repeating: basis, count: groups)
        ranks = Array(repeating: rank, count: groups)
    }

    /// Whether a subspace is in force.
    public var isActive: Bool { bases.contains { !$0.isEmpty } }

    /// Whether the engine's z is transformed before it is applied (`shapePerturbation`).
    public var transformsPerturbation: Bool { isActive && mode != .projectEstimate }

    /// T(z) for group `g`, in place: the projection inside the kept subspace (`.perturbInside`),
    /// or √(dim/r)·Bᵀu with u = z[0..<r] (`.embeddings`; E|T(z)|² = dim as for z).
    public func shapePerturbation(group g: Int, _ z: UnsafeMutablePointer<Float>, count: Int) {
        switch mode {
        case .projectEstimate: return
        case .perturbInside: project(group: g, z, count: count)
        case .embeddings:
            let basis = bases[g], rank = ranks[g]
            guard !basis.isEmpty, count == dim else { return }
            let scale = Float((Double(dim) / Double(rank)).squareRoot())
            withUnsafeTemporaryAllocation(of: Float.self, capacity: rank) { u in
                for r in 0..<rank { u[r] = scale * z[r] }
                for i in 0..<dim { z[i] = 0 }
                for r in 0..<rank {
                    let c = u[r]
                    for i in 0..<dim { z[i] += c * basis[r * dim + i] }
                }
            }
        }
    }

    /// History, position and bases, for checkpoints.
    public func saveState() -> [UInt8] {
        if mode == .embeddings { return saveFixed() }
        var floats = [Float]()
        for g in history.indices {
            floats += history[g]
            floats.append(Float(ranks[g]))
            floats.append(Float(bases[g].count))
            floats += bases[g]
        }
        var out = [UInt8]()
        withUnsafeBytes(of: Int64(filled).littleEndian) { out += $0 }
        withUnsafeBytes(of: Int64(next).littleEndian) { out += $0 }
        floats.withUnsafeBytes { out += $0 }
        return out
    }

    /// Restores a state saved by a subspace gradient of the same shape.
    public func loadState(_ bytes: [UInt8]) throws(TrainingError) {
        if mode == .embeddings { return try loadFixed(bytes) }
        guard bytes.count >= 16, (bytes.count - 16) % 4 == 0 else {
            throw .invalidSetting("the checkpoint's subspace-gradient state is malformed")
        }
        // Every count and position read from the file is checked against both bounds
        // before it is used as an index.
        let filled = bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: Int64.self)) }
        let next = bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)) }
        guard (0...Int64(period)).contains(filled), (0..<Int64(period)).contains(next) else {
            throw .invalidSetting("the checkpoint's subspace-gradient state is malformed (ring position \(next), \(filled) filled, period \(period))")
        }
        let floats: [Float] = bytes[16...].withUnsafeBytes { raw in (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
        var i = 0
        var newHistory = history, newBases = bases, newRanks = ranks
        let n = period * dim
        for g in history.indices {
            guard i + n + 2 <= floats.count else { throw .invalidSetting("the checkpoint's subspace-gradient state is incomplete") }
            let rank = floats[i + n], count = floats[i + n + 1]
            guard rank >= 0, rank <= Float(max(period, dim)), rank == rank.rounded(),
                  count == 0 || count == rank * Float(dim) else {
                throw .invalidSetting("the checkpoint's subspace-gradient state is malformed (group \(g): rank \(rank), \(count) basis values)")
            }
            newHistory[g] = Array(floats[i..<(i + n)])
            newRanks[g] = Int(rank)
            i += n + 2
            guard i + Int(count) <= floats.count else { throw .invalidSetting("the checkpoint's subspace-gradient state is incomplete") }
            newBases[g] = Array(floats[i..<(i + Int(count))])
            i += Int(count)
        }
        guard i == floats.count else { throw .invalidSetting("the checkpoint's subspace-gradient state has \(floats.count - i) values too many") }
        history = newHistory
        bases = newBases
        ranks = newRanks
        self.filled = Int(filled)
        self.next = Int(next)
    }

    /// Records the values after an update (step is 1-based) and refreshes the subspace every τ steps.
    public func record(step: Int, groups: [ParameterGroup]) {
        guard mode != .embeddings else { return }
        for (g, group) in groups.enumerated() {
            for i in 0..<dim { history[g][next * dim + i] = group.values[i] }
        }
        next = (next + 1) % period
        filled = min(filled + 1, period)
        if filled == period && step >= warmup && step % period == 0 {
            for g in groups.indices { refresh(group: g) }
        }
    }

    /// ĝ ← (ĝ Kᵀ) K for group `g`; identity while no subspace is in force.
    public func project(group g: Int, _ v: UnsafeMutablePointer<Float>, count: Int) {
        let basis = bases[g]
        guard !basis.isEmpty, count == dim else { return }
        let rank = ranks[g]
        var coefficients = [Float](repeating: 0, count: rank)
        for r in 0..<rank {
            var s: Float = 0
            for i in 0..<dim { s += basis[r * dim + i] * v[i] }
            coefficients[r] = s
        }
        for i in 0..<dim { v[i] = 0 }
        for r in 0..<rank {
            for i in 0..<dim { v[i] += coefficients[r] * basis[r * dim + i] }
        }
    }

    /// A fixed basis's state: rank and basis per group. On resume the saved basis is used
    /// (the run's identity already pins the model and the rank): the continuation then does
    /// not depend on recomputing the basis to the same bits, e.g. with other BLAS kernels.
    private func saveFixed() -> [UInt8] {
        var floats = [Float]()
        for g in bases.indices { floats.append(Float(ranks[g])); floats += bases[g] }
        var out = [UInt8]()
        floats.withUnsafeBytes { out += $0 }
        return out
    }

    private func loadFixed(_ bytes: [UInt8]) throws(TrainingError) {
        let expected = bases.indices.reduce(0) { $0 + 4 * (1 + ranks[$1] * dim) }
        guard bytes.count == expected else {
            throw .invalidSetting("the checkpoint's embedding subspace has \(bytes.count) bytes; this run's (rank \(ranks.first ?? 0) of \(dim), \(bases.count) group(s)) has \(expected)")
        }
        let floats: [Float] = bytes.withUnsafeBytes { raw in (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
        var newBases = bases
        var i = 0
        for g in bases.indices {
            guard floats[i] == Float(ranks[g]) else {
                throw .invalidSetting("the checkpoint's embedding subspace has rank \(floats[i]) for group \(g); this run's is \(ranks[g])")
            }
            let basis = Array(floats[(i + 1)..<(i + 1 + ranks[g] * dim)])
            guard basis.allSatisfy({ $0.isFinite && abs($0) <= 1 }) else {
                throw .invalidSetting("the checkpoint's embedding subspace for group \(g) holds values that are not those of unit vectors")
            }
            newBases[g] = basis
            i += 1 + ranks[g] * dim
        }
        bases = newBases
    }

    /// Recomputes the kept directions of group `g` from its ring buffer.
    private func refresh(group g: Int) {
        let tau = period
        // Standardise columns: (B − mean) / std.
        var b = history[g]
        for i in 0..<dim {
            var mean = 0.0
            for t in 0..<tau { mean += Double(b[t * dim + i]) }
            mean /= Double(tau)
            var variance = 0.0
            for t in 0..<tau { variance += pow(Double(b[t * dim + i]) - mean, 2) }
            let std = (variance / Double(tau)).squareRoot()
            for t in 0..<tau { b[t * dim + i] = std > 0 ? Float((Double(b[t * dim + i]) - mean) / std) : 0 }
        }
        // Gram matrix G = B Bᵀ (τ, τ); its eigenvalues are the squared singular values.
        var gram = [Float](repeating: 0, count: tau * tau)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, Int32(tau), Int32(dim), 1, b, Int32(dim), 0, &gram, Int32(tau))
        var eigenvalues = [Float](repeating: 0, count: tau)
        guard symmetricEigen(&gram, n: tau, values: &eigenvalues) else { return }
        // Eigenvalues ascending from LAPACK; walk them descending.
        let total = eigenvalues.reduce(0.0) { $0 + Double(max($1, 0)) }
        guard total > 0 else { return }
        var cumulative = 0.0
        var rank = 0
        for j in stride(from: tau - 1, through: 0, by: -1) {
            cumulative += Double(max(eigenvalues[j], 0))
            rank += 1
            if cumulative / total > 1 - threshold { break }
        }
        // Right singular vectors v = Bᵀu / σ for the top `rank` eigenpairs, normalised.
        var basis = [Float](repeating: 0, count: rank * dim)
        for r in 0..<rank {
            let j = tau - 1 - r
            // Column j of the row-major eigenvector matrix (LAPACK returns column-major; see symmetricEigen).
            for i in 0..<dim {
                var s: Float = 0
                for t in 0..<tau { s += b[t * dim + i] * gram[j * tau + t] }
                basis[r * dim + i] = s
            }
            var norm: Float = 0
            for i in 0..<dim { norm += basis[r * dim + i] * basis[r * dim + i] }
            norm = norm.squareRoot()
            if norm > 0 { for i in 0..<dim { basis[r * dim + i] /= norm } }
        }
        bases[g] = basis
        ranks[g] = rank
    }
}

/// Eigen-decomposition of a symmetric n×n matrix (LAPACK ssyevd). On return `a` holds the
/// eigenvectors as rows (eigenvector j is a[j*n ..< (j+1)*n]) and `values` the eigenvalues
/// in ascending order. Returns false if LAPACK fails.
func symmetricEigen(_ a: inout [Float], n: Int, values: inout [Float]) -> Bool {
    // LAPACK is column-major: our row-major upper triangle is its lower triangle, and the
    // eigenvectors it writes as columns are rows of our row-major array.
    var jobz = Int8(UInt8(ascii: "V"))
    var uplo = Int8(UInt8(ascii: "L"))
    var n32 = Int32(n)
    var lda = Int32(n)
    var info: Int32 = 0
    var workQuery: Float = 0
    var iworkQuery: Int32 = 0
    var lwork: Int32 = -1
    var liwork: Int32 = -1
    ssyevd_(&jobz, &uplo, &n32, &a, &lda, &values, &workQuery, &lwork, &iworkQuery, &liwork, &info)
    guard info == 0 else { return false }
    lwork = Int32(workQuery)
    liwork = iworkQuery
    var work = [Float](repeating: 0, count: Int(lwork))
    var iwork = [Int32](repeating: 0, count: Int(liwork))
    ssyevd_(&jobz, &uplo, &n32, &a, &lda, &values, &work, &lwork, &iwork, &liwork, &info)
    return info == 0
}
