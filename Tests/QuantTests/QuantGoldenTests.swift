import Foundation
import GGUF
import Quant
import TestSupport
import Testing

/// Golden vectors from gguf-py (scripts/reference/quant_golden.py): random and edge-case
/// rows, their quantized bytes and the dequantized floats, per type. The K-quants have no
/// input (gguf-py cannot quantize them): their bytes are random but valid super-blocks.
struct QuantGolden {
    let type: GGMLType
    let rows: Int
    let cols: Int
    let input: [Float]?
    let quantized: [UInt8]
    let dequantized: [Float]

    init(_ name: String) throws {
        let manifest = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/manifest.json")))) as! [String: Any]
        let entry = (manifest["types"] as! [String: Any])[name] as! [String: Any]
        type = GGMLType(name: name)!
        rows = entry["rows"] as! Int
        cols = entry["cols"] as! Int
        func floats(_ file: String) throws -> [Float] {
            let data = try Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/" + file)))
            return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        let files = entry["files"] as! [String: String]
        input = try files["input"].map(floats)
        dequantized = try floats(files["dequant"]!)
        quantized = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/" + files["quant"]!))))
    }
}

@Suite struct QuantGoldenTests {
    static let quantizable = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
    static let kQuants = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
    static let types = quantizable + kQuants

