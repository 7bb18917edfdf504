// Tokenizer tests: token ids identical to llama.cpp's, exact round trips, special tokens, added tokens, errors.
//
// Golden ids come from llama.cpp through llama-cpp-python (Tests/Golden/llamacpp-*.json, written by
// scripts/reference/llamacpp_golden.py). The synthetic-vocabulary expectations below were produced the same way:
// the vocabulary written as a vocab-only GGUF, loaded by llama-cpp-python 0.3.36, tokenized with llama_tokenize and
// rendered with llama_token_to_piece.

import Foundation
import GGUF
import Testing
import TestSupport
@testable import Model

// MARK: - Fixtures

/// One line of a golden file's "tokenizer" list.
struct GoldenTokenization: Decodable, Sendable, CustomTestStringConvertible {
    let text: String
    let parseSpecial: Bool
    let ids: [Int32]
    /// llama-cpp-python's `detokenize(ids, special: parseSpecial)`, decoded as UTF-8.
    let detokenized: String

    enum CodingKeys: String, CodingKey {
        case text, ids, detokenized
        case parseSpecial = "parse_special"
    }

    var testDescription: String {
        let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
        return (parseSpecial ? "[special] " : "") + shown.debugDescription
    }
}

/// A golden case together with the model whose tokenizer produced it.
struct GoldenCase: Sendable, CustomTestStringConvertible {
    /// Model file name under models/, e.g. "tiny-q4_0.gguf".
    let model: String
    let expected: GoldenTokenization

    var testDescription: String { "\(model): \(expected.testDescription)" }
}

enum TokenizerFixtures {
    /// The reference model's file name under models/.
    static let referenceModel = "SmolLM2-135M-Instruct.Q4_1.gguf"
    /// The tiny test models under models/, built by scripts/reference/make_tiny_models.py.
    static let tinyModels = ["tiny-q4_0.gguf", "tiny-q4_1.gguf", "tiny-mixed.gguf"]

    /// Whether tests on a model file run: when it exists, and always under CI (CI=true), where a missing file fails.
    static func enabled(_ model: String) -> Bool {
        FileManager.default.fileExists(atPath: Repository.path("models/" + model))
            || ProcessInfo.processInfo.environment["CI"] == "true"
    }

    /// The golden cases recorded for a model, or none if its golden file is absent.
    static func goldenCases(_ model: String) -> [GoldenCase] {
        let name = "llamacpp-" + model.replacingOccurrences(of: ".gguf", with: ".json")
        guard let data = FileManager.default.contents(atPath: Repository.golden(name)),
              let file = try? JSONDecoder().decode(GoldenFile.self, from: data) else { return [] }
        return file.tokenizer.map { GoldenCase(model: model, expected: $0) }
    }

    private struct GoldenFile: Decodable {
        let tokenizer: [GoldenTokenization]
    }

    /// The tokenizer of each model, loaded once: through the GGUF reader and the metadata bridge.
    private static let loaded: [String: Result<Tokenizer, any Error>] = {
        var result: [String: Result<Tokenizer, any Error>] = [:]
        for model in [referenceModel] + tinyModels {
            result[model] = Result {
                let file = try GGUFFile(path: Repository.path("models/" + model))
                return try Tokenizer(vocabulary: TokenizerVocabulary(metadata: file.metadata))
            }
        }
        return result
    }()

    static func tokenizer(_ model: String) throws -> Tokenizer {
        try loaded[model]!.get()
    }

    static var reference: Tokenizer {
        get throws { try tokenizer(referenceModel) }
    }

