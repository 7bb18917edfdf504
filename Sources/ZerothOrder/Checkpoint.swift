// Crash-safe checkpoints: everything a run needs to continue exactly where it stopped.
//
// A checkpoint file is one LZ4 frame (with its content checksum and content size) whose
// payload is:
//   magic     8 bytes  "EFCKPT01"
//   sections  until the end, each: name (UInt32 length + UTF-8), bytes (UInt64 length + data)
// Sections: "meta" (JSON: step, the run's identity flags), "group.<i>" (float32 values of
// trainable group i), "optimizer" (the optimizer's own state), "subspace" (the subspace
// gradient's history and bases). The data order and the perturbation seeds are functions
// of (run seed, step), so the step is the whole RNG position.
//
// Files are named checkpoint-<steps completed>.efck, written to a temporary file, fsynced and renamed;
// the previous checkpoint is deleted only after the new one is complete. On resume a file
// whose checksum or structure is wrong is skipped, with a warning naming it, in favour of
// the one before.

import CLZ4
import Foundation
import GGUF
import Quant

public struct Checkpoint {
    /// The next step to run.
    public var step: Int
    /// Flags that fix the run's trajectory (model digest, method, lr, seed, ...).
    public var identity: [String: String]
    public var groups: [[Float]]
    public var optimizerState: [UInt8]
    public var subspaceState: [UInt8]

    public init(step: Int, identity: [String: String], groups: [[Float]], optimizerState: [UInt8], subspaceState: [UInt8]) {
        self.step = step
        self.identity = identity
        self.groups = groups
        self.optimizerState = optimizerState
        self.subspaceState = subspaceState
    }

    static let magic = Array("EFCKPT01".utf8)

    /// The uncompressed payload.
    func encode() -> [UInt8] {
        var out = Checkpoint.magic
        func section(_ name: String, _ bytes: [UInt8]) {
            withUnsafeBytes(of: UInt32(name.utf8.count).littleEndian) { out += $0 }
            out += Array(name.utf8)
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out += $0 }
            out += bytes
        }
        let meta: [String: Any] = ["step": step, "identity": identity, "groups": groups.count]
        section("meta", Array(try! JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])))
        for (i, g) in groups.enumerated() { section("group.\(i)", g.withUnsafeBytes { Array($0) }) }
        section("optimizer", optimizerState)
        section("subspace", subspaceState)
        return out
    }

    /// Parses a payload; nil with a reason when it is not a well-formed checkpoint.
    static func decode(_ bytes: [UInt8]) -> Result<Checkpoint, CheckpointProblem> {
        guard bytes.count >= 8, Array(bytes[0..<8]) == magic else { return .failure(CheckpointProblem("not a checkpoint (bad magic)")) }
        var sections = [String: ArraySlice<UInt8>]()
        var i = 8
        func read<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard i + MemoryLayout<T>.size <= bytes.count else { return nil }
            let v = bytes[i..<(i + MemoryLayout<T>.size)].withUnsafeBytes { T(littleEndian: $0.loadUnaligned(as: T.self)) }
            i += MemoryLayout<T>.size
            return v
        }
        while i < bytes.count {
            guard let nameLength = read(UInt32.self), Int(nameLength) <= bytes.count - i else { return .failure(CheckpointProblem("truncated section name")) }
            let name = String(decoding: bytes[i..<(i + Int(nameLength))], as: UTF8.self)
            i += Int(nameLength)
            guard let length = read(UInt64.self), length <= UInt64(bytes.count - i) else { return .failure(CheckpointProblem("truncated section '\(name)'")) }
            sections[name] = bytes[i..<(i + Int(length))]
            i += Int(length)
        }
        guard let metaBytes = sections["meta"],
              let meta = try? JSONSerialization.jsonObject(with: Data(metaBytes)) as? [String: Any],
              let step = meta["step"] as? Int, let identity = meta["identity"] as? [String: String],
              let groupCount = meta["groups"] as? Int else { return .failure(CheckpointProblem("missing or malformed meta section")) }
        var groups = [[Float]]()
        for g in 0..<groupCount {
            guard let s = sections["group.\(g)"], s.count % 4 == 0 else { return .failure(CheckpointProblem("missing group \(g)")) }
            groups.append(s.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
        }
        return .success(Checkpoint(step: step, identity: identity, groups: groups,
                                   optimizerState: Array(sections["optimizer"] ?? []),
                                   subspaceState: Array(sections["subspace"] ?? [])))
    }
}

