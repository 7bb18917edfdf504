// `edge-finetune bench --kernels`: the kernels of every block format alone, on real-sized
// matrices, against floors measured in the same run:
//   one token: matmul of one activation vector (fused dequantize-and-dot, rows split over
//     the threads; for Q4_K, Q6_K, Q5_0 and Q8_0 the integer kernel on x quantized to
//     8 bits, as generation runs it), in GB/s of weights read, against the memory bandwidth of a plain sum
//     over a buffer bigger than the caches (the rate at which any kernel can stream W);
//   many tokens: matmul of 512 activation rows (dequantized tiles + OpenBLAS sgemm), in
//     GFLOP/s, against sgemm on float weights of the same shape.
// The matrices hold random but valid blocks; the one-token figures cycle through enough
// copies of each matrix that the weights come from memory, not from the caches, as they
// do in generation. Then, when --model loads, the model-shaped kernel table of before.

import COpenBLAS
import Foundation
import GGUF
import Model
import Quant

struct BenchKernels {
    let runs: Int
    let json: Bool

    /// W (rows, cols): Qwen2.5's ffn_down shapes (0.5B and 1.5B); both widths are
    /// multiples of 256, so every format, the K-quants too, can hold them.
    static let shapes: [(rows: Int, cols: Int)] = [(896, 4864), (1536, 8960)]
    static let formats: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .f16]
    /// The one-token working set: at least this many bytes of weights per figure.
    static let streamedBytes = 512 << 20
    static let tokens = 512

    func run(modelPath: String) throws {
        var rows = [["kernel", "format", "shape", "ms", "rate", "of floor"]]
        BLAS.useOneThread()
        let threads = Parallel.threadCount

        // Floors: streaming reads, and sgemm on float weights.
        let bandwidth = memoryBandwidth()
        rows.append(["sum of floats (memory bandwidth)", "F32", "\(megabytes(Self.streamedBytes)), \(threads) threads", "",
                     fixed(bandwidth / 1e9, 1) + " GB/s", "1.00"])
        var sgemmRate = [Int: Double]()
        for (r, c) in Self.shapes {
            let rate = sgemmFloor(rows: r, cols: c)
            sgemmRate[r] = rate
            rows.append(["sgemm on float W (\(threads) OpenBLAS threads)", "F32", "\(Self.tokens)x\(c) · \(r)x\(c)ᵀ", "",
                         fixed(rate / 1e9, 1) + " GFLOP/s", "1.00"])
        }

        for type in Self.formats {
            for (r, c) in Self.shapes {
                let copies = max(1, Self.streamedBytes / (r * type.rowBytes(c)!))
                let mats = (0..<copies).map { RandomBlocks(type, rows: r, cols: c, seed: UInt64($0)) }
                let x = FloatBuffer(count: Self.tokens * c)
                for i in 0..<x.count { x[i] = Float(i % 23) * 0.01 - 0.11 }
                let y = FloatBuffer(count: Self.tokens * r)
                let scratch = MatmulScratch(tileRows: RunState.tileRows, cols: c)

                // One token: every copy once per timed run, so W streams from memory.
                let s1 = best { for m in mats { matmul(m.matrix, x.pointer, n: 1, y.pointer, scratch: scratch) } } / Double(copies)
                let gbs = Double(mats[0].byteCount) / s1
                rows.append(["one token: matmul (fused dot)", type.name, "1x\(c) · \(r)x\(c)ᵀ", fixed(s1 * 1000, 3),
                             fixed(gbs / 1e9, 1) + " GB/s", fixed(gbs / bandwidth, 2)])
                // One thread, one matrix (cached after the first run): the kernel's own speed.
                let m0 = mats[0].matrix
                let sums = FloatBuffer(count: c / 32)
                blockSums(x.pointer, count: c, into: sums.pointer)
                let sd = best { m0.dots(rows: 0..<r, x.pointer, sums.pointer, into: y.pointer) }
                rows.append(["one token: dots, 1 thread, cached", type.name, "1x\(c) · \(r)x\(c)ᵀ", fixed(sd * 1000, 3),
                             fixed(Double(mats[0].byteCount) / sd / 1e9, 1) + " GB/s", ""])
                // The integer kernel alone (what the matmul above runs), on x quantized once.
                if let traits = type.traits, let blocks = traits.integerBlocks, let integerDots = traits.integerDots {
                    let y8 = UnsafeMutableRawPointer.allocate(byteCount: c / blocks.blockSize * blocks.blockBytes, alignment: 64)
                    defer { y8.deallocate() }
                    let sqz = best { quantizeActivations(blocks, x.pointer, count: c, into: y8) }
                    let si = best { integerDots(m0, 0..<r, y8, y.pointer) }
                    rows.append(["one token: integer dots, 1 thread, cached", type.name, "1x\(c) · \(r)x\(c)ᵀ", fixed(si * 1000, 3),
                                 fixed(Double(mats[0].byteCount) / si / 1e9, 1) + " GB/s", ""])
                    rows.append(["one token: quantize x to 8 bits", type.name, "1x\(c)", fixed(sqz * 1000, 4), "", ""])
                }
                // Many tokens: dequantized tiles + sgemm.
                let sm = best { matmul(m0, x.pointer, n: Self.tokens, y.pointer, scratch: scratch) }
                let flops = 2 * Double(Self.tokens * r * c) / sm
                rows.append(["\(Self.tokens) tokens: matmul (tiles + sgemm)", type.name, "\(Self.tokens)x\(c) · \(r)x\(c)ᵀ",
                             fixed(sm * 1000, 3), fixed(flops / 1e9, 1) + " GFLOP/s", fixed(flops / sgemmRate[r]!, 2)])
                // The tile dequantizer alone, one thread.
                let tile = FloatBuffer(count: 64 * c)
                let sq = best { for start in stride(from: 0, to: r, by: 64) { m0.dequantize(rows: start..<min(r, start + 64), into: tile.pointer) } }
                rows.append(["dequantize rows, 1 thread", type.name, "\(r)x\(c)", fixed(sq * 1000, 3),
                             fixed(Double(r * c) / sq / 1e9, 2) + " Gweights/s", ""])
            }
        }

        if json {
            print(jsonText(rows.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(rows[0], $0)) }))
        } else {
            print(table(rows))
        }

        // The model's own shapes, when the file is one we run.
        if let m = try? LlamaModel(path: modelPath) {
            print("")
            print(table(kernelReport(m, runs: runs)))
        }
    }

    func best(_ body: () -> Void) -> Double { bestSeconds(runs: runs, body) }

    /// Bytes per second of a plain sum over a buffer bigger than the caches, split over the
    /// threads as the one-token matmul is.
    func memoryBandwidth() -> Double {
        let count = Self.streamedBytes / 4
        let buffer = FloatBuffer(count: count)
        for i in stride(from: 0, to: count, by: 1024) { buffer[i] = 1 }
        let partial = FloatBuffer(count: 64)
        let s = best {
            Parallel.forRanges(count, granule: 4096) { range in
                var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
                var i = range.lowerBound
                let p = UnsafeRawPointer(buffer.pointer)
                while i + 16 <= range.upperBound {
                    acc0 += p.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    acc1 += p.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
                    i += 16
                }
                partial[range.lowerBound * 64 / count] = (acc0 + acc1).sum()
            }
        }
        return Double(Self.streamedBytes) / s
    }

    /// FLOP/s of sgemm Y (tokens, rows) = X (tokens, cols) · Wᵀ on float W, with OpenBLAS's
    /// own threads (as many as ours).
    func sgemmFloor(rows: Int, cols: Int) -> Double {
        let n = Self.tokens
        let a = FloatBuffer(count: n * cols), b = FloatBuffer(count: rows * cols), out = FloatBuffer(count: n * rows)
        for i in 0..<a.count { a[i] = Float(i % 7) * 0.1 }
        for i in 0..<b.count { b[i] = Float(i % 5) * 0.1 }
        openblas_set_num_threads(Int32(Parallel.threadCount))
        defer { openblas_set_num_threads(1) }
        let s = best {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(rows), Int32(cols), 1,
                        a.pointer, Int32(cols), b.pointer, Int32(cols), 0, out.pointer, Int32(rows))
        }
        return 2 * Double(n * rows * cols) / s
    }
}

