// Chat formats against their references: the files' own Jinja templates rendered by jinja2, and llama.cpp's built-in
// formats (Tests/Golden/chat-templates.json, written by scripts/reference/tokenizer_golden.py).

import Foundation
import GGUF
import Testing
import TestSupport
@testable import Model

/// One conversation rendered by a reference.
struct ChatGoldenRendering: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let messages: [ChatMessage]
    let addGenerationPrompt: Bool
    let rendered: String
    /// The template's source (set after decoding).
    var source = ""
    /// The Jinja template, or nil for a llama.cpp built-in format.
    var template: String?
    /// The llama.cpp built-in format's name, or nil.
    var builtin: String?

    enum CodingKeys: String, CodingKey {
        case name, messages, rendered
        case addGenerationPrompt = "add_generation_prompt"
    }

    var testDescription: String { "\(source): \(name)\(addGenerationPrompt ? " + generation prompt" : "")" }
}

enum ChatGolden {
    private struct File: Decodable {
        struct Template: Decodable {
            let source: String
            let template: String?
            let builtin: String?
            let renderings: [ChatGoldenRendering]
        }
        let templates: [Template]
    }

    static let renderings: [ChatGoldenRendering] = {
        guard let data = FileManager.default.contents(atPath: Repository.golden("chat-templates.json")),
              let file = try? JSONDecoder().decode(File.self, from: data) else { return [] }
        return file.templates.flatMap { template in
            template.renderings.map {
                var r = $0
                r.source = template.source
                r.template = template.template
                r.builtin = template.builtin
                return r
            }
        }
    }()

    /// The template a rendering checks: recognised from the Jinja text, or the built-in format by name.
    static func template(for rendering: ChatGoldenRendering) throws -> ChatTemplate {
        if let template = rendering.template { return try ChatTemplate(template: template) }
        switch rendering.builtin {
        case "gemma": return ChatTemplate(format: .gemma)
        case "llama3": return ChatTemplate(format: .llama3)
        default: return ChatTemplate(format: .chatML)
        }
    }
}

@Suite("Chat templates")
struct ChatTemplateTests {
    @Test("the golden file covers the files' templates and llama.cpp's built-in formats")
    func coverage() {
        let sources = Set(ChatGolden.renderings.map(\.source))
        #expect(sources.count == 6, "\(sources)")
        #expect(ChatGolden.renderings.count >= 60)
    }

    @Test("rendering identical to the reference", arguments: ChatGolden.renderings)
    func golden(_ golden: ChatGoldenRendering) throws {
        let template = try ChatGolden.template(for: golden)
        let rendered = try template.render(golden.messages, addGenerationPrompt: golden.addGenerationPrompt)
        #expect(utf8(rendered.text) == utf8(golden.rendered))
        if golden.addGenerationPrompt && golden.messages.last?.role != .assistant {
            #expect(utf8(template.prompt(user: "x")).count > 0)
        }
    }