/// Why a checkpoint file was rejected.
struct CheckpointProblem: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The checkpoints of one run, in a directory.
public final class CheckpointStore {
    public let directory: String

    public init(directory: String) throws(TrainingError) {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .checkpoint(path: directory, message: "cannot create the checkpoint directory (\(error.localizedDescription))")
        }
    }

    /// The file of the checkpoint taken after `completed` steps.
    public func path(completed: Int) -> String { directory + "/" + String(format: "checkpoint-%08d.efck", completed) }

    /// Checkpoint files, most steps completed first.
    public func files() -> [(completed: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("checkpoint-"), name.hasSuffix(".efck"),
                  let step = Int(name.dropFirst("checkpoint-".count).dropLast(".efck".count)) else { return nil }
            return (step, directory + "/" + name)
        }.sorted { $0.0 > $1.0 }
    }

    /// Writes a checkpoint atomically, then removes all but it and the one before.
    public func save(_ checkpoint: Checkpoint) throws(TrainingError) {
        let payload = checkpoint.encode()
        let target = path(completed: checkpoint.step - 1)
        let compressed = try Self.compress(payload, path: target)
        do {
            try writeAtomically(path: target) { (out: inout FileOutput) throws(GGUFError) in try out.write(compressed) }
        } catch {
            throw .checkpoint(path: target, message: error.description)
        }
        for old in files().dropFirst(2) { try? FileManager.default.removeItem(atPath: old.path) }
    }

    /// The newest checkpoint that decompresses with a valid checksum and parses; corrupted
    /// or truncated ones are skipped with `warn` naming them.
    public func loadNewest(warn: (String) -> Void) -> Checkpoint? {
        for file in files() {
            guard let data = FileManager.default.contents(atPath: file.path) else {
                warn("skipping checkpoint \(file.path): cannot read it")
                continue
            }
            switch Self.decompress([UInt8](data)) {
            case .failure(let reason):
                warn("skipping checkpoint \(file.path): \(reason)")
            case .success(let payload):
                switch Checkpoint.decode(payload) {
                case .failure(let reason): warn("skipping checkpoint \(file.path): \(reason)")
                case .success(let c): return c
                }
            }
        }
        return nil
    }

    /// One LZ4 frame with content checksum and content size.
    static func compress(_ payload: [UInt8], path: String) throws(TrainingError) -> [UInt8] {
        var prefs = LZ4F_preferences_t()
        prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        prefs.frameInfo.contentSize = UInt64(payload.count)
        let bound = LZ4F_compressFrameBound(payload.count, &prefs)
        var out = [UInt8](repeating: 0, count: bound)
        let written = payload.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                LZ4F_compressFrame(dst.baseAddress, bound, src.baseAddress, payload.count, &prefs)
            }
        }
        guard LZ4F_isError(written) == 0 else {
            throw .checkpoint(path: path, message: "LZ4 compression failed: \(String(cString: LZ4F_getErrorName(written)))")
        }
        out.removeSubrange(written...)
        return out
    }

    /// Decompresses one LZ4 frame, checking its content checksum and that it is complete.
    static func decompress(_ frame: [UInt8]) -> Result<[UInt8], CheckpointProblem> {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            return .failure(CheckpointProblem("cannot create an LZ4 decompression context"))
        }
        defer { LZ4F_freeDecompressionContext(context) }
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var consumed = 0
        var hint = 1
        while consumed < frame.count {
            var srcSize = frame.count - consumed
            var dstSize = chunk.count
            hint = frame.withUnsafeBytes { src in
                chunk.withUnsafeMutableBytes { dst in
                    LZ4F_decompress(context, dst.baseAddress, &dstSize, src.baseAddress! + consumed, &srcSize, nil)
                }
            }
            if LZ4F_isError(hint) != 0 {
                return .failure(CheckpointProblem("corrupted (\(String(cString: LZ4F_getErrorName(hint))))"))
            }
            out += chunk[0..<dstSize]
            consumed += srcSize
            if hint == 0 { break }
            if srcSize == 0 && dstSize == 0 { break }
        }
        guard hint == 0 else { return .failure(CheckpointProblem("truncated (the LZ4 frame is incomplete)")) }
        return .success(out)
    }
}
