// Chat formatting in the model's own format; reference: llama.cpp's llm_chat_detect_template and
// llm_chat_apply_template (llama-chat.cpp), and the Jinja templates the files carry (`tokenizer.chat_template`).
//
// Jinja is not interpreted: the known families are recognised from the template's text, in llama.cpp's order, and
// written out directly. ChatML follows the file's Jinja template (Qwen's and SmolLM2's insert a default system
// message when the conversation has none; llama.cpp's built-in ChatML does not). Gemma and Llama 3 follow llama.cpp's
// built-in formats: content trimmed of ASCII white space, Gemma's system text folded into the next user turn (every
// system message, where Gemma 3's own template takes only a first one), and no BOS text (the tokenizer adds BOS).
//
// A file without a template: llama.cpp's common code falls back to ChatML (common_chat_templates_init). For a
// vocabulary without ChatML's markers that renders the markup as plain text, so here the fallback follows the
// vocabulary: Gemma's format when it has `<start_of_turn>` and `<end_of_turn>` (Gemma 3 270M ships without a
// template), ChatML when it has `<|im_start|>` and `<|im_end|>`, else a refusal.

/// Who speaks a message.
public enum ChatRole: String, Sendable, Codable, CaseIterable {
    case system, user, assistant
}

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: ChatRole
    public var content: String

    public init(role: ChatRole, content: String) {
        self.role = role
        self.content = content
    }
}

/// Why a conversation cannot be formatted.
public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    /// The model has no template and its vocabulary has no known chat markers.
    case noTemplate
    /// The template is not one of the supported families; `family` names what llama.cpp would take it for, if known.
    case unsupportedTemplate(family: String?)
    /// A conversation with no message.
    case emptyConversation

    static let plainTextHint = "pass the prompt as plain text without --chat, writing the model's chat markup yourself"

    public var description: String {
        switch self {
        case .noTemplate:
            return "the model has no tokenizer.chat_template and its vocabulary has no known chat markers; "
                + Self.plainTextHint + "."
        case .unsupportedTemplate(let family):
            let known = family.map { " (llama.cpp calls it '\($0)')" } ?? ""
            return "the model's chat template is not supported\(known); supported: ChatML, Gemma, Llama 3. "
                + "Otherwise " + Self.plainTextHint + "."
        case .emptyConversation:
            return "a conversation needs at least one message."
        }
    }
}

/// A conversation written out in a chat format, with where each message landed.
public struct RenderedChat: Sendable, Equatable {
    /// One message's place in `text`, in UTF-8 byte offsets.
    public struct Span: Sendable, Equatable {
        /// Index of the message in the conversation; nil for text the template adds (a default system message).
        public let message: Int?
        public let role: ChatRole
        /// The whole turn: its markup and content (for Gemma's folded system text, only that text).
        public let range: Range<Int>
        /// The content as written (Gemma and Llama 3 trim it).
        public let contentRange: Range<Int>
        /// For an assistant message: its content and the end-of-turn marker after it (`<|im_end|>`,
        /// `<end_of_turn>`, `<|eot_id|>`), what a model is trained to produce; nil for other roles.
        public let trainedRange: Range<Int>?
    }

    /// The formatted conversation, without BOS (the tokenizer adds it).
    public let text: String
    /// One span per message, in order, plus one for a default system message the template inserts.
    public let spans: [Span]
    /// Where the assistant's reply would begin (after the generation prompt, if added; else the end of `text`).
    public let replyStart: Int

    /// The tokens of `text` (special tokens parsed, BOS as the vocabulary says with `addSpecial`), and for each
    /// whether it belongs to an assistant message's `trainedRange`: its text starts there.
    ///
    /// The whole text is tokenized at once, so the ids are exactly those of `tokenizer.encode(text)`; the marks come
    /// from each token's start offset.
    public func tokens(_ tokenizer: Tokenizer, addSpecial: Bool = true) -> (ids: [Int32], trained: [Bool]) {
        let (ids, starts) = tokenizer.encodeWithOffsets(text, addSpecial: addSpecial, parseSpecial: true)
        let ranges = spans.compactMap(\.trainedRange)
        let trained = zip(ids, starts).enumerated().map { index, pair in
            // BOS starts at 0 like the first token of text, but is never trained
            !(index == 0 && addSpecial && tokenizer.addBOS && pair.0 == tokenizer.bosID)
                && ranges.contains { $0.contains(pair.1) }
        }
        return (ids, trained)
    }
}

