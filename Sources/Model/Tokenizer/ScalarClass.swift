// Code point classes for pre-tokenization; reference: llama.cpp's unicode_cpt_flags (unicode.h, unicode-data.cpp).

/// The facts about a code point that llama.cpp's pre-tokenizers test: `\p{L}`, `\p{N}`, `\p{P}` and `\s`.
///
/// llama.cpp classifies with its own tables, generated from Unicode 15.1 (`unicode_ranges_flags`,
/// `unicode_set_whitespace`). We derive the same classes from Swift's Unicode properties and treat every code point
/// assigned after Unicode 15.1 as unassigned, as llama.cpp's tables do. Checked over all 0x110000 code points against
/// llama.cpp's tables: identical for letter, number, punctuation and whitespace.
struct ScalarClass: OptionSet, Sendable {
    let rawValue: UInt8

    /// General category L (Lu, Ll, Lt, Lm, Lo): regex `\p{L}`.
    static let letter = ScalarClass(rawValue: 1 << 0)
    /// General category N (Nd, Nl, No): regex `\p{N}`.
    static let number = ScalarClass(rawValue: 1 << 1)
    /// Unicode White_Space property: regex `\s`.
    static let whitespace = ScalarClass(rawValue: 1 << 2)
    /// General category P (Pc, Pd, Ps, Pe, Pi, Pf, Po): regex `\p{P}`.
    static let punctuation = ScalarClass(rawValue: 1 << 3)

    /// The class of a code point, from a table for the Basic Multilingual Plane and computed above it.
    @inline(__always)
    static func of(_ scalar: UInt32) -> ScalarClass {
        scalar < 0x10000 ? basicPlane[Int(scalar)] : computed(scalar)
    }

    /// Classes of U+0000...U+FFFF, built once on first use: (65536).
    private static let basicPlane: [ScalarClass] = (0..<0x10000).map { computed(UInt32($0)) }

    /// The newest Unicode version llama.cpp's tables know; later code points count as unassigned.
    private static let unicodeVersionLimit = (major: 15, minor: 1)

    /// The class of a code point from Swift's Unicode properties, limited to Unicode 15.1.
    static func computed(_ value: UInt32) -> ScalarClass {
        guard let scalar = Unicode.Scalar(value) else { return [] }
        let properties = scalar.properties
        guard let age = properties.age,
              (age.major, age.minor) <= unicodeVersionLimit else { return [] }
        var result: ScalarClass = properties.isWhitespace ? .whitespace : []
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            result.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            result.insert(.number)
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            result.insert(.punctuation)
        default:
            break
        }
        return result
    }
}
