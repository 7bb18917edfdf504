import Foundation
import GGUF
import TestSupport
import Testing

/// A file with every metadata value type, nested arrays, and tensors of several types.
func sampleWriter() -> GGUFWriter {
    var w = GGUFWriter()
    w.metadata["general.architecture"] = .string("llama")
    w.metadata["general.name"] = .string("sample ✓ ünïcødé")
    w.metadata["u8"] = .uint8(200)
    w.metadata["i8"] = .int8(-100)
    w.metadata["u16"] = .uint16(60000)
    w.metadata["i16"] = .int16(-30000)
    w.metadata["u32"] = .uint32(4_000_000_000)
    w.metadata["i32"] = .int32(-2_000_000_000)
    w.metadata["f32"] = .float32(3.25)
    w.metadata["bool"] = .bool(true)
    w.metadata["u64"] = .uint64(1 << 60)
    w.metadata["i64"] = .int64(-(1 << 60))
    w.metadata["f64"] = .float64(-2.5e300)
    w.metadata["strings"] = .array(.string(["a", "", "bc", "日本"]))
    w.metadata["ints"] = .array(.int32([1, -2, 3]))
    w.metadata["floats"] = .array(.float32([0.5, -1, .infinity]))
    w.metadata["bools"] = .array(.bool([true, false]))
    w.metadata["empty"] = .array(.uint64([]))
    w.metadata["nested"] = .array(.array([.int8([1, 2]), .string(["x"]), .array([.float64([1.5])])]))
    var f32 = [Float]()
    for i in 0..<(64 * 3) { f32.append(Float(i) * 0.25 - 7) }
    w.addTensor(name: "a.f32", shape: [64, 3], floats: f32)
    w.addTensor(name: "b.q4_0", type: .q4_0, shape: [64, 2], source: .bytes((0..<(18 * 4)).map { UInt8($0 & 0xff) }))
    w.addTensor(name: "c.q8_0", type: .q8_0, shape: [32], source: .bytes((0..<34).map { UInt8(($0 * 7) & 0xff) }))
    w.addTensor(name: "d.f16", type: .f16, shape: [3], source: .bytes([0, 60, 0, 188, 0, 0]))
    return w
}

func temporaryPath(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.path + "/edge-finetune-tests-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir + "/" + name
}

@Suite struct GGUFRoundTripTests {
    @Test func readOfWriteIsIdentity() throws {
        let w = sampleWriter()
        let path = temporaryPath("roundtrip.gguf")
        try w.write(to: path)
        let f = try GGUFFile(path: path)
        #expect(f.version == 3)
        #expect(f.metadata == w.metadata)
        #expect(f.tensors.map(\.name) == w.tensors.map(\.info.name))
        #expect(f.tensors.map(\.shape) == w.tensors.map(\.info.shape))
        #expect(f.tensors.map(\.type) == w.tensors.map(\.info.type))
        for (t, (_, source)) in zip(f.tensors, w.tensors) {
            guard case .bytes(let expected) = source else { continue }
            #expect(Array(f.bytes(of: t)) == expected, "tensor \(t.name)")
            #expect(t.offset % UInt64(f.alignment) == 0)
        }
        #expect(f.dataOffset % f.alignment == 0)
        // The float tensor, written from its values as the file was written.
        let floats = f.bytes(named: "a.f32")!
        #expect((0..<(64 * 3)).allSatisfy { floats.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) == Float($0) * 0.25 - 7 })
        // Writing what was read gives the same bytes again.
        var again = GGUFWriter(metadata: f.metadata)
        for t in f.tensors { again.addTensor(name: t.name, type: t.type, shape: t.shape, source: .view(f.bytes(of: t))) }
        let path2 = temporaryPath("roundtrip2.gguf")
        try again.write(to: path2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(contentsOf: URL(fileURLWithPath: path2)))
    }

    @Test func customAlignmentIsHonoured() throws {
        var w = sampleWriter()
        w.metadata["general.alignment"] = .uint32(64)
        let path = temporaryPath("align64.gguf")
        try w.write(to: path)
        let f = try GGUFFile(path: path)
        #expect(f.alignment == 64)
        #expect(f.dataOffset % 64 == 0)
        #expect(f.tensors.allSatisfy { $0.offset % 64 == 0 })
    }

    @Test func writerRefusesWrongTensorSizeAndKeepsOldFile() throws {
        // A directory of its own: other tests write temporary files in parallel.
        let path = makeTemporaryDirectory("keep") + "/keep.gguf"
        try sampleWriter().write(to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        var bad = GGUFWriter()
        bad.addTensor(name: "x", type: .q4_0, shape: [32], source: .bytes([1, 2, 3]))
        #expect(throws: GGUFError.self) { try bad.write(to: path) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent)
            .filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test func typeTableMatchesGGML() {
        #expect(GGMLType.q4_0.bytesPerBlock == 18 && GGMLType.q4_0.blockSize == 32)
        #expect(GGMLType.q4_1.bytesPerBlock == 20)
        #expect(GGMLType.q8_0.bytesPerBlock == 34)
        #expect(GGMLType.q6_K.bytesPerBlock == 210 && GGMLType.q6_K.blockSize == 256)
        #expect(GGMLType(name: "q4_1") == .q4_1)
        #expect(GGMLType.q4_1.rowBytes(576) == 360)
        #expect(GGMLType.q4_1.rowBytes(33) == nil)
    }
}

@Suite struct SHA256Tests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func knownDigests(_ input: String, _ digest: String) {
        #expect(Array(input.utf8).withUnsafeBytes { SHA256.hex($0) } == digest)
    }

    @Test func incrementalEqualsOneShot() {
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        var h = SHA256()
        for chunk in stride(from: 0, to: data.count, by: 37) { h.update(Array(data[chunk..<min(chunk + 37, data.count)])) }
        #expect(SHA256.hexString(h.finalize()) == data.withUnsafeBytes { SHA256.hex($0) })
    }
}
