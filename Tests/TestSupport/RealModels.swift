// The Q4_K_M files people actually use, fetched by `scripts/setup --all` (never committed).

import Foundation

/// One real model file of the tests.
public struct RealModel: Sendable, CustomStringConvertible {
    public let name: String
    public let path: String
    public let sha256: String

    /// Whether its tests run: when the file is there, and always under CI (CI=true), where a
    /// missing file must fail the run instead of skipping its tests.
    public var enabled: Bool {
        FileManager.default.fileExists(atPath: path) || ProcessInfo.processInfo.environment["CI"] == "true"
    }

    public var description: String { name }

    /// Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2; Q5_0, Q4_K, Q6_K, Q8_0 and F32 tensors).
    public static let qwen05 = RealModel(
        name: "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M",
        path: Repository.path("models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"),
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
    /// Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2; Q4_K, Q6_K and F32 tensors).
    public static let qwen15 = RealModel(
        name: "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M",
        path: Repository.path("models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"),
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
    /// Gemma 3 270M Q4_K_M (gemma3; Q5_0, Q4_K, Q6_K, Q8_0 and F32 tensors).
    public static let gemma270 = RealModel(
        name: "gemma-3-270m.Q4_K_M",
        path: Repository.path("models/gemma-3-270m.Q4_K_M.gguf"),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")

    public static let all: [RealModel] = [qwen05, qwen15, gemma270]
}
