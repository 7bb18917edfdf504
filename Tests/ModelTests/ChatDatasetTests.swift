// Chat-format data lines ({"messages": [...]}) against an independent reference: the files' own Jinja templates
// rendered by jinja2 (llama.cpp's built-in Gemma format for Gemma 3 270M, which has none), tokenized by llama.cpp,
// with the loss mask found by rendering prefixes of each conversation (Tests/Golden/chat-dataset.json, written by
// scripts/reference/chat_golden.py). Also the bad input of such lines, one line each naming the file and line.

import Foundation
import GGUF
import Testing
import TestSupport
@testable import Model

/// One conversation of the golden file, with its model.
struct ChatDatasetCase: Sendable, CustomTestStringConvertible {
    let file: String
    let name: String
    /// The "messages" value as JSON text.
    let messages: String
    let ids: [Int32]
    let trained: [Bool]

    var testDescription: String { "\(file): \(name)" }
}

enum ChatDatasetGolden {
    private struct File: Decodable {
        struct Model: Decodable {
            let file: String
            let cases: [Case]
        }
        struct Case: Decodable {
            let name: String
            let ids: [Int32]
            let trained: [Bool]
        }
        let models: [Model]
    }

    static let cases: [ChatDatasetCase] = {
        guard let data = FileManager.default.contents(atPath: Repository.golden("chat-dataset.json")),
              let file = try? JSONDecoder().decode(File.self, from: data),
              let raw = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let models = raw["models"] as? [[String: Any]] else { return [] }
        return zip(file.models, models).flatMap { model, rawModel in
            let rawCases = rawModel["cases"] as? [[String: Any]] ?? []
            return zip(model.cases, rawCases).map { c, rawCase in
                let messages = (try? JSONSerialization.data(withJSONObject: rawCase["messages"] ?? [])) ?? Data()
                return ChatDatasetCase(file: model.file, name: c.name, messages: String(decoding: messages, as: UTF8.self),
                                       ids: c.ids, trained: c.trained)
            }
        }
    }()

    /// A model's tokenizer and chat template text, read once.
    private static let loaded: [String: Result<(Tokenizer, String?), any Error>] = {
        var out: [String: Result<(Tokenizer, String?), any Error>] = [:]
        for file in Set(cases.map(\.file)) {
            out[file] = Result {
                let gguf = try GGUFFile(path: Repository.path("models/" + file))
                return (try Tokenizer(vocabulary: TokenizerVocabulary(metadata: gguf.metadata)),
                        gguf.metadata.string("tokenizer.chat_template"))
            }
        }
        return out
    }()

    static func model(_ file: String) throws -> (Tokenizer, String?) { try #require(loaded[file]).get() }

    /// Whether a model's cases run: the committed tiny model always, a real file when present (or under CI).
    static func enabled(_ file: String) -> Bool {
        FileManager.default.fileExists(atPath: Repository.path("models/" + file))
            || ProcessInfo.processInfo.environment["CI"] == "true"
    }
}

@Suite("Chat-format data")
struct ChatDatasetTests {
    static let tiny = Repository.path("models/tiny-q4_0.gguf")

