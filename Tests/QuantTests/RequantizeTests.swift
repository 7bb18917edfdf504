import Foundation
import GGUF
import Quant
import TestSupport
import Testing

/// Requantization through the table: any type reads (the K-quants too), the types with a
/// quantizer write, the K-quants are refused by name, and a row that does not fit the
/// target's blocks is refused naming the tensor, type and shape.
@Suite struct RequantizeTests {
    /// A file with a Q4_K tensor (512 x 3) and a Q6_K tensor (256 x 2) of random valid blocks.
    static func kQuantFile() throws -> (GGUFFile, RandomMatrix, RandomMatrix) {
        let a = RandomMatrix(.q4_K, rows: 3, cols: 512, seed: 1)
        let b = RandomMatrix(.q6_K, rows: 2, cols: 256, seed: 2)
        let path = makeTemporaryDirectory("requantize") + "/k.gguf"
        try a.bytes.withUnsafeBytes { pa in
            try b.bytes.withUnsafeBytes { pb in
                var w = GGUFWriter()
                w.addTensor(name: "blk.0.ffn_up.weight", type: .q4_K, shape: [512, 3], source: .view(pa))
                w.addTensor(name: "blk.0.attn_v.weight", type: .q6_K, shape: [256, 2], source: .view(pb))
                try w.write(to: path)
            }
        }
        return (try GGUFFile(path: path), a, b)
    }

    /// Q4_K and Q6_K rows requantized to Q8_0 and Q5_0 equal our dequantize-then-quantize,
    /// row by row.
    @Test(arguments: [GGMLType.q8_0, .q5_0, .q4_1]) func kQuantsRequantizeIntoLegacyFormats(_ target: GGMLType) throws {
        let (file, a, b) = try Self.kQuantFile()
        let out = makeTemporaryDirectory("requantize") + "/out.gguf"
        let converted = try Requantize.write(file, to: out, type: target) { _ in true }
        #expect(converted == 2)
        let result = try GGUFFile(path: out)
        for (m, name) in [(a, "blk.0.ffn_up.weight"), (b, "blk.0.attn_v.weight")] {
            let t = try #require(result.tensor(named: name))
            #expect(t.type == target)
            var floats = [Float](repeating: 0, count: m.cols)
            var expected = [UInt8](repeating: 0, count: target.rowBytes(m.cols)!)
            let got = result.bytes(of: t)
            for r in 0..<m.rows {
                m.bytes.withUnsafeBytes { dequantizeRowGeneric(m.type, $0.baseAddress! + r * m.type.rowBytes(m.cols)!, count: m.cols, into: &floats) }
                expected.withUnsafeMutableBytes { quantizeRow(target, floats, count: m.cols, into: $0.baseAddress!) }
                let row = Array(got[(r * expected.count)..<((r + 1) * expected.count)])
                #expect(row == expected, "\(name) row \(r)")
            }
        }
    }

    /// Quantizing into a K-quant is refused, naming the type and the way to get one.
    @Test(arguments: [GGMLType.q2_K, .q3_K, .q4_K, .q5_K, .q6_K]) func kQuantTargetsAreRefused(_ target: GGMLType) throws {
        let (file, _, _) = try Self.kQuantFile()
        let out = makeTemporaryDirectory("requantize") + "/out.gguf"
        #expect(throws: QuantError.cannotQuantize(target, context: "requantize")) {
            try Requantize.write(file, to: out, type: target) { _ in true }
        }
        let text = QuantError.cannotQuantize(target, context: "requantize").description
        #expect(text.contains(target.name) && text.contains("llama-quantize") && !text.contains("\n"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// A row that is not a whole number of the target's blocks: one line with the tensor,
    /// the type and the shape.
    @Test func rowsThatDoNotFitAreRefusedByName() throws {
        let values = [Float](repeating: 0.5, count: 48 * 2)
        let path = makeTemporaryDirectory("requantize") + "/odd.gguf"
        var w = GGUFWriter()
        w.addTensor(name: "blk.3.attn_k.weight", shape: [48, 2], floats: values)
        try w.write(to: path)
        let file = try GGUFFile(path: path)
        let out = makeTemporaryDirectory("requantize") + "/out.gguf"
        do {
            _ = try Requantize.write(file, to: out, type: .q5_0) { _ in true }
            Issue.record("a row of 48 values was quantized into blocks of 32")
        } catch {
            let text = error.description
            #expect(text.contains("'blk.3.attn_k.weight'") && text.contains("Q5_0") && text.contains("48 x 2") && !text.contains("\n"), "\(text)")
        }
    }
}