    /// A small vocabulary exercising every token type: printable ASCII, 'Ġ' 'Ċ' 'ĉ' for ' ' '\n' '\t', a few merges.
    ///
    /// ids 0-2 control `<|endoftext|>` `<s>` `</s>`; 3 empty; 4-97 '!'...'~'; 98 'Ġ'; 99 'Ċ'; 100 'ĉ';
    /// 101 "ab", 102 "abc" (no merge yields it), 103 "Ġa", 104 "xyz" (no merge), 105 `<tag>` / 106 `<ta` / 107 "USER"
    /// user-defined, 108 "Ġ<", 109 "é" (not byte-mapped text), 110 `<0x41>` byte, 111 `<unused1>` unused, 112 "bc",
    /// 113 "Ġab"; 114 "x中" normal, 115 `<|im_end|>` typed normal.
    static func synthetic(pre: String, addBOS: Bool = true, addEOS: Bool = true) -> TokenizerVocabulary {
        let bytes = (0x21...0x7E).map { String(UnicodeScalar(UInt8($0))) } + ["Ġ", "Ċ", "ĉ"]
        let tokens = ["<|endoftext|>", "<s>", "</s>", ""] + bytes
            + ["ab", "abc", "Ġa", "xyz", "<tag>", "<ta", "USER", "Ġ<", "é", "<0x41>", "<unused1>", "bc", "Ġab",
               "x中", "<|im_end|>"]
        let types: [Int32] = [3, 3, 3, 1] + [Int32](repeating: 1, count: bytes.count)
            + [1, 1, 1, 1, 4, 4, 4, 1, 1, 6, 5, 1, 1, 1, 1]
        return TokenizerVocabulary(
            model: "gpt2", pre: pre, tokens: tokens, tokenTypes: types,
            merges: ["a b", "Ġ a", "b c", "Ġa b"], bosID: 1, eosID: 2, addBOS: addBOS, addEOS: addEOS)
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs a test only when the model files exist under models/, or under CI (CI=true), where a missing file fails it.
    static func requiresModel(_ models: String...) -> Self {
        requiresModel(models)
    }

    /// Runs a test only when all of `models` exist, or under CI.
    static func requiresModel(_ models: [String]) -> Self {
        let missing = models.map { "models/" + $0 }.joined(separator: ", ")
        return .enabled(if: models.allSatisfy(TokenizerFixtures.enabled),
                        Comment(rawValue: "\(missing) missing: skipped (with CI=true the test runs and fails)"))
    }
}

/// Strings whose exact round trip matters: whitespace runs, digits, newlines, unicode, emoji, empty.
///
/// Round trips compare UTF-8, since Swift's `==` would also accept a canonically equivalent string.
let trickyStrings: [String] = [
    "", " ", "  ", "\n", "\r\n", "\t", " \t\n\r ", "\n\n\n", "a  b   c    d", "   leading", "trailing   ",
    "0", "0123456789", "3.14159 2,718 1e-9", "٣٤٥ ² ½ Ⅻ", "x=1+2*3^4", "$100 <tag> a|b ^~ `code`",
    "I'm you're it's we'll he'd they've", "'S 'T 'RE", "'", "''s",
    "日本語のテキスト", "中文 English 混合 123", "한국어", "Привет, мир!", "مرحبا", "हिन्दी", "ไทย",
    "\u{E9} e\u{301}", "ǅ ʰ ˆ", "\u{0301}\u{0302}", "😀👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵",
    "\u{00A0}\u{3000}\u{2028}\u{2029}\u{0085}",
    "\u{0000}\u{0001}\u{007F}", "a\u{200B}b\u{200D}c", "\u{1C89}\u{1E5D0}", "\u{10FFFF}\u{E000}",
    "def f(x):\n    return x ** 2\n", "{\"a\": [1, 2.5, null]}", "https://example.com/?q=1&r=2",
    "<|im_start|>user\nHi<|im_end|>\n", "<|im_start|", "a<|endoftext|>b", "<reponame>x",
]

/// A string's UTF-8, for comparisons that must be byte-exact.
func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }

// MARK: - Golden ids from llama.cpp

@Suite("Tokenizer")
struct TokenizerTests {

    @Test("the golden files hold enough cases")
    func goldenFilesPresent() {
        for model in [TokenizerFixtures.referenceModel] + TokenizerFixtures.tinyModels {
            #expect(TokenizerFixtures.goldenCases(model).count >= 45, "golden tokenizer cases for \(model)")
        }
    }

