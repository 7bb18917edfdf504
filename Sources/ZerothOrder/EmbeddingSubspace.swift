// A perturbation subspace the model itself provides: the top principal directions of the
// vocabulary's embedding rows (token_embd), for textual inversion.
//
// SPSA's estimate ĝ = d·z with z ~ N(0, I_n) has E[ĝ] = g and a variance that grows with
// n, the dimensions perturbed. A new token's row is an embedding like the others, so the
// directions in which the vocabulary's rows vary most are a natural low-dimensional place
// for it to move in. With B (r, dim) the top r eigenvectors of the rows' covariance, the
// perturbation is z = Bᵀu, u ~ N(0, I_r): u is the first r values of the seed's stream
// (Perturbation), so z is regenerated from the seed as the full-dimensional one is.
//
// Scale. z = √(dim/r)·Bᵀu, so that E|z|² = dim as for the full z: ε keeps its meaning (the
// points θ ± εz are as far from θ), and so does the learning rate. With curvature L the
// same in every direction, a step of ZO-SGD changes the loss by −η·a + η²·b/2 with
// a = gᵀE[ĝ] and b = L·E|ĝ|². Full z: a = |g|², b ≈ L|g|²·dim. This z, with f = |Pg|²/|g|²
// the share of the gradient inside span(B) (P = BᵀB): E[ĝ] = (dim/r)·Pg, so a = κ|g|² and
// b ≈ κ·L|g|²·dim with κ = f·dim/r. Both scale by κ: the best learning rate a/b is the
// same as without the subspace, and the best step's gain is κ times as large. The
// subspace helps exactly when it holds more than its share r/dim of the gradient.
// (Without the factor, z = Bᵀu, E[zzᵀ] = P, the best learning rate is dim/r times the
// full z's: measured, it trains far slower at the default rate; docs/notes/embedding-subspace.md.)
//
// Cost. The covariance C = (XᵀX − V·μμᵀ) / V of the V rows X (V, dim) is accumulated
// streaming: rows are dequantized a tile at a time (256 rows) and each tile's XᵀX (ssyrk,
// float32, one OpenBLAS thread) is added into a float64 dim×dim sum; the whole matrix is
// never dequantized at once. Then a float64 eigen-decomposition of C (LAPACK dsyevd).
// V·dim² flops (SmolLM2-135M: 49,152 × 576² ≈ 16 GFLOP as a full product, half as syrk);
// memory: one tile (256·dim floats), C (dim² doubles) and its eigenvectors while it is
// computed, then the basis (r·dim floats) for the run.

import COpenBLAS
import Model
import Quant

public struct EmbeddingBasis: Sendable {
    /// (rank, dim), row-major: orthonormal rows, the principal directions by descending variance.
    public let basis: [Float]
    public let rank: Int
    public let dim: Int
    /// Every eigenvalue of the covariance (variance along each principal direction), descending.
    public let variances: [Double]
    /// Rows the covariance was computed from.
    public let rows: Int

    /// Share of the rows' total variance the kept directions hold.
    public var varianceShare: Double {
        let total = variances.reduce(0, +)
        return total > 0 ? variances.prefix(rank).reduce(0, +) / total : 0
    }

    /// Bytes of the basis kept for the run.
    public static func basisBytes(rank: Int, dim: Int) -> Int { 4 * rank * dim }
    /// Bytes held while the basis is computed: a tile, its XᵀX, the float64 covariance, its eigenvectors and workspace.
    /// (The float64 sum XᵀX is released before dsyevd allocates its workspace, 1 + 6n + 2n² doubles.)
    public static func scratchBytes(dim: Int) -> Int {
        4 * tileRows * dim + 4 * dim * dim + 8 * dim * dim + max(8 * dim * dim, 8 * (1 + 6 * dim + 2 * dim * dim) + 4 * (3 + 5 * dim))
    }

    static let tileRows = 256

