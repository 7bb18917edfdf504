// Tokenizer data as a GGUF file stores it; reference: llama.cpp's llama_vocab::impl::load.

/// Plain tokenizer data, as found in a GGUF file's `tokenizer.ggml.*` keys.
///
/// This is only data: `Tokenizer.init(vocabulary:)` validates it and builds the lookup tables.
public struct TokenizerVocabulary: Sendable, Equatable {
    /// `tokenizer.ggml.model`: the tokenizer family ("gpt2" is byte-level BPE, "llama" SentencePiece).
    public var model: String
    /// `tokenizer.ggml.pre`: the pre-tokenizer that splits text before BPE; nil uses llama.cpp's "default".
    public var pre: String?
    /// `tokenizer.ggml.tokens`: each token's text, indexed by id.
    public var tokens: [String]
    /// `tokenizer.ggml.token_type`: llama.cpp token types (`TokenType` raw values); nil means all normal.
    public var tokenTypes: [Int32]?
    /// `tokenizer.ggml.merges`: BPE merges in rank order, each "left right".
    public var merges: [String]
    /// `tokenizer.ggml.scores`: each token's SentencePiece score (higher merges first); nil means all 0.
    public var scores: [Float]?
    /// `tokenizer.ggml.bos_token_id`; nil when the key is absent.
    public var bosID: Int32?
    /// `tokenizer.ggml.eos_token_id`; nil when the key is absent.
    public var eosID: Int32?
    /// `tokenizer.ggml.unknown_token_id`; nil when the key is absent.
    public var unknownID: Int32?
    /// `tokenizer.ggml.padding_token_id`; nil when the key is absent.
    public var paddingID: Int32?
    /// `tokenizer.ggml.eot_token_id` (end of turn); nil when the key is absent.
    public var endOfTurnID: Int32?
    /// `tokenizer.ggml.eom_token_id` (end of message); nil when the key is absent.
    public var endOfMessageID: Int32?
    /// `tokenizer.ggml.add_bos_token`: whether `encode(addSpecial: true)` prepends BOS.
    public var addBOS: Bool
    /// `tokenizer.ggml.add_eos_token`: whether `encode(addSpecial: true)` appends EOS.
    public var addEOS: Bool
    /// `tokenizer.ggml.add_space_prefix`: whether SentencePiece puts a space before text that starts the input or
    /// follows a special token (llama.cpp's default: true for "llama", unused for "gpt2").
    public var addSpacePrefix: Bool

    /// Creates a vocabulary from the values of the GGUF keys.
    public init(
        model: String,
        pre: String? = nil,
        tokens: [String],
        tokenTypes: [Int32]? = nil,
        merges: [String],
        scores: [Float]? = nil,
        bosID: Int32? = nil,
        eosID: Int32? = nil,
        unknownID: Int32? = nil,
        paddingID: Int32? = nil,
        endOfTurnID: Int32? = nil,
        endOfMessageID: Int32? = nil,
        addBOS: Bool = false,
        addEOS: Bool = false,
        addSpacePrefix: Bool = false
    ) {
        self.model = model
        self.pre = pre
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.scores = scores
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.paddingID = paddingID
        self.endOfTurnID = endOfTurnID
        self.endOfMessageID = endOfMessageID
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.addSpacePrefix = addSpacePrefix
    }
}
