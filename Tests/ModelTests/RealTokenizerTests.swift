// Tokenizers of the real Q4_K_M files (Gemma 3's SentencePiece, Qwen2.5-Coder's qwen2 BPE) against llama.cpp.
//
// Golden data: Tests/Golden/tokens-<vocabulary>.json, written by scripts/reference/tokenizer_golden.py from llama.cpp
// (llama-cpp-python 0.3.36, vocab_only). Only the vocabulary is loaded (GGUF metadata); no model is built.

import Foundation
import GGUF
import Testing
import TestSupport
@testable import Model

/// One tokenization recorded from llama.cpp.
struct RealGoldenCase: Decodable, Sendable, CustomTestStringConvertible {
    let text: String
    let parseSpecial: Bool
    let addSpecial: Bool
    let ids: [Int32]
    /// llama_token_to_piece(id, special: parseSpecial) joined over ids, as UTF-8.
    let piecesJoined: String
    /// llama-cpp-python's detokenize(ids, special: parseSpecial).
    let detokenized: String
    /// The vocabulary the case belongs to (set after decoding).
    var vocabulary = ""

    enum CodingKeys: String, CodingKey {
        case text, ids, detokenized
        case parseSpecial = "parse_special"
        case addSpecial = "add_special"
        case piecesJoined = "pieces_joined"
    }

    var testDescription: String {
        let shown = text.count > 32 ? String(text.prefix(32)) + "…" : text
        return "\(vocabulary) \(parseSpecial ? "special" : "plain")\(addSpecial ? "+bos" : "") \(shown.debugDescription)"
    }
}

/// A golden file for one vocabulary.
struct RealGoldenFile: Decodable, Sendable {
    struct Special: Decodable, Sendable {
        let nTokens: Int
        let bos: Int32
        let eos: Int32
        let eot: Int32
        let addBOS: Bool
        let addEOS: Bool
        let endOfGeneration: [Int32]

        enum CodingKeys: String, CodingKey {
            case bos, eos, eot
            case nTokens = "n_tokens"
            case addBOS = "add_bos"
            case addEOS = "add_eos"
            case endOfGeneration = "end_of_generation"
        }
    }

    struct Piece: Decodable, Sendable {
        let id: Int32
        /// Hex bytes of llama_token_to_piece(id, special: false).
        let piece: String
        /// Hex bytes of llama_token_to_piece(id, special: true).
        let pieceSpecial: String

        enum CodingKeys: String, CodingKey {
            case id, piece
            case pieceSpecial = "piece_special"
        }
    }

    let special: Special
    let cases: [RealGoldenCase]
    let pieces: [Piece]
}

enum RealVocabularies {
    /// Golden file stem and the model files whose vocabulary it records.
    static let gemma = ("gemma-3", [RealModel.gemma270])
    static let qwen = ("qwen2.5-coder", [RealModel.qwen05, RealModel.qwen15])

    static func golden(_ name: String) -> RealGoldenFile? {
        guard let data = FileManager.default.contents(atPath: Repository.golden("tokens-\(name).json")),
              var file = try? JSONDecoder().decode(RealGoldenFile.self, from: data) else { return nil }
        file = RealGoldenFile(special: file.special,
                              cases: file.cases.map { var c = $0; c.vocabulary = name; return c },
                              pieces: file.pieces)
        return file
    }

    static let goldenGemma = golden(gemma.0)
    static let goldenQwen = golden(qwen.0)

    /// Tokenizers loaded once per model file, from metadata only.
    private static let loaded: [String: Result<Tokenizer, any Error>] = {
        var result: [String: Result<Tokenizer, any Error>] = [:]
        for model in RealModel.all {
            result[model.name] = Result {
                let file = try GGUFFile(path: model.path)
                return try Tokenizer(vocabulary: TokenizerVocabulary(metadata: file.metadata))
            }
        }
        return result
    }()

    static func tokenizer(_ model: RealModel) throws -> Tokenizer {
        try loaded[model.name]!.get()
    }

    /// The tokenizer a golden case's vocabulary is checked on: the first file that holds it.
    static func tokenizer(vocabulary name: String) throws -> Tokenizer {
        try tokenizer(name == gemma.0 ? gemma.1[0] : qwen.1[0])
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs a test only when the real model files exist, or under CI (CI=true), where a missing file fails it.
    static func requiresReal(_ models: RealModel...) -> Self {
        .enabled(if: models.allSatisfy(\.enabled),
                 Comment(rawValue: "\(models.map(\.name).joined(separator: ", ")) missing: skipped"))
    }
}

/// Bytes from a hex string.
private func hexBytes(_ hex: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var iterator = hex.utf8.makeIterator()
    while let high = iterator.next(), let low = iterator.next() {
        bytes.append(UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)!)
    }
    return bytes
}

@Suite("Real tokenizers")
struct RealTokenizerTests {

    @Test("the golden files cover at least 50 strings, in both special modes, with and without BOS")
    func goldenCoverage() throws {
        for golden in [RealVocabularies.goldenGemma, RealVocabularies.goldenQwen] {
            let file = try #require(golden)
            #expect(Set(file.cases.map(\.text)).count >= 50)
            #expect(Set(file.cases.map { "\($0.parseSpecial)\($0.addSpecial)" }).count == 4)
        }
    }

