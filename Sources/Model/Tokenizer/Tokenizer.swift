// Byte-level BPE and SentencePiece tokenizers; reference: llama.cpp's llama_vocab (llama-vocab.cpp): load, tokenize,
// tokenizer_st_partition, llm_tokenizer_bpe_session, llm_tokenizer_spm_session and token_to_piece.
//
// Where this differs from llama.cpp, knowingly:
// - Refused here, accepted there: merges whose halves or concatenation are not tokens, and merges without a space
//   (llama.cpp keeps them as pairs that never match).
// - lstrip/rstrip token attributes, which llama.cpp sets only by model name (phi-3, jina-v2, modern-bert), are not
//   applied; the pre-tokenizers that imply them are not supported.
// - Fill-in-the-middle tokens: llama.cpp makes one candidate per kind a control token, the first its hash map yields,
//   and none when the GGUF names the id; here every candidate present is. Vocabularies hold one per kind in practice.
// - Special tokens of equal length: llama.cpp's order among them is unspecified (std::sort); here it is by id. It
//   matters only if two such tokens overlap in the text.
// - decode joins token pieces as llama_token_to_piece renders them. llama-cpp-python's detokenize also drops one
//   leading space after BOS (for Llama 1's space prefix); llama_detokenize drops it when add_space_prefix is set and
//   cleans up spaces before punctuation (off for smollm and qwen2, on for gpt-2, starcoder, llama3, default). Neither
//   is applied here: decode(encode(s)) gives s back.
// - SentencePiece byte fallback: a byte with neither a `<0xXX>` nor a one-byte token makes llama.cpp throw; here it
//   becomes the unknown token, or nothing without one.
// - SentencePiece resegmentation: llama.cpp splits a final symbol that is not a token back into the pair that made it
//   (rev_merge). A merged symbol is always a token, and a one-character symbol never a merge, so for valid UTF-8 (all
//   a Swift String can hold) that path never runs; here an unmerged symbol goes straight to byte fallback.
// - llama.cpp also marks control tokens whose text contains "unused" as unused; that changes only its logging.

/// Turns text into token ids and back exactly as llama.cpp does for a byte-level BPE ("gpt2") or SentencePiece
/// ("llama") vocabulary.
///
/// Encoding runs in four steps, as in llama.cpp's `llama_vocab::impl::tokenize`:
/// 1. special tokens found literally in the text are cut out as single tokens (`partition`);
/// 2. BPE: each remaining stretch of text is split into words by the pre-tokenizer (`PreTokenizer`) and each word's
///    bytes are merged by BPE rank into tokens (`BytePairEncoder`). SentencePiece: each stretch has its spaces written
///    as '▁' (after a space prefix when the vocabulary asks for one and the stretch starts the text or follows a special
///    token) and its characters are merged by token score (`SentencePieceEncoder`);
/// 3. BOS and EOS are added when asked and the vocabulary says so.
public final class Tokenizer: Sendable {
    /// The tokenizer family, with what it needs beyond the shared tables.
    enum Kind: Sendable {
        /// Byte-level BPE ("gpt2"): a pre-tokenizer and merge ranks.
        case bytePair(PreTokenizer, BytePairEncoder)
        /// SentencePiece ("llama"): token scores; whether a space goes before text that starts a fragment run.
        case sentencePiece(SentencePieceEncoder, addSpacePrefix: Bool)
    }

    /// The data this tokenizer was built from.
    public let vocabulary: TokenizerVocabulary
    /// Beginning-of-sequence id: the GGUF key if in range, else llama.cpp's default if in range (11 for BPE, 1 for
    /// SentencePiece), else nil.
    public let bosID: Int32?
    /// End-of-sequence id, resolved as `bosID` is (defaults 11 for BPE, 2 for SentencePiece).
    public let eosID: Int32?
    /// Unknown-token id, resolved as `bosID` is (no default for BPE, 0 for SentencePiece).
    public let unknownID: Int32?
    /// Padding id, if the GGUF gives one in range.
    public let paddingID: Int32?
    /// Whether `encode(addSpecial: true)` prepends BOS.
    public let addBOS: Bool
    /// Whether `encode(addSpecial: true)` appends EOS.
    public let addEOS: Bool
    /// Tokens that end generation, found as llama.cpp finds them: EOS, the GGUF's end-of-turn and end-of-message ids,
    /// and texts such as `<|im_end|>` and `<end_of_turn>` (llama_vocab_is_eog).
    public let endOfGenerationIDs: Set<Int32>

