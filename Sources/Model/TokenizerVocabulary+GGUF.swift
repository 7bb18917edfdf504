// The tokenizer's data from a GGUF file's `tokenizer.ggml.*` keys.

import GGUF

extension TokenizerVocabulary {
    /// Reads `tokenizer.ggml.*`; the tokenizer itself validates the contents.
    public init(metadata m: GGUFMetadata) throws(ModelError) {
        guard let model = m.string("tokenizer.ggml.model") else { throw .missingKey("tokenizer.ggml.model") }
        guard let tokens = m.strings("tokenizer.ggml.tokens") else { throw .missingKey("tokenizer.ggml.tokens") }
        let types = m.ints("tokenizer.ggml.token_type")?.map { Int32(truncatingIfNeeded: $0) }
        func id(_ key: String) -> Int32? { m.int(key).map { Int32(truncatingIfNeeded: $0) } }
        self.init(
            model: model,
            pre: m.string("tokenizer.ggml.pre"),
            tokens: tokens,
            tokenTypes: types,
            merges: m.strings("tokenizer.ggml.merges") ?? [],
            bosID: id("tokenizer.ggml.bos_token_id"),
            eosID: id("tokenizer.ggml.eos_token_id"),
            unknownID: id("tokenizer.ggml.unknown_token_id"),
            paddingID: id("tokenizer.ggml.padding_token_id"),
            addBOS: m.bool("tokenizer.ggml.add_bos_token") ?? false,
            addEOS: m.bool("tokenizer.ggml.add_eos_token") ?? false)
    }
}