    @Test("every message's span holds its content; assistant spans end with the end-of-turn marker",
          arguments: ChatGolden.renderings)
    func spans(_ golden: ChatGoldenRendering) throws {
        let template = try ChatGolden.template(for: golden)
        let rendered = try template.render(golden.messages, addGenerationPrompt: golden.addGenerationPrompt)
        let bytes = utf8(rendered.text)
        let text = { (range: Range<Int>) in String(decoding: bytes[range], as: UTF8.self) }
        let trims = template.format != .chatML
        for span in rendered.spans {
            guard let index = span.message else {
                #expect(span.role == .system && text(span.contentRange) == template.defaultSystem)
                continue
            }
            let content = golden.messages[index].content
            #expect(utf8(text(span.contentRange)) == utf8(trims ? ChatTemplate.trimmed(content) : content))
            #expect(span.range.lowerBound <= span.contentRange.lowerBound)
            #expect(span.range.upperBound >= span.contentRange.upperBound)
            if let trained = span.trainedRange {
                #expect(span.role == .assistant)
                let marker = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>"].first { text(trained).hasSuffix($0) }
                #expect(marker != nil)
                #expect(trained.lowerBound == span.contentRange.lowerBound)
            } else {
                #expect(span.role != .assistant)
            }
        }
        let empty = golden.messages.filter { $0.role == .system && ChatTemplate.trimmed($0.content).isEmpty }
        #expect(rendered.spans.filter { $0.message != nil }.count + empty.count == golden.messages.count
                || template.format == .gemma)
        #expect(rendered.replyStart == bytes.count)
    }

    @Test("templates are recognised as llama.cpp recognises them, with ChatML's default system message")
    func detection() throws {
        let qwen = ChatGolden.renderings.first { $0.source.hasPrefix("Qwen2.5-Coder-0.5B") }?.template
        let smol = ChatGolden.renderings.first { $0.source.hasPrefix("SmolLM2") }?.template
        let qwenTemplate = try ChatTemplate(template: try #require(qwen))
        #expect(qwenTemplate.format == .chatML)
        #expect(qwenTemplate.defaultSystem == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        let smolTemplate = try ChatTemplate(template: try #require(smol))
        #expect(smolTemplate.defaultSystem == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        #expect(try ChatTemplate(template: "{{ '<start_of_turn>' + role }}").format == .gemma)
        #expect(try ChatTemplate(
            template: "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}").format == .llama3)
    }

    @Test("an unknown template is refused with a message saying how to pass a plain prompt",
          arguments: ["{{ '[INST] ' + content + ' [/INST]' }}", "{{ 'USER: ' + content }}",
                      "<|im_start|>{{ role }}<|im_sep|>"])
    func unknownTemplate(_ template: String) {
        let error = #expect(throws: ChatTemplateError.self) { try ChatTemplate(template: template) }
        #expect(error?.description.contains("without --chat") == true)
    }

    @Test("without a template: Gemma's format when the vocabulary has <start_of_turn>, else ChatML's markers, else a refusal")
    func fallback() throws {
        #expect(try ChatTemplate(template: nil, hasToken: { ["<start_of_turn>", "<end_of_turn>"].contains($0) }).format
                == .gemma)
        #expect(try ChatTemplate(template: "", hasToken: { ["<|im_start|>", "<|im_end|>"].contains($0) }).format
                == .chatML)
        #expect(throws: ChatTemplateError.noTemplate) { try ChatTemplate(template: nil) }
        #expect(ChatTemplateError.noTemplate.description.contains("without --chat"))
        #expect(throws: ChatTemplateError.emptyConversation) {
            try ChatTemplate(format: .chatML).render([], addGenerationPrompt: true)
        }
    }

    @Test("Gemma 3 270M (no template in the file) gets Gemma's format from its vocabulary", .requiresReal(.gemma270))
    func gemmaFile() throws {
        let file = try GGUFFile(path: RealModel.gemma270.path)
        #expect(file.metadata.string("tokenizer.chat_template") == nil)
        let tokenizer = try RealVocabularies.tokenizer(.gemma270)
        let template = try ChatTemplate(template: nil, hasToken: { tokenizer.id(of: $0) != nil })
        #expect(template.format == .gemma)
        #expect(template.prompt(user: " Hi ", system: "Be brief.")
                == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
    }

    @Test("assistant tokens are marked: they decode to each reply and its end-of-turn marker",
          .requiresReal(.qwen05, .gemma270))
    func trainedTokens() throws {
        let messages = [ChatMessage(role: .system, content: "Be brief."),
                        ChatMessage(role: .user, content: "Capital of France?"),
                        ChatMessage(role: .assistant, content: "Paris."),
                        ChatMessage(role: .user, content: "And Italy?"),
                        ChatMessage(role: .assistant, content: "Rome, of course.")]
        let cases: [(Tokenizer, ChatTemplate, String)] = [
            (try RealVocabularies.tokenizer(.qwen05), ChatTemplate(format: .chatML), "<|im_end|>"),
            (try RealVocabularies.tokenizer(.gemma270), ChatTemplate(format: .gemma), "<end_of_turn>"),
        ]
        for (tokenizer, template, marker) in cases {
            let rendered = try template.render(messages, addGenerationPrompt: false)
            let (ids, trained) = rendered.tokens(tokenizer)
            #expect(ids == tokenizer.encode(rendered.text, addSpecial: true, parseSpecial: true))
            // trained tokens form two runs, one per assistant message
            var runs: [[Int32]] = []
            for (index, id) in ids.enumerated() where trained[index] {
                if index > 0 && trained[index - 1] { runs[runs.count - 1].append(id) } else { runs.append([id]) }
            }
            #expect(runs.map { tokenizer.decode($0, renderSpecial: true) } == ["Paris." + marker, "Rome, of course." + marker])
        }
    }
}

@Suite("Token offsets")
struct TokenOffsetTests {
    /// The golden strings of a vocabulary without a space prefix: each token's piece is the text from its start.
    static let cases = ((RealVocabularies.goldenGemma?.cases ?? []) + (RealVocabularies.goldenQwen?.cases ?? []))
        .filter { !$0.addSpecial }

    @Test("each token's text starts where encodeWithOffsets says", .requiresReal(.qwen05, .gemma270),
          arguments: cases)
    func offsets(_ golden: RealGoldenCase) throws {
        let tokenizer = try RealVocabularies.tokenizer(vocabulary: golden.vocabulary)
        let (ids, starts) = tokenizer.encodeWithOffsets(golden.text, parseSpecial: golden.parseSpecial)
        #expect(ids == golden.ids)
        let bytes = utf8(golden.text)
        for (index, id) in ids.enumerated() {
            let end = index + 1 < ids.count ? starts[index + 1] : bytes.count
            #expect(Array(bytes[starts[index]..<end]) == tokenizer.pieceBytes(id, renderSpecial: true),
                    "token \(index) (\(id))")
        }
    }
}
