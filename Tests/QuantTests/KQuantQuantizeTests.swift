// The Q4_K row quantizer against ggml's own (quantize_row_q4_K_ref in the libggml-base that
// llama-cpp-python ships, through scripts/reference/ggml_quantize_rows.py): the bytes must
// be identical.

import Foundation
import GGUF
import Quant
import TestSupport
import Testing

@Suite struct KQuantQuantizeTests {
    /// Rows of awkward content: Gaussian at embedding scale, large values, all-positive and
    /// all-negative sub-blocks, a zero sub-block, a constant sub-block, one outlier, tiny values.
    static func rows(seed: UInt64) -> [[Float]] {
        var rng = SplitMix64(state: seed)
        func gauss(_ s: Float) -> Float {
            let u1 = Float(rng.next() >> 40 + 1) / Float(1 << 24), u2 = Float(rng.next() >> 40) / Float(1 << 24)
            return s * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
        var out = [[Float]]()
        for s: Float in [0.0152, 0.0407, 0.13, 3.5] { out.append((0..<1536).map { _ in gauss(s) }) }
        var mixed = (0..<512).map { _ in gauss(0.02) }
        for i in 0..<32 { mixed[i] = abs(mixed[i]) + 0.01 }          // positive sub-block: min is 0
        for i in 32..<64 { mixed[i] = -abs(mixed[i]) }                // negative sub-block
        for i in 64..<96 { mixed[i] = 0 }                             // zero sub-block
        for i in 96..<128 { mixed[i] = 0.0625 }                       // constant sub-block
        mixed[300] = 1.5                                              // one outlier
        for i in 256..<288 { mixed[i] = gauss(1e-6) }                 // tiny sub-block beside the outlier
        out.append(mixed)
        out.append([Float](repeating: 0, count: 256))
        return out
    }

    @Test("Q4_K rows quantize to ggml's bytes exactly",
          .enabled(if: PythonReference.llamaCppAvailable, "needs llama-cpp-python"))
    func q4KMatchesGGML() throws {
        let dir = makeTemporaryDirectory("q4k")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (r, row) in Self.rows(seed: 15).enumerated() {
            let input = dir + "/row\(r).f32", output = dir + "/row\(r).q4k"
            try row.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: input))
            let result = try PythonReference.run(["scripts/reference/ggml_quantize_rows.py", "q4_K", input, output])
            try #require(result.status == 0, "ggml_quantize_rows.py: \(result.stderr)")
            let theirs = [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
            var ours = [UInt8](repeating: 0, count: row.count / 256 * 144)
            row.withUnsafeBufferPointer { x in
                ours.withUnsafeMutableBytes { quantizeRowQ4_K(x.baseAddress!, count: row.count, into: $0.baseAddress!) }
            }
            #expect(ours.count == theirs.count)
            let firstDiff = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            #expect(firstDiff == nil, "row \(r): first differing byte \(firstDiff ?? -1) (block \((firstDiff ?? 0) / 144), offset \((firstDiff ?? 0) % 144))")
        }
    }

    @Test("a Q4_K row dequantizes within its sub-block step of the input")
    func q4KRoundTripBound() throws {
        // Property (no reference needed): every value comes back within one code step
        // (d·sc) of the input, plus the 6-bit rounding of the min, for rows without outliers.
        for row in Self.rows(seed: 7).prefix(4) {
            var bytes = [UInt8](repeating: 0, count: row.count / 256 * 144)
            var back = [Float](repeating: 0, count: row.count)
            row.withUnsafeBufferPointer { x in
                bytes.withUnsafeMutableBytes { quantizeRowQ4_K(x.baseAddress!, count: row.count, into: $0.baseAddress!) }
            }
            bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { dequantizeRowGeneric(.q4_K, b.baseAddress!, count: row.count, into: $0.baseAddress!) } }
            for sb in 0..<(row.count / 32) {
                let slice = row[(32 * sb)..<(32 * sb + 32)]
                let range = slice.max()! - min(0, slice.min()!)
                for i in (32 * sb)..<(32 * sb + 32) {
                    #expect(abs(back[i] - row[i]) <= range / 15 * 1.1, "value \(i): \(row[i]) came back as \(back[i])")
                }
            }
        }
    }
}
