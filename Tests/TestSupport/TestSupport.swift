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