    /// Token texts by id; an empty text becomes "[EMPTY_<id>]" as in llama.cpp: (count).
    private let texts: [String]
    /// Token ids by exact text.
    private let index: TokenIndex
    /// Token types from the file: (count).
    private let types: [TokenType]
    /// Effective attributes, after llama.cpp's overrides by text: (count).
    private let attributes: [TokenAttributes]
    /// The family and its encoder.
    private let kind: Kind
    /// Tokens cut out of text before BPE, longest first.
    private let specialTokens: [SpecialToken]
    /// Every token's rendered bytes, concatenated; token i is `pieces[pieceOffsets[i]..<pieceOffsets[i + 1]]`.
    private let pieces: [UInt8]
    /// Where each token's bytes start in `pieces`: (count + 1).
    private let pieceOffsets: [Int]

    /// Number of tokens in the vocabulary.
    public var count: Int { texts.count }

    /// Builds the tokenizer, validating the vocabulary; fails on what llama.cpp would refuse or we do not implement.
    public init(vocabulary: TokenizerVocabulary) throws(TokenizerError) {
        let sentencePiece: Bool
        switch vocabulary.model {
        case "gpt2": sentencePiece = false
        case "llama": sentencePiece = true
        default: throw .unsupportedModel(vocabulary.model)
        }
        let count = vocabulary.tokens.count
        if let types = vocabulary.tokenTypes, types.count < count {
            throw .tokenTypeCountMismatch(tokens: count, tokenTypes: types.count)
        }
        // scores may stop short only before user-defined tokens appended after them (textual inversion's new tokens,
        // which are cut out of text before SentencePiece and so never merge): those score 0
        if let scores = vocabulary.scores, scores.count < count,
           !(scores.count..<count).allSatisfy({ vocabulary.tokenTypes?[$0] == TokenType.userDefined.rawValue }) {
            throw .scoreCountMismatch(tokens: count, scores: scores.count)
        }

        // texts and the reverse map; llama.cpp renames empty texts and aborts on duplicates
        var texts = vocabulary.tokens
        var index = TokenIndex(capacity: count)
        for id in 0..<count {
            if texts[id].isEmpty { texts[id] = "[EMPTY_\(id)]" }
            if let first = index.insert(texts[id], id: Int32(id)) {
                throw .duplicateToken(texts[id], firstID: first, secondID: Int32(id))
            }
        }

        // special ids: llama.cpp keeps a key only if in range, else its family's default if in range
        let inRange: (Int32?) -> Int32? = { id in id.flatMap { $0 >= 0 && Int($0) < count ? $0 : nil } }
        let bosID = inRange(vocabulary.bosID) ?? inRange(sentencePiece ? 1 : 11)
        let eosID = inRange(vocabulary.eosID) ?? inRange(sentencePiece ? 2 : 11)
        let unknownID = inRange(vocabulary.unknownID) ?? (sentencePiece ? inRange(0) : nil)

        // types and attributes, with llama.cpp's overrides by text
        let types: [TokenType]
        if let rawTypes = vocabulary.tokenTypes {
            types = rawTypes.withUnsafeBufferPointer { raw in (0..<count).map { TokenType(rawValue: raw[$0]) } }
        } else {
            types = [TokenType](repeating: .normal, count: count)
        }
        var attributes = types.map(TokenAttributes.init)
        var endOfGeneration = Self.applyAttributeOverrides(&attributes, index: index, eosID: eosID)
        for id in [vocabulary.endOfTurnID, vocabulary.endOfMessageID].compactMap(inRange) {
            endOfGeneration.insert(id)
        }

        if sentencePiece {
            var scores = vocabulary.scores.map { Array($0.prefix(count)) } ?? [Float](repeating: 0, count: count)
            scores += [Float](repeating: 0, count: count - scores.count)
            kind = .sentencePiece(SentencePieceEncoder(index: index, scores: scores, unknownID: unknownID),
                                  addSpacePrefix: vocabulary.addSpacePrefix)
        } else {
            kind = .bytePair(try PreTokenizer(named: vocabulary.pre),
                             try BytePairEncoder(merges: vocabulary.merges, index: index))
        }

        self.vocabulary = vocabulary
        self.texts = texts
        self.index = index
        self.types = types
        self.attributes = attributes
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.paddingID = inRange(vocabulary.paddingID)
        self.addBOS = vocabulary.addBOS
        self.addEOS = vocabulary.addEOS
        self.endOfGenerationIDs = endOfGeneration
        self.specialTokens = SpecialToken.cache(texts: texts, attributes: attributes)
        (self.pieces, self.pieceOffsets) = Self.renderPieces(texts: texts, attributes: attributes,
                                                             sentencePiece: sentencePiece)
    }

