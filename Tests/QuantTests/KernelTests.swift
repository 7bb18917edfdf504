import Foundation
import GGUF
import Quant
import TestSupport
import Testing


/// A random matrix: quantized with our (gguf-py-exact) quantizer where the type has one,
/// otherwise (the K-quants) random but valid blocks: random code, scale and min bytes with
/// finite half-precision d (and dmin) of either sign.
struct RandomMatrix {
    let type: GGMLType
    let rows: Int
    let cols: Int
    var bytes: [UInt8]

    init(_ type: GGMLType, rows: Int, cols: Int, seed: UInt64) {
        self.type = type
        self.rows = rows
        self.cols = cols
        var rng = SplitMix64(state: seed)
        let rowBytes = type.rowBytes(cols)!
        bytes = [UInt8](repeating: 0, count: rows * rowBytes)
        if type.canQuantize {
            let floats = (0..<(rows * cols)).map { _ in Float.random(in: -1...1, using: &rng) * Float.random(in: 0.1...2, using: &rng) }
            bytes.withUnsafeMutableBytes { b in
                for r in 0..<rows { quantizeRow(type, floats.withUnsafeBufferPointer { $0.baseAddress! + r * cols }, count: cols, into: b.baseAddress! + r * rowBytes) }
            }
            return
        }
        let fields = type.traits!.scales!
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        bytes.withUnsafeMutableBytes { b in
            for block in 0..<(rows * cols / type.blockSize) {
                let p = b.baseAddress! + block * type.bytesPerBlock
                p.storeBytes(of: Float16(Float.random(in: -0.05...0.05, using: &rng)).bitPattern, toByteOffset: fields.d, as: UInt16.self)
                if let m = fields.m {
                    p.storeBytes(of: Float16(Float.random(in: -0.02...0.05, using: &rng)).bitPattern, toByteOffset: m, as: UInt16.self)
                }
            }
        }
    }

    var blocks: Int { rows * cols / type.blockSize }

    func with<R>(scales: BlockScales = .file, _ body: (WeightMatrix) -> R) -> R {
        bytes.withUnsafeBytes { body(WeightMatrix(type: type, rows: rows, cols: cols, data: $0.baseAddress!, scales: scales)) }
    }

    /// The file's scales d and m (where the format has an m), one per block.
    func fileScales() -> (d: [Float], m: [Float]) {
        var d = [Float](repeating: 0, count: blocks)
        var m = [Float](repeating: 0, count: blocks)
        bytes.withUnsafeBytes { readBlockScales(type, $0.baseAddress!, blocks: blocks, d: &d, m: &m) }
        return (d, m)
    }
}

func randomFloats(_ n: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix64(state: seed)
    return (0..<n).map { _ in Float.random(in: -2...2, using: &rng) }
}

/// Largest |a − b| relative to the largest |b|.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    let scale = max(b.map(abs).max() ?? 1, 1e-6)
    return zip(a, b).map { abs($0 - $1) }.max()! / scale
}

