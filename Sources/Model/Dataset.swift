// Training and evaluation data: JSON Lines, one example per line, either
//   {"text": "..."}                          loss on every token after the first
//   {"prompt": "...", "completion": "..."}   loss on the completion's tokens only
// Text is tokenized with special tokens recognised (chat markup, and tokens added
// for textual inversion), and BOS/EOS added as the model's metadata asks.

import Foundation
import GGUF
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One tokenized example.
public struct Example: Sendable, Equatable {
    public var tokens: [Int32]
    /// For each position, the next token the loss scores there, or −1 for none.
    public var targets: [Int32]
    /// Line of the data file it came from (1-based).
    public var line: Int
    /// A teacher's distributions at the scored positions (distillation), when set: the loss
    /// is then the cross-entropy to them instead of the NLL of `targets`.
    public var soft: [SoftTarget?]?

    public init(tokens: [Int32], targets: [Int32], line: Int, soft: [SoftTarget?]? = nil) {
        self.tokens = tokens
        self.targets = targets
        self.line = line
        self.soft = soft
    }

    /// Positions that carry a loss.
    public var scoredCount: Int { targets.filter { $0 >= 0 }.count }
}

public enum Dataset {
    /// Reads and tokenizes a JSONL file; every problem names the file and line. Lines end
    /// with LF or CRLF. The file is read line by line, and a line longer than any example of
    /// `maxLength` tokens could be is refused as its bytes arrive, before it is parsed.
    public static func load(path: String, tokenizer: Tokenizer, maxLength: Int) throws(ModelError) -> [Example] {
        let limit = lineByteLimit(tokenizer: tokenizer, maxLength: maxLength)
        var examples = [Example]()
        try forEachLine(path: path, limit: limit, maxLength: maxLength) { (line: Int, bytes: ArraySlice<UInt8>) throws(ModelError) in
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw .data(path: path, line: line, message: "the line is not valid UTF-8")
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { return }
            let object: [String: Any]
            do {
                guard let o = try JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                    throw ModelError.data(path: path, line: line, message: "expected a JSON object")
                }
                object = o
            } catch let e as ModelError {
                throw e
            } catch {
                throw .data(path: path, line: line, message: "malformed JSON (\(Self.reason(error)))")
            }
            examples.append(try example(object, path: path, line: line, tokenizer: tokenizer, maxLength: maxLength))
        }
        guard !examples.isEmpty else {
            throw .data(path: path, line: nil, message: "no examples: the file is empty (expected JSON lines with \"text\" or \"prompt\"/\"completion\")")
        }
        return examples
    }

    /// The most bytes a line holding an example of `maxLength` tokens can have: each token
    /// covers at most the longest vocabulary piece's bytes, JSON escapes at most 6 bytes per
    /// byte of text, and 64 KiB more for keys, spacing and other fields.
    public static func lineByteLimit(tokenizer: Tokenizer, maxLength: Int) -> Int {
        let longestPiece = max(16, tokenizer.vocabulary.tokens.lazy.map(\.utf8.count).max() ?? 16)
        let (tokens, o1) = max(maxLength, 0).addingReportingOverflow(2)
        let (bytes, o2) = tokens.multipliedReportingOverflow(by: 6 * longestPiece)
        return o1 || o2 ? Int.max : bytes + 65536
    }

    /// Calls `body` with each line's bytes (without LF or CRLF) and its 1-based number.
    static func forEachLine(path: String, limit: Int, maxLength: Int,
                            _ body: (Int, ArraySlice<UInt8>) throws(ModelError) -> Void) throws(ModelError) {
        let fd: Int32
        do { fd = try FileSafety.openRegularFile(path) } catch {
            throw .data(path: path, line: nil, message: "cannot read the file: \(error.description)")
        }
        defer { close(fd) }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var current = [UInt8]()
        var line = 1
        func emit() throws(ModelError) {
            var end = current.endIndex
            if end > 0 && current[end - 1] == 0x0D { end -= 1 }
            try body(line, current[0..<end])
            current.removeAll(keepingCapacity: current.count <= 1 << 20)
            line += 1
        }
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .data(path: path, line: line, message: "cannot read the file (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            var start = 0
            for i in 0..<n where chunk[i] == 0x0A {
                current += chunk[start..<i]
                try checkLength(current.count, limit: limit, path: path, line: line, maxLength: maxLength)
                try emit()
                start = i + 1
            }
            current += chunk[start..<n]
            try checkLength(current.count, limit: limit, path: path, line: line, maxLength: maxLength)
        }
        if !current.isEmpty { try emit() }
    }

    private static func checkLength(_ count: Int, limit: Int, path: String, line: Int, maxLength: Int) throws(ModelError) {
        guard count <= limit else {
            throw .data(path: path, line: line,
                        message: "the line is longer than \(limit) bytes, more than any example of at most \(maxLength) tokens can be; shorten it or raise --max-length")
        }
    }

    /// Tokenizes one parsed line.
    public static func example(_ object: [String: Any], path: String, line: Int, tokenizer: Tokenizer,
                               maxLength: Int) throws(ModelError) -> Example {
        let tokens: [Int32]
        var targets: [Int32]
        if let text = object["text"] {
            guard let text = text as? String else { throw .data(path: path, line: line, message: "\"text\" must be a string") }
            tokens = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
            targets = tokens.count > 1 ? Array(tokens.dropFirst()) + [-1] : [-1]
        } else if let prompt = object["prompt"], let completion = object["completion"] {
            guard let prompt = prompt as? String, let completion = completion as? String else {
                throw .data(path: path, line: line, message: "\"prompt\" and \"completion\" must be strings")
            }
            let p = tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
            let c = tokenizer.encode(completion, addSpecial: false, parseSpecial: true)
            guard !c.isEmpty else { throw .data(path: path, line: line, message: "the completion is empty") }
            tokens = p + c
            targets = Array(repeating: -1, count: tokens.count)
            for i in 0..<(tokens.count - 1) where i + 1 >= p.count { targets[i] = tokens[i + 1] }
        } else {
            throw .data(path: path, line: line, message: "expected a \"text\" field, or \"prompt\" and \"completion\" fields")
        }
        guard targets.contains(where: { $0 >= 0 }) else {
            throw .data(path: path, line: line, message: "the example has \(tokens.count) token(s); it needs at least one token to predict")
        }
        guard tokens.count <= maxLength else {
            throw .data(path: path, line: line,
                        message: "the example has \(tokens.count) tokens, more than the maximum length \(maxLength); shorten it or raise --max-length")
        }
        return Example(tokens: tokens, targets: targets, line: line)
    }

    private static func reason(_ error: Error) -> String {
        let ns = error as NSError
        return (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
    }
}
