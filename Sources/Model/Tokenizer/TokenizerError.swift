// Errors from building a tokenizer out of GGUF tokenizer data.

/// Why a `TokenizerVocabulary` cannot become a `Tokenizer`, or a token cannot be added.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// `tokenizer.ggml.model` names a family this package does not implement.
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this package does not implement.
    case unsupportedPreTokenizer(String, supported: [String])
    /// A merge has no space separating its two halves.
    case malformedMerge(index: Int, text: String)
    /// A merge names a token, or yields a concatenation, that is not in the vocabulary.
    case mergeUnknownToken(index: Int, text: String, token: String)
    /// Two ids carry the same token text.
    case duplicateToken(String, firstID: Int32, secondID: Int32)
    /// `tokenizer.ggml.token_type` is shorter than `tokenizer.ggml.tokens`.
    case tokenTypeCountMismatch(tokens: Int, tokenTypes: Int)
    /// `tokenizer.ggml.scores` is shorter than `tokenizer.ggml.tokens`.
    case scoreCountMismatch(tokens: Int, scores: Int)
    /// `adding(tokens:)` was given a token the vocabulary already has.
    case tokenAlreadyExists(String, id: Int32)
    /// `adding(tokens:)` was given an empty string.
    case emptyToken

    public var description: String {
        switch self {
        case .unsupportedModel(let model):
            return "tokenizer model '\(model)' is not supported; supported: 'gpt2' (byte-level BPE) "
                + "and 'llama' (SentencePiece)."
        case .unsupportedPreTokenizer(let name, let supported):
            return "pre-tokenizer '\(name)' is not supported; supported: \(supported.joined(separator: ", ")) "
                + "(or none, for llama.cpp's 'default')."
        case .malformedMerge(let index, let text):
            return "merge \(index) '\(text)' is not of the form 'left right'; the GGUF tokenizer data is corrupt."
        case .mergeUnknownToken(let index, let text, let token):
            return "merge \(index) '\(text)' refers to '\(token)', which is not in the vocabulary; "
                + "the GGUF tokenizer data is inconsistent."
        case .duplicateToken(let token, let first, let second):
            return "token '\(token)' appears twice, as ids \(first) and \(second); "
                + "llama.cpp refuses such a vocabulary too."
        case .tokenTypeCountMismatch(let tokens, let types):
            return "\(types) token types for \(tokens) tokens; tokenizer.ggml.token_type must have one entry per token."
        case .scoreCountMismatch(let tokens, let scores):
            return "\(scores) token scores for \(tokens) tokens; tokenizer.ggml.scores must have one entry per token."
        case .tokenAlreadyExists(let token, let id):
            return "token '\(token)' already exists as id \(id); choose a new placeholder text."
        case .emptyToken:
            return "a new token cannot be the empty string."
        }
    }
}