    /// Whether this is a SentencePiece ("llama") vocabulary, whose texts write spaces as '▁'.
    public var isSentencePiece: Bool {
        if case .sentencePiece = kind { return true }
        return false
    }

    // MARK: Vocabulary

    /// The id of a token by its exact text, or nil.
    public func id(of token: String) -> Int32? {
        index[text: token]
    }

    /// A token's text as stored in the vocabulary (normal tokens: ' ' appears as 'Ġ' for BPE, as '▁' for SentencePiece).
    public func text(of id: Int32) -> String {
        texts[checked(id)]
    }

    /// A token's type as stored in `tokenizer.ggml.token_type`.
    public func tokenType(_ id: Int32) -> TokenType {
        types[checked(id)]
    }

    /// A token's attributes as llama.cpp uses them, after its overrides by text (e.g. `<|endoftext|>` is control).
    public func attributes(of id: Int32) -> TokenAttributes {
        attributes[checked(id)]
    }

    /// Whether a token ends generation.
    public func isEndOfGeneration(_ id: Int32) -> Bool {
        endOfGenerationIDs.contains(id)
    }

    /// The token that is exactly `text`, written in the vocabulary's own encoding, or nil.
    ///
    /// A token is `text` when it renders as `text`'s bytes (llama.cpp's `token_to_piece` with special tokens shown):
    /// a normal token through the vocabulary's encoding (" the" is "Ġthe" in a byte-level BPE vocabulary, "▁the" in
    /// SentencePiece), a control, user-defined or unknown token as its raw text, a byte token `<0xXX>` as its byte.
    /// This is the question "would adding `text` as a new token duplicate one?", which `id(of:)` cannot answer: it
    /// compares with the stored texts. `below`: consider only ids below it (the base vocabulary, when this
    /// tokenizer already holds new tokens).
    public func existingToken(renderingAs text: String, below limit: Int32 = .max) -> Int32? {
        let target = Array(text.utf8)
        guard !target.isEmpty else { return nil }
        var candidates: [Int32?] = [index[bytes: target]]
        switch kind {
        case .bytePair:
            var encoded: [UInt8] = []
            for byte in target { ByteLevel.appendEncoded(byte, to: &encoded) }
            candidates.append(index[bytes: encoded])
        case .sentencePiece(let encoder, _):
            var escaped: [UInt8] = []
            for byte in target {
                if byte == 0x20 { escaped += SentencePieceEncoder.spaceMarker } else { escaped.append(byte) }
            }
            candidates.append(index[bytes: escaped])
            if target.count == 1, encoder.byteTokenIDs[Int(target[0])] >= 0 {
                candidates.append(encoder.byteTokenIDs[Int(target[0])])
            }
        }
        return candidates.compactMap { $0 }.first { $0 < limit && pieceBytes($0, renderSpecial: true) == target }
    }

    /// A new tokenizer with `tokens` appended as user-defined tokens (llama.cpp type 4), for textual inversion.
    ///
    /// User-defined tokens are cut out of any text before BPE or SentencePiece, even without `parseSpecial`, and decode
    /// as themselves. A token that is already one token of the vocabulary, stored or rendered (see
    /// `existingToken(renderingAs:)`), is refused.
    public func adding(tokens newTokens: [String]) throws(TokenizerError) -> Tokenizer {
        var added = TokenIndex(capacity: newTokens.count)
        for (offset, token) in newTokens.enumerated() {
            if token.isEmpty { throw .emptyToken }
            if let id = index[text: token] ?? existingToken(renderingAs: token)
                ?? added.insert(token, id: Int32(count + offset)) {
                throw .tokenAlreadyExists(token, id: id)
            }
        }
        var extended = vocabulary
        let oldTypes = vocabulary.tokenTypes.map { Array($0.prefix(count)) }
            ?? [Int32](repeating: TokenType.normal.rawValue, count: count)
        extended.tokenTypes = oldTypes + [Int32](repeating: TokenType.userDefined.rawValue, count: newTokens.count)
        extended.scores = vocabulary.scores.map { Array($0.prefix(count)) + [Float](repeating: 0, count: newTokens.count) }
        extended.tokens += newTokens
        return try Tokenizer(vocabulary: extended)
    }