    /// Every layout of Blocks.swift has ggml's size (ggml-common.h's static asserts) and
    /// its fields sit where the kernels read them (`ScaleFields` and the byte offsets).
    @Test func blockLayoutsHaveGGMLSizes() {
        func size<T>(_: T.Type, _ type: GGMLType) -> Bool {
            MemoryLayout<T>.size == type.bytesPerBlock && MemoryLayout<T>.stride == type.bytesPerBlock
        }
        #expect(size(BlockQ4_0.self, .q4_0) && GGMLType.q4_0.bytesPerBlock == 18)
        #expect(size(BlockQ4_1.self, .q4_1) && GGMLType.q4_1.bytesPerBlock == 20)
        #expect(size(BlockQ5_0.self, .q5_0) && GGMLType.q5_0.bytesPerBlock == 22)
        #expect(size(BlockQ5_1.self, .q5_1) && GGMLType.q5_1.bytesPerBlock == 24)
        #expect(size(BlockQ8_0.self, .q8_0) && GGMLType.q8_0.bytesPerBlock == 34)
        #expect(size(BlockQ2_K.self, .q2_K) && GGMLType.q2_K.bytesPerBlock == 84)
        #expect(size(BlockQ3_K.self, .q3_K) && GGMLType.q3_K.bytesPerBlock == 110)
        #expect(size(BlockQ4_K.self, .q4_K) && GGMLType.q4_K.bytesPerBlock == 144)
        #expect(size(BlockQ5_K.self, .q5_K) && GGMLType.q5_K.bytesPerBlock == 176)
        #expect(size(BlockQ6_K.self, .q6_K) && GGMLType.q6_K.bytesPerBlock == 210)
        #expect(size(BlockQ8_K.self, .q8_K) && GGMLType.q8_K.bytesPerBlock == 292)

        #expect(MemoryLayout<BlockQ4_1>.offset(of: \.m) == 2 && MemoryLayout<BlockQ4_1>.offset(of: \.qs) == 4)
        #expect(MemoryLayout<BlockQ5_0>.offset(of: \.qh) == 2 && MemoryLayout<BlockQ5_0>.offset(of: \.qs) == 6)
        #expect(MemoryLayout<BlockQ5_1>.offset(of: \.m) == 2 && MemoryLayout<BlockQ5_1>.offset(of: \.qh) == 4
            && MemoryLayout<BlockQ5_1>.offset(of: \.qs) == 8)
        #expect(MemoryLayout<BlockQ2_K>.offset(of: \.qs) == 16 && MemoryLayout<BlockQ2_K>.offset(of: \.d) == 80
            && MemoryLayout<BlockQ2_K>.offset(of: \.dmin) == 82)
        #expect(MemoryLayout<BlockQ3_K>.offset(of: \.qs) == 32 && MemoryLayout<BlockQ3_K>.offset(of: \.scales) == 96
            && MemoryLayout<BlockQ3_K>.offset(of: \.d) == 108)
        #expect(MemoryLayout<BlockQ4_K>.offset(of: \.dmin) == 2 && MemoryLayout<BlockQ4_K>.offset(of: \.scales) == 4
            && MemoryLayout<BlockQ4_K>.offset(of: \.qs) == 16)
        #expect(MemoryLayout<BlockQ5_K>.offset(of: \.scales) == 4 && MemoryLayout<BlockQ5_K>.offset(of: \.qh) == 16
            && MemoryLayout<BlockQ5_K>.offset(of: \.qs) == 48)
        #expect(MemoryLayout<BlockQ6_K>.offset(of: \.qh) == 128 && MemoryLayout<BlockQ6_K>.offset(of: \.scales) == 192
            && MemoryLayout<BlockQ6_K>.offset(of: \.d) == 208)
        #expect(MemoryLayout<BlockQ8_K>.offset(of: \.qs) == 4 && MemoryLayout<BlockQ8_K>.offset(of: \.bsums) == 260)
        // The 8-bit activation blocks of the integer kernels (not a GGUF type).
        #expect(MemoryLayout<BlockQ8x32>.size == 36 && MemoryLayout<BlockQ8x32>.offset(of: \.qs) == 4)
        #expect(ActivationBlocks.q8K.blockBytes == MemoryLayout<BlockQ8_K>.size && ActivationBlocks.q8x32.blockBytes == 36)

        // The table's scale fields are the layouts' d and m/dmin.
        #expect(GGMLType.q4_1.traits?.scales == ScaleFields(d: 0, m: MemoryLayout<BlockQ4_1>.offset(of: \.m)))
        #expect(GGMLType.q5_1.traits?.scales == ScaleFields(d: 0, m: MemoryLayout<BlockQ5_1>.offset(of: \.m)))
        #expect(GGMLType.q2_K.traits?.scales == ScaleFields(d: MemoryLayout<BlockQ2_K>.offset(of: \.d)!, m: MemoryLayout<BlockQ2_K>.offset(of: \.dmin)))
        #expect(GGMLType.q3_K.traits?.scales == ScaleFields(d: MemoryLayout<BlockQ3_K>.offset(of: \.d)!, m: nil))
        #expect(GGMLType.q4_K.traits?.scales == ScaleFields(d: 0, m: MemoryLayout<BlockQ4_K>.offset(of: \.dmin)))
        #expect(GGMLType.q5_K.traits?.scales == ScaleFields(d: 0, m: MemoryLayout<BlockQ5_K>.offset(of: \.dmin)))
        #expect(GGMLType.q6_K.traits?.scales == ScaleFields(d: MemoryLayout<BlockQ6_K>.offset(of: \.d)!, m: nil))
    }

    /// The table decides what is supported: which types compute, quantize, and carry the
    /// block scales QZO trains.
    @Test func tableDerivesTheTypeProperties() {
        let names = BlockFormatTraits.all.map(\.type.name)
        #expect(names == ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "BF16"])
        #expect(!GGMLType.q8_K.isSupportedForCompute && !GGMLType.q8_1.isSupportedForCompute && !GGMLType(rawValue: 20).isSupportedForCompute)
        #expect(BlockFormatTraits.all.filter { $0.type.canQuantize }.map(\.type.name) == ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16"])
        #expect(BlockFormatTraits.all.filter { $0.type.hasBlockScales }.map(\.type.name) == ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
        #expect(GGMLType.q4_K.scaleBlockSize == 256 && GGMLType.q6_K.scaleBlockSize == 256 && GGMLType.f16.scaleBlockSize == nil)
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

    /// Dequantizing with the scalar code gives gguf-py's floats too.
    @Test(arguments: types) func dequantizeGenericMatchesGGUFPy(_ name: String) throws {
        let g = try QuantGolden(name)
        let rowBytes = g.type.rowBytes(g.cols)!
        var out = [Float](repeating: .nan, count: g.rows * g.cols)
        g.quantized.withUnsafeBytes { q in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<g.rows {
                    dequantizeRowGeneric(g.type, q.baseAddress! + r * rowBytes, count: g.cols, into: o.baseAddress! + r * g.cols)
                }
            }
        }
        let mismatches = zip(out, g.dequantized).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(mismatches.isEmpty, "\(name): \(mismatches.count) values differ, first at \(mismatches.first?.offset ?? -1)")
    }

    /// Quantizing gguf-py's input gives gguf-py's bytes, bit for bit.
    @Test(arguments: quantizable) func quantizeMatchesGGUFPy(_ name: String) throws {
        let g = try QuantGolden(name)
        let rowBytes = g.type.rowBytes(g.cols)!
        var out = [UInt8](repeating: 0xAA, count: rowBytes * g.rows)
        g.input!.withUnsafeBufferPointer { x in
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
    @Test(arguments: ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"] + kQuants) func blockScalesRoundTrip(_ name: String) throws {
        let g = try QuantGolden(name)
        let rowBytes = g.type.rowBytes(g.cols)!
        let perRow = g.cols / g.type.blockSize
        let blocks = g.rows * perRow
        let hasM = g.type.traits!.scales!.m != nil
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
                        let scales = BlockScales(d: dp.baseAddress!, m: hasM ? mp.baseAddress! : nil)
                            .advanced(by: r * perRow)
                        dequantizeRow(g.type, q.baseAddress! + r * rowBytes, count: g.cols,
                                      into: &viaOverride[r * g.cols], scales: scales)
                    }
                }
            }
        }
        #expect(zip(viaOverride, g.dequantized).allSatisfy { $0.bitPattern == $1.bitPattern })
    }
}
