// Matrix products of a quantized weight matrix with float activations, in the two
// shapes the forward pass needs:
//   many tokens (prompt, training batch): W's rows are split between the threads; each
//     thread dequantizes a tile of its rows to float and multiplies it with one
//     single-threaded OpenBLAS sgemm, so the two cores never wait on each other inside
//     a matrix and OpenBLAS's own threads never compete with ours.
//   one token (generation): fused dot products straight from the blocks, rows split
//     across threads, so W is read once and never expanded. For the formats with an
//     integer kernel (Q4_K, Q6_K, Q5_0, Q8_0) x is quantized to 8 bits once per token
//     and call, as llama.cpp does (IntegerDots.swift); the others take float x.

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
    /// Scale overrides (QZO's master copies), indexed by block: row r's blocks start at
    /// r × cols / blockSize (32, or 256 for the K-quants' super-blocks).
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

    /// Dequantizes rows `range` into `dst` ((range.count, cols), row-major): the table's
    /// tile dequantizer, looked up once per call.
    public func dequantize(rows range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        if scales.sub != nil { return dequantizeRowsSubScaled(self, range, into: dst) }
        type.traits!.dequantizeRows(self, range, dst)
    }

    /// Row `r` · x (x has `cols` values; `xSums` its block sums, `blockSums(x)`).
    public func dot(row r: Int, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>) -> Float {
        var y: Float = 0
        // dots writes out[r]: hand it a base pointer r floats before y.
        withUnsafeMutablePointer(to: &y) { dots(rows: r..<(r + 1), x, xSums, into: $0 - r) }
        return y
    }

    /// y[r] = row r · x for r in `range` (x has `cols` values, `xSums` its block sums):
    /// the table's one-token kernel, resolved once, outside the row loop.
    public func dots(rows range: Range<Int>, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                     into y: UnsafeMutablePointer<Float>) {
        (scales.sub != nil ? dotsSubScaled : type.traits!.dots)(self, range, Activations(x: x, sums: xSums), y)
    }
}

/// Scratch memory for tiles of dequantized weights, reused across calls.
public final class MatmulScratch: @unchecked Sendable {
    /// Rows of W one thread dequantizes per tile. Each thread has a tile of its own, so
    /// how W is cut into tiles, and so every product's rounding, does not depend on the
    /// number of threads.
    public let tileRows: Int
    public let cols: Int
    /// Threads with a tile (`Parallel.threadCount` when the scratch was made).
    public let threads: Int
    /// threads × tileRows × cols floats; thread t's tile starts at t × tileRows × cols.
    public let buffer: UnsafeMutablePointer<Float>
    /// Block sums of a few activation rows, for the one-token path.
    let sums: UnsafeMutablePointer<Float>
    let sumsCapacity: Int
    /// The same rows in `nibbleOrder`, for the Q4 kernels of the one-token path.
    let ordered: UnsafeMutablePointer<Float>
    /// The same rows quantized to 8 bits for the integer kernels: per row, its Q8_K blocks
    /// (`q8KBytes`) then its Q8x32 blocks.
    let quantized: UnsafeMutableRawPointer
    let q8KBytes: Int
    let q8RowBytes: Int
    /// Whether the one-token path uses the integer kernels where a format has one (true:
    /// as generation runs); false keeps every product on float x, e.g. to compare the
    /// forward pass's one-token and batched paths without the 8-bit rounding.
    public var integerKernels = true

    /// Room for a tile of `tileRows` × `cols` floats per thread.
    public init(tileRows: Int, cols: Int) {
        self.tileRows = tileRows
        self.cols = cols
        threads = max(1, Parallel.threadCount)
        buffer = .allocate(capacity: threads * tileRows * cols)
        sumsCapacity = max(1, cols / 32) * 8
        sums = .allocate(capacity: sumsCapacity)
        ordered = .allocate(capacity: sumsCapacity * 32)
        q8KBytes = cols / 256 * 292
        q8RowBytes = q8KBytes + max(1, cols / 32) * 36
        quantized = .allocate(byteCount: 8 * q8RowBytes, alignment: 64)
    }

    deinit {
        buffer.deallocate()
        sums.deallocate()
        ordered.deallocate()
        quantized.deallocate()
    }