    /// The index of a valid id; an id out of range is a programmer error, as in llama.cpp.
    ///
    /// A `fatalError`, not a `precondition`: the module builds with -Ounchecked, which drops preconditions.
    @inline(__always)
    private func checked(_ id: Int32) -> Int {
        guard id >= 0 && Int(id) < texts.count else {
            fatalError("token id \(id) is outside the vocabulary 0..<\(texts.count)")
        }
        return Int(id)
    }

    // MARK: Encoding

    /// Token ids for `text`, with llama.cpp's `llama_tokenize(text, add_special, parse_special)` semantics.
    ///
    /// - `addSpecial`: prepend BOS / append EOS when the vocabulary's `addBOS` / `addEOS` say so.
    /// - `parseSpecial`: also match control tokens such as `<|im_start|>` in the text; user-defined tokens are
    ///   matched either way.
    /// With `addSpecial` and `addBOS` but no BOS id, nothing is prepended (llama.cpp asserts instead); likewise EOS.
    public func encode(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = false) -> [Int32] {
        encodeWithOffsets(text, addSpecial: addSpecial, parseSpecial: parseSpecial).ids
    }

    /// Token ids for `text` as `encode` gives them, and the UTF-8 byte offset in `text` where each token's text
    /// begins (BOS: 0, EOS: the text's length). Offsets never decrease; a SentencePiece space prefix belongs to the
    /// token it starts.
    public func encodeWithOffsets(_ text: String, addSpecial: Bool = false,
                                  parseSpecial: Bool = false) -> (ids: [Int32], starts: [Int]) {
        var output: [Int32] = []
        var starts: [Int] = []
        output.reserveCapacity(text.utf8.count / 3 + 2)
        starts.reserveCapacity(text.utf8.count / 3 + 2)
        if addSpecial && addBOS, let bosID {
            output.append(bosID)
            starts.append(0)
        }

        var text = text
        text.withUTF8 { bytes in
            var scratch = EncodingScratch()
            var previousIsSpecial = true  // SentencePiece's space prefix goes before text that starts the input
            for fragment in partition(bytes, parseSpecial: parseSpecial) {
                switch fragment {
                case .token(let id, let start):
                    output.append(id)
                    starts.append(start)
                    previousIsSpecial = true
                case .text(let range):
                    let fragmentBytes = UnsafeBufferPointer(rebasing: bytes[range])
                    switch kind {
                    case .bytePair(let preTokenizer, let encoder):
                        encodeText(fragmentBytes, base: range.lowerBound, preTokenizer: preTokenizer,
                                   encoder: encoder, scratch: &scratch, into: &output, starts: &starts)
                    case .sentencePiece(let encoder, let addSpacePrefix):
                        encoder.encode(fragmentBytes, base: range.lowerBound,
                                       spacePrefix: addSpacePrefix && previousIsSpecial,
                                       scratch: &scratch.spm, into: &output, starts: &starts)
                    }
                    previousIsSpecial = false
                }
            }
        }

        if addSpecial && addEOS, let eosID {
            output.append(eosID)
            starts.append(text.utf8.count)
        }
        return (output, starts)
    }

    /// A stretch of text with no special token in it, or one special token and where it starts.
    private enum Fragment {
        case text(Range<Int>)
        case token(Int32, start: Int)
    }

    /// Cuts special tokens out of the text, as llama.cpp's tokenizer_st_partition does.
    ///
    /// Tokens are taken longest first; each one is cut out of every text fragment left so far at each of its
    /// leftmost non-overlapping occurrences. Without `parseSpecial` only user-defined tokens are cut.
    private func partition(_ bytes: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = bytes.isEmpty ? [] : [.text(0..<bytes.count)]
        var next: [Fragment] = []
        for special in specialTokens where parseSpecial || special.matchesWithoutParseSpecial {
            next.removeAll(keepingCapacity: true)
            for fragment in fragments {
                guard case .text(let range) = fragment else {
                    next.append(fragment)
                    continue
                }
                var start = range.lowerBound
                while let match = special.firstMatch(in: bytes, from: start, to: range.upperBound) {
                    if match > start { next.append(.text(start..<match)) }
                    next.append(.token(special.id, start: match))
                    start = match + special.bytes.count
                }
                if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
            }
            swap(&fragments, &next)
        }
        return fragments
    }

