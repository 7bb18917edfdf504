// Matrix products of a quantized weight matrix with float activations, in the two
// shapes the forward pass needs:
//   many tokens (prompt, training batch): dequantize a tile of W's rows to float, then
//     one OpenBLAS sgemm per tile; the dequantization is a small fraction of the
//     multiply once there are more than a few tokens.
//   one token (generation): fused dot products straight from the blocks, rows split
//     across threads, so W is read once and never expanded.

import COpenBLAS
import GGUF

/// A weight matrix W (rows, cols) stored row-major in a GGUF type; `cols` is ggml's ne0.
public struct WeightMatrix: @unchecked Sendable {
    public var type: GGMLType
    /// Output dimension (ggml ne1).
    public var rows: Int
    /// Input dimension, contiguous within a row (ggml ne0).
    public var cols: Int
    /// rows × rowBytes bytes of blocks.
    public var data: UnsafeRawPointer
    /// Scale overrides (QZO's master copies), indexed by block: row r's blocks start at r × cols / 32.
    public var scales: BlockScales

    public init(type: GGMLType, rows: Int, cols: Int, data: UnsafeRawPointer, scales: BlockScales = .file) {
        self.type = type
        self.rows = rows
        self.cols = cols
        self.data = data
        self.scales = scales
    }

    public var rowBytes: Int { type.rowBytes(cols)! }
    public var blocksPerRow: Int { cols / type.blockSize }
    public var byteCount: Int { rows * rowBytes }

    /// Dequantizes rows `range` into `dst` ((range.count, cols), row-major).
    @inlinable
    public func dequantize(rows range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        for (i, r) in range.enumerated() {
            dequantizeRow(type, data + r * rowBytes, count: cols, into: dst + i * cols,
                          scales: scales.advanced(by: r * blocksPerRow))
        }
    }

    /// Row `r` · x (x has `cols` values; `xSums` its block sums, needed by Q4_0/Q4_1).
    @inlinable
    public func dot(row r: Int, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>) -> Float {
        let p = data + r * rowBytes
        let s = scales.advanced(by: r * blocksPerRow)
        switch type {
        case .q4_0: return dotQ4_0(p, x, xSums, blocks: blocksPerRow, scales: s)
        case .q4_1: return dotQ4_1(p, x, xSums, blocks: blocksPerRow, scales: s)
        case .q8_0: return dotQ8_0(p, x, blocks: blocksPerRow, scales: s)
        case .f32: return dotF32(p.assumingMemoryBound(to: Float.self), x, count: cols)
        default:
            // F16/BF16: expand the row on the stack-sized scratch of 1 row.
            return withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { tmp in
                dequantizeRowGeneric(type, p, count: cols, into: tmp.baseAddress!)
                return dotF32(tmp.baseAddress!, x, count: cols)
            }
        }
    }
}

/// Scratch memory for tiles of dequantized weights, reused across calls.
public final class MatmulScratch: @unchecked Sendable {
    /// Rows of W dequantized per tile.
    public let tileRows: Int
    public let cols: Int
    public let buffer: UnsafeMutablePointer<Float>
    /// Block sums of one activation row, for the one-token path.
    let sums: UnsafeMutablePointer<Float>
    let sumsCapacity: Int

    /// Room for a tile of `tileRows` × `cols` floats.
    public init(tileRows: Int, cols: Int) {
        self.tileRows = tileRows
        self.cols = cols
        buffer = .allocate(capacity: tileRows * cols)
        sumsCapacity = max(1, cols / 32) * 8
        sums = .allocate(capacity: sumsCapacity)
    }

    deinit {
        buffer.deallocate()
        sums.deallocate()
    }

    public var byteCount: Int { tileRows * cols * 4 + sumsCapacity * 4 }
}

/// Below this many tokens the fused dot-product path is used instead of dequantize + sgemm.
public let fusedTokenLimit = 4

/// Y = X · Wᵀ: X (n, W.cols) with row stride `ldx`, Y (n, W.rows) with row stride `ldy`.
public func matmul(_ w: WeightMatrix, _ x: UnsafePointer<Float>, n: Int, ldx: Int? = nil,
                   _ y: UnsafeMutablePointer<Float>, ldy: Int? = nil, scratch: MatmulScratch) {
    let ldx = ldx ?? w.cols
    let ldy = ldy ?? w.rows
    precondition(w.cols <= scratch.cols, "matmul: scratch has room for rows of \(scratch.cols), W has \(w.cols)")
    if n < fusedTokenLimit && w.cols / 32 * n <= scratch.sumsCapacity {
        // Few tokens: fused dots, rows split across threads.
        let blocks = w.cols / 32
        for t in 0..<n { blockSums(x + t * ldx, count: w.cols, into: scratch.sums + t * blocks) }
        Parallel.forRanges(w.rows, granule: 16) { range in
            for t in 0..<n {
                let xt = x + t * ldx
                let st = UnsafePointer(scratch.sums + t * blocks)
                for r in range { y[t * ldy + r] = w.dot(row: r, xt, st) }
            }
        }
        return
    }
    // Many tokens: tiles of W dequantized (in parallel), then sgemm per tile.
    var start = 0
    while start < w.rows {
        let count = min(scratch.tileRows, w.rows - start)
        let tile = scratch.buffer
        Parallel.forRanges(count, granule: 8) { range in
            w.dequantize(rows: (start + range.lowerBound)..<(start + range.upperBound),
                         into: tile + range.lowerBound * w.cols)
        }
        // Y[:, start..<start+count] = X (n, cols) · tileᵀ (cols, count)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(count), Int32(w.cols),
                    1, x, Int32(ldx), tile, Int32(w.cols), 0, y + start, Int32(ldy))
        start += count
    }
}

/// Reference for `matmul`: every weight dequantized with the scalar code, dot products
/// accumulated in Double. Slow; for tests.
public func matmulReference(_ w: WeightMatrix, _ x: UnsafePointer<Float>, n: Int,
                            _ y: UnsafeMutablePointer<Float>) {
    var row = [Float](repeating: 0, count: w.cols)
    for r in 0..<w.rows {
        row.withUnsafeMutableBufferPointer {
            dequantizeRowGeneric(w.type, w.data + r * w.rowBytes, count: w.cols, into: $0.baseAddress!,
                                 scales: w.scales.advanced(by: r * w.blocksPerRow))
        }
        for t in 0..<n {
            var s = 0.0
            for c in 0..<w.cols { s += Double(row[c]) * Double(x[t * w.cols + c]) }
            y[t * w.rows + r] = Float(s)
        }
    }
}

/// Sets the number of threads OpenBLAS uses for its own calls.
public func setBLASThreads(_ n: Int) {
    openblas_set_num_threads(Int32(n))
}
