// Training and evaluation data: JSON Lines, one example per line, one of
//   {"text": "..."}                          loss on every token after the first
//   {"prompt": "...", "completion": "..."}   loss on the completion's tokens only
//   {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
//                                            a conversation (OpenAI's fine-tuning files, mlx-lm's chat
//                                            data), loss on the assistant turns only
// Text is tokenized with special tokens recognised (chat markup, and tokens added
// for textual inversion), and BOS/EOS added as the model's metadata asks.
//
// A conversation is written out in the model's own chat format (ChatTemplate: the file's
// tokenizer.chat_template, or the format its vocabulary implies), including what the
// template adds (Qwen's and SmolLM2's default system message), and tokenized whole. The
// loss covers, for every assistant message, the tokens of its content and of the
// end-of-turn marker after it (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`): what the model
// produces when it answers, so that it also learns to stop. It does not cover the role
// header (`<|im_start|>assistant\n`), which the generation prompt supplies, nor the newline
// the template writes after the marker. That is the span Hugging Face's assistant masks
// cover (`{% generation %}` markers: header outside, `<|im_end|>` inside, as TRL's
// assistant-only loss uses them); mlx-lm's `mask_prompt` trains only the last message,
// newline included. A token is trained when its text starts inside the span. An assistant
// message may carry OpenAI's `"weight": 0` to stay out of the loss (`1`, the default, keeps
// it in); tools and tool calls are refused.

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
    ///
    /// `chatTemplate`: the model's `tokenizer.chat_template` (nil when the file has none), which
    /// formats `messages` lines; it is only looked at when such a line comes.
    public static func load(path: String, tokenizer: Tokenizer, maxLength: Int,
                            chatTemplate: String? = nil) throws(ModelError) -> [Example] {
        let limit = lineByteLimit(tokenizer: tokenizer, maxLength: maxLength)
        var examples = [Example]()
        var chat = ChatFormatting(template: chatTemplate, tokenizer: tokenizer)
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
            examples.append(try example(object, path: path, line: line, tokenizer: tokenizer, maxLength: maxLength,
                                        chat: &chat))
        }
        guard !examples.isEmpty else {
            throw .data(path: path, line: nil, message: "no examples: the file is empty (expected JSON lines with \"text\", \"prompt\"/\"completion\" or \"messages\")")
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

    /// Tokenizes one parsed line; `chatTemplate` as in `load`.
    public static func example(_ object: [String: Any], path: String, line: Int, tokenizer: Tokenizer,
                               maxLength: Int, chatTemplate: String? = nil) throws(ModelError) -> Example {
        var chat = ChatFormatting(template: chatTemplate, tokenizer: tokenizer)
        return try example(object, path: path, line: line, tokenizer: tokenizer, maxLength: maxLength, chat: &chat)
    }

    static func example(_ object: [String: Any], path: String, line: Int, tokenizer: Tokenizer,
                        maxLength: Int, chat: inout ChatFormatting) throws(ModelError) -> Example {
        let tokens: [Int32]
        var targets: [Int32]
        if let messages = object["messages"] {
            if let other = ["text", "prompt", "completion"].first(where: { object[$0] != nil }) {
                throw .data(path: path, line: line, message: "the line has both \"messages\" and \"\(other)\"; give one kind of example per line")
            }
            if let tools = object["tools"] ?? object["functions"], !(tools is NSNull || (tools as? [Any])?.isEmpty == true) {
                throw .data(path: path, line: line, message: "the conversation declares tools; conversations with tools are not supported (remove \"tools\")")
            }
            let conversation = try Self.conversation(messages, path: path, line: line)
            let template: ChatTemplate
            do throws(ChatTemplateError) { template = try chat.resolve() } catch {
                throw .data(path: path, line: line, message: "a \"messages\" line needs the model's chat format: " + ChatFormatting.reason(error))
            }
            let rendered: RenderedChat
            do throws(ChatTemplateError) { rendered = try template.render(conversation.messages, addGenerationPrompt: false) } catch {
                throw .data(path: path, line: line, message: error.description)
            }
            // Assistant messages of weight 0 keep their text but leave the loss.
            let spans = rendered.spans.map { span -> RenderedChat.Span in
                guard let m = span.message, span.trainedRange != nil, !conversation.trained[m] else { return span }
                return RenderedChat.Span(message: m, role: span.role, range: span.range, contentRange: span.contentRange,
                                         trainedRange: nil)
            }
            let (ids, trained) = RenderedChat(text: rendered.text, spans: spans, replyStart: rendered.replyStart).tokens(tokenizer)
            tokens = ids
            // Position i scores the token after it when that token is trained.
            targets = (0..<ids.count).map { i in i + 1 < ids.count && trained[i + 1] ? ids[i + 1] : -1 }
            guard targets.contains(where: { $0 >= 0 }) else {
                throw .data(path: path, line: line, message: "the conversation has no assistant token to score once written in the \(template.format.displayName) format")
            }
        } else if let text = object["text"] {
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
            throw .data(path: path, line: line, message: "expected a \"text\" field, \"prompt\" and \"completion\" fields, or a \"messages\" array")
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

    /// The messages of a `messages` value, and for each whether it is trained (an assistant
    /// message without `"weight": 0`); every problem names the line and the message (1-based).
    static func conversation(_ value: Any, path: String, line: Int) throws(ModelError) -> (messages: [ChatMessage], trained: [Bool]) {
        func fail(_ message: String) -> ModelError { .data(path: path, line: line, message: message) }
        guard let array = value as? [Any] else {
            throw fail("\"messages\" must be an array of {\"role\", \"content\"} objects, not \(jsonKind(value))")
        }
        guard !array.isEmpty else { throw fail("\"messages\" is empty; a conversation needs at least one assistant message") }
        var messages: [ChatMessage] = []
        var trained: [Bool] = []
        let roles = ChatRole.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        for (i, item) in array.enumerated() {
            let n = "message \(i + 1)"
            guard let object = item as? [String: Any] else {
                throw fail("\(n) must be an object with \"role\" and \"content\", not \(jsonKind(item))")
            }
            guard let roleValue = object["role"] else { throw fail("\(n) has no \"role\"") }
            guard let roleText = roleValue as? String else { throw fail("\(n)'s \"role\" must be a string, not \(jsonKind(roleValue))") }
            guard let role = ChatRole(rawValue: roleText) else {
                let hint = roleText == "tool" || roleText == "function" ? " (tool messages are not supported)" : ""
                throw fail("\(n) has the unknown role \"\(roleText)\"; expected one of \(roles)\(hint)")
            }
            if object["tool_calls"] != nil || object["function_call"] != nil {
                throw fail("\(n) has tool calls; conversations with tools are not supported")
            }
            guard let contentValue = object["content"] else { throw fail("\(n) (\(roleText)) has no \"content\"") }
            guard let content = contentValue as? String else {
                throw fail("\(n)'s \"content\" must be a string, not \(jsonKind(contentValue))")
            }
            var weight = 1
            if let w = object["weight"] {
                guard role == .assistant else { throw fail("\(n) has a \"weight\", which only assistant messages take") }
                guard let number = w as? NSNumber, !isBoolean(number),
                      number.doubleValue == 0 || number.doubleValue == 1 else {
                    throw fail("\(n)'s \"weight\" must be 0 or 1")
                }
                weight = number.intValue
            }
            messages.append(ChatMessage(role: role, content: content))
            trained.append(role == .assistant && weight == 1)
        }
        guard messages.contains(where: { $0.role == .assistant }) else {
            throw fail("the conversation has no assistant message; the loss is on assistant messages only")
        }
        guard trained.contains(true) else { throw fail("every assistant message has \"weight\": 0; nothing to score") }
        return (messages, trained)
    }

    /// What a JSON value is, for messages: "a number", "an array", ...
    static func jsonKind(_ value: Any) -> String {
        switch value {
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        case is NSNull: return "null"
        case let n as NSNumber: return isBoolean(n) ? "a boolean" : "a number"
        default: return "\(type(of: value))"
        }
    }

    /// Whether JSONSerialization read `true` or `false` (type code "c", on Linux and Darwin alike).
    static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    private static func reason(_ error: Error) -> String {
        let ns = error as NSError
        return (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
    }
}


extension LlamaModel {
    /// The file's `tokenizer.chat_template`, nil when it has none (what `Dataset.load` takes).
    public var chatTemplateText: String? { file.metadata.string("tokenizer.chat_template") }
}

/// The model's chat format for `messages` lines, recognised once, on the first such line.
struct ChatFormatting {
    let text: String?
    let tokenizer: Tokenizer
    private var resolved: Result<ChatTemplate, ChatTemplateError>?

    init(template: String?, tokenizer: Tokenizer) {
        text = template
        self.tokenizer = tokenizer
    }

    mutating func resolve() throws(ChatTemplateError) -> ChatTemplate {
        if resolved == nil {
            do throws(ChatTemplateError) {
                let t = try ChatTemplate(template: text, hasToken: { [tokenizer] in tokenizer.id(of: $0) != nil })
                resolved = .success(t)
            } catch {
                resolved = .failure(error)
            }
        }
        return try resolved!.get()
    }

    /// Why a model has no chat format, said for data files rather than for --chat.
    static func reason(_ error: ChatTemplateError) -> String {
        switch error {
        case .noTemplate:
            return "the model has no tokenizer.chat_template and its vocabulary has no known chat markers; write the conversation as {\"prompt\", \"completion\"} in the model's own markup"
        case .unsupportedTemplate(let family):
            return "its chat template is not supported\(family.map { " (llama.cpp calls it '\($0)')" } ?? "") (supported: ChatML, Gemma, Llama 3); write the conversation as {\"prompt\", \"completion\"} in the model's own markup"
        case .emptyConversation:
            return error.description
        }
    }
}
