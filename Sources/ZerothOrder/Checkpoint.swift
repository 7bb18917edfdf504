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
// Files are named checkpoint-<run>-<steps completed>.efck, where <run> is a digest of the run's
// identity (so runs with other settings sharing a directory never prune or resume each
// other's files), written to a temporary file, fsynced and renamed; the previous checkpoint
// is deleted only after the new one is complete. A run holds an exclusive lock (flock) on
// the directory's .lock file while it uses the directory. Both directions
// stream: values are compressed from, and decompressed into, the trainable groups' own
// memory, so a checkpoint costs no copy of them. On resume a file whose checksum or
// structure is wrong is skipped, with a warning naming it, in favour of the one before.
// Every length and index read from a file is checked against both bounds before use.

import CLZ4
import Foundation
import GGUF
import Quant
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The "meta" section: the format is this declaration.
struct CheckpointMeta: Codable {
    var step: Int
    var identity: [String: String]
    var groups: Int
}

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
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Strings and integers only: encoding cannot fail (an empty meta would be refused on load).
        let metaBytes = Array((try? encoder.encode(CheckpointMeta(step: step, identity: identity, groups: groups.count))) ?? Data())
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
    private(set) var meta: CheckpointMeta?
    private(set) var optimizer = [UInt8]()
    private(set) var subspace = [UInt8]()
    private(set) var groupsSeen = Set<Int>()
    private var sectionsSeen = Set<String>()

    /// The largest meta section accepted (it holds a few dozen short strings).
    static let maximumMetaBytes = 1 << 20
    /// The largest optimizer or subspace state accepted.
    static let maximumStateBytes: UInt64 = 1 << 40

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
            sectionBytes = []
            groupIndex = nil
            guard sectionsSeen.insert(sectionName).inserted else {
                return CheckpointProblem("section '\(sectionName)' appears twice")
            }
            if sectionName.hasPrefix("group.") {
                // The index must name one of this run's groups: 0 ≤ g < count, digits only.
                let digits = sectionName.dropFirst(6)
                guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let g = Int(digits),
                      g >= 0, g < targets.count else {
                    return CheckpointProblem("section '\(sectionName)' names no group of this run (it has \(targets.count))")
                }
                guard n == UInt64(4 * targets[g].count) else {
                    return CheckpointProblem("group \(g) has \(n) bytes; this run's has \(4 * targets[g].count)")
                }
                groupIndex = g
                groupOffset = 0
            } else {
                let limit: UInt64
                switch sectionName {
                case "meta": limit = UInt64(Self.maximumMetaBytes)
                case "optimizer", "subspace": limit = Self.maximumStateBytes
                default: return CheckpointProblem("unknown section '\(sectionName)'")
                }
                guard n <= limit else { return CheckpointProblem("section '\(sectionName)' is implausibly large (\(n) bytes)") }
            }
            sectionLeft = Int(n)
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
            meta = try? JSONDecoder().decode(CheckpointMeta.self, from: Data(sectionBytes))
            guard let m = meta, m.step >= 1, m.step <= 1 << 40, m.groups >= 0 else { return CheckpointProblem("malformed meta section") }
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

/// The checkpoints of one run, in a directory that other runs may share: each run's files
/// carry its digest, and the directory is locked while a store is open on it.
public final class CheckpointStore {
    public let directory: String
    /// The run's digest in file names ("" for the unnamed files of `init(directory:)`).
    public let run: String
    /// The open lock file; closing it releases the lock.
    private let lockDescriptor: Int32

    /// Opens (creating it if needed) and locks `directory` for the run named `run`.
    /// Fails when another process holds the lock. `locking: false` opens it only to read
    /// (the other ranks of a data-parallel run, whose rank 0 holds the lock and writes).
    public init(directory: String, run: String = "", locking: Bool = true) throws(TrainingError) {
        self.directory = directory
        self.run = run
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .checkpoint(path: directory, message: "cannot create the checkpoint directory (\(error.localizedDescription))")
        }
        guard locking else {
            lockDescriptor = -1
            return
        }
        let lockPath = directory + "/.lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o644)
        guard fd >= 0 else {
            throw .checkpoint(path: lockPath, message: "cannot open the lock file (\(String(cString: strerror(errno))))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let message = String(cString: strerror(errno))
            close(fd)
            throw .checkpoint(path: directory, message: busy
                ? "another training run is using this checkpoint directory (it holds the lock on \(lockPath)); wait for it to finish or give another --checkpoint-dir"
                : "cannot lock the checkpoint directory (\(message))")
        }
        lockDescriptor = fd
    }

    deinit { if lockDescriptor >= 0 { close(lockDescriptor) } }

    private var prefix: String { run.isEmpty ? "checkpoint-" : "checkpoint-\(run)-" }

    /// The file of the checkpoint taken after `completed` steps.
    public func path(completed: Int) -> String { directory + "/" + prefix + String(format: "%08d.efck", completed) }

    /// This run's checkpoint files, most steps completed first.
    public func files() -> [(completed: Int, path: String)] {
        Self.checkpointFiles(in: directory).filter { $0.run == run }.map { ($0.completed, $0.path) }
    }

    /// Checkpoint files of other runs in the directory (other settings), newest first.
    public func foreignFiles() -> [(run: String, completed: Int, path: String)] {
        Self.checkpointFiles(in: directory).filter { $0.run != run }
    }

