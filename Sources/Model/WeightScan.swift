// A load-time check that no weight can only produce NaN: the half-precision scales of
// every block of a quantized matrix (and every value of a float matrix) must be finite.
// The scales sit inside the blocks, spread through the file, so each matrix is read with
// pread a chunk of whole blocks at a time (no page of the mapping becomes resident);
// only the scale fields are looked at.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GGUF

enum WeightScan {
    /// Byte offsets of the Float16 scale fields inside one block, by type
    /// (ggml-common.h's block_* layouts).
    static func scaleOffsets(_ type: GGMLType) -> [Int]? {
        switch type {
        case .q4_0, .q5_0, .q8_0: return [0]                // d, then codes
        case .q4_1, .q5_1: return [0, 2]                    // d, m
        case .q4_K, .q5_K: return [0, 2]                    // d, dmin, then scales and codes
        case .q2_K: return [80, 82]                         // scales[16], qs[64], d, dmin
        case .q3_K: return [108]                            // hmask[32], qs[64], scales[12], d
        case .q6_K: return [208]                            // ql[128], qh[64], scales[16], d
        default: return nil
        }
    }

    /// Throws `nonFiniteWeight` for the first non-finite scale (or value) of `t`.
    static func checkFinite(_ t: GGUFTensorInfo, in file: GGUFFile) throws(ModelError) {
        let blockBytes = t.type.bytesPerBlock
        guard blockBytes > 0 else { return }
        let range = file.fileRange(of: t)
        let chunkBlocks = max(1, (1 << 20) / blockBytes)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkBlocks * blockBytes, alignment: 64)
        defer { buffer.deallocate() }
        let fd = file.mapping.descriptor
        var block = 0
        let blocks = range.count / blockBytes
        while block < blocks {
            let count = min(chunkBlocks, blocks - block)
            let bytes = count * blockBytes
            let offset = range.lowerBound + block * blockBytes
            var done = 0
            while done < bytes {
                let n = pread(fd, buffer + done, bytes - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                // A file shorter than its tensor table says was refused by the reader; a failing
                // read here leaves the check to the mapping.
                guard n > 0 else { return try checkMapped(t, in: file) }
                done += n
            }
            try check(t, UnsafeRawPointer(buffer), firstBlock: block, blocks: count)
            block += count
        }
    }

    private static func checkMapped(_ t: GGUFTensorInfo, in file: GGUFFile) throws(ModelError) {
        let bytes = file.bytes(of: t)
        try check(t, bytes.baseAddress!, firstBlock: 0, blocks: bytes.count / t.type.bytesPerBlock)
    }

    /// Checks `blocks` blocks of `t` at `p`, the first being block `firstBlock` of the tensor.
    private static func check(_ t: GGUFTensorInfo, _ p: UnsafeRawPointer, firstBlock: Int, blocks: Int) throws(ModelError) {
        let blockBytes = t.type.bytesPerBlock
        func fail(_ position: String, _ value: Float) -> ModelError {
            .nonFiniteWeight(tensor: t.name, position: position, value: value)
        }
        switch t.type {
        case .f32:
            for i in 0..<blocks where !p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self).isFinite {
                throw fail("element \(firstBlock + i)", p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self))
            }
        case .f16:
            for i in 0..<blocks where p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self) & 0x7C00 == 0x7C00 {
                throw fail("element \(firstBlock + i)", Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
            }
        case .bf16:
            for i in 0..<blocks where p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self) & 0x7F80 == 0x7F80 {
                let bits = UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                throw fail("element \(firstBlock + i)", Float(bitPattern: bits))
            }
        default:
            guard let offsets = scaleOffsets(t.type) else { return }
            for b in 0..<blocks {
                for o in offsets {
                    let bits = p.loadUnaligned(fromByteOffset: b * blockBytes + o, as: UInt16.self)
                    if bits & 0x7C00 == 0x7C00 {
                        throw fail("the scale of block \(firstBlock + b) (byte \(o) of the block)", Float(Float16(bitPattern: bits)))
                    }
                }
            }
        }
    }
}