    /// Buffers for one `encode` call, reused across fragments and words.
    private struct EncodingScratch {
        var text = ScalarText()
        var ends: [Int] = []
        var spareEnds: [Int] = []
        var bpe = BPEScratch()
        var encodedWord: [UInt8] = []
        var spm = SPMScratch()
    }

    /// Pre-tokenizes one fragment of plain text and encodes each word.
    private func encodeText(_ bytes: UnsafeBufferPointer<UInt8>, base: Int, preTokenizer: PreTokenizer,
                            encoder: BytePairEncoder, scratch: inout EncodingScratch, into output: inout [Int32],
                            starts: inout [Int]) {
        scratch.text.load(bytes)
        preTokenizer.split(scratch.text, ends: &scratch.ends, scratch: &scratch.spareEnds)
        var start = 0
        for end in scratch.ends {
            let byteRange = scratch.text.byteOffsets[start]..<scratch.text.byteOffsets[end]
            encodeWord(UnsafeBufferPointer(rebasing: bytes[byteRange]), base: base + byteRange.lowerBound,
                       preTokenizer: preTokenizer, encoder: encoder, scratch: &scratch, into: &output,
                       starts: &starts)
            start = end
        }
    }

    /// Encodes one word: whole if the pre-tokenizer ignores merges and the word is a token, else by BPE.
    @inline(__always)
    private func encodeWord(_ word: UnsafeBufferPointer<UInt8>, base: Int, preTokenizer: PreTokenizer,
                            encoder: BytePairEncoder, scratch: inout EncodingScratch, into output: inout [Int32],
                            starts: inout [Int]) {
        if preTokenizer.ignoresMerges {
            scratch.encodedWord.removeAll(keepingCapacity: true)
            for byte in word { ByteLevel.appendEncoded(byte, to: &scratch.encodedWord) }
            if let id = index[bytes: scratch.encodedWord] {
                output.append(id)
                starts.append(base)
                return
            }
        }
        encoder.encode(word, base: base, scratch: &scratch.bpe, into: &output, starts: &starts)
    }

    // MARK: Decoding

    /// The text of `ids`: their bytes joined, then decoded as UTF-8 (invalid sequences become U+FFFD).
    ///
    /// By default control and unknown tokens render as nothing, as llama.cpp's `token_to_piece(special: false)`
    /// and llama-cpp-python's `detokenize` do; `renderSpecial` renders them as their text.
    public func decode(_ ids: [Int32], renderSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(ids, renderSpecial: renderSpecial), as: UTF8.self)
    }

    /// The bytes of `ids`, joined.
    public func decodeBytes(_ ids: [Int32], renderSpecial: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids { appendPiece(id, renderSpecial: renderSpecial, to: &bytes) }
        return bytes
    }

    /// The raw bytes of one token (llama.cpp's `token_to_piece`); may be part of a UTF-8 sequence.
    public func pieceBytes(_ id: Int32, renderSpecial: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = []
        appendPiece(id, renderSpecial: renderSpecial, to: &bytes)
        return bytes
    }

    /// Appends one token's bytes.
    @inline(__always)
    func appendPiece(_ id: Int32, renderSpecial: Bool, to bytes: inout [UInt8]) {
        let index = checked(id)
        if !renderSpecial && !attributes[index].isDisjoint(with: [.control, .unknown]) { return }
        bytes.append(contentsOf: pieces[pieceOffsets[index]..<pieceOffsets[index + 1]])
    }
}

// MARK: - Building

