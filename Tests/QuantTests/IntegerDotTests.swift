import Foundation
import GGUF
import Quant
import TestSupport
import Testing

/// The bound on |row · x̂ − row · x| that 8-bit activations allow, for a row whose
/// dequantized values are `w` and activations `x` quantized in `blocks`: each x̂_i is within
/// d_b / 2 of x_i (d_b = max |x| / 127 over x_i's block; rounding to nearest), so the
/// product moves by at most Σ |w_i| · d_b / 2; on top, float rounding of the kernel's
/// per-block scaling and sums and of the dequantized reference, 1e-5 of Σ |w_i x_i|.
func activationRoundingBound(_ blocks: ActivationBlocks, w: UnsafePointer<Float>, x: UnsafePointer<Float>, count: Int) -> Double {
    var bound = 0.0
    var magnitude = 0.0
    for b in 0..<(count / blocks.blockSize) {
        let range = (b * blocks.blockSize)..<((b + 1) * blocks.blockSize)
        let amax = range.map { Double(abs(x[$0])) }.max()!
        let half = amax / 127 / 2
        for i in range {
            bound += Double(abs(w[i])) * half
            magnitude += Double(abs(w[i] * x[i]))
        }
    }
    return bound * (1 + 1e-6) + 1e-5 * magnitude + 1e-30
}

/// The one-token bound for row `r` of `m` on token x: the 8-bit rounding bound where the
/// format has an integer kernel (generation quantizes x), else float rounding only.
func oneTokenBound(_ m: RandomMatrix, row r: Int, x: UnsafePointer<Float>, scales: BlockScales = .file) -> Double {
    var w = [Float](repeating: 0, count: m.cols)
    m.bytes.withUnsafeBytes { b in
        dequantizeRowGeneric(m.type, b.baseAddress! + r * m.type.rowBytes(m.cols)!, count: m.cols, into: &w,
                             scales: scales.advanced(by: r * m.cols / m.type.blockSize))
    }
    if let blocks = m.type.traits!.integerBlocks {
        return activationRoundingBound(blocks, w: w, x: x, count: m.cols)
    }
    return 1e-5 * (0..<m.cols).reduce(0.0) { $0 + Double(abs(w[$1] * x[$1])) } + 1e-30
}

@Suite struct IntegerDotTests {
    static let types: [GGMLType] = BlockFormatTraits.all.filter { $0.integerDots != nil }.map(\.type)

    @Test func theGenerationFormatsHaveIntegerKernels() {
        #expect(Set(Self.types) == [.q4_K, .q6_K, .q5_0, .q8_0])
    }

