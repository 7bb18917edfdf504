// The tokenizer's data from a GGUF file's `tokenizer.ggml.*` keys; reference: llama.cpp's llama_vocab::impl::load.

import GGUF

extension TokenizerVocabulary {
    /// Reads `tokenizer.ggml.*`; the tokenizer itself validates the contents.
    ///
    /// Absent flags take llama.cpp's defaults for the tokenizer family: a SentencePiece ("llama") vocabulary adds
    /// BOS and a space prefix unless the file says otherwise; a BPE one adds neither.
    public init(metadata m: GGUFMetadata) throws(ModelError) {
        guard let model = m.string("tokenizer.ggml.model") else { throw .missingKey("tokenizer.ggml.model") }
        guard let tokens = m.strings("tokenizer.ggml.tokens") else { throw .missingKey("tokenizer.ggml.tokens") }
        let types = m.ints("tokenizer.ggml.token_type")?.map { Int32(truncatingIfNeeded: $0) }
        let scores = m.floats("tokenizer.ggml.scores") ?? m.ints("tokenizer.ggml.scores")?.map { Float($0) }
        func id(_ key: String) -> Int32? { m.int(key).map { Int32(truncatingIfNeeded: $0) } }
        let sentencePiece = model == "llama"
        self.init(
            model: model,
            pre: m.string("tokenizer.ggml.pre"),
            tokens: tokens,
            tokenTypes: types,
            merges: m.strings("tokenizer.ggml.merges") ?? [],
            scores: scores,
            bosID: id("tokenizer.ggml.bos_token_id"),
            eosID: id("tokenizer.ggml.eos_token_id"),
            unknownID: id("tokenizer.ggml.unknown_token_id"),
            paddingID: id("tokenizer.ggml.padding_token_id"),
            endOfTurnID: id("tokenizer.ggml.eot_token_id"),
            endOfMessageID: id("tokenizer.ggml.eom_token_id"),
            addBOS: m.bool("tokenizer.ggml.add_bos_token") ?? sentencePiece,
            addEOS: m.bool("tokenizer.ggml.add_eos_token") ?? false,
            addSpacePrefix: m.bool("tokenizer.ggml.add_space_prefix") ?? sentencePiece)
    }
}
