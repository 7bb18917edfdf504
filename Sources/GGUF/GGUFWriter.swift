// GGUF writer: the layout documented in GGUFFormat.swift, written to a temporary
// file beside the destination, flushed to disk, then renamed over it, so a crash
// never leaves a half-written file where a good one was.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A GGUF file to be written: metadata and tensors, in order.
public struct GGUFWriter {
    /// Where a tensor's bytes come from.
    public enum Source {
        case bytes([UInt8])
        /// Borrowed bytes; they must stay valid until `write(to:)` returns.
        case view(UnsafeRawBufferPointer)
        /// Bytes produced on demand into a buffer of exactly the tensor's size.
        case generate((UnsafeMutableRawBufferPointer) -> Void)
    }

    public var metadata = GGUFMetadata()
    public private(set) var tensors: [(info: GGUFTensorInfo, source: Source)] = []

    public init(metadata: GGUFMetadata = GGUFMetadata()) {
        self.metadata = metadata
    }

    public var alignment: Int {
        if case .uint32(let a) = metadata["general.alignment"] { return Int(a) }
        return ggufDefaultAlignment
    }

    /// Adds a tensor; its offset is assigned when the file is written.
    public mutating func addTensor(name: String, type: GGMLType, shape: [Int], source: Source) {
        tensors.append((GGUFTensorInfo(name: name, type: type, shape: shape), source))
    }

    /// Adds a float32 tensor (its values are copied out only as the file is written).
    public mutating func addTensor(name: String, shape: [Int], floats: [Float]) {
        addTensor(name: name, type: .f32, shape: shape, source: .generate { out in
            floats.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(out.count))) }
        })
    }

    /// Writes the file atomically: temporary file, fsync, rename, fsync of the directory.
    public func write(to path: String) throws(GGUFError) {
        let alignment = self.alignment
        guard alignment > 0, alignment & (alignment - 1) == 0 else {
            throw GGUFError(path: path, offset: nil, reason: .badAlignment(key: "general.alignment", value: "\(alignment)"))
        }
        var names = Set<String>()
        for (info, source) in tensors {
            guard names.insert(info.name).inserted else {
                throw GGUFError(path: path, offset: nil, reason: .duplicateTensor(info.name))
            }
            guard info.type.isKnown, (1...4).contains(info.shape.count), info.shape.allSatisfy({ $0 >= 0 }),
                  info.type.rowBytes(info.rowLength) != nil else {
                throw GGUFError(path: path, offset: nil,
                                reason: .invalidValue("tensor '\(info.name)' has shape \(info.shape) invalid for type \(info.type)"))
            }
            let size: Int? = switch source {
            case .bytes(let b): b.count
            case .view(let v): v.count
            case .generate: nil
            }
            if let size, size != info.byteCount {
                throw GGUFError(path: path, offset: nil,
                                reason: .invalidValue("tensor '\(info.name)' has \(size) bytes of data, its shape needs \(info.byteCount)"))
            }
        }

        // Header, metadata and tensor infos, with offsets assigned in order.
        var head = ByteWriter()
        head.u32(ggufMagic)
        head.u32(ggufWriteVersion)
        head.u64(UInt64(tensors.count))
        head.u64(UInt64(metadata.count))
        for (key, value) in metadata {
            head.string(key)
            head.u32(value.type.rawValue)
            head.value(value)
        }
        var dataSize = 0
        for (info, _) in tensors {
            head.string(info.name)
            head.u32(UInt32(info.shape.count))
            for d in info.shape { head.u64(UInt64(d)) }
            head.u32(info.type.rawValue)
            head.u64(UInt64(dataSize))
            dataSize += padded(info.byteCount, alignment)
        }
        head.pad(to: alignment)

        try writeAtomically(path: path) { (out: inout FileOutput) throws(GGUFError) in
            try out.write(head.bytes)
            for (info, source) in tensors {
                let count = info.byteCount
                switch source {
                case .bytes(let b): try out.write(b)
                case .view(let v): try out.write(v)
                case .generate(let produce):
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 64)
                    defer { buffer.deallocate() }
                    let exact = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                    exact.initializeMemory(as: UInt8.self, repeating: 0)
                    produce(exact)
                    try out.write(UnsafeRawBufferPointer(exact))
                }
                let padding = padded(count, alignment) - count
                if padding > 0 { try out.write([UInt8](repeating: 0, count: padding)) }
            }
        }
    }
}

@inline(__always) func padded(_ n: Int, _ alignment: Int) -> Int {
    (n + alignment - 1) / alignment * alignment
}