/// A matrix of random but valid blocks: random code and scale bytes, finite half d (and m).
final class RandomBlocks {
    let bytes: UnsafeMutableRawPointer
    let byteCount: Int
    let matrix: WeightMatrix

    init(_ type: GGMLType, rows: Int, cols: Int, seed: UInt64) {
        byteCount = rows * type.rowBytes(cols)!
        bytes = .allocate(byteCount: byteCount, alignment: 64)
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in stride(from: 0, to: byteCount - 7, by: 8) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            bytes.storeBytes(of: state, toByteOffset: i, as: UInt64.self)
        }
        if let fields = type.traits?.scales {
            for b in 0..<(rows * cols / type.blockSize) {
                let p = bytes + b * type.bytesPerBlock
                p.storeBytes(of: Float16(0.01 * Float(b % 7) - 0.03).bitPattern, toByteOffset: fields.d, as: UInt16.self)
                if let m = fields.m { p.storeBytes(of: Float16(0.002 * Float(b % 5)).bitPattern, toByteOffset: m, as: UInt16.self) }
            }
        } else {
            // F16: small finite values.
            for i in 0..<(rows * cols) { bytes.storeBytes(of: Float16(Float(i % 9) * 0.01).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
        }
        matrix = WeightMatrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(bytes))
    }

    deinit { bytes.deallocate() }
}
