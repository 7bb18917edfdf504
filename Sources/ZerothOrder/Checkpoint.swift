// Crash-safe checkpoints: everything a run needs to continue exactly where it stopped.
//
// A checkpoint file is one LZ4 frame (with its content checksum) whose payload is:
//   magic     8 bytes  "EFCKPT01"
//   sections  until the end, each: name (UInt32 length + UTF-8), bytes (UInt64 length + data)
// Sections: "meta" (JSON: step, the run's identity flags), "group.<i>" (float32 values of
// trainable group i), "optimizer" (the optimizer's own state), "subspace" (the subspace
// gradient's history and bases). The data order and the perturbation seeds are functions
// of (run seed, step), so the step is the whole RNG position.
//
// Files are named checkpoint-<steps completed>.efck, written to a temporary file, fsynced and renamed;
// the previous checkpoint is deleted only after the new one is complete. Both directions
// stream: values are compressed from, and decompressed into, the trainable groups' own
// memory, so a checkpoint costs no copy of them. On resume a file whose checksum or
// structure is wrong is skipped, with a warning naming it, in favour of the one before.

import CLZ4
import Foundation
import GGUF
import Quant

public struct Checkpoint {
    /// The next step to run.
    public var step: Int
    /// Flags that fix the run's trajectory (model digest, method, lr, seed, ...).
    public var identity: [String: String]
    /// The trainable groups: read from these pointers when saving, written into them when
    /// loading (no copy of the values is made either way).
    public var groups: [ParameterGroup]
    public var optimizerState: [UInt8]
    public var subspaceState: [UInt8]

    public init(step: Int, identity: [String: String], groups: [ParameterGroup], optimizerState: [UInt8], subspaceState: [UInt8]) {
        self.step = step
        self.identity = identity
        self.groups = groups
        self.optimizerState = optimizerState
        self.subspaceState = subspaceState
    }

    static let magic = Array("EFCKPT01".utf8)

    /// Hands the payload to `body` piece by piece, in order (group values as borrowed views);
    /// stops early, returning false, when `body` returns false.
    @discardableResult
    func pieces(_ body: (UnsafeRawBufferPointer) -> Bool) -> Bool {
        func bytes(_ b: [UInt8]) -> Bool { b.withUnsafeBytes { body($0) } }
        func header(_ name: String, _ length: Int) -> Bool {
            var h = [UInt8]()
            withUnsafeBytes(of: UInt32(name.utf8.count).littleEndian) { h += $0 }
            h += Array(name.utf8)
            withUnsafeBytes(of: UInt64(length).littleEndian) { h += $0 }
            return bytes(h)
        }
        guard bytes(Checkpoint.magic) else { return false }
        let meta: [String: Any] = ["step": step, "identity": identity, "groups": groups.count]
        let metaBytes = Array(try! JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys]))
        guard header("meta", metaBytes.count), bytes(metaBytes) else { return false }
        for (i, g) in groups.enumerated() {
            guard header("group.\(i)", 4 * g.count) else { return false }
            var offset = 0
            while offset < g.count {
                let n = min(1 << 18, g.count - offset)
                guard body(UnsafeRawBufferPointer(start: g.values + offset, count: 4 * n)) else { return false }
                offset += n
            }
        }
        return header("optimizer", optimizerState.count) && bytes(optimizerState)
            && header("subspace", subspaceState.count) && bytes(subspaceState)
    }
}

/// Parses a checkpoint payload as it streams in, writing group values straight into the
/// target groups (which must have the checkpoint's shapes).
struct CheckpointParser {
    private var targets: [ParameterGroup]
    private var pending = [UInt8]()
    private var stage = Stage.magic
    private var sectionName = ""
    private var sectionLeft = 0
    private var sectionBytes = [UInt8]()
    private var groupIndex: Int?
    private var groupOffset = 0
    private(set) var meta: [String: Any]?
    private(set) var optimizer = [UInt8]()
    private(set) var subspace = [UInt8]()
    private(set) var groupsSeen = Set<Int>()

