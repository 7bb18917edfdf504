import Foundation
import GGUF
import Quant
import TestSupport
import Testing

/// Golden vectors from gguf-py (scripts/reference/quant_golden.py): random and edge-case
/// rows, their quantized bytes and the dequantized floats, per type.
struct QuantGolden {
    let type: GGMLType
    let rows: Int
    let cols: Int
    let input: [Float]
    let quantized: [UInt8]
    let dequantized: [Float]

    init(_ name: String) throws {
        let manifest = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/manifest.json")))) as! [String: Any]
        type = GGMLType(name: name)!
        rows = manifest["rows"] as! Int
        cols = manifest["cols"] as! Int
        func floats(_ file: String) throws -> [Float] {
            let data = try Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/" + file)))
            return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        input = try floats("\(name).input.f32")
        dequantized = try floats("\(name).dequant.f32")
        quantized = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/\(name).quant.bin"))))
    }
}

@Suite struct QuantGoldenTests {
    static let types = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"]

    @Test func blockLayoutsHaveGGMLSizes() {
        #expect(MemoryLayout<BlockQ4_0>.size == 18 && MemoryLayout<BlockQ4_0>.stride == GGMLType.q4_0.bytesPerBlock)
        #expect(MemoryLayout<BlockQ4_1>.size == 20 && MemoryLayout<BlockQ4_1>.stride == GGMLType.q4_1.bytesPerBlock)
        #expect(MemoryLayout<BlockQ8_0>.size == 34 && MemoryLayout<BlockQ8_0>.stride == GGMLType.q8_0.bytesPerBlock)
        #expect(MemoryLayout<BlockQ4_1>.offset(of: \.m) == 2 && MemoryLayout<BlockQ4_1>.offset(of: \.qs) == 4)
    }

    /// Dequantizing gguf-py's bytes gives gguf-py's floats, bit for bit.
    @Test(arguments: types) func dequantizeMatchesGGUFPy(_ name: String) throws {
        let g = try QuantGolden(name)
        let rowBytes = g.type.rowBytes(g.cols)!
        #expect(g.quantized.count == rowBytes * g.rows)
        var out = [Float](repeating: .nan, count: g.rows * g.cols)
        g.quantized.withUnsafeBytes { q in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<g.rows {
                    dequantizeRow(g.type, q.baseAddress! + r * rowBytes, count: g.cols, into: o.baseAddress! + r * g.cols)
                }
            }
        }
        let mismatches = zip(out, g.dequantized).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(mismatches.isEmpty, "\(name): \(mismatches.count) values differ, first at \(mismatches.first?.offset ?? -1)")
    }

    /// Quantizing gguf-py's input gives gguf-py's bytes, bit for bit.
    @Test(arguments: types) func quantizeMatchesGGUFPy(_ name: String) throws {
        let g = try QuantGolden(name)
        let rowBytes = g.type.rowBytes(g.cols)!
        var out = [UInt8](repeating: 0xAA, count: rowBytes * g.rows)
        g.input.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBytes { o in
                for r in 0..<g.rows {
                    quantizeRow(g.type, x.baseAddress! + r * g.cols, count: g.cols, into: o.baseAddress! + r * rowBytes)
                }
            }
        }
        let blockBytes = g.type.bytesPerBlock * (32 / g.type.blockSize)
        let bad = (0..<(out.count / blockBytes)).filter {
            out[($0 * blockBytes)..<(($0 + 1) * blockBytes)] != g.quantized[($0 * blockBytes)..<(($0 + 1) * blockBytes)]
        }
        #expect(bad.isEmpty, "\(name): blocks of 32 values that differ: \(bad)")
    }

    /// Reading the block scales and writing them back changes nothing; scale overrides
    /// in dequantization equal the file's scales when they hold the same values.
    @Test(arguments: ["Q4_0", "Q4_1", "Q8_0"]) func blockScalesRoundTrip(_ name: String) throws {
        let g = try QuantGolden(name)
        let rowBytes = g.type.rowBytes(g.cols)!
        let blocks = g.rows * g.cols / 32
        var d = [Float](repeating: 0, count: blocks)
        var m = [Float](repeating: 0, count: blocks)
        var copy = g.quantized
        g.quantized.withUnsafeBytes { q in
            d.withUnsafeMutableBufferPointer { dp in
                m.withUnsafeMutableBufferPointer { mp in
                    readBlockScales(g.type, q.baseAddress!, blocks: blocks, d: dp.baseAddress!, m: mp.baseAddress!)
                }
            }
        }
        copy.withUnsafeMutableBytes { c in
            writeBlockScales(g.type, c.baseAddress!, blocks: blocks, d: d, m: m)
        }
        #expect(copy == g.quantized)
        var viaOverride = [Float](repeating: 0, count: g.rows * g.cols)
        g.quantized.withUnsafeBytes { q in
            d.withUnsafeBufferPointer { dp in
                m.withUnsafeBufferPointer { mp in
                    for r in 0..<g.rows {
                        let scales = BlockScales(d: dp.baseAddress!, m: g.type == .q4_1 ? mp.baseAddress! : nil)
                            .advanced(by: r * g.cols / 32)
                        dequantizeRow(g.type, q.baseAddress! + r * rowBytes, count: g.cols,
                                      into: &viaOverride[r * g.cols], scales: scales)
                    }
                }
            }
        }
        #expect(zip(viaOverride, g.dequantized).allSatisfy { $0.bitPattern == $1.bitPattern })
    }
}
