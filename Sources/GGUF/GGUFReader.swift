// GGUF reader over mmap: parses the layout documented in GGUFFormat.swift, checking
// every count, length, offset and size against the file before using it.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What one tensor is and where its bytes are.
public struct GGUFTensorInfo: Equatable, Sendable {
    public var name: String
    public var type: GGMLType
    /// Dimensions, ne0 (the contiguous row length) first.
    public var shape: [Int]
    /// Offset of the tensor's bytes from the start of the data section.
    public var offset: UInt64

    public init(name: String, type: GGMLType, shape: [Int], offset: UInt64 = 0) {
        self.name = name
        self.type = type
        self.shape = shape
        self.offset = offset
    }

    public var elementCount: Int { shape.reduce(1, *) }
    /// Length of a row (ne0).
    public var rowLength: Int { shape.first ?? 1 }
    /// Number of rows (the product of every dimension after the first).
    public var rowCount: Int { shape.dropFirst().reduce(1, *) }
    public var byteCount: Int { rowCount * (type.rowBytes(rowLength) ?? 0) }
}

/// A GGUF file opened read-only. Tensor bytes are views into the mapping, valid
/// while this object is alive; nothing is copied.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: GGUFMetadata
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int
    public let mapping: MappedFile
    private let tensorIndex: [String: Int]

    /// Arrays may nest; deeper than this is refused rather than recursed into.
    public static let maximumArrayNesting = 8

    public var fileSize: Int { mapping.size }

    public init(path: String) throws(GGUFError) {
        self.path = path
        mapping = try MappedFile(path: path)
        var cursor = Cursor(bytes: mapping.bytes, path: path)

        // Header: magic, version, counts.
        let magic = try cursor.u32("header")
        guard magic == ggufMagic else {
            throw GGUFError(path: path, offset: 0, reason: .badMagic(found: magic))
        }
        let versionOffset = cursor.offset
        version = try cursor.u32("header")
        guard version == 2 || version == 3 else {
            throw GGUFError(path: path, offset: versionOffset, reason: .unsupportedVersion(version))
        }
        let tensorCount = try cursor.count("tensor count", minimumBytesEach: 8 + 4 + 8 + 4 + 8)
        let kvCount = try cursor.count("metadata key count", minimumBytesEach: 8 + 4 + 1)

        // Metadata: key, type, value.
        var metadata = GGUFMetadata()
        for _ in 0..<kvCount {
            let keyOffset = cursor.offset
            let key = try cursor.string("metadata key")
            guard !metadata.contains(key) else {
                throw GGUFError(path: path, offset: keyOffset, reason: .duplicateKey(key))
            }
            let typeOffset = cursor.offset
            let type = GGUFValueType(rawValue: try cursor.u32("metadata value type"))
            guard type.isKnown else {
                throw GGUFError(path: path, offset: typeOffset, reason: .unknownValueType(key: key, rawType: type.rawValue))
            }
            metadata[key] = try cursor.value(of: type, key: key, depth: 0)
        }
        self.metadata = metadata

        // Alignment of the data section.
        var alignment = ggufDefaultAlignment
        if let value = metadata["general.alignment"] {
            guard case .uint32(let a) = value, a > 0, a & (a - 1) == 0 else {
                throw GGUFError(path: path, offset: nil,
                                reason: .badAlignment(key: "general.alignment", value: "\(value)"))
            }
            alignment = Int(a)
        }
        self.alignment = alignment

        // Tensor infos: name, dims, type, offset.
        var tensors = [GGUFTensorInfo]()
        var tensorIndex = [String: Int]()
        tensors.reserveCapacity(tensorCount)
        for _ in 0..<tensorCount {
            let infoOffset = cursor.offset
            let name = try cursor.string("tensor name")
            guard tensorIndex[name] == nil else {
                throw GGUFError(path: path, offset: infoOffset, reason: .duplicateTensor(name))
            }
            let nDims = try cursor.u32("tensor dimension count")
            guard nDims >= 1, nDims <= 4 else {
                throw GGUFError(path: path, offset: infoOffset, reason: .tooManyDimensions(tensor: name, count: nDims))
            }
            var dims = [UInt64]()
            for _ in 0..<nDims { dims.append(try cursor.u64("tensor dimensions")) }
            let typeOffset = cursor.offset
            let type = GGMLType(rawValue: try cursor.u32("tensor type"))
            guard type.isKnown else {
                throw GGUFError(path: path, offset: typeOffset, reason: .unknownTensorType(tensor: name, rawType: type.rawValue),
                                tensor: .init(type: nil, dims: dims))
            }
            let dataOffsetField = try cursor.u64("tensor data offset")

            // Element count and byte size must be representable.
            var shape = [Int]()
            var elements = 1
            for d in dims {
                guard let di = Int(exactly: d) else {
                    throw GGUFError(path: path, offset: infoOffset, reason: .dimensionOverflow(tensor: name, dims: dims))
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: di)
                guard !overflow else {
                    throw GGUFError(path: path, offset: infoOffset, reason: .dimensionOverflow(tensor: name, dims: dims))
                }
                elements = product
                shape.append(di)
            }
            guard shape[0] % type.blockSize == 0 else {
                throw GGUFError(path: path, offset: infoOffset,
                                reason: .rowNotWholeBlocks(tensor: name, type: type.name, rowLength: shape[0], blockSize: type.blockSize),
                                tensor: .init(type: type, dims: dims))
            }
            guard elements / type.blockSize <= Int.max / type.bytesPerBlock else {
                throw GGUFError(path: path, offset: infoOffset, reason: .dimensionOverflow(tensor: name, dims: dims))
            }
            guard dataOffsetField % UInt64(alignment) == 0 else {
                throw GGUFError(path: path, offset: infoOffset,
                                reason: .misalignedTensor(tensor: name, dataOffset: dataOffsetField, alignment: alignment))
            }
            tensorIndex[name] = tensors.count
            tensors.append(GGUFTensorInfo(name: name, type: type, shape: shape, offset: dataOffsetField))
        }

        // The data section starts at the next multiple of the alignment.
        let dataStart = (cursor.offset + alignment - 1) / alignment * alignment
        let fileSize = mapping.size
        if tensorCount > 0, dataStart > fileSize {
            throw GGUFError(path: path, offset: cursor.offset,
                            reason: .truncated(section: "padding before tensor data", needed: dataStart - cursor.offset, fileSize: fileSize))
        }
        for t in tensors {
            let bytes = t.byteCount
            let (start, o1) = UInt64(dataStart).addingReportingOverflow(t.offset)
            let (end, o2) = start.addingReportingOverflow(UInt64(bytes))
            guard !o1, !o2, end <= UInt64(fileSize) else {
                throw GGUFError(path: path, offset: o1 ? nil : Int(exactly: start),
                                reason: .tensorOutOfBounds(tensor: t.name, start: start, byteCount: bytes, fileSize: fileSize),
                                tensor: .init(type: t.type, dims: t.shape.map { UInt64($0) }))
            }
        }
        // No two tensors may share bytes (an empty tensor shares none).
        let byStart = tensors.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for (a, b) in zip(byStart, byStart.dropFirst()) where b.offset < a.offset + UInt64(a.byteCount) {
            throw GGUFError(path: path, offset: dataStart + Int(b.offset), reason: .overlappingTensors(first: a.name, second: b.name))
        }
        self.dataOffset = dataStart
        self.tensors = tensors
        self.tensorIndex = tensorIndex
    }

    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// Byte range of a tensor in the file.
    public func fileRange(of tensor: GGUFTensorInfo) -> Range<Int> {
        let start = dataOffset + Int(tensor.offset)
        return start..<(start + tensor.byteCount)
    }

    /// The tensor's bytes, a view into the mapping (valid while this file is alive).
    public func bytes(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping.bytes[fileRange(of: tensor)])
    }

    /// Copies the tensor's bytes into `buffer` (at least `tensor.byteCount` bytes) with
    /// pread, without touching the mapping (so its pages stay out of the resident set).
    /// Returns false if the file could not be read.
    public func read(_ tensor: GGUFTensorInfo, into buffer: UnsafeMutableRawPointer) -> Bool {
        let range = fileRange(of: tensor)
        var done = 0
        while done < range.count {
            let n = pread(mapping.descriptor, buffer + done, range.count - done, off_t(range.lowerBound + done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    /// The tensor's bytes by name, or nil if there is no such tensor.
    public func bytes(named name: String) -> UnsafeRawBufferPointer? {
        tensor(named: name).map(bytes(of:))
    }

    /// Total bytes of tensor data, by type, in order of first appearance.
    public var bytesByType: [(type: GGMLType, count: Int, bytes: Int)] {
        var order = [GGMLType]()
        var sums = [GGMLType: (Int, Int)]()
        for t in tensors {
            if sums[t.type] == nil { order.append(t.type) }
            let s = sums[t.type, default: (0, 0)]
            sums[t.type] = (s.0 + 1, s.1 + t.byteCount)
        }
        return order.map { ($0, sums[$0]!.0, sums[$0]!.1) }
    }
}

/// Reads little-endian fields from a byte buffer, checking each against its end.
struct Cursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    var remaining: Int { bytes.count - offset }

    private func need(_ n: Int, _ section: String) throws(GGUFError) {
        guard n <= remaining else {
            throw GGUFError(path: path, offset: offset, reason: .truncated(section: section, needed: n, fileSize: bytes.count))
        }
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ section: String) throws(GGUFError) -> T {
        try need(MemoryLayout<T>.size, section)
        let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return v
    }

    mutating func u32(_ section: String) throws(GGUFError) -> UInt32 { try load(UInt32.self, section) }
    mutating func u64(_ section: String) throws(GGUFError) -> UInt64 { try load(UInt64.self, section) }

    /// A UInt64 count of items each at least `minimumBytesEach` long, refused when they cannot fit.
    mutating func count(_ what: String, minimumBytesEach: Int) throws(GGUFError) -> Int {
        let at = offset
        let n = try u64(what)
        guard n <= UInt64(remaining / max(1, minimumBytesEach)) else {
            throw GGUFError(path: path, offset: at, reason: .absurdCount(what: what, count: n, remainingBytes: remaining))
        }
        return Int(n)
    }

    mutating func string(_ section: String) throws(GGUFError) -> String {
        let at = offset
        let length = try u64(section + " length")
        guard length <= UInt64(remaining) else {
            throw GGUFError(path: path, offset: at, reason: .stringPastEnd(length: length, fileSize: bytes.count))
        }
        let n = Int(length)
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]), as: UTF8.self)
        offset += n
        return s
    }

    mutating func value(of type: GGUFValueType, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        let section = "value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, section))
        case .int8: return .int8(try load(Int8.self, section))
        case .uint16: return .uint16(try load(UInt16.self, section))
        case .int16: return .int16(try load(Int16.self, section))
        case .uint32: return .uint32(try load(UInt32.self, section))
        case .int32: return .int32(try load(Int32.self, section))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, section)))
        case .bool: return .bool(try load(UInt8.self, section) != 0)
        case .string: return .string(try string(section))
        case .uint64: return .uint64(try load(UInt64.self, section))
        case .int64: return .int64(try load(Int64.self, section))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, section)))
        case .array: return .array(try array(key: key, depth: depth + 1))
        default:
            throw GGUFError(path: path, offset: offset - 4, reason: .unknownValueType(key: key, rawType: type.rawValue))
        }
    }

    mutating func array(key: String, depth: Int) throws(GGUFError) -> GGUFArray {
        let at = offset
        guard depth <= GGUFFile.maximumArrayNesting else {
            throw GGUFError(path: path, offset: at, reason: .arrayNestingTooDeep(key: key, depth: GGUFFile.maximumArrayNesting))
        }
        let elementType = GGUFValueType(rawValue: try u32("array type of '\(key)'"))
        guard elementType.isKnown else {
            throw GGUFError(path: path, offset: at, reason: .unknownValueType(key: key, rawType: elementType.rawValue))
        }
        let n = try count("element count of '\(key)'", minimumBytesEach: elementType.minimumEncodedSize)
        let section = "elements of '\(key)'"

        func scalars<T: FixedWidthInteger>(_: T.Type) throws(GGUFError) -> [T] {
            try need(n * MemoryLayout<T>.size, section)
            let base = bytes.baseAddress! + offset
            let out = [T](unsafeUninitializedCapacity: n) { buffer, initialized in
                for i in 0..<n {
                    buffer[i] = T(littleEndian: UnsafeRawPointer(base).loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self))
                }
                initialized = n
            }
            offset += n * MemoryLayout<T>.size
            return out
        }

        switch elementType {
        case .uint8: return .uint8(try scalars(UInt8.self))
        case .int8: return .int8(try scalars(Int8.self))
        case .uint16: return .uint16(try scalars(UInt16.self))
        case .int16: return .int16(try scalars(Int16.self))
        case .uint32: return .uint32(try scalars(UInt32.self))
        case .int32: return .int32(try scalars(Int32.self))
        case .float32: return .float32(try scalars(UInt32.self).map { Float(bitPattern: $0) })
        case .bool: return .bool(try scalars(UInt8.self).map { $0 != 0 })
        case .uint64: return .uint64(try scalars(UInt64.self))
        case .int64: return .int64(try scalars(Int64.self))
        case .float64: return .float64(try scalars(UInt64.self).map { Double(bitPattern: $0) })
        case .string:
            var out = [String]()
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try string(section)) }
            return .string(out)
        default:  // .array
            var out = [GGUFArray]()
            for _ in 0..<n { out.append(try array(key: key, depth: depth + 1)) }
            return .array(out)
        }
    }
}
