// Small helpers for human-readable output.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func megabytes(_ bytes: Int) -> String {
    String(format: "%.1f MB", Double(bytes) / 1_000_000)
}

func fixed(_ x: Double, _ digits: Int = 4) -> String {
    String(format: "%.\(digits)f", x)
}

/// Left-aligned columns separated by two spaces.
func table(_ rows: [[String]]) -> String {
    guard let width = rows.map(\.count).max() else { return "" }
    var widths = [Int](repeating: 0, count: width)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
        r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}

/// JSON text of a value made of dictionaries, arrays, strings, booleans, integers and
/// floating-point numbers (keys sorted). A NaN or an infinity is written as null: the text
/// stays valid JSON whatever the numbers are (as `--help` of the JSON options says).
func jsonText(_ value: Any) -> String {
    var out = ""
    appendJSON(value, to: &out)
    return out
}

private func appendJSON(_ value: Any, to out: inout String) {
    switch value {
    case let s as String: appendJSONString(s, to: &out)
    case let b as Bool: out += b ? "true" : "false"
    case let i as Int: out += String(i)
    case let i as Int32: out += String(i)
    case let i as Int64: out += String(i)
    case let i as UInt64: out += String(i)
    case let i as UInt32: out += String(i)
    case let d as Double: out += d.isFinite ? "\(d)" : "null"
    case let f as Float: out += f.isFinite ? "\(Double(f))" : "null"
    case let o as [String: Any]:
        out += "{"
        for (i, key) in o.keys.sorted().enumerated() {
            if i > 0 { out += "," }
            appendJSONString(key, to: &out)
            out += ":"
            appendJSON(o[key]!, to: &out)
        }
        out += "}"
    case let a as [Any]:
        out += "["
        for (i, element) in a.enumerated() {
            if i > 0 { out += "," }
            appendJSON(element, to: &out)
        }
        out += "]"
    default:
        // NSNull, nil, and anything without a JSON form.
        out += "null"
    }
}

private func appendJSONString(_ s: String, to out: inout String) {
    out += "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
        default: out.unicodeScalars.append(scalar)
        }
    }
    out += "\""
}

/// Writes to standard error (a failure is remembered: see `Console`).
func warn(_ message: String) {
    Console.writeError(message + "\n")
}

/// Standard output and error as the commands write them: through stdio, flushed, with
/// failures (a full disk, a closed pipe) remembered. SIGPIPE is ignored, so a closed pipe
/// is an error like any other; when the program ends after output was lost it says so in
/// one line and exits with status 74 (EX_IOERR) instead of dying of a signal or exiting 0.
enum Console {
    /// Exit status when standard output or standard error could not be written.
    static let ioErrorStatus: Int32 = 74
    nonisolated(unsafe) private static var reported = false

    static func install() {
        signal(SIGPIPE, SIG_IGN)
        atexit { Console.finish() }
    }

    /// Writes `text` to standard output now; throws when it could not be written.
    static func writeOutput(_ text: String) throws {
        guard fputs(text, stdout) >= 0, fflush(stdout) == 0 else {
            let reason = String(cString: strerror(errno))
            reported = true
            throw ValidationErrorText("cannot write to standard output: \(reason)")
        }
    }

    /// Writes `text` to standard error; a failure is only remembered (there is nowhere to report it).
    static func writeError(_ text: String) {
        _ = fputs(text, stderr)
        _ = fflush(stderr)
    }

    /// At exit: flush, and turn lost output into one line and status 74.
    static func finish() {
        let flushed = fflush(stdout) == 0
        let reason = String(cString: strerror(errno))
        if !flushed || ferror(stdout) != 0 {
            if !reported { _ = fputs("edge-finetune: cannot write to standard output: \(flushed ? "output was lost" : reason)\n", stderr) }
            _ = fflush(stderr)
            _exit(ioErrorStatus)
        }
        if fflush(stderr) != 0 || ferror(stderr) != 0 { _exit(ioErrorStatus) }
    }
}
