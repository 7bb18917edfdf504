import Foundation
import GGUF
import TestSupport
import Testing

/// The shared checks on a command's files: outputs never destroy inputs, non-regular
/// files are refused without blocking, stale temporaries are cleaned, tensors never overlap.
@Suite struct FileSafetyTests {
    func file(_ dir: String, _ name: String, _ text: String = "x") -> String {
        let path = dir + "/" + name
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    func refusal(_ outputs: [NamedFile], _ inputs: [NamedFile]) -> String? {
        do {
            try FileSafety.check(outputs: outputs, inputs: inputs)
            return nil
        } catch {
            return error.description
        }
    }

    /// The same file under another spelling, a hard link or a symbolic link is still the input.
    @Test func anOutputThatIsAnInputIsRefused() throws {
        let dir = makeTemporaryDirectory("safety")
        let model = file(dir, "m.gguf")
        try FileManager.default.linkItem(atPath: model, toPath: dir + "/hard.gguf")
        try FileManager.default.createSymbolicLink(atPath: dir + "/soft.gguf", withDestinationPath: model)
        let inputs = [NamedFile("--model", model), NamedFile("--data", file(dir, "d.jsonl"))]
        for alias in [model, dir + "/./m.gguf", dir + "/../" + (dir as NSString).lastPathComponent + "/m.gguf",
                      dir + "/hard.gguf", dir + "/soft.gguf"] {
            let message = refusal([NamedFile("--out", alias)], inputs)
            #expect(message?.contains("--out") == true && message?.contains("same file as --model") == true, "\(alias): \(String(describing: message))")
        }
        #expect(refusal([NamedFile("--log-json", dir + "/d.jsonl")], inputs)?.contains("same file as --data") == true)
        // A new file, or an existing output that is no input, is fine.
        #expect(refusal([NamedFile("--out", dir + "/new.gguf"), NamedFile("--log-json", file(dir, "old.jsonl"))], inputs) == nil)
        // Two outputs at one location.
        #expect(refusal([NamedFile("--out", dir + "/a.gguf"), NamedFile("--log-json", dir + "/./a.gguf")], inputs)?.contains("name the same file") == true)
    }

    @Test func nonRegularOrUnwritableDestinationsAreRefused() throws {
        let dir = makeTemporaryDirectory("safety2")
        #expect(refusal([NamedFile("--out", "/dev/null")], [])?.contains("character device") == true)
        #expect(refusal([NamedFile("--out", dir)], [])?.contains("directory, not a regular file") == true)
        #expect(refusal([NamedFile("--out", dir + "/missing/a.gguf")], [])?.contains("does not exist") == true)
        if getuid() != 0 {  // root may write anywhere
            try FileManager.default.createDirectory(atPath: dir + "/ro", withIntermediateDirectories: false)
            chmod(dir + "/ro", 0o500)
            #expect(refusal([NamedFile("--out", dir + "/ro/a.gguf")], [])?.contains("not writable") == true)
        }
        // The writer itself refuses to rename over a device, whoever calls it.
        do {
            try writeAtomically(path: "/dev/null") { (out: inout FileOutput) throws(GGUFError) in try out.write([1, 2, 3]) }
            Issue.record("wrote over /dev/null")
        } catch {
            #expect(error.reason == .notARegularFile(kind: "a character device"))
        }
        var s = stat()
        #expect(stat("/dev/null", &s) == 0 && (s.st_mode & S_IFMT) == S_IFCHR)
    }

    /// A FIFO (or a directory) given as a model is refused at once; open never blocks on it
    /// (if it did, this test would never return: no writer ever opens the FIFO). No time
    /// limit: in the full suite a 60 s limit failed here although the test takes a
    /// millisecond alone, apparently while it waited behind the real-model tests.
    @Test func fifosAndDirectoriesAreRefusedWithoutBlocking() throws {
        let dir = makeTemporaryDirectory("fifo")
        #expect(mkfifo(dir + "/pipe", 0o644) == 0)
        for path in [dir + "/pipe", dir] {
            do {
                _ = try GGUFFile(path: path)
                Issue.record("\(path) loaded")
            } catch {
                guard case .notARegularFile = error.reason else { Issue.record("\(error)"); continue }
                #expect(error.description.contains("not a regular file"))
            }
        }
    }

    /// Temporary files of dead writers are removed by the next write to the same place;
    /// a live process's are left alone.
    @Test func staleTemporariesOfDeadProcessesAreRemoved() throws {
        let dir = makeTemporaryDirectory("stale")
        let target = dir + "/a.gguf"
        // No process has a pid above the kernel's maximum (at most 2^22).
        let dead = file(dir, "a.gguf.tmp-99999999", String(repeating: "x", count: 1000))
        let alive = file(dir, "a.gguf.tmp-\(getppid())")
        let other = file(dir, "b.gguf.tmp-99999999")
        try sampleWriter().write(to: target)
        #expect(!FileManager.default.fileExists(atPath: dead))
        #expect(FileManager.default.fileExists(atPath: alive))
        #expect(FileManager.default.fileExists(atPath: other), "only temporaries of the file being written are touched")
        _ = try GGUFFile(path: target)
    }

    /// Two tensors whose bytes overlap: the layout written by hand, as GGUFFormat.swift documents it.
    @Test func overlappingTensorDataIsRefused() throws {
        func gguf(secondOffset: UInt64) -> [UInt8] {
            var b = [UInt8]()
            func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
            func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
            func string(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
            u32(0x4655_4747); u32(3); u64(2); u64(0)
            // a: F32 (16), 64 bytes at 0; b: F32 (8), 32 bytes at `secondOffset`.
            for (name, count, offset) in [("a", UInt64(16), UInt64(0)), ("b", 8, secondOffset)] {
                string(name); u32(1); u64(count); u32(0); u64(offset)
            }
            while b.count % 32 != 0 { b.append(0) }
            b += [UInt8](repeating: 0x3F, count: 96)
            return b
        }
        let dir = makeTemporaryDirectory("overlap")
        FileManager.default.createFile(atPath: dir + "/ok.gguf", contents: Data(gguf(secondOffset: 64)))
        #expect(try GGUFFile(path: dir + "/ok.gguf").tensors.count == 2)
        FileManager.default.createFile(atPath: dir + "/bad.gguf", contents: Data(gguf(secondOffset: 32)))
        do {
            _ = try GGUFFile(path: dir + "/bad.gguf")
            Issue.record("overlapping tensors loaded")
        } catch {
            #expect(error.reason == .overlappingTensors(first: "a", second: "b"), "\(error)")
        }
    }
}