    @Test("ids identical to llama.cpp on the reference model",
          .requiresModel(TokenizerFixtures.referenceModel),
          arguments: TokenizerFixtures.goldenCases(TokenizerFixtures.referenceModel))
    func referenceGolden(_ golden: GoldenCase) throws {
        try checkGolden(golden)
    }

    @Test("ids identical to llama.cpp on the tiny models",
          .requiresModel(TokenizerFixtures.tinyModels),
          arguments: TokenizerFixtures.tinyModels.flatMap(TokenizerFixtures.goldenCases))
    func tinyGolden(_ golden: GoldenCase) throws {
        try checkGolden(golden)
    }

    /// Ids as llama_tokenize gives them, the detokenized text as llama-cpp-python gives it, and an exact round trip.
    private func checkGolden(_ golden: GoldenCase) throws {
        let tokenizer = try TokenizerFixtures.tokenizer(golden.model)
        let expected = golden.expected
        let ids = tokenizer.encode(expected.text, parseSpecial: expected.parseSpecial)
        #expect(ids == expected.ids)
        let renderSpecial = expected.parseSpecial
        #expect(utf8(tokenizer.decode(expected.ids, renderSpecial: renderSpecial)) == utf8(expected.detokenized))
        #expect(utf8(tokenizer.decode(ids, renderSpecial: renderSpecial)) == utf8(expected.text))
    }

    // MARK: Round trips

    @Test("decode(encode(s)) == s on the reference model",
          .requiresModel(TokenizerFixtures.referenceModel),
          arguments: trickyStrings)
    func referenceRoundTrip(_ text: String) throws {
        let tokenizer = try TokenizerFixtures.reference
        #expect(utf8(tokenizer.decode(tokenizer.encode(text))) == utf8(text))
        #expect(utf8(tokenizer.decode(tokenizer.encode(text, parseSpecial: true), renderSpecial: true)) == utf8(text))
    }

    @Test("decode(encode(s)) == s on a tiny model, whose vocabulary lacks most merges",
          .requiresModel("tiny-q4_0.gguf"),
          arguments: trickyStrings)
    func tinyRoundTrip(_ text: String) throws {
        let tokenizer = try TokenizerFixtures.tokenizer("tiny-q4_0.gguf")
        #expect(utf8(tokenizer.decode(tokenizer.encode(text))) == utf8(text))
    }

    @Test("streaming decode hands out whole characters and joins to decode",
          .requiresModel(TokenizerFixtures.referenceModel),
          arguments: trickyStrings)
    func streaming(_ text: String) throws {
        let tokenizer = try TokenizerFixtures.reference
        let ids = tokenizer.encode(text, parseSpecial: true)
        var decoder = StreamingDecoder(tokenizer: tokenizer, renderSpecial: true)
        var joined = ""
        for id in ids {
            let piece = decoder.append(id)
            #expect(!piece.unicodeScalars.contains("\u{FFFD}") || text.unicodeScalars.contains("\u{FFFD}"))
            joined += piece
        }
        joined += decoder.finish()
        #expect(utf8(joined) == utf8(text))
    }

    @Test("an incomplete UTF-8 tail is held back only while it can still become valid")
    func incompleteTails() {
        #expect(StreamingDecoder.incompleteSuffixLength([0x61, 0xF0, 0x9F, 0x98]) == 3)
        #expect(StreamingDecoder.incompleteSuffixLength([0x61, 0xF0, 0x9F, 0x98, 0x80]) == 0)
        #expect(StreamingDecoder.incompleteSuffixLength([0xC3]) == 1)
        #expect(StreamingDecoder.incompleteSuffixLength([0xE0, 0x80]) == 0, "E0 80 can never be valid")
        #expect(StreamingDecoder.incompleteSuffixLength([0xED, 0xA0]) == 0, "a surrogate can never be valid")
        #expect(StreamingDecoder.incompleteSuffixLength([0x80, 0x80, 0x80, 0x80]) == 0)
        #expect(StreamingDecoder.incompleteSuffixLength([]) == 0)
    }

