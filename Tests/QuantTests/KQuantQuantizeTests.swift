// The Q4_K and Q6_K row quantizers against ggml's own (quantize_row_q4_K_ref and
// quantize_row_q6_K_ref in the libggml-base that
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

    @Test("K-quant rows quantize to ggml's bytes exactly",
          .enabled(if: PythonReference.llamaCppAvailable, "needs llama-cpp-python"),
          arguments: [("q4_K", GGMLType.q4_K, 144), ("q6_K", GGMLType.q6_K, 210)])
    func matchesGGML(_ name: String, _ type: GGMLType, _ blockBytes: Int) throws {
        let dir = makeTemporaryDirectory(name)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (r, row) in Self.rows(seed: 15).enumerated() {
            let input = dir + "/row\(r).f32", output = dir + "/row\(r).\(name)"
            try row.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: input))
            let result = try PythonReference.run(["scripts/reference/ggml_quantize_rows.py", name, input, output])
            try #require(result.status == 0, "ggml_quantize_rows.py: \(result.stderr)")
            let theirs = [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
            var ours = [UInt8](repeating: 0, count: row.count / 256 * blockBytes)
            row.withUnsafeBufferPointer { x in
                ours.withUnsafeMutableBytes { quantizeRowAnyFormat(type, x.baseAddress!, count: row.count, into: $0.baseAddress!) }
            }
            #expect(ours.count == theirs.count)
            let firstDiff = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            #expect(firstDiff == nil, "\(name) row \(r): first differing byte \(firstDiff ?? -1) (block \((firstDiff ?? 0) / blockBytes), offset \((firstDiff ?? 0) % blockBytes))")
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

    @Test("a Q6_K row dequantizes within half a code step of the input")
    func q6KRoundTripBound() throws {
        // Property (no reference needed): a group's code step is about max|x| / 32, so a value
        // comes back within half a step, or a whole one where the search picked a coarser
        // scale; rounding the group's scale to 8 bits against the super-block's d (about
        // max|x of the super-block| / 4096) can push its largest codes into the clamp, by at
        // most 16 d.
        for row in Self.rows(seed: 9) {
            var bytes = [UInt8](repeating: 0, count: row.count / 256 * 210)
            var back = [Float](repeating: 0, count: row.count)
            row.withUnsafeBufferPointer { x in
                bytes.withUnsafeMutableBytes { quantizeRowQ6_K(x.baseAddress!, count: row.count, into: $0.baseAddress!) }
            }
            bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { dequantizeRowGeneric(.q6_K, b.baseAddress!, count: row.count, into: $0.baseAddress!) } }
            for g in 0..<(row.count / 16) {
                let amax = row[(16 * g)..<(16 * g + 16)].map(abs).max()!
                let superMax = row[(256 * (g / 16))..<(256 * (g / 16) + 256)].map(abs).max()!
                for i in (16 * g)..<(16 * g + 16) {
                    #expect(abs(back[i] - row[i]) <= amax / 32 * 1.1 + superMax / 256,
                            "value \(i): \(row[i]) came back as \(back[i])")
                }
            }
        }
    }
}
