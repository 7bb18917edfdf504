// Tokenizer data as a GGUF file stores it; reference: llama.cpp's llama_vocab::impl::load.

/// Plain tokenizer data, as found in a GGUF file's `tokenizer.ggml.*` keys.
///
/// This is only data: `Tokenizer.init(vocabulary:)` validates it and builds the lookup tables.
public struct TokenizerVocabulary: Sendable, Equatable {
    /// `tokenizer.ggml.model`: the tokenizer family ("gpt2" is byte-level BPE).
    public var model: String
    /// `tokenizer.ggml.pre`: the pre-tokenizer that splits text before BPE; nil uses llama.cpp's "default".
    public var pre: String?
    /// `tokenizer.ggml.tokens`: each token's text, indexed by id.
    public var tokens: [String]
    /// `tokenizer.ggml.token_type`: llama.cpp token types (`TokenType` raw values); nil means all normal.
    public var tokenTypes: [Int32]?
    /// `tokenizer.ggml.merges`: BPE merges in rank order, each "left right".
    public var merges: [String]
    /// `tokenizer.ggml.bos_token_id`; nil when the key is absent.
    public var bosID: Int32?
    /// `tokenizer.ggml.eos_token_id`; nil when the key is absent.
    public var eosID: Int32?
    /// `tokenizer.ggml.unknown_token_id`; nil when the key is absent.
    public var unknownID: Int32?
    /// `tokenizer.ggml.padding_token_id`; nil when the key is absent.
    public var paddingID: Int32?
    /// `tokenizer.ggml.add_bos_token`: whether `encode(addSpecial: true)` prepends BOS.
    public var addBOS: Bool
    /// `tokenizer.ggml.add_eos_token`: whether `encode(addSpecial: true)` appends EOS.
    public var addEOS: Bool

    /// Creates a vocabulary from the values of the GGUF keys.
    public init(
        model: String,
        pre: String? = nil,
        tokens: [String],
        tokenTypes: [Int32]? = nil,
        merges: [String],
        bosID: Int32? = nil,
        eosID: Int32? = nil,
        unknownID: Int32? = nil,
        paddingID: Int32? = nil,
        addBOS: Bool = false,
        addEOS: Bool = false
    ) {
        self.model = model
        self.pre = pre
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.paddingID = paddingID
        self.addBOS = addBOS
        self.addEOS = addEOS
    }
}