    @Test("streaming an emoji token by token on the reference model",
          .requiresModel(TokenizerFixtures.referenceModel))
    func streamingEmoji() throws {
        let tokenizer = try TokenizerFixtures.reference
        let ids = tokenizer.encode("😀")
        #expect(ids.count > 1, "the emoji spans several tokens")
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        let pieces = ids.map { decoder.append($0) }
        #expect(pieces.dropLast().allSatisfy { $0.isEmpty })
        #expect(pieces.last == "😀")
        #expect(decoder.finish().isEmpty)
    }

    // MARK: Special tokens

    @Test("chat markup: control tokens are single ids only with parseSpecial",
          .requiresModel(TokenizerFixtures.referenceModel))
    func chatMarkup() throws {
        let tokenizer = try TokenizerFixtures.reference
        let start = try #require(tokenizer.id(of: "<|im_start|>"))
        let end = try #require(tokenizer.id(of: "<|im_end|>"))
        #expect((start, end) == (1, 2))
        let chat = "<|im_start|>user\nHi<|im_end|>\n"

        let parsed = tokenizer.encode(chat, parseSpecial: true)
        #expect(parsed.first == start)
        #expect(parsed.filter { $0 == end }.count == 1)
        #expect(utf8(tokenizer.decode(parsed, renderSpecial: true)) == utf8(chat))
        #expect(tokenizer.decode(parsed) == "user\nHi\n", "control tokens render as nothing by default")

        let literal = tokenizer.encode(chat)
        #expect(!literal.contains(start) && !literal.contains(end))
        #expect(utf8(tokenizer.decode(literal)) == utf8(chat))

        #expect(tokenizer.tokenType(start) == .control)
        #expect(tokenizer.endOfGenerationIDs == [0, 2, 4], "<|endoftext|>, <|im_end|> and <reponame> end generation")
    }