extension Tokenizer {
    /// Texts llama.cpp treats as end of generation, and so as control tokens (`special_eog_ids`).
    static let endOfGenerationTexts = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
    ]

    /// Fill-in-the-middle prefix, suffix and middle texts, which llama.cpp detects and makes control tokens.
    static let fillInTheMiddleTexts = [
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>",
        "<|prefix|>",
        "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>",
        "<|suffix|>",
        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>",
        "<|middle|>",
    ]

    /// Fill-in-the-middle pad, repository and file-separator texts: control tokens that also end generation.
    static let fillInTheMiddleEndTexts = [
        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
        "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
        "<|file_sep|>",
    ]

    /// Applies llama.cpp's attribute overrides by token text (llama_vocab::impl::load); returns the end-of-generation
    /// ids: those found by text, and EOS.
    ///
    /// End-of-turn and fill-in-the-middle texts become control tokens; gpt-oss's `<|channel|>`, `<|message|>`,
    /// `<|start|>`, `<|constrain|>` become user-defined; `<|end|>` stops ending generation (user-defined) when
    /// `<|return|>` and `<|call|>` (or `<|calls|>` and `<|flush|>`) exist; `</s>` is normal beside
    /// `<|tool_response>` or `<|plamo:eos|>`.
    static func applyAttributeOverrides(_ attributes: inout [TokenAttributes], index: TokenIndex,
                                        eosID: Int32?) -> Set<Int32> {
        var endOfGeneration = Set<Int32>()
        for text in fillInTheMiddleTexts {
            if let id = index[text: text] { attributes[Int(id)].insert(.control) }
        }
        for text in fillInTheMiddleEndTexts + endOfGenerationTexts {
            if let id = index[text: text] {
                attributes[Int(id)].insert(.control)
                endOfGeneration.insert(id)
            }
        }
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let id = index[text: text] { attributes[Int(id)] = .userDefined }
        }
        if let eosID { endOfGeneration.insert(eosID) }

        let ends: (String) -> Bool = { text in index[text: text].map { endOfGeneration.contains($0) } ?? false }
        if let end = index[text: "<|end|>"], ends("<|end|>"),
           (ends("<|return|>") && ends("<|call|>")) || (ends("<|calls|>") && ends("<|flush|>")) {
            endOfGeneration.remove(end)
            attributes[Int(end)] = .userDefined
        }
        if let close = index[text: "</s>"], ends("</s>"), ends("<|tool_response>") || ends("<|plamo:eos|>") {
            endOfGeneration.remove(close)
            attributes[Int(close)] = .normal
        }
        return endOfGeneration
    }

    /// Every token's bytes as llama.cpp's token_to_piece(special: true) renders them.
    ///
    /// Control, unknown and user-defined tokens render as their text; normal tokens map each character back to its
    /// byte for BPE (a character outside GPT-2's byte map renders as "[UNK_BYTE_0x<hex><text>]", llama_decode_text's
    /// marker) and turn '▁' into ' ' for SentencePiece; byte tokens `<0xXX>` render as that byte; anything else
    /// (unused, undefined) renders as nothing.
    static func renderPieces(texts: [String], attributes: [TokenAttributes],
                             sentencePiece: Bool) -> (pieces: [UInt8], offsets: [Int]) {
        var pieces: [UInt8] = []
        var offsets: [Int] = [0]
        offsets.reserveCapacity(texts.count + 1)
        pieces.reserveCapacity(texts.count * 8)
        for (text, attribute) in zip(texts, attributes) {
            if !attribute.isDisjoint(with: [.control, .unknown, .userDefined]) {
                pieces.append(contentsOf: text.utf8)
            } else if attribute.contains(.normal) && sentencePiece {
                appendUnescaped(text, to: &pieces)
            } else if attribute.contains(.normal) {
                for scalar in text.unicodeScalars {
                    if let byte = ByteLevel.byte(for: scalar.value) {
                        pieces.append(byte)
                    } else {
                        let hex = String(scalar).utf8.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                        pieces.append(contentsOf: "[UNK_BYTE_0x\(hex)\(text)]".utf8)
                    }
                }
            } else if attribute.contains(.byte) {
                pieces.append(byteTokenValue(text))
            }
            offsets.append(pieces.count)
        }
        return (pieces, offsets)
    }

    /// Appends a SentencePiece text with every '▁' (E2 96 81) written as a space.
    private static func appendUnescaped(_ text: String, to pieces: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            var i = 0
            while i < bytes.count {
                if bytes[i] == 0xE2 && i + 2 < bytes.count && bytes[i + 1] == 0x96 && bytes[i + 2] == 0x81 {
                    pieces.append(0x20)
                    i += 3
                } else {
                    pieces.append(bytes[i])
                    i += 1
                }
            }
        }
    }

    /// The byte of a `<0xXX>` token: up to two hex digits at offset 3, as llama.cpp's strtol reads them (else 0).
    static func byteTokenValue(_ text: String) -> UInt8 {
        var value: UInt8 = 0
        for byte in text.utf8.dropFirst(3).prefix(2) {
            guard let digit = hexDigit(byte) else { break }
            value = value << 4 | digit
        }
        return value
    }

    private static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }
}

