import Foundation
import GGUF
import TestSupport
import Testing

/// Runs a Python script of the repository and returns its standard output.
func runPython(_ arguments: [String]) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3"] + arguments
    process.currentDirectoryURL = URL(fileURLWithPath: Repository.root)
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw PythonFailure(message: String(decoding: errors, as: UTF8.self))
    }
    return data
}

struct PythonFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { "python3 failed: \(message)" }
}

/// Whether the Python `gguf` package is importable (CI installs it; elsewhere it may be absent).
let ggufPyAvailable: Bool = {
    ProcessInfo.processInfo.environment["CI"] == "true" || (try? runPython(["-c", "import gguf"])) != nil
}()

/// What a GGUF value looks like after a trip through gguf-py and JSON.
private func jsonForm(_ v: GGUFValue) -> Any {
    switch v {
    case .string(let s): return s
    case .bool(let b): return b
    case .float32(let f): return f.isFinite ? Double(f) : "\(Double(f))"
    case .float64(let f): return f.isFinite ? f : "\(f)"
    case .array(let a): return jsonForm(a)
    default: return v.intValue!
    }
}

private func jsonForm(_ a: GGUFArray) -> Any {
    switch a {
    case .string(let xs): return xs
    case .bool(let xs): return xs
    case .float32(let xs): return xs.map { $0.isFinite ? Double($0) as Any : "\(Double($0))" }
    case .float64(let xs): return xs.map { $0.isFinite ? $0 as Any : "\($0)" }
    case .array(let xs): return xs.map(jsonForm)
    default: return a.intValues!
    }
}

private func same(_ a: Any, _ b: Any) -> Bool {
    switch (a, b) {
    case (let x as [Any], let y as [Any]): return x.count == y.count && zip(x, y).allSatisfy(same)
    case (let x as String, let y as String): return x == y
    case (let x as Bool, let y as Bool): return x == y
    case (let x as NSNumber, let y as NSNumber): return x.doubleValue == y.doubleValue
    default: return false
    }
}

@Suite struct GGUFPyInteropTests {
    /// Files our writer produces load in gguf-py with the same metadata, tensor shapes,
    /// types and bytes.
    @Test(.enabled(if: ggufPyAvailable, "the Python gguf package is not installed"))
    func writtenFilesLoadInGGUFPy() throws {
        let w = sampleWriter()
        let path = temporaryPath("gguf-py-check.gguf")
        try w.write(to: path)
        let dump = try JSONSerialization.jsonObject(with: runPython(["scripts/gguf_py_dump.py", path])) as! [String: Any]
        #expect(dump["version"] as? Int == 3)
        let metadata = dump["metadata"] as! [String: [String: Any]]
        #expect(Set(metadata.keys) == Set(w.metadata.keys))
        for (key, value) in w.metadata {
            guard let theirs = metadata[key] else { continue }
            #expect(theirs["type"] as? String == value.type.description, "type of \(key)")
            // gguf-py's Field.contents() flattens arrays of arrays, so only their type is
            // compared; every field after them still parsing proves their encoding.
            if case .array(.array) = value { continue }
            #expect(same(jsonForm(value), theirs["value"]!), "value of \(key): \(theirs["value"]!)")
        }
        let tensors = dump["tensors"] as! [[String: Any]]
        #expect(tensors.map { $0["name"] as! String } == w.tensors.map(\.info.name))
        let file = try GGUFFile(path: path)
        for (theirs, ours) in zip(tensors, file.tensors) {
            #expect(theirs["type"] as? String == ours.type.name)
            #expect(theirs["shape"] as? [Int] == ours.shape)
            #expect(theirs["sha256"] as? String == SHA256.hex(file.bytes(of: ours)))
        }
    }
}