/// Little-endian encoding into a growing byte array.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func int<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func u32(_ v: UInt32) { int(v) }
    mutating func u64(_ v: UInt64) { int(v) }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u64(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    mutating func pad(to alignment: Int) {
        bytes.append(contentsOf: repeatElement(0, count: padded(bytes.count, alignment) - bytes.count))
    }

    mutating func value(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): int(x)
        case .int8(let x): int(x)
        case .uint16(let x): int(x)
        case .int16(let x): int(x)
        case .uint32(let x): int(x)
        case .int32(let x): int(x)
        case .float32(let x): int(x.bitPattern)
        case .bool(let x): int(UInt8(x ? 1 : 0))
        case .string(let s): string(s)
        case .uint64(let x): int(x)
        case .int64(let x): int(x)
        case .float64(let x): int(x.bitPattern)
        case .array(let a): array(a)
        }
    }

    mutating func array(_ a: GGUFArray) {
        u32(a.elementType.rawValue)
        u64(UInt64(a.count))
        switch a {
        case .uint8(let xs): xs.forEach { int($0) }
        case .int8(let xs): xs.forEach { int($0) }
        case .uint16(let xs): xs.forEach { int($0) }
        case .int16(let xs): xs.forEach { int($0) }
        case .uint32(let xs): xs.forEach { int($0) }
        case .int32(let xs): xs.forEach { int($0) }
        case .float32(let xs): xs.forEach { int($0.bitPattern) }
        case .bool(let xs): xs.forEach { int(UInt8($0 ? 1 : 0)) }
        case .string(let xs): xs.forEach { string($0) }
        case .uint64(let xs): xs.forEach { int($0) }
        case .int64(let xs): xs.forEach { int($0) }
        case .float64(let xs): xs.forEach { int($0.bitPattern) }
        case .array(let xs): xs.forEach { array($0) }
        }
    }
}

/// Buffered writes to an open file descriptor.
public struct FileOutput {
    let descriptor: Int32
    let path: String
    private var buffer: [UInt8] = []
    public private(set) var bytesWritten = 0

    init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        if buffer.count + bytes.count > (1 << 20) { try flush() }
        if bytes.count >= (1 << 20) {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        bytesWritten += bytes.count
    }

    public mutating func write(_ bytes: [UInt8]) throws(GGUFError) {
        if buffer.count + bytes.count > (1 << 20) { try flush() }
        buffer.append(contentsOf: bytes)
        bytesWritten += bytes.count
    }

    mutating func flush() throws(GGUFError) {
        guard !buffer.isEmpty else { return }
        let ok = buffer.withUnsafeBytes { writeFully($0) }
        buffer.removeAll(keepingCapacity: true)
        guard ok else { throw GGUFError.system("write", path: path) }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        guard writeFully(bytes) else { throw GGUFError.system("write", path: path) }
    }

    /// Writes every byte, retrying after interruptions; false on an error (errno set).
    private func writeFully(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = systemWrite(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            done += n
        }
        return true
    }
}

/// write(2) by its C name: `FileOutput.write` would shadow it inside the type.
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

/// Writes a file through `body` into a temporary file beside `path`, then fsyncs it,
/// renames it over `path` and fsyncs the directory. On any failure the temporary
/// file is removed and whatever was at `path` before is untouched. A destination that
/// exists and is not a regular file (a device, a directory) is refused before anything is
/// written; temporary files of earlier writes whose process died are removed.
public func writeAtomically(path: String, _ body: (inout FileOutput) throws(GGUFError) -> Void) throws(GGUFError) {
    var existing = stat()
    if stat(path, &existing) == 0, (existing.st_mode & S_IFMT) != S_IFREG {
        throw GGUFError(path: path, offset: nil, reason: .notARegularFile(kind: fileKind(existing.st_mode)))
    }
    FileSafety.removeStaleTemporaries(of: path)
    let temporary = path + ".tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .system("create", path: temporary) }
    var succeeded = false
    defer {
        if !succeeded { unlink(temporary) }
    }
    do throws(GGUFError) {
        var out = FileOutput(descriptor: fd, path: temporary)
        try body(&out)
        try out.flush()
        guard fsync(fd) == 0 else { throw GGUFError.system("fsync", path: temporary) }
    } catch {
        close(fd)
        throw error
    }
    guard close(fd) == 0 else { throw .system("close", path: temporary) }
    guard rename(temporary, path) == 0 else { throw .system("rename to \(path)", path: temporary) }
    succeeded = true
    syncDirectory(containing: path)
}

/// fsyncs the directory holding `path`, so a rename into it survives a power loss.
func syncDirectory(containing path: String) {
    let directory = FileSafety.directoryOf(path)
    let fd = open(directory, O_RDONLY | O_CLOEXEC)
    if fd >= 0 {
        fsync(fd)
        close(fd)
    }
}