extension BytePairEncoder {
    /// Parses `tokenizer.ggml.merges` into a table keyed by token ids, with the byte tables.
    ///
    /// A merge is split at its first space after the first byte, as llama.cpp's loader does; both halves and their
    /// concatenation must be tokens (llama.cpp does not check, but Hugging Face tokenizers, where the files come from,
    /// require it). A repeated pair keeps its first, lowest rank.
    init(merges: [String], index: TokenIndex) throws(TokenizerError) {
        var table = MergeTable(expected: merges.count)
        for (rank, merge) in merges.enumerated() {
            let utf8 = Array(merge.utf8)
            guard let space = utf8.dropFirst().firstIndex(of: 0x20) else {
                throw .malformedMerge(index: rank, text: merge)
            }
            let left = Array(utf8[..<space])
            let right = Array(utf8[(space + 1)...])
            let unknown: ([UInt8]) -> TokenizerError = { bytes in
                .mergeUnknownToken(index: rank, text: merge, token: String(decoding: bytes, as: UTF8.self))
            }
            guard let leftID = index[bytes: left] else { throw unknown(left) }
            guard let rightID = index[bytes: right] else { throw unknown(right) }
            guard let resultID = index[bytes: left + right] else { throw unknown(left + right) }
            table.insert(left: leftID, right: rightID, Merge(rank: Int32(rank), result: resultID))
        }

        var byteTokenIDs = [Int32](repeating: -1, count: 256)
        var fallbackTokenIDs = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            let scalar = ByteLevel.scalarForByte[byte]
            byteTokenIDs[byte] = index[text: String(Unicode.Scalar(scalar)!)] ?? -1
            if scalar < 0x80 {
                fallbackTokenIDs[byte] = index[bytes: [UInt8(scalar)]] ?? -1
            }
        }
        self.init(merges: table, byteTokenIDs: byteTokenIDs, fallbackTokenIDs: fallbackTokenIDs)
    }
}

/// A token cut out of text before BPE: control, user-defined or unknown (llama.cpp's cache_special_tokens).
struct SpecialToken: Sendable {
    let id: Int32
    /// The token's text as UTF-8.
    let bytes: [UInt8]
    /// Whether it is cut out even without parseSpecial: user-defined and neither control nor unknown.
    let matchesWithoutParseSpecial: Bool

    /// The special tokens of a vocabulary, longest text first (equal lengths by id).
    static func cache(texts: [String], attributes: [TokenAttributes]) -> [SpecialToken] {
        var tokens: [SpecialToken] = []
        for (id, attribute) in attributes.enumerated()
        where !attribute.isDisjoint(with: [.control, .userDefined, .unknown]) {
            tokens.append(SpecialToken(
                id: Int32(id),
                bytes: Array(texts[id].utf8),
                matchesWithoutParseSpecial: attribute.isDisjoint(with: [.control, .unknown])))
        }
        return tokens.sorted { ($0.bytes.count, -$0.id) > ($1.bytes.count, -$1.id) }
    }

    /// Offset of the first occurrence of the token in `bytes[from..<to]`, or nil.
    ///
    /// Candidates are found with memchr on the first byte: a vocabulary has thousands of special tokens (Gemma 3:
    /// 6,414), each searched for in every fragment.
    func firstMatch(in bytes: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> Int? {
        let length = self.bytes.count
        guard length > 0, to - from >= length, let base = bytes.baseAddress else { return nil }
        let first = Int32(self.bytes[0])
        var position = from
        while position <= to - length {
            guard let hit = memchr(base + position, first, to - length + 1 - position) else { return nil }
            position = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            if self.bytes.withUnsafeBufferPointer({ memcmp(base + position, $0.baseAddress!, length) == 0 }) {
                return position
            }
            position += 1
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
