import Foundation
import GGUF
import Quant
import TestSupport
import Testing

/// Every tensor of the three real Q4_K_M files (Q4_K, Q6_K, Q5_0, Q8_0, F32) dequantized by
/// our fast code, compared with gguf-py through the SHA-256 of the float32 bytes
/// (Tests/Golden/quant/real-files.json, from scripts/reference/real_file_digests.py).
@Suite struct RealFileDequantTests {
    struct Expected: Decodable {
        struct File: Decodable {
            let name: String
            let sha256: String
            let tensors: [Tensor]
        }
        struct Tensor: Decodable {
            let name: String
            let type: String
            let shape: [Int]
            let sha256: String
        }
        let files: [File]
    }

    static let expected: Expected = {
        let data = try! Data(contentsOf: URL(fileURLWithPath: Repository.golden("quant/real-files.json")))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()

    /// The SHA-256 of a tensor dequantized row by row (fast path) into float32. The file is
    /// read with pread in chunks of whole rows, not through the mapping: touching 1.1 GB of
    /// mapped pages would count in this process's resident set, which other tests bound.
    static func digest(_ fd: Int32, _ file: GGUFFile, _ t: GGUFTensorInfo, bytes: UnsafeMutableRawPointer, byteCapacity: Int,
                       floats: UnsafeMutablePointer<Float>, floatCapacity: Int) -> String {
        let cols = t.rowLength
        let rowBytes = t.type.rowBytes(cols)!
        let rowsPerChunk = max(1, min(floatCapacity / cols, byteCapacity / rowBytes))
        precondition(cols <= floatCapacity && rowBytes <= byteCapacity)
        let start = file.fileRange(of: t).lowerBound
        var sha = SHA256()
        var r = 0
        while r < t.rowCount {
            let n = min(rowsPerChunk, t.rowCount - r)
            var done = 0
            while done < n * rowBytes {
                let got = pread(fd, bytes + done, n * rowBytes - done, off_t(start + r * rowBytes + done))
                precondition(got > 0, "pread of \(t.name) failed")
                done += got
            }
            for i in 0..<n {
                dequantizeRow(t.type, bytes + i * rowBytes, count: cols, into: floats + i * cols)
            }
            sha.update(UnsafeRawBufferPointer(start: floats, count: n * cols * 4))
            r += n
        }
        return SHA256.hexString(sha.finalize())
    }

    /// The first row (and value) where the fast and scalar dequantizations disagree, if any:
    /// a hint printed with a digest mismatch.
    static func firstFastScalarDifference(_ file: GGUFFile, _ t: GGUFTensorInfo) -> String {
        let bytes = file.bytes(of: t).baseAddress!
        let cols = t.rowLength
        let rowBytes = t.type.rowBytes(cols)!
        var fast = [Float](repeating: 0, count: cols), slow = [Float](repeating: 0, count: cols)
        for r in 0..<t.rowCount {
            dequantizeRow(t.type, bytes + r * rowBytes, count: cols, into: &fast)
            dequantizeRowGeneric(t.type, bytes + r * rowBytes, count: cols, into: &slow)
            if let i = (0..<cols).first(where: { fast[$0].bitPattern != slow[$0].bitPattern }) {
                return "fast and scalar code differ first at row \(r), column \(i): \(fast[i]) vs \(slow[i])"
            }
        }
        return "fast and scalar code agree on every value"
    }

    @Test(arguments: RealModel.all) func everyTensorDequantizesLikeGGUFPy(_ model: RealModel) throws {
        try #require(model.enabled, "\(model.path) missing: skipped (scripts/setup --all fetches it; with CI=true the test fails)")
        let expected = try #require(Self.expected.files.first { $0.name == model.name })
        #expect(expected.sha256 == model.sha256, "golden digests were made from another file")
        let file = try GGUFFile(path: model.path)
        let byName = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, $0) })
        #expect(file.tensors.count == expected.tensors.count)
        var types = Set<String>()
        for e in expected.tensors {
            let t = try #require(byName[e.name], "tensor \(e.name) is not in \(model.path)")
            #expect(t.type.name == e.type && t.shape == e.shape, "\(e.name): \(t.type) \(t.shape), golden \(e.type) \(e.shape)")
            #expect(t.type.isSupportedForCompute, "\(e.name): \(t.type) is not supported")
            types.insert(e.type)
        }
        #expect(types.isSubset(of: ["F32", "Q4_K", "Q6_K", "Q5_0", "Q8_0"]) && types.contains("Q4_K") && types.contains("Q6_K"))

        // Biggest tensors first, one at a time per thread, each streamed through its own buffer.
        let tensors = expected.tensors.sorted { byName[$0.name]!.byteCount > byName[$1.name]!.byteCount }
        let capacity = 1 << 20
        let threads = max(1, Parallel.threadCount)
        let buffers = (0..<threads).map { _ in FloatBuffer(count: capacity) }
        let raw = (0..<threads).map { _ in UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64) }
        defer { raw.forEach { $0.deallocate() } }
        let fd = open(model.path, O_RDONLY)
        try #require(fd >= 0, "cannot open \(model.path)")
        defer { close(fd) }
        let digests = UnsafeMutablePointer<String>.allocate(capacity: tensors.count)
        digests.initialize(repeating: "", count: tensors.count)
        defer { digests.deinitialize(count: tensors.count); digests.deallocate() }
        Parallel.forEachOnThread(tensors.count) { i, thread in
            let t = byName[tensors[i].name]!
            digests[i] = Self.digest(fd, file, t, bytes: raw[thread], byteCapacity: capacity,
                                     floats: buffers[thread].pointer, floatCapacity: capacity)
        }
        var mismatched = 0
        for (i, e) in tensors.enumerated() where digests[i] != e.sha256 {
            mismatched += 1
            let t = byName[e.name]!
            Issue.record("\(model.name): tensor \(e.name) (\(e.type), shape \(e.shape)) dequantizes differently from gguf-py; \(Self.firstFastScalarDifference(file, t))")
        }
        #expect(mismatched == 0)
    }
}
