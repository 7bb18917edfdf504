import Foundation
import GGUF
import TestSupport
import Testing

/// Little-endian field builders for hand-made files.
private struct Bytes {
    var b: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
    mutating func header(tensors: UInt64, kvs: UInt64, version: UInt32 = 3) {
        b += Array("GGUF".utf8); u32(version); u64(tensors); u64(kvs)
    }
}

private func load(_ bytes: [UInt8], _ name: String = "bad.gguf") -> Result<GGUFFile, GGUFError> {
    // Tests run in parallel: every load gets its own file.
    let path = temporaryPath(UUID().uuidString + "-" + name)
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    do { return .success(try GGUFFile(path: path)) } catch { return .failure(error) }
}

private func reason(_ bytes: [UInt8]) -> GGUFError.Reason? {
    if case .failure(let e) = load(bytes) { return e.reason }
    return nil
}

@Suite struct GGUFBadInputTests {
    @Test func badMagic() {
        var f = Bytes(); f.b += Array("GGML".utf8); f.u32(3); f.u64(0); f.u64(0)
        guard case .badMagic(let found) = reason(f.b) else { Issue.record("expected badMagic"); return }
        #expect(found == 0x4c4d_4747)
    }

    @Test func versionOneIsRefused() {
        var f = Bytes(); f.header(tensors: 0, kvs: 0, version: 1)
        #expect(reason(f.b) == .unsupportedVersion(1))
    }

    @Test func emptyAndTinyFilesAreTruncated() {
        for n in 0..<24 {
            var f = Bytes(); f.header(tensors: 0, kvs: 0)
            let r = reason(Array(f.b.prefix(n)))
            guard case .truncated = r else { Issue.record("length \(n): \(String(describing: r))"); continue }
        }
        var ok = Bytes(); ok.header(tensors: 0, kvs: 0)
        #expect(reason(ok.b) == nil)
    }

    @Test func absurdTensorCount() {
        var f = Bytes(); f.header(tensors: 1 << 60, kvs: 0)
        guard case .absurdCount(_, let count, _) = reason(f.b) else { Issue.record("expected absurdCount"); return }
        #expect(count == 1 << 60)
    }

    @Test func absurdKeyCount() {
        var f = Bytes(); f.header(tensors: 0, kvs: UInt64.max)
        guard case .absurdCount = reason(f.b) else { Issue.record("expected absurdCount"); return }
    }

    @Test func stringLengthPastEnd() {
        var f = Bytes(); f.header(tensors: 0, kvs: 1); f.u64(1 << 40); f.b += [UInt8](repeating: 65, count: 20)
        guard case .stringPastEnd(let length, _) = reason(f.b) else { Issue.record("expected stringPastEnd"); return }
        #expect(length == 1 << 40)
    }

    @Test func arrayCountPastEnd() {
        var f = Bytes(); f.header(tensors: 0, kvs: 1); f.str("k"); f.u32(9); f.u32(4); f.u64(1 << 58)
        guard case .absurdCount = reason(f.b) else { Issue.record("expected absurdCount"); return }
    }

    @Test func unknownValueType() {
        var f = Bytes(); f.header(tensors: 0, kvs: 1); f.str("k"); f.u32(99); f.u32(0)
        #expect(reason(f.b) == .unknownValueType(key: "k", rawType: 99))
    }

    @Test func deepNestingIsRefused() {
        var f = Bytes(); f.header(tensors: 0, kvs: 1); f.str("deep")
        f.u32(9)
        for _ in 0..<40 { f.u32(9); f.u64(1) }
        f.u32(4); f.u64(0)
        guard case .arrayNestingTooDeep = reason(f.b) else { Issue.record("expected arrayNestingTooDeep"); return }
    }

    @Test func duplicateKey() {
        var f = Bytes(); f.header(tensors: 0, kvs: 2)
        f.str("k"); f.u32(4); f.u32(1)
        f.str("k"); f.u32(4); f.u32(2)
        #expect(reason(f.b) == .duplicateKey("k"))
    }