    @Test("Gemma 3 (SentencePiece): ids identical to llama.cpp",
          .requiresReal(.gemma270), arguments: RealVocabularies.goldenGemma?.cases ?? [])
    func gemmaGolden(_ golden: RealGoldenCase) throws {
        try check(golden)
    }

    @Test("Qwen2.5-Coder (qwen2 BPE): ids identical to llama.cpp",
          .requiresReal(.qwen05), arguments: RealVocabularies.goldenQwen?.cases ?? [])
    func qwenGolden(_ golden: RealGoldenCase) throws {
        try check(golden)
    }

    /// Ids as llama_tokenize gives them; decode as llama_token_to_piece joins them and as llama-cpp-python's detokenize
    /// gives them; and decode(encode(s)) == s without BOS.
    private func check(_ golden: RealGoldenCase) throws {
        let tokenizer = try RealVocabularies.tokenizer(vocabulary: golden.vocabulary)
        let ids = tokenizer.encode(golden.text, addSpecial: golden.addSpecial, parseSpecial: golden.parseSpecial)
        #expect(ids == golden.ids)
        let decoded = tokenizer.decode(golden.ids, renderSpecial: golden.parseSpecial)
        #expect(utf8(decoded) == utf8(golden.piecesJoined))
        // llama-cpp-python drops one leading space after BOS (Llama 1's space prefix); decode keeps it
        var detokenized = decoded
        if golden.ids.first == tokenizer.bosID && detokenized.hasPrefix(" ") { detokenized.removeFirst() }
        #expect(utf8(detokenized) == utf8(golden.detokenized))
        if !golden.addSpecial {
            #expect(utf8(tokenizer.decode(ids, renderSpecial: golden.parseSpecial)) == utf8(golden.text))
        }
    }

    @Test("Gemma 3: BOS, EOS, end of turn and every end-of-generation id as llama.cpp has them",
          .requiresReal(.gemma270))
    func gemmaSpecial() throws {
        try checkSpecial(RealVocabularies.tokenizer(.gemma270), try #require(RealVocabularies.goldenGemma))
        let tokenizer = try RealVocabularies.tokenizer(.gemma270)
        #expect(tokenizer.isSentencePiece)
        #expect(tokenizer.isEndOfGeneration(try #require(tokenizer.id(of: "<end_of_turn>"))))
    }

    @Test("Qwen2.5-Coder: BOS, EOS, end of turn and every end-of-generation id as llama.cpp has them",
          .requiresReal(.qwen05))
    func qwenSpecial() throws {
        try checkSpecial(RealVocabularies.tokenizer(.qwen05), try #require(RealVocabularies.goldenQwen))
        let tokenizer = try RealVocabularies.tokenizer(.qwen05)
        #expect(tokenizer.eosID == tokenizer.id(of: "<|im_end|>"))
        #expect(!tokenizer.addBOS)
    }

    private func checkSpecial(_ tokenizer: Tokenizer, _ golden: RealGoldenFile) {
        #expect(tokenizer.count == golden.special.nTokens)
        #expect(tokenizer.bosID == golden.special.bos)
        #expect(tokenizer.eosID == golden.special.eos)
        #expect(tokenizer.addBOS == golden.special.addBOS)
        #expect(tokenizer.addEOS == golden.special.addEOS)
        #expect(tokenizer.endOfGenerationIDs == Set(golden.special.endOfGeneration))
        #expect(tokenizer.isEndOfGeneration(golden.special.eot))
        for piece in golden.pieces {
            #expect(tokenizer.pieceBytes(piece.id) == hexBytes(piece.piece), "piece of \(piece.id)")
            #expect(tokenizer.pieceBytes(piece.id, renderSpecial: true) == hexBytes(piece.pieceSpecial),
                    "special piece of \(piece.id)")
        }
    }

    @Test("the Qwen2.5-Coder 0.5B and 1.5B files carry the same tokenizer data", .requiresReal(.qwen05, .qwen15))
    func qwenVocabulariesIdentical() throws {
        let small = try RealVocabularies.tokenizer(.qwen05)
        let large = try RealVocabularies.tokenizer(.qwen15)
        #expect(small.vocabulary == large.vocabulary)
    }

    @Test("Gemma 3: whitespace runs and newlines are user-defined tokens, cut out before SentencePiece",
          .requiresReal(.gemma270))
    func gemmaWhitespaceTokens() throws {
        let tokenizer = try RealVocabularies.tokenizer(.gemma270)
        let newline = try #require(tokenizer.id(of: "\n"))
        #expect(tokenizer.tokenType(newline) == .userDefined)
        #expect(tokenizer.encode("a\nb") == [try #require(tokenizer.id(of: "a")), newline,
                                             try #require(tokenizer.id(of: "b"))])
        #expect(tokenizer.encode("Hello", addSpecial: true) == [2, try #require(tokenizer.id(of: "Hello"))],
                "BOS, and no space prefix (add_space_prefix is false)")
    }