    /// x̂ = d · q within d / 2 of x per element, |q| ≤ 127, the largest |x| of a block at
    /// ±127, and Q8_K's sums of 16 equal to the codes' sums; on values of mixed sizes, with
    /// an all-zero block.
    @Test(arguments: [ActivationBlocks.q8K, .q8x32]) func quantizedActivations(_ blocks: ActivationBlocks) {
        let count = 3 * 256
        var x = randomFloats(count, seed: 17).enumerated().map { i, v in v * (i % 37 == 0 ? 40 : 1) }
        for i in 256..<(256 + blocks.blockSize) { x[i] = 0 }
        var q = [UInt8](repeating: 0, count: count / blocks.blockSize * blocks.blockBytes)
        x.withUnsafeBufferPointer { xp in q.withUnsafeMutableBytes { quantizeActivations(blocks, xp.baseAddress!, count: count, into: $0.baseAddress!) } }
        q.withUnsafeBytes { raw in
            for b in 0..<(count / blocks.blockSize) {
                let block = raw.baseAddress! + b * blocks.blockBytes
                let d = block.load(as: Float.self)
                let range = (b * blocks.blockSize)..<((b + 1) * blocks.blockSize)
                let amax = range.map { abs(x[$0]) }.max()!
                #expect(abs(d - amax / 127) <= 1e-6 * amax, "block \(b): d \(d) for max \(amax)")
                var codes = [Int]()
                for (k, i) in range.enumerated() {
                    let c = Int(block.load(fromByteOffset: 4 + k, as: Int8.self))
                    codes.append(c)
                    #expect(abs(c) <= 127)
                    #expect(abs(Double(x[i]) - Double(d) * Double(c)) <= Double(d) / 2 * (1 + 1e-5) + 1e-30, "block \(b) value \(k)")
                }
                if amax > 0 { #expect(codes.map(abs).max() == 127) } else { #expect(codes.allSatisfy { $0 == 0 }) }
                if blocks == .q8K {
                    for j in 0..<16 {
                        let s = Int(block.load(fromByteOffset: 260 + 2 * j, as: Int16.self))
                        #expect(s == codes[(16 * j)..<(16 * j + 16)].reduce(0, +), "block \(b) sum \(j)")
                    }
                }
            }
        }
    }

    /// A block of x with an infinity or a NaN quantizes to d = NaN (codes 0), so the
    /// products come out NaN, as they do on the float path, instead of finite.
    @Test(arguments: [ActivationBlocks.q8K, .q8x32]) func nonFiniteActivationsStayNonFinite(_ blocks: ActivationBlocks) {
        for bad in [Float.infinity, -.infinity, .nan] {
            var x = randomFloats(512, seed: 4)
            x[blocks.blockSize + 3] = bad
            var q = [UInt8](repeating: 0xff, count: 512 / blocks.blockSize * blocks.blockBytes)
            x.withUnsafeBufferPointer { xp in q.withUnsafeMutableBytes { quantizeActivations(blocks, xp.baseAddress!, count: 512, into: $0.baseAddress!) } }
            q.withUnsafeBytes { raw in
                #expect(raw.load(as: Float.self).isFinite, "\(bad): the clean first block")
                #expect(raw.load(fromByteOffset: blocks.blockBytes, as: Float.self).isNaN, "\(bad)")
                #expect((0..<blocks.blockSize).allSatisfy { raw.load(fromByteOffset: blocks.blockBytes + 4 + $0, as: Int8.self) == 0 })
            }
            let type: GGMLType = blocks == .q8K ? .q4_K : .q8_0
            let m = RandomMatrix(type, rows: 2, cols: 512, seed: 8)
            var y = [Float](repeating: 0, count: 2)
            m.with { w in q.withUnsafeBytes { type.traits!.integerDots!(w, 0..<2, $0.baseAddress!, &y) } }
            #expect(y.allSatisfy { $0.isNaN }, "\(bad): \(y)")
        }
    }

    /// The fast integer kernel against its scalar twin, bit for bit (both sum exact
    /// integers and then do the same float operations), on awkward shapes, with the file's
    /// scales and with overrides.
    @Test(arguments: types) func integerDotEqualsGeneric(_ type: GGMLType) {
        let traits = type.traits!
        let blocks = traits.integerBlocks!
        for (rows, cols) in KernelTests.shapes(type) {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(11 + cols))
            let x = randomFloats(cols, seed: UInt64(3 * cols))
            var y8 = [UInt8](repeating: 0, count: cols / blocks.blockSize * blocks.blockBytes)
            x.withUnsafeBufferPointer { xp in y8.withUnsafeMutableBytes { quantizeActivations(blocks, xp.baseAddress!, count: cols, into: $0.baseAddress!) } }
            var (d, mins) = m.fileScales()
            for i in d.indices where i % 3 == 1 { d[i] *= 1.5; mins[i] -= 0.25 }
            let perRow = cols / type.blockSize
            d.withUnsafeBufferPointer { dp in
                mins.withUnsafeBufferPointer { mp in
                    for overrides in [BlockScales.file, BlockScales(d: dp.baseAddress!, m: mp.baseAddress!)] {
                        var fast = [Float](repeating: .nan, count: rows)
                        y8.withUnsafeBytes { yp in
                            m.with(scales: overrides) { w in traits.integerDots!(w, 0..<rows, yp.baseAddress!, &fast) }
                            m.bytes.withUnsafeBytes { b in
                                for r in 0..<rows {
                                    let slow = traits.integerDotGeneric!(b.baseAddress! + r * type.rowBytes(cols)!, yp.baseAddress!, cols,
                                                                         overrides.advanced(by: r * perRow))
                                    #expect(fast[r].bitPattern == slow.bitPattern, "\(type) row \(r) of \(rows)x\(cols): \(fast[r]) vs \(slow)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The one-token matmul (which quantizes x) against a float64 dot product of the
    /// dequantized rows with the float x, within the bound of x's 8-bit rounding; x with
    /// outliers, as real activations have.
    @Test(arguments: types) func integerDotWithinActivationRounding(_ type: GGMLType) {
        for (rows, cols) in KernelTests.shapes(type) {
            let m = RandomMatrix(type, rows: rows, cols: cols, seed: UInt64(5 + rows + cols))
            let x = randomFloats(cols, seed: UInt64(cols + 1)).enumerated().map { i, v in v * (i % 29 == 3 ? 25 : 1) }
            var y = [Float](repeating: .nan, count: rows)
            var reference = [Float](repeating: .nan, count: rows)
            let scratch = MatmulScratch(tileRows: 16, cols: cols)
            m.with { w in
                matmul(w, x, n: 1, &y, scratch: scratch)
                matmulReference(w, x, n: 1, &reference)
            }
            var worst = 0.0
            x.withUnsafeBufferPointer { xp in
                for r in 0..<rows {
                    let bound = oneTokenBound(m, row: r, x: xp.baseAddress!)
                    let error = abs(Double(y[r]) - Double(reference[r]))
                    worst = max(worst, error / bound)
                    #expect(error <= bound, "\(type) row \(r) of \(rows)x\(cols): \(y[r]) vs \(reference[r]), bound \(bound)")
                }
            }
            // The rounding is really there (the kernel is not the float one): some row moves.
            #expect(worst > 0, "\(type) \(rows)x\(cols)")
        }
    }
}