    public var byteCount: Int { threads * tileRows * cols * 4 + sumsCapacity * 33 * 4 + 8 * q8RowBytes }

    /// Thread `t`'s tile.
    func tile(_ t: Int) -> UnsafeMutablePointer<Float> { buffer + t * tileRows * cols }
}

/// Below this many tokens the fused dot-product path is used instead of dequantize + sgemm.
public let fusedTokenLimit = 4

/// Y = X · Wᵀ: X (n, W.cols) with row stride `ldx`, Y (n, W.rows) with row stride `ldy`.
public func matmul(_ w: WeightMatrix, _ x: UnsafePointer<Float>, n: Int, ldx: Int? = nil,
                   _ y: UnsafeMutablePointer<Float>, ldy: Int? = nil, scratch: MatmulScratch) {
    matmul(sharing: x, n: n, ldx: ldx, scratch: scratch, [MatmulOutput(w, y, ldy: ldy)])
}

/// One product of a group that shares its input: Y (n, W.rows) = X · Wᵀ, rows `ldy` apart.
public struct MatmulOutput {
    public var w: WeightMatrix
    public var y: UnsafeMutablePointer<Float>
    public var ldy: Int

    public init(_ w: WeightMatrix, _ y: UnsafeMutablePointer<Float>, ldy: Int? = nil) {
        self.w = w
        self.y = y
        self.ldy = ldy ?? w.rows
    }
}

/// Several products of the same input X (n, cols), e.g. Wq, Wk and Wv of a block, in one
/// parallel job: chunks of rows of all the matrices are handed out together, so the
/// threads meet once per group instead of once per matrix (in generation that is a few
/// hundred meetings per token, and each one can wait on a thread that lost its core).
public func matmul(sharing x: UnsafePointer<Float>, n: Int, ldx: Int? = nil, scratch: MatmulScratch,
                   _ products: [MatmulOutput]) {
    guard let cols = products.first?.w.cols else { return }
    precondition(products.allSatisfy { $0.w.cols == cols }, "matmul(sharing:): every W must have \(cols) columns")
    precondition(cols <= scratch.cols, "matmul: scratch has room for rows of \(scratch.cols), W has \(cols)")
    BLAS.useOneThread()
    // The closures below run on every thread for every chunk: they read the products and
    // the chunk table through raw pointers, so no array is retained and released (an
    // atomic operation on a shared cache line) per chunk.
    products.withUnsafeBufferPointer { products in
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * products.count + 1) { table in
            matmulChunks(x, n: n, ldx: ldx ?? cols, cols: cols, scratch: scratch, products, table.baseAddress!)
        }
    }
}