    @Test("addSpecial adds BOS and EOS only when the vocabulary asks for them")
    func addSpecial() throws {
        let both = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "llama-bpe"))
        #expect(both.encode("abc", addSpecial: true) == [1, 102, 2])
        #expect(both.encode("", addSpecial: true) == [1, 2])
        #expect(both.encode("abc") == [102])
        let eosOnly = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "gpt-2", addBOS: false))
        #expect(eosOnly.encode("abc", addSpecial: true) == [101, 70, 2])
    }

    @Test("synthetic vocabulary: ids as llama.cpp gives them")
    func syntheticVocabulary() throws {
        let llama3 = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "llama-bpe"))
        let dbrx = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "dbrx"))

        // llama3 ignores merges for a word that is a token; dbrx has the same regex but merges
        #expect(llama3.encode("abc") == [102])
        #expect(dbrx.encode("abc") == [101, 70])
        #expect(llama3.encode(" ab") == [113])
        #expect(dbrx.encode(" ab") == [98, 101])
        #expect(dbrx.encode(" abc") == [98, 101, 70], "'a b' (rank 0) merges before 'Ġ a' (rank 1)")

        // user-defined tokens are cut out without parseSpecial, longest first, leftmost
        #expect(dbrx.encode(" <tag> x<tag>y") == [98, 105, 98, 91, 105, 92])
        #expect(dbrx.encode("<ta<tag>") == [106, 105])
        #expect(dbrx.encode("USER: hi") == [107, 29, 98, 75, 76])

        // control tokens only with parseSpecial; a normal-typed "<|im_end|>" is made control by its text
        #expect(dbrx.encode("<|endoftext|></s><s>", parseSpecial: true) == [0, 2, 1])
        #expect(dbrx.encode("<|endoftext|></s><s>").count == 20)
        #expect(dbrx.encode("a<|im_end|>b", parseSpecial: true) == [68, 115, 69])
        #expect(dbrx.attributes(of: 115).contains(.control))

        // a symbol missing from the vocabulary is dropped, as llama.cpp's byte fallback finds nothing for it
        #expect(dbrx.encode("é") == [])
        #expect(dbrx.encode("éx") == [91])
    }

    @Test("synthetic vocabulary: pieces as llama.cpp renders them")
    func syntheticPieces() throws {
        let tokenizer = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "gpt-2"))
        #expect(tokenizer.pieceBytes(0) == [])
        #expect(tokenizer.pieceBytes(0, renderSpecial: true) == utf8("<|endoftext|>"))
        #expect(tokenizer.pieceBytes(3) == utf8("[EMPTY_3]"), "an empty token is renamed")
        #expect(tokenizer.pieceBytes(98) == [0x20])
        #expect(tokenizer.pieceBytes(100) == [0x09])
        #expect(tokenizer.pieceBytes(105) == utf8("<tag>"), "user-defined renders as its text")
        #expect(tokenizer.pieceBytes(109) == [0xE9], "'é' is the byte-mapped form of byte E9")
        #expect(tokenizer.pieceBytes(110) == [0x41], "byte token <0x41>")
        #expect(tokenizer.pieceBytes(111, renderSpecial: true) == [], "unused renders as nothing")
        #expect(tokenizer.pieceBytes(113) == utf8(" ab"))
        #expect(tokenizer.pieceBytes(114) == utf8("x[UNK_BYTE_0xe4b8adx中]"), "llama_decode_text's marker")
    }

    // MARK: Added tokens

    @Test("adding(tokens:) makes a new user-defined token one id in any text",
          .requiresModel(TokenizerFixtures.referenceModel))
    func addingTokens() throws {
        let base = try TokenizerFixtures.reference
        let extended = try base.adding(tokens: ["<cat-toy>", "<sks>"])
        #expect(extended.count == base.count + 2)
        let catToy = Int32(base.count)
        #expect(extended.id(of: "<cat-toy>") == catToy)
        #expect(extended.tokenType(catToy) == .userDefined)

        let text = "A photo of <cat-toy> on a<sks>table"
        let ids = extended.encode(text)
        #expect(ids.filter { $0 == catToy }.count == 1)
        #expect(ids.contains(catToy + 1))
        #expect(utf8(extended.decode(ids)) == utf8(text))
        #expect(base.encode(text).allSatisfy { $0 < base.count })
        #expect(extended.encode("plain text") == base.encode("plain text"))
    }

    @Test("adding(tokens:) refuses existing, repeated and empty tokens")
    func addingExistingToken() throws {
        let tokenizer = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "gpt-2")).adding(tokens: ["<new>"])
        #expect(tokenizer.id(of: "<new>") == 116)
        #expect(throws: TokenizerError.tokenAlreadyExists("<new>", id: 116)) { try tokenizer.adding(tokens: ["<new>"]) }
        #expect(throws: TokenizerError.tokenAlreadyExists("ab", id: 101)) { try tokenizer.adding(tokens: ["ab"]) }
        #expect(throws: TokenizerError.tokenAlreadyExists("</s>", id: 2)) { try tokenizer.adding(tokens: ["</s>"]) }
        #expect(throws: TokenizerError.tokenAlreadyExists("<x>", id: 117)) {
            try tokenizer.adding(tokens: ["<x>", "<x>"])
        }
        #expect(throws: TokenizerError.emptyToken) { try tokenizer.adding(tokens: [""]) }
    }

    @Test("tokens are told apart byte for byte, not by Unicode canonical equivalence")
    func byteExactTokens() throws {
        let composed = "<caf\u{E9}>"
        let decomposed = "<cafe\u{301}>"
        #expect(composed == decomposed, "Swift's String equality would merge them")
        let tokenizer = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: "gpt-2"))
            .adding(tokens: [composed, decomposed])
        #expect(tokenizer.id(of: composed) == 116)
        #expect(tokenizer.id(of: decomposed) == 117)
        #expect(tokenizer.encode(decomposed + composed) == [117, 116])
        #expect(tokenizer.decode([117]).utf8.elementsEqual(decomposed.utf8))
    }

    @Test("adding(tokens:) refuses existing reference-model tokens",
          .requiresModel(TokenizerFixtures.referenceModel),
          arguments: ["<|im_start|>", "Hello", "Ġthe"])
    func addingExistingReferenceToken(_ token: String) throws {
        let tokenizer = try TokenizerFixtures.reference
        let id = try #require(tokenizer.id(of: token))
        #expect(throws: TokenizerError.tokenAlreadyExists(token, id: id)) { try tokenizer.adding(tokens: [token]) }
    }

    // MARK: Errors

    @Test("an unsupported model is refused by name, listing the supported ones")
    func unsupportedModel() {
        var vocabulary = TokenizerFixtures.synthetic(pre: "gpt-2")
        vocabulary.model = "bert"
        #expect(throws: TokenizerError.unsupportedModel("bert")) { try Tokenizer(vocabulary: vocabulary) }
        let message = TokenizerError.unsupportedModel("bert").description
        #expect(message.contains("'bert'") && message.contains("'gpt2'") && message.contains("SentencePiece"))
    }

    @Test("an unsupported pre-tokenizer is refused by name, listing the supported ones",
          arguments: ["gpt2", "deepseek-llm", "tekken", "Smollm"])
    func unsupportedPreTokenizer(_ name: String) throws {
        let error = try #require(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: name))
        }
        guard case .unsupportedPreTokenizer(let named, let supported) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(named == name)
        #expect(supported.contains("smollm") && supported.contains("gpt-2") && supported.contains("llama-bpe"))
        #expect(error.description.contains("'\(name)'") && error.description.contains("smollm"))
    }

    @Test("every supported pre-tokenizer name builds", arguments: PreTokenizer.supportedNames + [""])
    func supportedPreTokenizer(_ name: String) throws {
        let tokenizer = try Tokenizer(vocabulary: TokenizerFixtures.synthetic(pre: name))
        #expect(tokenizer.decode(tokenizer.encode("USER: x y z 123")) == "USER: x y z 123")
    }

    @Test("malformed and dangling merges, duplicate tokens and short type lists are refused")
    func malformedVocabulary() {
        var vocabulary = TokenizerFixtures.synthetic(pre: "gpt-2")
        vocabulary.merges.append("abc")
        #expect(throws: TokenizerError.malformedMerge(index: 4, text: "abc")) { try Tokenizer(vocabulary: vocabulary) }

        vocabulary = TokenizerFixtures.synthetic(pre: "gpt-2")
        vocabulary.merges.append("x yz")
        #expect(throws: TokenizerError.mergeUnknownToken(index: 4, text: "x yz", token: "yz")) {
            try Tokenizer(vocabulary: vocabulary)
        }
        vocabulary.merges[4] = "x y"
        #expect(throws: TokenizerError.mergeUnknownToken(index: 4, text: "x y", token: "xy")) {
            try Tokenizer(vocabulary: vocabulary)
        }

        vocabulary = TokenizerFixtures.synthetic(pre: "gpt-2")
        vocabulary.tokens.append("ab")
        vocabulary.tokenTypes!.append(1)
        #expect(throws: TokenizerError.duplicateToken("ab", firstID: 101, secondID: 116)) {
            try Tokenizer(vocabulary: vocabulary)
        }

        vocabulary = TokenizerFixtures.synthetic(pre: "gpt-2")
        vocabulary.tokenTypes!.removeLast()
        #expect(throws: TokenizerError.tokenTypeCountMismatch(tokens: 116, tokenTypes: 115)) {
            try Tokenizer(vocabulary: vocabulary)
        }
    }

    // MARK: Pieces of the pipeline

    @Test("smollm pre-tokenization: numbers alone, then GPT-2's split")
    func smollmSplit() throws {
        #expect(try words("Hello  world\n\n 42's", pre: "smollm") == ["Hello", " ", " world", "\n\n ", "4", "2", "'s"])
        #expect(try words(" 123 x", pre: "smollm") == [" ", "1", "2", "3", " x"])
        #expect(try words("I'M don't", pre: "smollm") == ["I", "'", "M", " don", "'t"],
                "GPT-2's contractions are case-sensitive")
        #expect(try words("a \t\nb", pre: "gpt-2") == ["a", " \t", "\n", "b"])
        #expect(try words("x  ", pre: "gpt-2") == ["x", "  "])
    }

    @Test("llama3 and qwen2 pre-tokenization: digit groups, newlines, case-insensitive contractions")
    func llama3Split() throws {
        #expect(try words("1234567", pre: "llama-bpe") == ["123", "456", "7"])
        #expect(try words("1234567", pre: "qwen2") == ["1", "2", "3", "4", "5", "6", "7"])
        #expect(try words("I'M ok", pre: "llama-bpe") == ["I", "'M", " ok"])
        #expect(try words("a.\n\n  b", pre: "llama-bpe") == ["a", ".\n\n", " ", " b"])
        #expect(try words("x \n\n y", pre: "llama-bpe") == ["x", " \n\n", " y"])
    }

    @Test("default pre-tokenization: punctuation runs, GPT-2, number runs, ASCII digit triples")
    func defaultSplit() throws {
        #expect(try words("a+=b 12345", pre: nil) == ["a", "+=", "b", " ", "123", "45"])
        #expect(try words("`x`", pre: nil) == ["`", "x", "`"])
    }

    /// The words a pre-tokenizer splits `text` into.
    private func words(_ text: String, pre: String?) throws -> [String] {
        let preTokenizer = try PreTokenizer(named: pre)
        var scalarText = ScalarText()
        var ends: [Int] = []
        var spare: [Int] = []
        let bytes = utf8(text)
        bytes.withUnsafeBufferPointer { scalarText.load($0) }
        preTokenizer.split(scalarText, ends: &ends, scratch: &spare)
        var start = 0
        return ends.map { end in
            defer { start = end }
            return String(decoding: bytes[scalarText.byteOffsets[start]..<scalarText.byteOffsets[end]], as: UTF8.self)
        }
    }

    @Test("code point classes follow llama.cpp's Unicode 15.1 tables")
    func scalarClasses() {
        #expect(ScalarClass.of(0x41) == .letter)
        #expect(ScalarClass.of(0x37) == .number)
        #expect(ScalarClass.of(0x663) == .number, "Arabic-Indic digit three")
        #expect(ScalarClass.of(0xB2) == .number, "superscript two (No)")
        #expect(ScalarClass.of(0x216B) == .number, "Roman numeral twelve (Nl)")
        #expect(ScalarClass.of(0x2D) == .punctuation)
        #expect(ScalarClass.of(0x24) == [], "'$' is a symbol")
        for space: UInt32 in [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2028, 0x202F, 0x3000] {
            #expect(ScalarClass.of(space).contains(.whitespace), "U+\(String(space, radix: 16))")
        }
        #expect(ScalarClass.of(0x1C).isEmpty, "file separator is not White_Space")
        #expect(ScalarClass.of(0x200B).isEmpty, "zero-width space is not White_Space")
        #expect(ScalarClass.of(0x1C89).isEmpty, "Cyrillic TJE is Unicode 16.0: unassigned for llama.cpp")
        #expect(ScalarClass.of(0x1E5D0).isEmpty, "Ol Onal is Unicode 16.0")
        #expect(ScalarClass.of(0x1F600).isEmpty, "emoji are symbols")
        #expect(ScalarClass.of(0x4E2D) == .letter)
        #expect(ScalarClass.of(0x10FFFF).isEmpty)
    }

    @Test("GPT-2's byte map is a bijection onto 256 printable code points")
    func byteMap() {
        #expect(Set(ByteLevel.scalarForByte).count == 256)
        #expect(ByteLevel.scalarForByte[0x20] == 0x120, "' ' is 'Ġ'")
        #expect(ByteLevel.scalarForByte[0x0A] == 0x10A, "'\\n' is 'Ċ'")
        #expect(ByteLevel.scalarForByte[0x41] == 0x41)
        #expect(ByteLevel.scalarForByte[0xAD] == 0x143)
        for byte in 0..<256 { #expect(ByteLevel.byte(for: ByteLevel.scalarForByte[byte]) == UInt8(byte)) }
    }
}
