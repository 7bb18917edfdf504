import Foundation
import GGUF
import TestSupport
import Testing

/// Bad files that hold K-quant tensors: a row length that is not a multiple of 256, a
/// truncated super-block, an unknown type id. Each gets one line naming the tensor, its type
/// and shape, and the file offset.
@Suite struct GGUFKQuantBadInputTests {
    /// A file with one tensor "blk.0.ffn_down.weight" of `dims` and raw type `type`, and
    /// `data` bytes of tensor data.
    static func file(dims: [UInt64], type: UInt32, data: Int) -> [UInt8] {
        var b = [UInt8]()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        b += Array("GGUF".utf8); u32(3); u64(1); u64(0)
        str("blk.0.ffn_down.weight"); u32(UInt32(dims.count)); dims.forEach { u64($0) }; u32(type); u64(0)
        while b.count % 32 != 0 { b.append(0) }
        return b + [UInt8](repeating: 0x5a, count: data)
    }

    static func error(_ bytes: [UInt8]) -> GGUFError? {
        let path = makeTemporaryDirectory("kquant-bad") + "/bad.gguf"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        do {
            _ = try GGUFFile(path: path)
            return nil
        } catch {
            return error
        }
    }

    /// The message is one line with the tensor's name, type, shape and a byte offset.
    static func expectOneLine(_ e: GGUFError?, type: String, shape: String, _ comment: Comment) {
        guard let e else { Issue.record("the file loaded: \(comment)"); return }
        let text = e.description
        #expect(!text.contains("\n"), "\(comment): \(text)")
        #expect(text.contains("'blk.0.ffn_down.weight'"), "\(comment): \(text)")
        #expect(text.contains(type), "\(comment): no type in \(text)")
        #expect(text.contains(shape), "\(comment): no shape in \(text)")
        #expect(e.offset != nil && text.contains("at byte \(e.offset!)"), "\(comment): no offset in \(text)")
    }

    /// Q4_K (12), Q6_K (14), Q2_K (10): rows of 100, 384 and 4864 + 32 values.
    @Test(arguments: [(UInt32(12), "Q4_K"), (14, "Q6_K"), (10, "Q2_K"), (13, "Q5_K"), (11, "Q3_K")])
    func rowNotAMultipleOf256(_ type: UInt32, _ name: String) {
        for cols: UInt64 in [100, 384, 4896] {
            let e = Self.error(Self.file(dims: [cols, 2], type: type, data: 4096))
            Self.expectOneLine(e, type: name, shape: "\(cols) x 2", "\(name) rows of \(cols)")
            #expect(e?.description.contains("256") == true, "names the super-block size: \(e?.description ?? "")")
        }
    }

    /// A tensor whose last super-block is cut by the end of the file.
    @Test(arguments: [(UInt32(12), "Q4_K", 144), (14, "Q6_K", 210), (13, "Q5_K", 176)])
    func truncatedSuperBlock(_ type: UInt32, _ name: String, _ blockBytes: Int) {
        for missing in [1, blockBytes / 2, blockBytes - 1] {
            let e = Self.error(Self.file(dims: [512, 3], type: type, data: 6 * blockBytes - missing))
            Self.expectOneLine(e, type: name, shape: "512 x 3", "\(name) missing \(missing) bytes")
        }
    }

    /// Type ids ggml does not assign (4 and 5 were Q4_2/Q4_3, removed) or beyond the table.
    @Test(arguments: [UInt32(4), 5, 31, 99, 0xffff_ffff])
    func unknownTypeID(_ type: UInt32) {
        let e = Self.error(Self.file(dims: [256, 4], type: type, data: 4096))
        Self.expectOneLine(e, type: "\(type)", shape: "256 x 4", "type id \(type)")
    }

    /// The same tensors with a valid size load (the checks above are not spurious).
    @Test func wholeSuperBlocksLoad() throws {
        #expect(Self.error(Self.file(dims: [512, 3], type: 12, data: 6 * 144)) == nil)
        #expect(Self.error(Self.file(dims: [256, 1], type: 14, data: 210)) == nil)
    }
}
