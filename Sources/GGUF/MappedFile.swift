// A read-only memory mapping of a whole file, unmapped when released.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file mapped read-only into memory. The mapping lives as long as this object;
/// the file descriptor stays open for positioned reads (`pread`) of the same file.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    /// The whole file; valid while this object is alive.
    public let bytes: UnsafeRawBufferPointer
    /// The open descriptor of the file (read-only).
    public let descriptor: Int32

    public var size: Int { bytes.count }

    public init(path: String) throws(GGUFError) {
        self.path = path
        // Opened without blocking and refused unless regular: a FIFO or a device never hangs here.
        let fd = try FileSafety.openRegularFile(path)
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = GGUFError.system("stat", path: path)
            close(fd)
            throw error
        }
        let size = Int(info.st_size)
        if size == 0 {
            // mmap refuses a zero length; an empty buffer stands in for it.
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
        } else {
            guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
                let error = GGUFError.system("mmap", path: path)
                close(fd)
                throw error
            }
            bytes = UnsafeRawBufferPointer(start: base, count: size)
        }
        descriptor = fd
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
        close(descriptor)
    }

    /// Tells the kernel the pages of `range` are not needed now, so they leave the
    /// resident set (they are read again from the file on the next access).
    public func release(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        let end = min(bytes.count, (range.upperBound + page - 1) / page * page)
        guard end > start else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
    }

    /// Asks the kernel to start reading `range` into memory ahead of use.
    public func prefetch(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        let end = min(bytes.count, range.upperBound)
        guard end > start else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_WILLNEED))
    }
}
