// Errors of reading and writing GGUF files: what was wrong and where.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A problem with a GGUF file, naming the file and, where it applies, the byte offset.
public struct GGUFError: Error, Equatable, CustomStringConvertible {
    /// The file concerned.
    public var path: String
    /// Byte offset in the file where the problem was found, when there is one.
    public var offset: Int?
    public var reason: Reason
    /// The type and shape of the tensor concerned, for errors about one tensor.
    public var tensor: TensorLayout?

    public init(path: String, offset: Int?, reason: Reason, tensor: TensorLayout? = nil) {
        self.path = path
        self.offset = offset
        self.reason = reason
        self.tensor = tensor
    }

    /// A tensor's type (nil when unknown) and dimensions (ne0 first), as the file gives them.
    public struct TensorLayout: Equatable, Sendable {
        public var type: GGMLType?
        public var dims: [UInt64]

        public init(type: GGMLType?, dims: [UInt64]) {
            self.type = type
            self.dims = dims
        }
    }

    public enum Reason: Equatable, Sendable {
        /// open, stat, mmap, write, fsync or rename failed.
        case system(operation: String, message: String)
        case badMagic(found: UInt32)
        case unsupportedVersion(UInt32)
        /// The file ends before a field of `section` that needs `needed` bytes.
        case truncated(section: String, needed: Int, fileSize: Int)
        /// A count read from the file cannot possibly fit in what remains of it.
        case absurdCount(what: String, count: UInt64, remainingBytes: Int)
        case stringPastEnd(length: UInt64, fileSize: Int)
        case unknownValueType(key: String, rawType: UInt32)
        case arrayNestingTooDeep(key: String, depth: Int)
        case duplicateKey(String)
        case badAlignment(key: String, value: String)
        case tooManyDimensions(tensor: String, count: UInt32)
        case unknownTensorType(tensor: String, rawType: UInt32)
        case dimensionOverflow(tensor: String, dims: [UInt64])
        case rowNotWholeBlocks(tensor: String, type: String, rowLength: Int, blockSize: Int)
        case duplicateTensor(String)
        case misalignedTensor(tensor: String, dataOffset: UInt64, alignment: Int)
        case tensorOutOfBounds(tensor: String, start: UInt64, byteCount: Int, fileSize: Int)
        /// A value given to the writer is not representable in GGUF.
        case invalidValue(String)
        /// The path names a directory, a FIFO, a device: something that is not a regular file.
        case notARegularFile(kind: String)
        /// Two tensors' byte ranges overlap (`first` starts before `second` ends).
        case overlappingTensors(first: String, second: String)
    }

    public var description: String {
        let at = offset.map { " at byte \($0)" } ?? ""
        let layout = tensor.map { t in
            " (" + (t.type.map { "type \($0.name), " } ?? "") + "shape " + t.dims.map(String.init).joined(separator: " x ") + ")"
        } ?? ""
        return "\(path): \(reasonText)\(layout)\(at)"
    }

    private var reasonText: String {
        switch reason {
        case .system(let op, let message):
            return "\(op) failed: \(message)"
        case .badMagic(let found):
            let bytes = withUnsafeBytes(of: found.littleEndian) { Array($0) }
            let shown = bytes.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
            return "not a GGUF file (magic is \"\(shown)\", expected \"GGUF\")"
        case .unsupportedVersion(let v):
            return "GGUF version \(v) is not supported (versions 2 and 3 are); convert the file with a recent llama.cpp"
        case .truncated(let section, let needed, let fileSize):
            return "file is truncated: \(section) needs \(needed) more bytes but the file ends at \(fileSize)"
        case .absurdCount(let what, let count, let remaining):
            return "\(what) is \(count), which cannot fit in the \(remaining) bytes left in the file"
        case .stringPastEnd(let length, let fileSize):
            return "a string of length \(length) runs past the end of the file (\(fileSize) bytes)"
        case .unknownValueType(let key, let raw):
            return "metadata key '\(key)' has unknown value type \(raw)"
        case .arrayNestingTooDeep(let key, let depth):
            return "metadata key '\(key)' nests arrays deeper than \(depth) levels"
        case .duplicateKey(let key):
            return "metadata key '\(key)' appears twice"
        case .badAlignment(let key, let value):
            return "'\(key)' is \(value); it must be a uint32 power of two"
        case .tooManyDimensions(let tensor, let count):
            return "tensor '\(tensor)' has \(count) dimensions (at most 4 are allowed)"
        case .unknownTensorType(let tensor, let raw):
            return "tensor '\(tensor)' has unknown ggml type \(raw)"
        case .dimensionOverflow(let tensor, let dims):
            return "tensor '\(tensor)' has dimensions \(dims) whose product overflows"
        case .rowNotWholeBlocks(let tensor, let type, let rowLength, let blockSize):
            return "tensor '\(tensor)' of type \(type) has rows of \(rowLength) values, not a multiple of its block size \(blockSize)"
        case .duplicateTensor(let name):
            return "tensor '\(name)' appears twice"
        case .misalignedTensor(let tensor, let dataOffset, let alignment):
            return "tensor '\(tensor)' starts at data offset \(dataOffset), not a multiple of the alignment \(alignment)"
        case .tensorOutOfBounds(let tensor, let start, let byteCount, let fileSize):
            return "tensor '\(tensor)' (\(byteCount) bytes from byte \(start)) extends past the end of the file (\(fileSize) bytes)"
        case .invalidValue(let what):
            return "cannot write: \(what)"
        case .notARegularFile(let kind):
            return "is \(kind), not a regular file"
        case .overlappingTensors(let first, let second):
            return "the data of tensor '\(second)' overlaps the data of tensor '\(first)'; the file is damaged or was written wrongly"
        }
    }

    /// An error for a failed system call, with `errno`'s message.
    public static func system(_ operation: String, path: String) -> GGUFError {
        let message = String(cString: strerror(errno))
        return GGUFError(path: path, offset: nil, reason: .system(operation: operation, message: message))
    }
}
