// Requantization: a GGUF file rewritten with chosen tensors converted to another block
// format (dequantize each row, quantize it again, bit-identical to gguf-py's quantizer).
// Any type of the table can be read (the K-quants too); the types written are those with
// a quantizer (`GGMLType.canQuantize`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).

import GGUF

public enum Requantize {
    /// Writes `file` to `path` with every tensor for which `select` is true converted to
    /// `type`; other tensors and all metadata are copied unchanged (general.file_type is
    /// updated when every selected tensor was converted).
    public static func write(_ file: GGUFFile, to path: String, type: GGMLType,
                             select: (GGUFTensorInfo) -> Bool) throws(QuantError) -> Int {
        guard type.isSupportedForCompute else { throw .unsupportedType(type, context: "requantize") }
        guard type.canQuantize else { throw .cannotQuantize(type, context: "requantize") }
        var writer = GGUFWriter(metadata: file.metadata)
        var converted = 0
        for t in file.tensors {
            if select(t) && t.type != type {
                guard t.type.isSupportedForCompute else { throw .unsupportedType(t.type, context: "tensor '\(t.name)'") }
                guard t.rowLength % type.blockSize == 0 else { throw .notWholeBlocks(count: t.rowLength, type: type, tensor: t.name, shape: t.shape) }
                let source = file.bytes(of: t)
                let inType = t.type
                let rowLength = t.rowLength
                let inRow = t.type.rowBytes(rowLength)!
                let outRow = type.rowBytes(rowLength)!
                writer.addTensor(name: t.name, type: type, shape: t.shape, source: .generate { out in
                    var row = [Float](repeating: 0, count: rowLength)
                    row.withUnsafeMutableBufferPointer { r in
                        for i in 0..<t.rowCount {
                            dequantizeRowGeneric(inType, source.baseAddress! + i * inRow, count: rowLength, into: r.baseAddress!)
                            quantizeRow(type, r.baseAddress!, count: rowLength, into: out.baseAddress! + i * outRow)
                        }
                    }
                })
                converted += 1
            } else {
                writer.addTensor(name: t.name, type: t.type, shape: t.shape, source: .view(file.bytes(of: t)))
            }
        }
        // llama.cpp's file types: 2 = mostly Q4_0, 3 = mostly Q4_1, 7 = mostly Q8_0, 8 = mostly
        // Q5_0, 9 = mostly Q5_1, 32 = mostly BF16.
        let fileTypes: [GGMLType: UInt32] = [.q4_0: 2, .q4_1: 3, .q8_0: 7, .q5_0: 8, .q5_1: 9, .f16: 1, .f32: 0, .bf16: 32]
        if converted > 0, let ft = fileTypes[type] { writer.metadata["general.file_type"] = .uint32(ft) }
        do { try writer.write(to: path) } catch { throw .file(error) }
        return converted
    }
}