/// The work of `matmul(sharing:)`. `table` has room for 2 × products + 1 integers:
/// product p owns chunks first[p]..<first[p + 1] of size[p] rows each.
private func matmulChunks(_ x: UnsafePointer<Float>, n: Int, ldx: Int, cols: Int, scratch: MatmulScratch,
                          _ products: UnsafeBufferPointer<MatmulOutput>, _ table: UnsafeMutablePointer<Int>) {
    let first = table
    let size = table + products.count + 1
    func fillTable(_ rowsPerChunk: (WeightMatrix) -> Int) {
        first[0] = 0
        for (p, product) in products.enumerated() {
            size[p] = rowsPerChunk(product.w)
            first[p + 1] = first[p] + (product.w.rows + size[p] - 1) / size[p]
        }
    }
    func locate(_ chunk: Int) -> Int {
        var p = 0
        while chunk >= first[p + 1] { p += 1 }
        return p
    }

    if n < fusedTokenLimit && cols / 32 * n <= scratch.sumsCapacity {
        // Few tokens: fused dots over chunks of rows. More chunks than threads, handed
        // out one at a time: on a busy machine a thread that loses its core holds up
        // one small chunk, not half the matrix.
        // x is prepared once per token for every matrix of the group: block sums (and the
        // nibble order) for the float kernels, 8-bit blocks for the integer kernels.
        let blocks = cols / 32
        let nibbles = products.contains { $0.w.type.traits!.wantsNibbleOrder }
        let integer = scratch.integerKernels
        let q8K = integer && cols % 256 == 0 && products.contains { $0.w.type.traits!.integerBlocks == .q8K }
        let q8x32 = integer && products.contains { $0.w.type.traits!.integerBlocks == .q8x32 }
        let quantized = scratch.quantized, q8KBytes = scratch.q8KBytes, q8RowBytes = scratch.q8RowBytes
        for t in 0..<n {
            blockSums(x + t * ldx, count: cols, into: scratch.sums + t * blocks)
            if nibbles { nibbleOrder(x + t * ldx, count: cols, into: scratch.ordered + t * cols) }
            if q8K { quantizeQ8K(x + t * ldx, count: cols, into: quantized + t * q8RowBytes) }
            if q8x32 { quantizeQ8x32(x + t * ldx, count: cols, into: quantized + t * q8RowBytes + q8KBytes) }
        }
        fillTable { w in
            let chunks = max(1, min(w.rows / 64, 4 * max(1, Parallel.threadCount)))
            return (w.rows + chunks - 1) / chunks
        }
        let sums = scratch.sums
        let ordered = scratch.ordered
        Parallel.forEach(first[products.count]) { chunk in
            let p = locate(chunk)
            let (w, y, ldy) = (products[p].w, products[p].y, products[p].ldy)
            let start = (chunk - first[p]) * size[p]
            let range = start..<min(w.rows, start + size[p])
            let traits = w.type.traits!
            if w.scales.sub == nil, let integerDots = traits.integerDots, traits.integerBlocks == .q8x32 ? q8x32 : q8K {
                let offset = traits.integerBlocks == .q8K ? 0 : q8KBytes
                for t in 0..<n { integerDots(w, range, quantized + t * q8RowBytes + offset, y + t * ldy) }
                return
            }
            let dots = w.scales.sub != nil ? dotsSubScaled : traits.dots
            for t in 0..<n {
                dots(w, range, Activations(x: x + t * ldx, sums: sums + t * blocks, ordered: nibbles ? ordered + t * cols : nil),
                     y + t * ldy)
            }
        }
        return
    }

    // Many tokens: chunks of W's rows, at least four per matrix of the usual sizes. For
    // each, the thread that claims it dequantizes the rows into its own tile, then
    // Y[:, rows] = X (n, cols) · tileᵀ. The chunk size depends on W and the tile only:
    // OpenBLAS rounds a product of another shape differently (its small-matrix kernels),
    // and a run must give the same numbers on any number of threads.
    let tileRows = scratch.tileRows
    fillTable { w in min(tileRows, max(64, min(256, w.rows / 4 / 8 * 8))) }
    // A scratch made for fewer threads than now run has a tile for each of its own only.
    let threads = min(max(1, Parallel.threadCount), scratch.threads)
    Parallel.forEachOnThread(first[products.count], threads: threads) { chunk, thread in
        let p = locate(chunk)
        let (w, y, ldy) = (products[p].w, products[p].y, products[p].ldy)
        let tile = scratch.tile(thread)
        let begin = (chunk - first[p]) * size[p]
        let end = min(w.rows, begin + size[p])
        var start = begin
        while start < end {
            let count = min(tileRows, end - start)
            w.dequantize(rows: start..<(start + count), into: tile)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(count), Int32(cols),
                        1, x, Int32(ldx), tile, Int32(cols), 0, y + start, Int32(ldy))
            start += count
        }
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

/// OpenBLAS is called from inside `Parallel` chunks, one call per thread at a time, so it
/// must not start threads of its own: with two cores its spinning workers would take
/// turns with ours, and its multi-threaded sgemm holds a lock that serializes callers.
public enum BLAS {
    private static let singleThreaded: Bool = {
        openblas_set_num_threads(1)
        return true
    }()

    /// Sets OpenBLAS to one thread (once per process).
    @inline(__always) public static func useOneThread() {
        _ = singleThreaded
    }
}

/// Kept for callers that configure threads: the kernels split work over
/// `Parallel.threadCount` themselves and run OpenBLAS single-threaded inside each chunk,
/// so OpenBLAS itself is always set to one thread, whatever `n` is.
public func setBLASThreads(_ n: Int) {
    BLAS.useOneThread()
    openblas_set_num_threads(1)
}