    /// The top `rank` principal directions of `model`'s embedding rows (token_embd, as the
    /// forward pass dequantizes them), mean-centred. Each direction's sign is fixed so that
    /// its largest-magnitude value (the first, on a tie) is positive.
    public static func principalDirections(of model: LlamaModel, rank: Int) throws(TrainingError) -> EmbeddingBasis {
        let dim = model.config.dim, vocab = model.config.vocabSize
        guard (1...dim).contains(rank) else {
            throw .invalidSetting("--subspace-rank must be in 1...\(dim) (the model's embedding width; got \(rank))")
        }
        BLAS.useOneThread()
        guard vocab >= 2 else { throw .invalidSetting("token_embd has \(vocab) row(s); the embedding subspace needs at least 2") }
        var sum = [Double](repeating: 0, count: dim * dim)   // XᵀX, upper triangle (row-major)
        var mean = [Double](repeating: 0, count: dim)
        var tile = [Float](repeating: 0, count: tileRows * dim)
        var product = [Float](repeating: 0, count: dim * dim)
        var start = 0
        while start < vocab {
            let n = min(tileRows, vocab - start)
            tile.withUnsafeMutableBufferPointer { t in
                for i in 0..<n { model.embedding(start + i, into: t.baseAddress! + i * dim) }
            }
            for i in 0..<n { for j in 0..<dim { mean[j] += Double(tile[i * dim + j]) } }
            // XᵀX of the tile: (dim, dim) = tileᵀ · tile, upper triangle.
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(dim), Int32(n), 1, tile, Int32(dim), 0, &product, Int32(dim))
            for a in 0..<dim { for b in a..<dim { sum[a * dim + b] += Double(product[a * dim + b]) } }
            start += n
        }
        let v = Double(vocab)
        for j in 0..<dim { mean[j] /= v }
        // C = XᵀX / V − μμᵀ, full symmetric.
        var covariance = [Double](repeating: 0, count: dim * dim)
        for a in 0..<dim {
            for b in a..<dim {
                let c = sum[a * dim + b] / v - mean[a] * mean[b]
                covariance[a * dim + b] = c
                covariance[b * dim + a] = c
            }
        }
        sum = []
        var eigenvalues = [Double](repeating: 0, count: dim)
        guard symmetricEigen64(&covariance, n: dim, values: &eigenvalues) else {
            throw .invalidSetting("the eigen-decomposition of token_embd's covariance (\(dim)×\(dim)) failed (LAPACK dsyevd)")
        }
        // Ascending from LAPACK: the last `rank` eigenvectors, descending.
        var basis = [Float](repeating: 0, count: rank * dim)
        for r in 0..<rank {
            let j = dim - 1 - r
            let row = Array(covariance[(j * dim)..<((j + 1) * dim)])
            var largest = 0
            for i in 1..<dim where abs(row[i]) > abs(row[largest]) { largest = i }
            let sign: Double = row[largest] < 0 ? -1 : 1
            // Renormalised in float64 before rounding (LAPACK's are unit to rounding).
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for i in 0..<dim { basis[r * dim + i] = Float(sign * row[i] / norm) }
        }
        return EmbeddingBasis(basis: basis, rank: rank, dim: dim, variances: eigenvalues.reversed().map { max($0, 0) }, rows: vocab)
    }
}

/// Eigen-decomposition of a symmetric n×n float64 matrix (LAPACK dsyevd); as `symmetricEigen`:
/// eigenvectors as rows of `a`, eigenvalues ascending.
func symmetricEigen64(_ a: inout [Double], n: Int, values: inout [Double]) -> Bool {
    var jobz = Int8(UInt8(ascii: "V"))
    var uplo = Int8(UInt8(ascii: "L"))
    var n32 = Int32(n)
    var lda = Int32(n)
    var info: Int32 = 0
    var workQuery: Double = 0
    var iworkQuery: Int32 = 0
    var lwork: Int32 = -1
    var liwork: Int32 = -1
    dsyevd_(&jobz, &uplo, &n32, &a, &lda, &values, &workQuery, &lwork, &iworkQuery, &liwork, &info)
    guard info == 0 else { return false }
    lwork = Int32(workQuery)
    liwork = iworkQuery
    var work = [Double](repeating: 0, count: Int(lwork))
    var iwork = [Int32](repeating: 0, count: Int(liwork))
    dsyevd_(&jobz, &uplo, &n32, &a, &lda, &values, &work, &lwork, &iwork, &liwork, &info)
    return info == 0
}
