// Committed Python reference scripts run by the tests: llama.cpp through llama-cpp-python
// and gguf-py, when they are installed (under CI=true they must be: a missing package then
// fails the test instead of skipping it).

import Foundation

public enum PythonReference {
    /// Whether llama-cpp-python and gguf-py are importable, or CI=true.
    public static let llamaCppAvailable: Bool = {
        ProcessInfo.processInfo.environment["CI"] == "true"
            || ((try? run(["-c", "import llama_cpp, gguf"]))?.status == 0)
    }()

    /// Runs `python3 ARGUMENTS` in the repository root (script paths relative to it).
    public static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> ProcessResult {
        var env = environment ?? ProcessInfo.processInfo.environment
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        let args = arguments.enumerated().map { i, a in
            i == 0 && a.hasSuffix(".py") && !a.hasPrefix("/") ? Repository.path(a) : a
        }
        return try runProcess("/usr/bin/env", ["python3"] + args, environment: env)
    }
}
