// Shared by the test targets: where the repository, its models and golden data are.

import Foundation

public enum Repository {
    /// The directory holding Package.swift, found from this source file's path.
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
                return url.path
            }
            url.deleteLastPathComponent()
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    public static func path(_ relative: String) -> String { root + "/" + relative }

    /// A golden file under Tests/Golden.
    public static func golden(_ name: String) -> String { path("Tests/Golden/" + name) }
}

public enum ReferenceModel {
    public static let path = Repository.path("models/SmolLM2-135M-Instruct.Q4_1.gguf")

    /// Whether tests on the real model run: when the file is there, and always under CI
    /// (CI=true), where a missing model must fail the run instead of skipping it.
    public static var enabled: Bool {
        FileManager.default.fileExists(atPath: path) || ProcessInfo.processInfo.environment["CI"] == "true"
    }
}

/// A fresh directory for one test's files.
public func makeTemporaryDirectory(_ name: String = "test") -> String {
    let path = FileManager.default.temporaryDirectory.path + "/edge-finetune-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

public enum Products {
    /// The directory of the built products (where the test bundle itself runs from).
    public static let directory: String = {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
    }()

    /// The edge-finetune executable built with the tests.
    public static let cli = directory + "/edge-finetune"
}

/// What a finished subprocess printed and how it ended.
public struct ProcessResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// Peak resident set of the child (bytes): the largest VmHWM read from /proc while it
    /// ran. (wait4's maxrss is not used: Linux carries it across exec, so a child started
    /// by a large test process would report the test process's size.)
    public var peakRSS: Int
}

/// Runs `executable` with `arguments` (posix_spawn, so that wait4 reports the child's
/// own peak RSS), collects its output and waits for it. `stdoutFile` / `stderrFile`
/// send that stream to a file instead (e.g. /dev/full); it then reads as empty.
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                       stdoutFile: String? = nil, stderrFile: String? = nil) throws -> ProcessResult {
    var outPipe: [Int32] = [0, 0]
    var errPipe: [Int32] = [0, 0]
    guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw POSIXError(.EMFILE) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let stdoutFile {
        posix_spawn_file_actions_addopen(&actions, 1, stdoutFile, O_WRONLY, 0)
    } else {
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    }
    if let stderrFile {
        posix_spawn_file_actions_addopen(&actions, 2, stderrFile, O_WRONLY, 0)
    } else {
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    }
    posix_spawn_file_actions_addclose(&actions, outPipe[0])
    posix_spawn_file_actions_addclose(&actions, errPipe[0])
    let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0)=\($1)" }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = env.map { strdup($0) } + [nil]
    defer {
        argv.forEach { free($0) }
        envp.forEach { free($0) }
    }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, envp)
    close(outPipe[1])
    close(errPipe[1])
    guard spawned == 0 else {
        close(outPipe[0])
        close(errPipe[0])
        throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .ENOENT)
    }
    // Drain both pipes until the child closes them.
    var out = [UInt8]()
    var err = [UInt8]()
    var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
    var open = 2
    var buffer = [UInt8](repeating: 0, count: 65536)
    var peak = 0
    func samplePeak() {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return }
        peak = max(peak, kb * 1024)
    }
    while open > 0 {
        _ = poll(&fds, 2, 5)
        samplePeak()
        for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
            let n = read(fds[i].fd, &buffer, buffer.count)
            if n > 0 {
                if i == 0 { out += buffer[0..<n] } else { err += buffer[0..<n] }
            } else {
                close(fds[i].fd)
                fds[i].fd = -1
                open -= 1
            }
        }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return ProcessResult(status: exitStatus, stdout: String(decoding: out, as: UTF8.self),
                         stderr: String(decoding: err, as: UTF8.self), peakRSS: peak)
}

/// Runs the CLI.
public func runCLI(_ arguments: [String], environment: [String: String]? = nil, stdoutFile: String? = nil,
                   stderrFile: String? = nil) throws -> ProcessResult {
    try runProcess(Products.cli, arguments, environment: environment, stdoutFile: stdoutFile, stderrFile: stderrFile)
}

/// SplitMix64: a small seeded generator, so a failing random case can be reproduced.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
