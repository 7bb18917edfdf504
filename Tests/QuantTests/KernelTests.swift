import GGUF
import Quant
import Testing

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A random matrix quantized with our (gguf-py-exact) quantizer.
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
        let floats = (0..<(rows * cols)).map { _ in Float.random(in: -1...1, using: &rng) * Float.random(in: 0.1...2, using: &rng) }
        let rowBytes = type.rowBytes(cols)!
        bytes = [UInt8](repeating: 0, count: rows * rowBytes)
        bytes.withUnsafeMutableBytes { b in
            for r in 0..<rows { quantizeRow(type, floats.withUnsafeBufferPointer { $0.baseAddress! + r * cols }, count: cols, into: b.baseAddress! + r * rowBytes) }
        }
    }

    func with<R>(scales: BlockScales = .file, _ body: (WeightMatrix) -> R) -> R {
        bytes.withUnsafeBytes { body(WeightMatrix(type: type, rows: rows, cols: cols, data: $0.baseAddress!, scales: scales)) }
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
    static let types: [GGMLType] = [.q4_0, .q4_1, .q8_0, .f16, .bf16, .f32]
    /// Awkward shapes: one row, row counts that are not multiples of 8 or of the tile, long rows.
    static let shapes: [(rows: Int, cols: Int)] = [(1, 32), (3, 64), (17, 96), (33, 576), (130, 160)]

    @Test(arguments: types) func dequantizeRowEqualsGeneric(_ type: GGMLType) {
        for (rows, cols) in Self.shapes {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(rows * 1000 + cols))
            var fast = [Float](repeating: .nan, count: rows * cols)
            var slow = [Float](repeating: .nan, count: rows * cols)
            m.bytes.withUnsafeBytes { b in
                for r in 0..<rows {
                    let src = b.baseAddress! + r * type.rowBytes(cols)!
                    fast.withUnsafeMutableBufferPointer { dequantizeRow(type, src, count: cols, into: $0.baseAddress! + r * cols) }
                    slow.withUnsafeMutableBufferPointer { dequantizeRowGeneric(type, src, count: cols, into: $0.baseAddress! + r * cols) }
                }
            }
            #expect(zip(fast, slow).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) \(rows)x\(cols)")
        }
    }

    @Test(arguments: [GGMLType.q4_0, .q4_1, .q8_0]) func dotEqualsGeneric(_ type: GGMLType) {
        for (rows, cols) in Self.shapes {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(7 + cols))
            let x = randomFloats(cols, seed: UInt64(cols))
            var sums = [Float](repeating: 0, count: cols / 32)
            x.withUnsafeBufferPointer { blockSums($0.baseAddress!, count: cols, into: &sums) }
            m.bytes.withUnsafeBytes { b in
                for r in 0..<rows {
                    let row = b.baseAddress! + r * type.rowBytes(cols)!
                    let (fast, slow): (Float, Float) = switch type {
                    case .q4_0: (dotQ4_0(row, x, sums, blocks: cols / 32), dotQ4_0Generic(row, x, blocks: cols / 32))
                    case .q4_1: (dotQ4_1(row, x, sums, blocks: cols / 32), dotQ4_1Generic(row, x, blocks: cols / 32))
                    default: (dotQ8_0(row, x, blocks: cols / 32), dotQ8_0Generic(row, x, blocks: cols / 32))
                    }
                    // Different summation orders: allow float rounding relative to the terms' size.
                    #expect(abs(fast - slow) <= 1e-4 * Float(cols), "\(type) row \(r) of \(rows)x\(cols): \(fast) vs \(slow)")
                }
            }
        }
    }

    /// Both matmul paths (fused for a few tokens, dequantize + sgemm for many, tiles
    /// smaller than the matrix) against the scalar, double-accumulating reference.
    @Test(arguments: types) func matmulEqualsReference(_ type: GGMLType) {
        for (rows, cols) in Self.shapes {
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
                #expect(relativeError(y, reference) < 1e-5, "\(type) \(rows)x\(cols) n=\(n)")
            }
        }
    }

    /// Scale overrides (QZO's master copies) change exactly the blocks they cover.
    @Test(arguments: [GGMLType.q4_0, .q4_1, .q8_0]) func scaleOverridesAreUsed(_ type: GGMLType) {
        let (rows, cols) = (5, 64)
        let m = RandomMatrix(type, rows: rows, cols: cols, seed: 99)
        var d = [Float](repeating: 0, count: rows * cols / 32)
        var mins = [Float](repeating: 0, count: rows * cols / 32)
        m.bytes.withUnsafeBytes { readBlockScales(type, $0.baseAddress!, blocks: d.count, d: &d, m: &mins) }
        d[3] *= 2
        let x = randomFloats(cols * 6, seed: 5)
        for n in [1, 6] {
            var plain = [Float](repeating: 0, count: n * rows)
            var scaled = [Float](repeating: 0, count: n * rows)
            var reference = [Float](repeating: 0, count: n * rows)
            let scratch = MatmulScratch(tileRows: 8, cols: cols)
            m.with { matmul($0, x, n: n, &plain, scratch: scratch) }
            d.withUnsafeBufferPointer { dp in
                m.with(scales: BlockScales(d: dp.baseAddress!)) { w in
                    matmul(w, x, n: n, &scaled, scratch: scratch)
                    matmulReference(w, x, n: n, &reference)
                }
            }
            #expect(relativeError(scaled, reference) < 1e-5)
            // Block 3 is the second block of row 1: only row 1's outputs change.
            for t in 0..<n {
                for r in 0..<rows {
                    let changed = plain[t * rows + r] != scaled[t * rows + r]
                    #expect(changed == (r == 1), "token \(t) row \(r)")
                }
            }
        }
    }
}
