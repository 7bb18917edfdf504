// GPT-2's byte-to-unicode map; reference: llama.cpp's unicode_byte_to_utf8_map and unicode_utf8_to_byte_map
// (unicode.cpp).

/// The bijection between the 256 byte values and 256 printable code points that byte-level BPE vocabularies use.
///
/// Bytes that are printable Latin-1 ('!'...'~', '¡'...'¬', '®'...'ÿ') stand for themselves; the other 68 bytes,
/// in increasing order, take the code points 256, 257, ... 323 (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
enum ByteLevel {
    /// The code point standing for each byte: (256).
    static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if isPrintable(UInt8(byte)) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// The byte each code point below `scalarLimit` stands for, or -1: (scalarLimit).
    static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: scalarLimit)
        for byte in 0..<256 {
            table[Int(scalarForByte[byte])] = Int16(byte)
        }
        return table
    }()

    /// One past the largest code point the map uses (256 + 68).
    static let scalarLimit = 324

    /// Whether a byte stands for itself.
    static func isPrintable(_ byte: UInt8) -> Bool {
        (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
    }

    /// The byte a code point stands for, or nil when it is outside the map.
    static func byte(for scalar: UInt32) -> UInt8? {
        guard scalar < UInt32(scalarLimit) else { return nil }
        let byte = byteForScalar[Int(scalar)]
        return byte < 0 ? nil : UInt8(byte)
    }

    /// Appends the UTF-8 of the code point standing for `byte` (one or two bytes).
    static func appendEncoded(_ byte: UInt8, to output: inout [UInt8]) {
        let scalar = scalarForByte[Int(byte)]
        if scalar < 0x80 {
            output.append(UInt8(scalar))
        } else {
            output.append(UInt8(0xC0 | (scalar >> 6)))
            output.append(UInt8(0x80 | (scalar & 0x3F)))
        }
    }
}