    private enum Stage { case magic, nameLength, name(Int), dataLength, data }

    init(targets: [ParameterGroup]) { self.targets = targets }

    mutating func feed(_ input: UnsafeRawBufferPointer) -> CheckpointProblem? {
        var i = 0
        while i < input.count {
            switch stage {
            case .data:
                let n = min(sectionLeft, input.count - i)
                if let g = groupIndex {
                    let target = targets[g]
                    UnsafeMutableRawPointer(target.values).advanced(by: groupOffset)
                        .copyMemory(from: input.baseAddress! + i, byteCount: n)
                    groupOffset += n
                } else {
                    sectionBytes += UnsafeRawBufferPointer(rebasing: input[i..<(i + n)])
                }
                sectionLeft -= n
                i += n
                if sectionLeft == 0, let problem = finishSection() { return problem }
            default:
                pending.append(input[i])
                i += 1
                if let problem = advanceHeader() { return problem }
            }
        }
        return nil
    }

    private mutating func advanceHeader() -> CheckpointProblem? {
        switch stage {
        case .magic where pending.count == 8:
            guard pending == Checkpoint.magic else { return CheckpointProblem("not a checkpoint (bad magic)") }
            pending = []
            stage = .nameLength
        case .nameLength where pending.count == 4:
            let n = Int(pending.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
            guard n <= 256 else { return CheckpointProblem("malformed section name") }
            pending = []
            stage = .name(n)
        case .name(let n) where pending.count == n:
            sectionName = String(decoding: pending, as: UTF8.self)
            pending = []
            stage = .dataLength
        case .dataLength where pending.count == 8:
            let n = pending.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            pending = []
            sectionLeft = Int(n)
            sectionBytes = []
            groupIndex = nil
            if sectionName.hasPrefix("group."), let g = Int(sectionName.dropFirst(6)) {
                guard g < targets.count, Int(n) == 4 * targets[g].count else {
                    return CheckpointProblem("group \(g) does not have this run's shape")
                }
                groupIndex = g
                groupOffset = 0
            } else if n > 1 << 34 {
                return CheckpointProblem("section '\(sectionName)' is implausibly large")
            }
            stage = .data
            if sectionLeft == 0 { return finishSection() }
        default:
            break
        }
        return nil
    }

    private mutating func finishSection() -> CheckpointProblem? {
        switch sectionName {
        case "meta":
            meta = try? JSONSerialization.jsonObject(with: Data(sectionBytes)) as? [String: Any]
            if meta == nil { return CheckpointProblem("malformed meta section") }
        case "optimizer": optimizer = sectionBytes
        case "subspace": subspace = sectionBytes
        default:
            if let g = groupIndex { groupsSeen.insert(g) }
        }
        sectionBytes = []
        stage = .nameLength
        return nil
    }

    var isAtSectionBoundary: Bool {
        if case .nameLength = stage { return pending.isEmpty }
        return false
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

    /// Writes a checkpoint atomically (compressed as it is written: nothing of the values'
    /// size is copied), then removes all but it and the one before.
    public func save(_ checkpoint: Checkpoint) throws(TrainingError) {
        let target = path(completed: checkpoint.step - 1)
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createCompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            throw .checkpoint(path: target, message: "cannot create an LZ4 compression context")
        }
        defer { LZ4F_freeCompressionContext(context) }
        var prefs = LZ4F_preferences_t()
        prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        let chunk = 1 << 20
        let capacity = LZ4F_compressBound(chunk, &prefs) + 64
        var out = [UInt8](repeating: 0, count: capacity)
        do {
            try writeAtomically(path: target) { (file: inout FileOutput) throws(GGUFError) in
                var failure: GGUFError?
                func emit(_ n: Int) -> Bool {
                    guard LZ4F_isError(n) == 0 else {
                        failure = GGUFError(path: target, offset: nil,
                                            reason: .invalidValue("LZ4 compression failed: \(String(cString: LZ4F_getErrorName(n)))"))
                        return false
                    }
                    do { try file.write(Array(out[0..<n])) } catch {
                        failure = error
                        return false
                    }
                    return true
                }
                var ok = emit(out.withUnsafeMutableBytes { LZ4F_compressBegin(context, $0.baseAddress, capacity, &prefs) })
                ok = ok && checkpoint.pieces { piece in
                    var offset = 0
                    while offset < piece.count {
                        let n = min(chunk, piece.count - offset)
                        let written = out.withUnsafeMutableBytes {
                            LZ4F_compressUpdate(context, $0.baseAddress, capacity, piece.baseAddress! + offset, n, nil)
                        }
                        guard emit(written) else { return false }
                        offset += n
                    }
                    return true
                }
                ok = ok && emit(out.withUnsafeMutableBytes { LZ4F_compressEnd(context, $0.baseAddress, capacity, nil) })
                if !ok { throw failure ?? GGUFError(path: target, offset: nil, reason: .invalidValue("checkpoint encoding failed")) }
            }
        } catch {
            throw .checkpoint(path: target, message: error.description)
        }
        for old in files().dropFirst(2) { try? FileManager.default.removeItem(atPath: old.path) }
    }

    /// The newest checkpoint that decompresses with a valid checksum and parses; its group
    /// values are written straight into `groups`. Corrupted or truncated files are skipped
    /// with `warn` naming them (the groups may then hold part of a skipped file's values,
    /// overwritten by the next valid one; when none is valid the caller starts afresh).
    public func loadNewest(into groups: [ParameterGroup], warn: (String) -> Void) -> Checkpoint? {
        for file in files() {
            switch Self.load(file.path, into: groups) {
            case .failure(let reason): warn("skipping checkpoint \(file.path): \(reason)")
            case .success(let c): return c
            }
        }
        return nil
    }

    static func load(_ path: String, into groups: [ParameterGroup]) -> Result<Checkpoint, CheckpointProblem> {
        guard let handle = FileHandle(forReadingAtPath: path) else { return .failure(CheckpointProblem("cannot read it")) }
        defer { try? handle.close() }
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            return .failure(CheckpointProblem("cannot create an LZ4 decompression context"))
        }
        defer { LZ4F_freeDecompressionContext(context) }
        var parser = CheckpointParser(targets: groups)
        var decoded = [UInt8](repeating: 0, count: 1 << 20)
        var hint = 1
        while true {
            let input = [UInt8](handle.readData(ofLength: 1 << 20))
            if input.isEmpty { break }
            var consumed = 0
            while consumed < input.count {
                var srcSize = input.count - consumed
                var dstSize = decoded.count
                hint = input.withUnsafeBytes { src in
                    decoded.withUnsafeMutableBytes { dst in
                        LZ4F_decompress(context, dst.baseAddress, &dstSize, src.baseAddress! + consumed, &srcSize, nil)
                    }
                }
                if LZ4F_isError(hint) != 0 { return .failure(CheckpointProblem("corrupted (\(String(cString: LZ4F_getErrorName(hint))))")) }
                if let problem = decoded.withUnsafeBytes({ parser.feed(UnsafeRawBufferPointer(rebasing: $0[0..<dstSize])) }) {
                    return .failure(problem)
                }
                consumed += srcSize
                if hint == 0 { break }
            }
            if hint == 0 { break }
        }
        guard hint == 0 else { return .failure(CheckpointProblem("truncated (the LZ4 frame is incomplete)")) }
        guard parser.isAtSectionBoundary, let meta = parser.meta, let step = meta["step"] as? Int,
              let identity = meta["identity"] as? [String: String], let count = meta["groups"] as? Int else {
            return .failure(CheckpointProblem("incomplete or missing meta section"))
        }
        guard count == groups.count, parser.groupsSeen.count == count else {
            return .failure(CheckpointProblem("it holds \(parser.groupsSeen.count) of \(count) groups; this run has \(groups.count)"))
        }
        return .success(Checkpoint(step: step, identity: identity, groups: groups, optimizerState: parser.optimizer,
                                   subspaceState: parser.subspace))
    }
}
