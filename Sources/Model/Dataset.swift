// Training and evaluation data: JSON Lines, one example per line, either
//   {"text": "..."}                          loss on every token after the first
//   {"prompt": "...", "completion": "..."}   loss on the completion's tokens only
// Text is tokenized with special tokens recognised (chat markup, and tokens added
// for textual inversion), and BOS/EOS added as the model's metadata asks.

import Foundation

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
    /// Reads and tokenizes a JSONL file; every problem names the file and line.
    public static func load(path: String, tokenizer: Tokenizer, maxLength: Int) throws(ModelError) -> [Example] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .data(path: path, line: nil, message: "cannot read the file (does it exist?)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw .data(path: path, line: nil, message: "the file is not valid UTF-8")
        }
        var examples = [Example]()
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = index + 1
            let trimmed = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
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