@Suite struct KernelTests {
    static let legacy: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0]
    static let kQuants: [GGMLType] = [.q2_K, .q3_K, .q4_K, .q5_K, .q6_K]
    static let blockTypes = legacy + kQuants
    static let types = blockTypes + [.f16, .bf16, .f32]
    /// Awkward shapes: one row, row counts that are not multiples of 8 or of the tile, an
    /// odd number of blocks (the dot loops take two at a time), long rows.
    static func shapes(_ type: GGMLType) -> [(rows: Int, cols: Int)] {
        type.blockSize == 256
            ? [(1, 256), (3, 512), (17, 768), (33, 1280), (2, 2304)]
            : [(1, 32), (3, 64), (17, 96), (33, 576), (130, 160)]
    }

    @Test(arguments: types) func dequantizeRowEqualsGeneric(_ type: GGMLType) {
        for (rows, cols) in Self.shapes(type) {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(rows * 1000 + cols))
            var fast = [Float](repeating: .nan, count: rows * cols)
            var slow = [Float](repeating: .nan, count: rows * cols)
            var tile = [Float](repeating: .nan, count: rows * cols)
            m.bytes.withUnsafeBytes { b in
                for r in 0..<rows {
                    let src = b.baseAddress! + r * type.rowBytes(cols)!
                    fast.withUnsafeMutableBufferPointer { dequantizeRow(type, src, count: cols, into: $0.baseAddress! + r * cols) }
                    slow.withUnsafeMutableBufferPointer { dequantizeRowGeneric(type, src, count: cols, into: $0.baseAddress! + r * cols) }
                }
            }
            m.with { w in tile.withUnsafeMutableBufferPointer { w.dequantize(rows: 0..<rows, into: $0.baseAddress!) } }
            #expect(zip(fast, slow).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) \(rows)x\(cols)")
            #expect(zip(tile, slow).allSatisfy { $0.bitPattern == $1.bitPattern }, "tile \(type) \(rows)x\(cols)")
        }
    }

    /// The one-token kernel of every format against its scalar twin, with the file's
    /// scales and with overrides (every third block's d × 1.5, m − 0.25).
    @Test(arguments: blockTypes) func dotEqualsGeneric(_ type: GGMLType) {
        for (rows, cols) in Self.shapes(type) {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(7 + cols))
            let x = randomFloats(cols, seed: UInt64(cols))
            var sums = [Float](repeating: 0, count: cols / 32)
            x.withUnsafeBufferPointer { blockSums($0.baseAddress!, count: cols, into: &sums) }
            var (d, mins) = m.fileScales()
            for i in d.indices where i % 3 == 1 { d[i] *= 1.5; mins[i] -= 0.25 }
            let perRow = cols / type.blockSize
            d.withUnsafeBufferPointer { dp in
                mins.withUnsafeBufferPointer { mp in
                    for overrides in [BlockScales.file, BlockScales(d: dp.baseAddress!, m: mp.baseAddress!)] {
                        var fast = [Float](repeating: .nan, count: rows)
                        m.with(scales: overrides) { w in w.dots(rows: 0..<rows, x, sums, into: &fast) }
                        m.bytes.withUnsafeBytes { b in
                            for r in 0..<rows {
                                let row = b.baseAddress! + r * type.rowBytes(cols)!
                                let slow = dotGeneric(type, row, x, cols: cols, scales: overrides.advanced(by: r * perRow))
                                // Different summation orders: float rounding relative to the terms' size.
                                var magnitude: Float = 0
                                withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { w in
                                    dequantizeRowGeneric(type, row, count: cols, into: w.baseAddress!, scales: overrides.advanced(by: r * perRow))
                                    for i in 0..<cols { magnitude += abs(w[i] * x[i]) }
                                }
                                #expect(abs(fast[r] - slow) <= 1e-5 * magnitude + 1e-30,
                                        "\(type) row \(r) of \(rows)x\(cols): \(fast[r]) vs \(slow)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Both matmul paths (fused for a few tokens, dequantize + sgemm for many, tiles
    /// smaller than the matrix) against the scalar, double-accumulating reference.
    @Test(arguments: types) func matmulEqualsReference(_ type: GGMLType) {
        for (rows, cols) in Self.shapes(type) {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(rows + 3 * cols))
            for n in [1, 2, 3, 5, 19] {
                let x = randomFloats(n * cols, seed: UInt64(n * 31 + cols))
                var y = [Float](repeating: .nan, count: n * rows)
                var reference = [Float](repeating: .nan, count: n * rows)
                let scratch = MatmulScratch(tileRows: 16, cols: cols)
                m.with { w in
                    matmul(w, x, n: n, &y, scratch: scratch)
                    matmulReference(w, x, n: n, &reference)
                }
                if n < fusedTokenLimit && type.traits!.integerDots != nil {
                    // A few tokens go through the integer kernel, on x rounded to 8 bits.
                    x.withUnsafeBufferPointer { xp in
                        for t in 0..<n {
                            for r in 0..<rows {
                                let bound = oneTokenBound(m, row: r, x: xp.baseAddress! + t * cols)
                                #expect(abs(Double(y[t * rows + r]) - Double(reference[t * rows + r])) <= bound,
                                        "\(type) \(rows)x\(cols) n=\(n) token \(t) row \(r)")
                            }
                        }
                    }
                } else {
                    #expect(relativeError(y, reference) < 1e-5, "\(type) \(rows)x\(cols) n=\(n)")
                }
            }
        }
    }

    /// Scale overrides (QZO's master copies) change exactly the blocks they cover: for the
    /// K-quants `d` is the super-block's d and `m` its dmin.
    @Test(arguments: blockTypes) func scaleOverridesAreUsed(_ type: GGMLType) {
        let (rows, cols) = (5, 2 * type.blockSize)
        let m = RandomMatrix(type, rows: rows, cols: cols, seed: 99)
        var (d, mins) = m.fileScales()
        let hasM = type.traits!.scales!.m != nil
        for override in ["d", "m"] where override == "d" || hasM {
            var changedD = d, changedM = mins
            if override == "d" { changedD[3] *= 2 } else { changedM[3] = changedM[3] * 2 + 0.01 }
            let x = randomFloats(cols * 6, seed: 5)
            for n in [1, 6] {
                var plain = [Float](repeating: 0, count: n * rows)
                var scaled = [Float](repeating: 0, count: n * rows)
                var same = [Float](repeating: 0, count: n * rows)
                var reference = [Float](repeating: 0, count: n * rows)
                let scratch = MatmulScratch(tileRows: 8, cols: cols)
                m.with { matmul($0, x, n: n, &plain, scratch: scratch) }
                changedD.withUnsafeBufferPointer { dp in
                    changedM.withUnsafeBufferPointer { mp in
                        m.with(scales: BlockScales(d: dp.baseAddress!, m: hasM ? mp.baseAddress! : nil)) { w in
                            matmul(w, x, n: n, &scaled, scratch: scratch)
                            matmulReference(w, x, n: n, &reference)
                        }
                    }
                }
                // Overrides equal to the file's values change nothing, bit for bit.
                d.withUnsafeBufferPointer { dp in
                    mins.withUnsafeBufferPointer { mp in
                        m.with(scales: BlockScales(d: dp.baseAddress!, m: hasM ? mp.baseAddress! : nil)) { w in
                            matmul(w, x, n: n, &same, scratch: scratch)
                        }
                    }
                }
                #expect(zip(same, plain).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) n=\(n): file-valued overrides")
                if n < fusedTokenLimit && type.traits!.integerDots != nil {
                    // One token goes through the integer kernel, on x rounded to 8 bits.
                    changedD.withUnsafeBufferPointer { dp in
                        changedM.withUnsafeBufferPointer { mp in
                            x.withUnsafeBufferPointer { xp in
                                let overrides = BlockScales(d: dp.baseAddress!, m: hasM ? mp.baseAddress! : nil)
                                for r in 0..<rows {
                                    let bound = oneTokenBound(m, row: r, x: xp.baseAddress!, scales: overrides)
                                    #expect(abs(Double(scaled[r]) - Double(reference[r])) <= bound, "\(type) row \(r)")
                                }
                            }
                        }
                    }
                } else {
                    #expect(relativeError(scaled, reference) < 1e-5)
                }
                // Block 3 is the second block of row 1: only row 1's outputs change.
                for t in 0..<n {
                    for r in 0..<rows {
                        let changed = plain[t * rows + r] != scaled[t * rows + r]
                        #expect(changed == (r == 1), "\(type) \(override) token \(t) row \(r)")
                    }
                }
            }
        }
    }
}

/// The kernels added for speed, each against its scalar twin on awkward sizes.
@Suite struct FastKernelTests {
    static let shapes: [(rows: Int, cols: Int)] = [(1, 32), (3, 64), (17, 96), (33, 576), (5, 1536)]

    /// Q4 dot products on nibble-ordered activations equal the plain scalar ones, with the
    /// file's scales and with overrides (QZO's master copies).
    @Test(arguments: [GGMLType.q4_0, .q4_1]) func orderedDotsEqualGeneric(_ type: GGMLType) {
        for (rows, cols) in Self.shapes {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(11 + cols + rows))
            let x = randomFloats(cols, seed: UInt64(3 * cols))
            var sums = [Float](repeating: 0, count: cols / 32)
            var ordered = [Float](repeating: .nan, count: cols)
            x.withUnsafeBufferPointer {
                blockSums($0.baseAddress!, count: cols, into: &sums)
                nibbleOrder($0.baseAddress!, count: cols, into: &ordered)
            }
            let blocks = cols / 32
            var d = [Float](repeating: 0, count: rows * blocks)
            var mins = [Float](repeating: 0, count: rows * blocks)
            m.bytes.withUnsafeBytes { readBlockScales(type, $0.baseAddress!, blocks: d.count, d: &d, m: &mins) }
            for i in d.indices where i % 3 == 1 { d[i] *= 1.5; mins[i] -= 0.25 }
            m.bytes.withUnsafeBytes { b in
                d.withUnsafeBufferPointer { dp in
                    mins.withUnsafeBufferPointer { mp in
                        for overrides in [BlockScales.file, BlockScales(d: dp.baseAddress!, m: type == .q4_1 ? mp.baseAddress! : nil)] {
                            for r in 0..<rows {
                                let row = b.baseAddress! + r * type.rowBytes(cols)!
                                let s = overrides.advanced(by: r * blocks)
                                let slow = dotGeneric(type, row, x, cols: cols, scales: s)
                                let (fast, plain): (Float, Float) = type == .q4_0
                                    ? (dotQ4_0Ordered(row, ordered, sums, blocks: blocks, scales: s), dotQ4_0(row, x, sums, blocks: blocks, scales: s))
                                    : (dotQ4_1Ordered(row, ordered, sums, blocks: blocks, scales: s), dotQ4_1(row, x, sums, blocks: blocks, scales: s))
                                #expect(abs(plain - slow) <= 1e-4 * Float(cols), "\(type) row \(r) of \(rows)x\(cols): \(plain) vs \(slow)")
                                #expect(abs(fast - slow) <= 1e-4 * Float(cols), "\(type) row \(r) of \(rows)x\(cols): \(fast) vs \(slow)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// A log-sum-exp folded over uneven tiles equals the scalar fold and a direct Double sum.
    @Test(arguments: [1, 15, 16, 17, 255, 1000]) func foldLogSumExpEqualsGeneric(_ tile: Int) {
        let logits = randomFloats(3 * tile + 5, seed: UInt64(tile)).map { $0 * 10 }
        var (fastMax, fastSum): (Float, Float) = (-.infinity, 0)
        var (slowMax, slowSum): (Float, Float) = (-.infinity, 0)
        logits.withUnsafeBufferPointer { l in
            var start = 0
            while start < logits.count {
                let count = min(tile, logits.count - start)
                foldLogSumExp(l.baseAddress! + start, count: count, runningMax: &fastMax, runningSum: &fastSum)
                foldLogSumExpGeneric(l.baseAddress! + start, count: count, runningMax: &slowMax, runningSum: &slowSum)
                start += count
            }
            #expect(maxValue(l.baseAddress!, count: logits.count) == logits.max()!)
        }
        let reference = log(logits.reduce(0.0) { $0 + exp(Double($1)) })
        let fast = Double(fastMax) + log(Double(fastSum))
        let slow = Double(slowMax) + log(Double(slowSum))
        #expect(abs(fast - reference) < 1e-5 * max(1, abs(reference)), "\(fast) vs \(reference)")
        #expect(abs(fast - slow) < 1e-5 * max(1, abs(slow)))
    }

    /// A group of products sharing one input (as Wq, Wk, Wv do) equals each product alone,
    /// for both paths, with mixed types, row counts and output strides.
    @Test func sharedInputGroupEqualsReference() {
        let cols = 96
        let mats = [RandomMatrix(.q4_1, rows: 17, cols: cols, seed: 1), RandomMatrix(.q8_0, rows: 70, cols: cols, seed: 2),
                    RandomMatrix(.q4_0, rows: 5, cols: cols, seed: 3), RandomMatrix(.f16, rows: 9, cols: cols, seed: 4)]
        for n in [1, 2, 5, 19] {
            let x = randomFloats(n * cols, seed: UInt64(n))
            let scratch = MatmulScratch(tileRows: 16, cols: cols)
            // FloatBuffer: stable addresses for the outputs, rows ldy = rows + 3 apart.
            let outputs = mats.map { FloatBuffer(count: n * ($0.rows + 3)) }
            mats[0].with { w0 in mats[1].with { w1 in mats[2].with { w2 in mats[3].with { w3 in
                let ws = [w0, w1, w2, w3]
                matmul(sharing: x, n: n, scratch: scratch,
                       ws.indices.map { MatmulOutput(ws[$0], outputs[$0].pointer, ldy: ws[$0].rows + 3) })
                for (i, w) in ws.enumerated() {
                    var reference = [Float](repeating: 0, count: n * w.rows)
                    matmulReference(w, x, n: n, &reference)
                    let ours = (0..<n).flatMap { t in (0..<w.rows).map { outputs[i][t * (w.rows + 3) + $0] } }
                    if n < fusedTokenLimit && w.type.traits!.integerDots != nil {
                        // The integer kernel rounds x to 8 bits (its bound: IntegerDotTests); in
                        // a group it must give what it gives alone, bit for bit.
                        var alone = [Float](repeating: .nan, count: n * w.rows)
                        matmul(w, x, n: n, &alone, scratch: MatmulScratch(tileRows: 16, cols: cols))
                        #expect(zip(ours, alone).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(w.type) n=\(n)")
                    } else {
                        #expect(relativeError(ours, reference) < 1e-5, "\(w.type) n=\(n)")
                    }
                }
            } } } }
        }
    }

    /// Attention's weighted sum of value rows (one query) against its scalar twin.
    @Test(arguments: [1, 7, 8, 64, 67]) func weightedSumEqualsGeneric(_ width: Int) {
        for count in [1, 3, 17] {
            let stride = width + 5
            let p = randomFloats(count, seed: UInt64(count)).map { abs($0) }
            let rows = randomFloats(count * stride, seed: UInt64(width))
            var fast = [Float](repeating: .nan, count: width)
            var slow = [Float](repeating: .nan, count: width)
            weightedSum(p, rows: rows, stride: stride, count: count, width: width, into: &fast)
            weightedSumGeneric(p, rows: rows, stride: stride, count: count, width: width, into: &slow)
            #expect(zip(fast, slow).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "width \(width) count \(count)")
        }
    }
}

/// The worker pool: every chunk runs exactly once, on a valid thread index, also when
/// calls nest or come from several threads at once.
@Suite struct ParallelTests {
    @Test(arguments: [0, 1, 2, 3, 17, 1000]) func everyChunkRunsOnce(_ chunks: Int) {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: max(chunks, 1))
        counts.initialize(repeating: 0, count: max(chunks, 1))
        defer { counts.deallocate() }
        let threads = UnsafeMutablePointer<Int>.allocate(capacity: max(chunks, 1))
        defer { threads.deallocate() }
        Parallel.forEachOnThread(chunks) { c, t in
            counts[c] += 1
            threads[c] = t
        }
        for c in 0..<chunks {
            #expect(counts[c] == 1, "chunk \(c) ran \(counts[c]) times")
            #expect(threads[c] >= 0 && threads[c] < max(1, Parallel.threadCount))
        }
        var covered = [Int](repeating: 0, count: chunks)
        covered.withUnsafeMutableBufferPointer { cov in
            Parallel.forRanges(chunks, granule: 3) { range in for i in range { cov[i] += 1 } }
        }
        #expect(covered.allSatisfy { $0 == 1 })
    }

    @Test func nestedAndConcurrentCallsComplete() {
        let total = UnsafeMutablePointer<Int>.allocate(capacity: 4 * 64)
        total.initialize(repeating: 0, count: 4 * 64)
        defer { total.deallocate() }
        // Four threads call in at once; each call nests another one inside its chunks.
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for round in 0..<50 {
                Parallel.forEach(8) { outer in
                    Parallel.forEach(8) { inner in
                        if round == 0 { total[caller * 64 + outer * 8 + inner] += 1 }
                    }
                }
            }
        }
        #expect((0..<(4 * 64)).allSatisfy { total[$0] == 1 })
    }
}