/// A chat format recognised from `tokenizer.chat_template`.
public struct ChatTemplate: Sendable, Equatable {
    public enum Format: String, Sendable {
        /// `<|im_start|>role\ncontent<|im_end|>\n` (Qwen, SmolLM2).
        case chatML
        /// `<start_of_turn>user\ncontent<end_of_turn>\n`, assistant as "model" (Gemma).
        case gemma
        /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3).
        case llama3

        /// The family's name as people write it ("ChatML", "Gemma", "Llama 3").
        public var displayName: String {
            switch self {
            case .chatML: "ChatML"
            case .gemma: "Gemma"
            case .llama3: "Llama 3"
            }
        }
    }

    public let format: Format
    /// The system message the template inserts when the conversation has none (ChatML only).
    public let defaultSystem: String?

    public init(format: Format, defaultSystem: String? = nil) {
        self.format = format
        self.defaultSystem = defaultSystem
    }

    /// Recognises `template`, or, without one, picks the format the vocabulary's special tokens imply.
    ///
    /// - `hasToken`: whether the vocabulary has a token with exactly this text (e.g. `tokenizer.id(of:) != nil`).
    public init(template: String?, hasToken: (String) -> Bool = { _ in false }) throws(ChatTemplateError) {
        guard let template, !template.isEmpty else {
            if hasToken("<start_of_turn>") && hasToken("<end_of_turn>") {
                self.init(format: .gemma)
            } else if hasToken("<|im_start|>") && hasToken("<|im_end|>") {
                self.init(format: .chatML)
            } else {
                throw .noTemplate
            }
            return
        }
        let contains = { (marker: String) in template.contains(marker) }
        // llm_chat_detect_template's tests, in its order, for the families supported and those that would match first
        if contains("<|im_start|>") {
            if contains("<|im_sep|>") { throw .unsupportedTemplate(family: "phi4") }
            if contains("<end_of_utterance>") { throw .unsupportedTemplate(family: "smolvlm") }
            self.init(format: .chatML, defaultSystem: Self.defaultSystem(in: template))
        } else if template.hasPrefix("mistral") || contains("[INST]") {
            throw .unsupportedTemplate(family: "llama2 or mistral")
        } else if contains("<|assistant|>") || contains("[gMASK]") || contains("<|user|>") {
            throw .unsupportedTemplate(family: nil)
        } else if contains("<start_of_turn>") {
            self.init(format: .gemma)
        } else if contains("<|start_header_id|>") && contains("<|end_header_id|>") {
            self.init(format: .llama3)
        } else {
            throw .unsupportedTemplate(family: nil)
        }
    }

    /// The default system message of a ChatML template: the first Jinja string literal
    /// `'<|im_start|>system\n…<|im_end|>'` whose text is plain (no quote, brace or expression inside).
    static func defaultSystem(in template: String) -> String? {
        let bytes = Array(template.utf8)
        let start = Array("<|im_start|>system".utf8), end = Array("<|im_end|>".utf8)
        var i = 0
        while let found = firstIndex(of: start, in: bytes, from: i) {
            i = found + start.count
            // the newline after the role: written as "\n" in the literal, or as a real newline
            var contentStart = i
            if bytes[i...].starts(with: [0x5C, 0x6E]) { contentStart += 2 }
            else if bytes[i...].starts(with: [0x0A]) { contentStart += 1 }
            else { continue }
            guard let close = firstIndex(of: end, in: bytes, from: contentStart) else { return nil }
            let literal = bytes[contentStart..<close]
            if literal.contains(where: { [0x27, 0x22, 0x7B, 0x7D].contains($0) }) { continue }  // ' " { }
            return unescapeJinjaLiteral(String(decoding: literal, as: UTF8.self))
        }
        return nil
    }

    private static func firstIndex(of needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        var i = from
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0] && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    /// Jinja's string escapes (\n, \t, \\, \', \") undone.
    private static func unescapeJinjaLiteral(_ text: String) -> String {
        var out = ""
        var escaped = false
        for c in text {
            if escaped {
                switch c {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                default: out.append(c)
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }

    // MARK: Rendering

    /// The conversation in this format, ending after its last message or, with `addGenerationPrompt`, where the
    /// assistant's reply begins.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws(ChatTemplateError) -> RenderedChat {
        guard !messages.isEmpty else { throw .emptyConversation }
        var writer = Writer()
        switch format {
        case .chatML:
            // the template's default system message when the conversation does not start with one
            if messages[0].role != .system, let defaultSystem {
                writer.turn(message: nil, role: .system, prefix: "<|im_start|>system\n", content: defaultSystem,
                            suffix: "<|im_end|>", separator: "\n")
            }
            for (index, message) in messages.enumerated() {
                writer.turn(message: index, role: message.role, prefix: "<|im_start|>\(message.role.rawValue)\n",
                            content: message.content, suffix: "<|im_end|>", separator: "\n")
            }
            if addGenerationPrompt { writer.text += "<|im_start|>assistant\n" }
        case .gemma:
            // system text waits for the next user turn, trimmed, joined without separator as llama.cpp does
            var pendingSystem: [(index: Int, text: String)] = []
            for (index, message) in messages.enumerated() {
                if message.role == .system {
                    pendingSystem.append((index, Self.trimmed(message.content)))
                    continue
                }
                let role = message.role == .assistant ? "model" : message.role.rawValue
                let start = writer.text.utf8.count
                writer.text += "<start_of_turn>\(role)\n"
                if message.role != .assistant && !pendingSystem.map(\.text).joined().isEmpty {
                    for system in pendingSystem {
                        let from = writer.text.utf8.count
                        writer.text += system.text
                        let to = writer.text.utf8.count
                        writer.spans.append(RenderedChat.Span(message: system.index, role: .system, range: from..<to,
                                                              contentRange: from..<to, trainedRange: nil))
                    }
                    writer.text += "\n\n"
                    pendingSystem.removeAll()
                }
                writer.turn(message: index, role: message.role, prefix: "", content: Self.trimmed(message.content),
                            suffix: "<end_of_turn>", separator: "\n", start: start)
            }
            if addGenerationPrompt { writer.text += "<start_of_turn>model\n" }
        case .llama3:
            for (index, message) in messages.enumerated() {
                writer.turn(message: index, role: message.role,
                            prefix: "<|start_header_id|>\(message.role.rawValue)<|end_header_id|>\n\n",
                            content: Self.trimmed(message.content), suffix: "<|eot_id|>", separator: "")
            }
            if addGenerationPrompt { writer.text += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        }
        return RenderedChat(text: writer.text, spans: writer.spans.sorted { $0.range.lowerBound < $1.range.lowerBound },
                            replyStart: writer.text.utf8.count)
    }

    /// The text of a one-turn conversation ending where the assistant's reply begins.
    public func prompt(user: String, system: String? = nil) -> String {
        let messages = (system.map { [ChatMessage(role: .system, content: $0)] } ?? [])
            + [ChatMessage(role: .user, content: user)]
        // a non-empty conversation always renders
        return (try? render(messages, addGenerationPrompt: true).text) ?? ""
    }

    /// Text and spans as they are written.
    private struct Writer {
        var text = ""
        var spans: [RenderedChat.Span] = []

        /// Appends prefix, content, suffix and separator, recording the message's span.
        mutating func turn(message: Int?, role: ChatRole, prefix: String, content: String, suffix: String,
                           separator: String, start: Int? = nil) {
            let turnStart = start ?? text.utf8.count
            text += prefix
            let contentStart = text.utf8.count
            text += content
            let contentEnd = text.utf8.count
            text += suffix
            let suffixEnd = text.utf8.count
            text += separator
            spans.append(RenderedChat.Span(
                message: message, role: role, range: turnStart..<text.utf8.count,
                contentRange: contentStart..<contentEnd,
                trainedRange: role == .assistant ? contentStart..<suffixEnd : nil))
        }
    }

    /// `text` without leading and trailing ASCII white space (C's isspace), as llama.cpp's trim.
    static func trimmed(_ text: String) -> String {
        let bytes = Array(text.utf8)
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || (0x09...0x0D).contains($0) }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = bytes.lastIndex(where: { !isSpace($0) })!
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