    @Test("streaming decode on Gemma 3 joins to decode, byte tokens included", .requiresReal(.gemma270),
          arguments: ["emoji 😀👍🏽", "\u{1F9FF}\u{1FAE8}", "日本語のテキストです。", "\u{E000}\u{10FFFF}"])
    func gemmaStreaming(_ text: String) throws {
        let tokenizer = try RealVocabularies.tokenizer(.gemma270)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var joined = ""
        for id in tokenizer.encode(text) { joined += decoder.append(id) }
        joined += decoder.finish()
        #expect(utf8(joined) == utf8(text))
    }
}

// MARK: - A synthetic SentencePiece vocabulary

/// Tests/Golden/tokens-synthetic-spm.json: a small SentencePiece vocabulary (ties in score, byte fallback, the space
/// prefix on and off, user-defined and control tokens) and llama.cpp's ids for it.
struct SyntheticSPMGolden: Decodable, Sendable {
    struct Vocabulary: Decodable, Sendable {
        let model: String
        let tokens: [String]
        let tokenTypes: [Int32]
        let scores: [Float]
        let bos: Int32
        let eos: Int32
        let unk: Int32
        let addBOS: Bool
        let addSpacePrefix: Bool

        enum CodingKeys: String, CodingKey {
            case model, tokens, scores, bos, eos, unk
            case tokenTypes = "token_types"
            case addBOS = "add_bos"
            case addSpacePrefix = "add_space_prefix"
        }

        var tokenizerVocabulary: TokenizerVocabulary {
            TokenizerVocabulary(model: model, tokens: tokens, tokenTypes: tokenTypes, merges: [], scores: scores,
                                bosID: bos, eosID: eos, unknownID: unk, addBOS: addBOS, addSpacePrefix: addSpacePrefix)
        }
    }

    struct Variant: Decodable, Sendable {
        let vocabulary: Vocabulary
        let special: RealGoldenFile.Special
        let cases: [RealGoldenCase]
    }

    let variants: [Variant]

    static let file: SyntheticSPMGolden? = {
        guard let data = FileManager.default.contents(atPath: Repository.golden("tokens-synthetic-spm.json")) else {
            return nil
        }
        return try? JSONDecoder().decode(SyntheticSPMGolden.self, from: data)
    }()

    /// Every case, labelled with its variant's index.
    static var cases: [RealGoldenCase] {
        (file?.variants ?? []).enumerated().flatMap { index, variant in
            variant.cases.map { var c = $0; c.vocabulary = "synthetic-\(index)"; return c }
        }
    }

    static func tokenizer(_ label: String) throws -> Tokenizer {
        let index = Int(label.split(separator: "-").last!)!
        return try Tokenizer(vocabulary: try #require(file).variants[index].vocabulary.tokenizerVocabulary)
    }
}

@Suite("Synthetic SentencePiece")
struct SyntheticSentencePieceTests {
    @Test("the golden file holds both space-prefix variants")
    func variants() throws {
        let file = try #require(SyntheticSPMGolden.file)
        #expect(file.variants.map(\.vocabulary.addSpacePrefix) == [true, false])
        #expect(file.variants.allSatisfy { $0.cases.count >= 200 })
    }

    @Test("ids identical to llama.cpp", arguments: SyntheticSPMGolden.cases)
    func golden(_ golden: RealGoldenCase) throws {
        let tokenizer = try SyntheticSPMGolden.tokenizer(golden.vocabulary)
        #expect(tokenizer.encode(golden.text, addSpecial: golden.addSpecial, parseSpecial: golden.parseSpecial)
                == golden.ids)
        #expect(utf8(tokenizer.decode(golden.ids, renderSpecial: golden.parseSpecial)) == utf8(golden.piecesJoined))
    }

    @Test("special ids and end of generation as llama.cpp has them")
    func special() throws {
        for (index, variant) in try #require(SyntheticSPMGolden.file).variants.enumerated() {
            let tokenizer = try SyntheticSPMGolden.tokenizer("synthetic-\(index)")
            #expect(tokenizer.bosID == variant.special.bos && tokenizer.eosID == variant.special.eos)
            #expect(tokenizer.addBOS == variant.special.addBOS)
            #expect(tokenizer.endOfGenerationIDs == Set(variant.special.endOfGeneration))
        }
    }

    @Test("equal scores merge leftmost first; a character without a token falls back to its bytes")
    func tiesAndFallback() throws {
        let tokenizer = try SyntheticSPMGolden.tokenizer("synthetic-1")  // no space prefix
        let xy = try #require(tokenizer.id(of: "xy")), yx = try #require(tokenizer.id(of: "yx"))
        let x = try #require(tokenizer.id(of: "x")), y = try #require(tokenizer.id(of: "y"))
        #expect(tokenizer.encode("xyx") == [xy, x], "xy and yx tie at score 0: the left pair merges")
        #expect(tokenizer.encode("yxy") == [yx, y])
        let fallback: [Int32] = [3 + 0xE4, 3 + 0xB8, 3 + 0xAD]  // <0xE4> <0xB8> <0xAD>
        #expect(tokenizer.encode("中") == fallback)
    }
}
