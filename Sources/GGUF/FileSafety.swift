// The files a command reads and writes, checked before any work: an output that is one
// of the inputs (by device and inode, so links and relative aliases count), an output
// that is not a regular file, or an output directory that cannot be written is refused
// with one line naming the flag and the path. Inputs are opened without blocking (a FIFO
// or a device never hangs the program in open) and must be regular files.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Device and inode of a file: two paths name the same file exactly when these are equal.
public struct FileIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    /// The identity of the file at `path` (symbolic links followed), or nil if nothing is there.
    public init?(path: String) {
        var s = stat()
        guard stat(path, &s) == 0 else { return nil }
        device = UInt64(s.st_dev)
        inode = UInt64(s.st_ino)
    }
}

/// A file a command names, and the flag (or argument) that named it.
public struct NamedFile: Sendable {
    public var flag: String
    public var path: String

    public init(_ flag: String, _ path: String) {
        self.flag = flag
        self.path = path
    }
}

/// Why a command's files were refused.
public struct FileSafetyError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What kind of file `mode` describes, in words ("a directory", "a FIFO").
func fileKind(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: return "a regular file"
    case S_IFDIR: return "a directory"
    case S_IFIFO: return "a FIFO (named pipe)"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFSOCK: return "a socket"
    default: return "not a regular file"
    }
}

public enum FileSafety {
    /// Refuses, before any work, outputs that would destroy an input or could not be written:
    /// an output that is the same file as an input or as another output; an output that
    /// exists and is not a regular file (`/dev/null`, a directory, a FIFO); an output whose
    /// directory does not exist or is not writable.
    public static func check(outputs: [NamedFile], inputs: [NamedFile]) throws(FileSafetyError) {
        let existingInputs = inputs.compactMap { f in FileIdentity(path: f.path).map { (f, $0) } }
        var seen: [(NamedFile, String)] = []
        for out in outputs {
            var s = stat()
            if stat(out.path, &s) == 0 {
                guard (s.st_mode & S_IFMT) == S_IFREG else {
                    throw FileSafetyError("\(out.flag) \(out.path): is \(fileKind(s.st_mode)), not a regular file; give the path of a file to write")
                }
                let id = FileIdentity(path: out.path)
                if let clash = existingInputs.first(where: { $0.1 == id }) {
                    let alias = clash.0.path == out.path ? "" : " (\(clash.0.path))"
                    throw FileSafetyError("\(out.flag) \(out.path) is the same file as \(clash.0.flag)\(alias); writing it would destroy the input: choose another path")
                }
            }
            let directory = directoryOf(out.path)
            var d = stat()
            guard stat(directory, &d) == 0, (d.st_mode & S_IFMT) == S_IFDIR else {
                throw FileSafetyError("\(out.flag) \(out.path): the directory \(directory) does not exist")
            }
            guard access(directory, W_OK) == 0 else {
                throw FileSafetyError("\(out.flag) \(out.path): the directory \(directory) is not writable (\(String(cString: strerror(errno))))")
            }
            let location = canonicalLocation(out.path)
            if let other = seen.first(where: { $0.1 == location }) {
                throw FileSafetyError("\(out.flag) \(out.path) and \(other.0.flag) \(other.0.path) name the same file; give each output its own path")
            }
            seen.append((out, location))
        }
    }

    /// The directory part of `path` ("." for a bare name).
    public static func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The real path of `path`'s directory joined with its last component: equal for two
    /// spellings of one location, whether or not a file is there yet.
    static func canonicalLocation(_ path: String) -> String {
        let directory = directoryOf(path)
        let name = path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
        guard let real = realpath(directory, nil) else { return path }
        defer { free(real) }
        return String(cString: real) + "/" + name
    }

    /// Opens `path` read-only without blocking (a FIFO's open would wait for a writer) and
    /// refuses anything but a regular file. The descriptor is returned in blocking mode.
    public static func openRegularFile(_ path: String) throws(GGUFError) -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .system("open", path: path) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = GGUFError.system("stat", path: path)
            close(fd)
            throw error
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw GGUFError(path: path, offset: nil, reason: .notARegularFile(kind: fileKind(info.st_mode)))
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return fd
    }

    /// The whole content of a regular file (at most `limit` bytes: a longer file is refused).
    public static func readRegularFile(_ path: String, limit: Int = 1 << 30) throws(GGUFError) -> [UInt8] {
        let fd = try openRegularFile(path)
        defer { close(fd) }
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("read", path: path)
            }
            if n == 0 { return out }
            guard out.count + n <= limit else {
                throw GGUFError(path: path, offset: nil, reason: .system(operation: "read", message: "the file is larger than \(limit) bytes"))
            }
            out += chunk[0..<n]
        }
    }

    /// Removes temporary files `<path>.tmp-<pid>` left by writes whose process has died
    /// (killed during a write: the rename never happened). Files of live processes stay.
    public static func removeStaleTemporaries(of path: String) {
        let directory = directoryOf(path)
        let base = path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
        let prefix = base + ".tmp-"
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        var stale: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard name.hasPrefix(prefix), let pid = pid_t(name.dropFirst(prefix.count)), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { stale.append(name) }
        }
        for name in stale { unlink(directory + "/" + name) }
    }
}