    @Test("the golden file covers a ChatML model of each template and Gemma's format")
    func coverage() {
        let files = Set(ChatDatasetGolden.cases.map(\.file))
        #expect(files == ["tiny-q4_0.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
                          "gemma-3-270m.Q4_K_M.gguf"], "\(files)")
        #expect(ChatDatasetGolden.cases.count >= 32)
    }

    @Test("tokens and scored positions identical to the reference",
          arguments: ChatDatasetGolden.cases.filter { ChatDatasetGolden.enabled($0.file) })
    func golden(_ c: ChatDatasetCase) throws {
        let (tokenizer, template) = try ChatDatasetGolden.model(c.file)
        let line = #"{"messages": "# + c.messages + "}"
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let example = try Dataset.example(object, path: c.file, line: 1, tokenizer: tokenizer, maxLength: 4096,
                                          chatTemplate: template)
        #expect(example.tokens == c.ids)
        // Position i scores token i + 1 exactly when the reference trains token i + 1.
        let expected = (0..<c.ids.count).map { i in i + 1 < c.ids.count && c.trained[i + 1] ? c.ids[i + 1] : -1 }
        #expect(example.targets == expected)
        #expect(!c.trained.allSatisfy { !$0 })
    }

    /// A file of `lines`, loaded through the tiny model's tokenizer and ChatML template.
    func load(_ lines: [String], template: String? = nil, tokenizer: Tokenizer? = nil) throws(ModelError) -> [Example] {
        let dir = makeTemporaryDirectory("chat-data")
        let path = dir + "/data.jsonl"
        FileManager.default.createFile(atPath: path, contents: Data(lines.joined(separator: "\n").utf8))
        let tiny = try! GGUFFile(path: Self.tiny)
        let t = try! tokenizer ?? Tokenizer(vocabulary: TokenizerVocabulary(metadata: tiny.metadata))
        return try Dataset.load(path: path, tokenizer: t, maxLength: 512,
                                chatTemplate: tokenizer == nil ? tiny.metadata.string("tokenizer.chat_template") : template)
    }

    /// The one-line error of loading `lines`, which must name the file's line `line`.
    func error(_ lines: [String], line: Int, tokenizer: Tokenizer? = nil) -> String {
        do {
            _ = try load(lines, tokenizer: tokenizer)
            Issue.record("no error for \(lines)")
            return ""
        } catch {
            let text = error.description
            #expect(!text.contains("\n"), "\(text)")
            #expect(text.contains("data.jsonl:\(line): "), "\(text)")
            return text
        }
    }

    @Test("bad conversations: one line each, naming the file, the line and the message")
    func badInput() {
        let ok = #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#
        let cases: [(String, [String])] = [
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}"#,
             ["message 2", "unknown role \"robot\"", "\"system\", \"user\", \"assistant\""]),
            (#"{"messages": [{"role": "tool", "content": "b"}, {"role": "assistant", "content": "b"}]}"#,
             ["message 1", "unknown role \"tool\"", "tool messages are not supported"]),
            (#"{"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}"#,
             ["no assistant message"]),
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]}"#,
             ["message 2", "\"content\" must be a string, not a number"]),
            (#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": "b"}]}"#,
             ["message 1", "\"content\" must be a string, not an array"]),
            (#"{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "b"}]}"#,
             ["message 1", "not null"]),
            (#"{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}"#, ["message 1", "no \"content\""]),
            (#"{"messages": [{"content": "a"}, {"role": "assistant", "content": "b"}]}"#, ["message 1", "no \"role\""]),
            (#"{"messages": [{"role": true, "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
             ["message 1", "\"role\" must be a string, not a boolean"]),
            (#"{"messages": "hello"}"#, ["\"messages\" must be an array", "not a string"]),
            (#"{"messages": {"role": "user", "content": "a"}}"#, ["\"messages\" must be an array", "not an object"]),
            (#"{"messages": []}"#, ["\"messages\" is empty"]),
            (#"{"messages": ["hi", {"role": "assistant", "content": "b"}]}"#, ["message 1 must be an object", "not a string"]),
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}"#,
             ["\"weight\": 0", "nothing to score"]),
            (#"{"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}"#,
             ["message 1", "only assistant messages"]),
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}]}"#,
             ["message 2", "\"weight\" must be 0 or 1"]),
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool_calls": []}]}"#,
             ["message 2", "tool calls"]),
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "tools": [{"type": "function"}]}"#,
             ["tools"]),
            (#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "text": "c"}"#,
             ["both \"messages\" and \"text\""]),
        ]
        for (bad, words) in cases {
            // The bad line is the third: two good lines (and an empty one) before it.
            let text = error([ok, "", bad, ok], line: 3)
            for w in words { #expect(text.contains(w), "\(bad) -> \(text)") }
        }
    }

    @Test("a model without a chat format: one line naming the line and what to do instead")
    func noTemplate() throws {
        let plain = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "gpt-2"))
        #expect(plain.id(of: "<|im_start|>") == nil && plain.id(of: "<start_of_turn>") == nil)
        let text = error([#"{"text": "plain text is fine"}"#,
                          #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#],
                         line: 2, tokenizer: plain)
        #expect(text.contains("no tokenizer.chat_template") && text.contains("{\"prompt\", \"completion\"}"), "\(text)")
        // Without a messages line the same model loads its data.
        #expect(throws: Never.self) { _ = try load([#"{"text": "plain text is fine"}"#], tokenizer: plain) }
    }

    @Test("an unsupported template is refused naming the line")
    func unsupportedTemplate() throws {
        let tiny = try GGUFFile(path: Self.tiny)
        let tokenizer = try Tokenizer(vocabulary: TokenizerVocabulary(metadata: tiny.metadata))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(
            #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#.utf8)) as? [String: Any])
        #expect {
            _ = try Dataset.example(object, path: "d.jsonl", line: 7, tokenizer: tokenizer, maxLength: 64,
                                    chatTemplate: "{{ '[INST] ' + messages[0]['content'] + ' [/INST]' }}")
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("d.jsonl:7: ") && text.contains("not supported") && !text.contains("\n")
        }
    }

    /// A conversation and the prompt/completion lines that say the same: for each assistant message, the prompt is the
    /// rendered conversation up to where its content starts, the completion its content and end-of-turn marker. The
    /// messages line's scored positions must be the union of theirs, with the same tokens before each.
    @Test("a messages line scores what the equivalent prompt/completion lines score")
    func equivalentPromptCompletion() throws {
        let tiny = try GGUFFile(path: Self.tiny)
        let tokenizer = try Tokenizer(vocabulary: TokenizerVocabulary(metadata: tiny.metadata))
        let line = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi. What now?"}, {"role": "user", "content": "A colour"}, {"role": "assistant", "content": "Blue"}]}"#
        let chat = try load([line]).first!
        // Written by hand in the tiny model's ChatML (no default system message), as jinja2 renders it.
        let head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
        let second = head + "Hi. What now?<|im_end|>\n<|im_start|>user\nA colour<|im_end|>\n<|im_start|>assistant\n"
        let pairs = [(head, "Hi. What now?<|im_end|>"), (second, "Blue<|im_end|>")]
        var scored = 0
        for (prompt, completion) in pairs {
            let object: [String: Any] = ["prompt": prompt, "completion": completion]
            let e = try Dataset.example(object, path: "pc", line: 1, tokenizer: tokenizer, maxLength: 512)
            // The prompt/completion example is a prefix of the conversation's tokens, scoring the same positions there.
            #expect(Array(chat.tokens.prefix(e.tokens.count)) == e.tokens)
            let first = e.targets.firstIndex { $0 >= 0 }!
            for i in first..<e.tokens.count - 1 { #expect(chat.targets[i] == e.targets[i]) }
            scored += e.scoredCount
        }
        #expect(chat.scoredCount == scored)
    }
}
