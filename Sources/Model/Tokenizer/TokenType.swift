// Token types and attributes; reference: llama.cpp's llama_token_type and llama_token_attr (llama.h).

/// A token's type as stored in `tokenizer.ggml.token_type`.
public struct TokenType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// No type given (0); llama.cpp never emits nor renders such a token.
    public static let undefined = TokenType(rawValue: 0)
    /// Ordinary text token (1), stored through GPT-2's byte-to-unicode map.
    public static let normal = TokenType(rawValue: 1)
    /// The unknown-token placeholder (2).
    public static let unknown = TokenType(rawValue: 2)
    /// Control token such as `<|im_start|>` (3): matched in text only with parseSpecial, rendered only on request.
    public static let control = TokenType(rawValue: 3)
    /// User-defined token (4): always matched in text, stored and rendered as raw text.
    public static let userDefined = TokenType(rawValue: 4)
    /// Unused slot (5): never matched, rendered empty.
    public static let unused = TokenType(rawValue: 5)
    /// Byte token `<0xXX>` (6), rendered as that byte.
    public static let byte = TokenType(rawValue: 6)

    public var description: String {
        switch self {
        case .undefined: return "undefined"
        case .normal: return "normal"
        case .unknown: return "unknown"
        case .control: return "control"
        case .userDefined: return "user-defined"
        case .unused: return "unused"
        case .byte: return "byte"
        default: return "type \(rawValue)"
        }
    }
}

/// The attributes llama.cpp derives from a token's type and text; they decide matching and rendering.
public struct TokenAttributes: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// LLAMA_TOKEN_ATTR_UNKNOWN.
    public static let unknown = TokenAttributes(rawValue: 1 << 0)
    /// LLAMA_TOKEN_ATTR_UNUSED.
    public static let unused = TokenAttributes(rawValue: 1 << 1)
    /// LLAMA_TOKEN_ATTR_NORMAL.
    public static let normal = TokenAttributes(rawValue: 1 << 2)
    /// LLAMA_TOKEN_ATTR_CONTROL.
    public static let control = TokenAttributes(rawValue: 1 << 3)
    /// LLAMA_TOKEN_ATTR_USER_DEFINED.
    public static let userDefined = TokenAttributes(rawValue: 1 << 4)
    /// LLAMA_TOKEN_ATTR_BYTE.
    public static let byte = TokenAttributes(rawValue: 1 << 5)

    /// The attributes llama.cpp's loader gives a token of this type, before any override by text.
    public init(_ type: TokenType) {
        switch type {
        case .normal: self = .normal
        case .unknown: self = .unknown
        case .control: self = .control
        case .userDefined: self = .userDefined
        case .unused: self = .unused
        case .byte: self = .byte
        default: self = []  // LLAMA_TOKEN_ATTR_UNDEFINED, also for out-of-range types
        }
    }
}