    @Test func badAlignmentValue() {
        var f = Bytes(); f.header(tensors: 0, kvs: 1); f.str("general.alignment"); f.u32(4); f.u32(48)
        guard case .badAlignment = reason(f.b) else { Issue.record("expected badAlignment"); return }
    }

    /// One tensor info, then `data` bytes after padding to 32.
    private func oneTensor(name: String = "t", dims: [UInt64], type: UInt32, offset: UInt64 = 0,
                           data: Int = 0, second: String? = nil) -> [UInt8] {
        var f = Bytes(); f.header(tensors: second == nil ? 1 : 2, kvs: 0)
        for n in [name] + (second.map { [$0] } ?? []) {
            f.str(n); f.u32(UInt32(dims.count)); dims.forEach { f.u64($0) }; f.u32(type); f.u64(offset)
        }
        while f.b.count % 32 != 0 { f.b.append(0) }
        f.b += [UInt8](repeating: 0, count: data)
        return f.b
    }

    @Test func validSingleTensor() throws {
        let file = try load(oneTensor(dims: [32, 2], type: 2, data: 36)).get()
        #expect(file.tensors.first?.byteCount == 36)
    }

    @Test func unknownTensorType() {
        #expect(reason(oneTensor(dims: [32], type: 77, data: 64)) == .unknownTensorType(tensor: "t", rawType: 77))
    }

    @Test func tooManyDimensions() {
        #expect(reason(oneTensor(dims: [1, 1, 1, 1, 1], type: 0, data: 4)) == .tooManyDimensions(tensor: "t", count: 5))
    }

    @Test func dimensionOverflow() {
        guard case .dimensionOverflow = reason(oneTensor(dims: [1 << 40, 1 << 40], type: 0)) else {
            Issue.record("expected dimensionOverflow"); return
        }
        guard case .dimensionOverflow = reason(oneTensor(dims: [UInt64.max], type: 0)) else {
            Issue.record("expected dimensionOverflow for a dimension past Int.max"); return
        }
    }

    @Test func rowNotWholeBlocks() {
        #expect(reason(oneTensor(dims: [33], type: 2, data: 64))
                == .rowNotWholeBlocks(tensor: "t", type: "Q4_0", rowLength: 33, blockSize: 32))
    }

    @Test func misalignedTensor() {
        #expect(reason(oneTensor(dims: [8], type: 0, offset: 4, data: 64))
                == .misalignedTensor(tensor: "t", dataOffset: 4, alignment: 32))
    }

    @Test func tensorOutOfBounds() {
        guard case .tensorOutOfBounds(let name, _, let count, _) = reason(oneTensor(dims: [32, 2], type: 2, data: 35)) else {
            Issue.record("expected tensorOutOfBounds"); return
        }
        #expect(name == "t" && count == 36)
        guard case .tensorOutOfBounds = reason(oneTensor(dims: [8], type: 0, offset: UInt64.max - 31, data: 64)) else {
            Issue.record("expected tensorOutOfBounds for an offset near UInt64.max"); return
        }
    }

    @Test func duplicateTensor() {
        #expect(reason(oneTensor(dims: [8], type: 0, data: 64, second: "t")) == .duplicateTensor("t"))
    }

    @Test func errorsNameFileAndOffset() {
        var f = Bytes(); f.header(tensors: 0, kvs: 1); f.str("k"); f.u32(99); f.u32(0)
        guard case .failure(let e) = load(f.b, "named.gguf") else { Issue.record("expected failure"); return }
        #expect(e.description.contains("named.gguf"))
        #expect(e.description.contains("at byte 33"))
        #expect(e.description.contains("unknown value type 99"))
    }

    @Test func missingFileIsASystemError() {
        #expect(throws: GGUFError.self) { try GGUFFile(path: "/nonexistent/model.gguf") }
    }
}