    /// Every checkpoint-[<run>-]<steps>.efck in `directory` that is a regular file, most steps first.
    static func checkpointFiles(in directory: String) -> [(run: String, completed: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> (String, Int, String)? in
            guard name.hasPrefix("checkpoint-"), name.hasSuffix(".efck") else { return nil }
            let stem = name.dropFirst("checkpoint-".count).dropLast(".efck".count)
            let parts = stem.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count <= 2, let last = parts.last, last.count <= 12, last.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let step = Int(last) else { return nil }
            return (parts.count == 2 ? String(parts[0]) : "", step, directory + "/" + name)
        }.sorted { $0.1 > $1.1 }
    }

    /// Writes a checkpoint atomically (compressed as it is written: nothing of the values'
    /// size is copied), then removes all of this run's files but it and the one before.
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

    /// The newest of this run's checkpoints that decompresses with a valid checksum and
    /// parses; its group values are written straight into `groups`. Corrupted or truncated
    /// files are skipped with `warn` naming them (the groups may then hold part of a skipped
    /// file's values, overwritten by the next valid one; when none is valid the caller starts afresh).
    public func loadNewest(into groups: [ParameterGroup], warn: (String) -> Void) -> Checkpoint? {
        for file in files() {
            switch Self.load(file.path, into: groups) {
            case .failure(let reason): warn("skipping checkpoint \(file.path): \(reason)")
            case .success(let c): return c
            }
        }
        return nil
    }

    /// The identity recorded in a checkpoint file (its meta section only), or nil when it
    /// cannot be read.
    public static func identity(atPath path: String) -> [String: String]? {
        var collected = [UInt8]()
        var meta: CheckpointMeta?
        _ = decompress(path) { chunk in
            collected += chunk
            // magic (8), name length (4), "meta" (4), length (8), then the JSON.
            guard collected.count >= 24 else { return true }
            let length = collected.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self)) }
            guard Array(collected[0..<8]) == Checkpoint.magic, Array(collected[12..<16]) == Array("meta".utf8),
                  length <= UInt64(CheckpointParser.maximumMetaBytes) else { return false }
            guard collected.count >= 24 + Int(length) else { return true }
            meta = try? JSONDecoder().decode(CheckpointMeta.self, from: Data(collected[24..<(24 + Int(length))]))
            return false
        }
        return meta?.identity
    }

    static func load(_ path: String, into groups: [ParameterGroup]) -> Result<Checkpoint, CheckpointProblem> {
        var parser = CheckpointParser(targets: groups)
        var problem: CheckpointProblem?
        if let failure = decompress(path, { chunk in
            problem = parser.feed(chunk)
            return problem == nil
        }) {
            return .failure(failure)
        }
        if let problem { return .failure(problem) }
        guard parser.isAtSectionBoundary, let meta = parser.meta else {
            return .failure(CheckpointProblem("incomplete or missing meta section"))
        }
        guard meta.groups == groups.count, parser.groupsSeen.count == meta.groups else {
            return .failure(CheckpointProblem("it holds \(parser.groupsSeen.count) of \(meta.groups) groups; this run has \(groups.count)"))
        }
        return .success(Checkpoint(step: meta.step, identity: meta.identity, groups: groups, optimizerState: parser.optimizer,
                                   subspaceState: parser.subspace))
    }

    /// Decompresses the LZ4 frame of the regular file at `path`, handing the output to
    /// `sink` chunk by chunk until it returns false. A problem with the file or the frame
    /// (unreadable, not a regular file, corrupted, truncated) is returned; stopping early is not one.
    static func decompress(_ path: String, _ sink: (UnsafeRawBufferPointer) -> Bool) -> CheckpointProblem? {
        let fd: Int32
        do { fd = try FileSafety.openRegularFile(path) } catch {
            if case .notARegularFile(let kind) = error.reason { return CheckpointProblem("it is \(kind), not a checkpoint file") }
            return CheckpointProblem("cannot read it (\(error.description))")
        }
        defer { close(fd) }
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            return CheckpointProblem("cannot create an LZ4 decompression context")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        var input = [UInt8](repeating: 0, count: 1 << 20)
        var decoded = [UInt8](repeating: 0, count: 1 << 20)
        var hint = 1
        while true {
            let got = input.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if got < 0 {
                if errno == EINTR { continue }
                return CheckpointProblem("cannot read it (\(String(cString: strerror(errno))))")
            }
            if got == 0 { break }
            var consumed = 0
            while consumed < got {
                var srcSize = got - consumed
                var dstSize = decoded.count
                hint = input.withUnsafeBytes { src in
                    decoded.withUnsafeMutableBytes { dst in
                        LZ4F_decompress(context, dst.baseAddress, &dstSize, src.baseAddress! + consumed, &srcSize, nil)
                    }
                }
                if LZ4F_isError(hint) != 0 { return CheckpointProblem("corrupted (\(String(cString: LZ4F_getErrorName(hint))))") }
                if dstSize > 0, !decoded.withUnsafeBytes({ sink(UnsafeRawBufferPointer(rebasing: $0[0..<dstSize])) }) { return nil }
                consumed += srcSize
                if hint == 0 { break }
            }
            if hint == 0 { break }
        }
        guard hint == 0 else { return CheckpointProblem("truncated (the LZ4 frame is incomplete)") }
        return nil
    }
}
