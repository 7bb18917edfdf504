// Pre-tokenization: splitting text into words before BPE; reference: llama.cpp's llm_tokenizer_bpe (regex lists per
// pre-tokenizer, llama-vocab.cpp) and unicode_regex_split with its hand-written splitters (unicode.cpp).
//
// llama.cpp applies a list of regexes in turn; each one splits every piece left by the one before into its matches and
// the text between them (both kept). The GPT-2, LLaMA-3 and Qwen2 regexes run as hand-written splitters in llama.cpp;
// the others run through std::regex. Every pass here is written by hand and follows llama.cpp's behavior, including
// where its splitters differ from a real regex engine.

/// Text decoded for pre-tokenization: its code points, their classes and where each starts in the UTF-8.
struct ScalarText {
    /// Code points: (count).
    var scalars: [UInt32] = []
    /// Class of each code point: (count).
    var classes: [ScalarClass] = []
    /// Byte offset of each code point in the UTF-8, plus the end: (count + 1).
    var byteOffsets: [Int] = []

    /// Decodes valid UTF-8 (as every Swift String is) into code points, replacing what was there.
    mutating func load(_ bytes: UnsafeBufferPointer<UInt8>) {
        scalars.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        byteOffsets.removeAll(keepingCapacity: true)
        var i = 0
        while i < bytes.count {
            let lead = bytes[i]
            var value: UInt32
            var length: Int
            if lead < 0x80 {
                value = UInt32(lead); length = 1
            } else if lead < 0xE0 {
                value = UInt32(lead & 0x1F); length = 2
            } else if lead < 0xF0 {
                value = UInt32(lead & 0x0F); length = 3
            } else {
                value = UInt32(lead & 0x07); length = 4
            }
            for k in 1..<length {
                value = (value << 6) | UInt32(bytes[i + k] & 0x3F)
            }
            scalars.append(value)
            classes.append(ScalarClass.of(value))
            byteOffsets.append(i)
            i += length
        }
        byteOffsets.append(bytes.count)
    }

    /// The class at `position`, or nil outside `start..<end` (llama.cpp's empty flags).
    @inline(__always)
    func classAt(_ position: Int, _ start: Int, _ end: Int) -> ScalarClass? {
        position >= start && position < end ? classes[position] : nil
    }
}

/// The passes llama.cpp's `unicode_regex_split` applies for one `tokenizer.ggml.pre` value.
struct PreTokenizer: Sendable {
    /// One regex of llama.cpp's list, as a hand-written splitter.
    enum Pass: Sendable {
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (unicode_regex_split_custom_gpt2).
        case gpt2
        /// `(?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,n}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:
        /// unicode_regex_split_custom_llama3 (n = 3) and unicode_regex_split_custom_qwen2 (n = 1).
        case llama3(maxDigits: Int)
        /// `\p{N}`: every number code point alone.
        case eachNumber
        /// `\p{N}+`: runs of number code points.
        case numberRuns
        /// `[\p{P}\$\+<=>\^~\|]+`: runs of punctuation; in ASCII every punctuation or symbol but '`'.
        case punctuationRuns
        /// `[0-9][0-9][0-9]`: ASCII digits three at a time, from the left.
        case asciiDigitTriples
    }

    /// The regexes in the order llama.cpp applies them.
    let passes: [Pass]
    /// Whether a word that is itself a vocabulary token skips BPE (llama.cpp's `ignore_merges`).
    let ignoresMerges: Bool

    /// The pre-tokenizer for a `tokenizer.ggml.pre` value; nil or "" is llama.cpp's "default".
    init(named name: String?) throws(TokenizerError) {
        let name = name ?? ""
        if name.isEmpty || name == "default" {
            passes = [.punctuationRuns, .gpt2, .numberRuns, .asciiDigitTriples]
            ignoresMerges = false
        } else if Self.gpt2Names.contains(name) {
            passes = [.gpt2]
            ignoresMerges = false
        } else if Self.starcoderNames.contains(name) {
            passes = [.eachNumber, .gpt2]
            ignoresMerges = false
        } else if Self.llama3Names.contains(name) {
            passes = [.llama3(maxDigits: 3)]
            ignoresMerges = true
        } else if Self.llama3RegexNames.contains(name) {
            passes = [.llama3(maxDigits: 3)]
            ignoresMerges = false
        } else if Self.qwen2Names.contains(name) {
            passes = [.llama3(maxDigits: 1)]
            ignoresMerges = false
        } else {
            throw .unsupportedPreTokenizer(name, supported: Self.supportedNames)
        }
    }

    /// Names llama.cpp maps to LLAMA_VOCAB_PRE_TYPE_GPT2 (and MPT, OLMO, JAIS, ...) with no per-name token attributes.
    static let gpt2Names = ["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo",
                            "jais", "trillion", "granite-docling", "exaone4"]
    /// Names llama.cpp maps to the STARCODER regex list (`\p{N}`, then GPT-2's), SMOLLM among them.
    static let starcoderNames = ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b",
                                 "mellum2"]
    /// Names llama.cpp maps to LLAMA_VOCAB_PRE_TYPE_LLAMA3, which also sets `ignore_merges`.
    static let llama3Names = ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                              "jina-v5-nano"]
    /// Names with the LLaMA-3 regex but without `ignore_merges` (DBRX, SMAUG).
    static let llama3RegexNames = ["dbrx", "smaug-bpe"]
    /// Names llama.cpp maps to the Qwen2 regex (QWEN2, STABLELM2, HUNYUAN, SOLAR_OPEN).
    static let qwen2Names = ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
                             "solar-open"]

    /// Every supported name, for error messages.
    static var supportedNames: [String] {
        ["default"] + gpt2Names + starcoderNames + llama3Names + llama3RegexNames + qwen2Names
    }

    /// Splits `text` into pieces; leaves in `ends` the end index (in code points) of each piece, in order.
    func split(_ text: ScalarText, ends: inout [Int], scratch: inout [Int]) {
        ends.removeAll(keepingCapacity: true)
        if !text.scalars.isEmpty { ends.append(text.scalars.count) }
        for pass in passes {
            scratch.removeAll(keepingCapacity: true)
            var start = 0
            for end in ends {
                switch pass {
                case .gpt2: Self.splitGPT2(text, start, end, into: &scratch)
                case .llama3(let maxDigits): Self.splitLLaMA3(text, start, end, maxDigits: maxDigits, into: &scratch)
                case .eachNumber: Self.splitMatches(text, start, end, into: &scratch, match: Self.matchNumber)
                case .numberRuns: Self.splitMatches(text, start, end, into: &scratch, match: Self.matchNumberRun)
                case .punctuationRuns:
                    Self.splitMatches(text, start, end, into: &scratch, match: Self.matchPunctuationRun)
                case .asciiDigitTriples:
                    Self.splitMatches(text, start, end, into: &scratch, match: Self.matchASCIIDigitTriple)
                }
                start = end
            }
            swap(&ends, &scratch)
        }
    }

    // MARK: GPT-2

    /// GPT-2's regex over one piece, as llama.cpp's unicode_regex_split_custom_gpt2 runs it.
    static func splitGPT2(_ text: ScalarText, _ start: Int, _ end: Int, into ends: inout [Int]) {
        let scalars = text.scalars
        var position = start
        while position < end {
            let scalar = scalars[position]
            let flags = text.classes[position]

            // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
            if let length = contractionLength(scalars, position, end, caseInsensitive: false) {
                position += length
                ends.append(position)
                continue
            }

            // <space>?\p{L}+, <space>?\p{N}+, <space>?[^\s\p{L}\p{N}]+: the space is taken only before such a run
            let runStart = scalar == 0x20 ? position + 1 : position
            let lookahead = scalar == 0x20 ? text.classAt(runStart, start, end) : flags
            if let first = lookahead {
                let runClass: ScalarClass?
                if first.contains(.letter) {
                    runClass = .letter
                } else if first.contains(.number) {
                    runClass = .number
                } else if first.isDisjoint(with: [.whitespace, .letter, .number]) {
                    runClass = []  // "other": neither whitespace, letter nor number
                } else {
                    runClass = nil
                }
                if let runClass {
                    position = runStart
                    while let next = text.classAt(position, start, end), Self.continuesRun(next, runClass) {
                        position += 1
                    }
                    ends.append(position)
                    continue
                }
            }

            // \s+(?!\S) leaves the last whitespace for the word that follows; \s+ takes a run that ends the piece
            var spaces = 0
            while let next = text.classAt(position + spaces, start, end), next.contains(.whitespace) {
                spaces += 1
            }
            if spaces > 1 && position + spaces < end {
                position += spaces - 1
            } else if spaces > 0 {
                position += spaces
            } else {
                position += 1  // no alternative matched: one code point alone
            }
            ends.append(position)
        }
    }

    /// Whether a code point of class `next` extends a run of `runClass` (letters, numbers, or "other" when empty).
    @inline(__always)
    private static func continuesRun(_ next: ScalarClass, _ runClass: ScalarClass) -> Bool {
        runClass.isEmpty ? next.isDisjoint(with: [.whitespace, .letter, .number]) : next.contains(runClass)
    }

    /// Length of an English contraction ('s 't 'm 'd 're 've 'll) at `position`, or nil.
    @inline(__always)
    private static func contractionLength(_ scalars: [UInt32], _ position: Int, _ end: Int,
                                          caseInsensitive: Bool) -> Int? {
        guard scalars[position] == 0x27, position + 1 < end else { return nil }  // '
        let fold: (UInt32) -> UInt32 = { caseInsensitive && $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }
        let next = fold(scalars[position + 1])
        if next == 0x73 || next == 0x74 || next == 0x6D || next == 0x64 { return 2 }  // s t m d
        guard position + 2 < end else { return nil }
        let nextNext = fold(scalars[position + 2])
        let isTwoLetter = (next == 0x72 && nextNext == 0x65) || (next == 0x76 && nextNext == 0x65)
            || (next == 0x6C && nextNext == 0x6C)
        return isTwoLetter ? 3 : nil  // re ve ll
    }

    // MARK: LLaMA 3 and Qwen2

    /// The LLaMA-3 regex (or Qwen2's, with `maxDigits` 1) over one piece, as llama.cpp's
    /// unicode_regex_split_custom_llama3 / _qwen2 run it.
    static func splitLLaMA3(_ text: ScalarText, _ start: Int, _ end: Int, maxDigits: Int, into ends: inout [Int]) {
        let scalars = text.scalars
        let isNewline: (UInt32) -> Bool = { $0 == 0x0D || $0 == 0x0A }
        var position = start
        while position < end {
            let scalar = scalars[position]
            let flags = text.classes[position]

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if let length = contractionLength(scalars, position, end, caseInsensitive: true) {
                position += length
                ends.append(position)
                continue
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+: any one code point but a newline or number may lead a run of letters
            if !isNewline(scalar) && !flags.contains(.number) {
                let nextIsLetter = text.classAt(position + 1, start, end)?.contains(.letter) ?? false
                if flags.contains(.letter) || nextIsLetter {
                    position += 1
                    while let next = text.classAt(position, start, end), next.contains(.letter) {
                        position += 1
                    }
                    ends.append(position)
                    continue
                }
            }

            // \p{N}{1,maxDigits}: a run of numbers cut into groups from the left
            if flags.contains(.number) {
                var groupStart = position
                while let next = text.classAt(position, start, end), next.contains(.number) {
                    position += 1
                    if position - groupStart >= maxDigits {
                        ends.append(position)
                        groupStart = position
                    }
                }
                if position > groupStart { ends.append(position) }
                continue
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*: a space at the very end of the piece is taken alone here
            let lookahead = scalar == 0x20 ? text.classAt(position + 1, start, end) : flags
            if (lookahead ?? []).isDisjoint(with: [.whitespace, .letter, .number]) {
                if scalar == 0x20 { position += 1 }
                while let next = text.classAt(position, start, end),
                      next.isDisjoint(with: [.whitespace, .letter, .number]) {
                    position += 1
                }
                while position < end && isNewline(scalars[position]) {
                    position += 1
                }
                ends.append(position)
                continue
            }

            // \s*[\r\n]+ takes whitespace through its last newline; else \s+(?!\S), then \s+
            var spaces = 0
            var afterLastNewline = 0
            while let next = text.classAt(position + spaces, start, end), next.contains(.whitespace) {
                if isNewline(scalars[position + spaces]) { afterLastNewline = position + spaces + 1 }
                spaces += 1
            }
            if afterLastNewline > 0 {
                position = afterLastNewline
            } else if spaces > 1 && position + spaces < end {
                position += spaces - 1
            } else if spaces > 0 {
                position += spaces
            } else {
                position += 1  // no alternative matched: one code point alone
            }
            ends.append(position)
        }
    }

    // MARK: Simple regexes

    /// Splits one piece into the matches of `match` and the text between them, as std::regex_iterator finds them.
    ///
    /// `match` returns the length of the match starting at a position (0 for none); matches never overlap.
    static func splitMatches(_ text: ScalarText, _ start: Int, _ end: Int, into ends: inout [Int],
                             match: (ScalarText, Int, Int) -> Int) {
        var gapStart = start
        var position = start
        while position < end {
            let length = match(text, position, end)
            if length == 0 {
                position += 1
                continue
            }
            if position > gapStart { ends.append(position) }
            position += length
            ends.append(position)
            gapStart = position
        }
        if end > gapStart { ends.append(end) }
    }

    /// `\p{N}`: one number code point.
    static func matchNumber(_ text: ScalarText, _ position: Int, _ end: Int) -> Int {
        text.classes[position].contains(.number) ? 1 : 0
    }

    /// `\p{N}+`: the run of number code points here.
    static func matchNumberRun(_ text: ScalarText, _ position: Int, _ end: Int) -> Int {
        var length = 0
        while position + length < end && text.classes[position + length].contains(.number) { length += 1 }
        return length
    }

    /// `[\p{P}\$\+<=>\^~\|]+`: the run of punctuation here (llama.cpp's collapsed-category form of the class).
    static func matchPunctuationRun(_ text: ScalarText, _ position: Int, _ end: Int) -> Int {
        var length = 0
        while position + length < end && isDefaultPunctuation(text, position + length) { length += 1 }
        return length
    }

    /// Whether a code point is in `[\p{P}\$\+<=>\^~\|]`: ASCII punctuation and symbols but '`', or non-ASCII `\p{P}`.
    @inline(__always)
    private static func isDefaultPunctuation(_ text: ScalarText, _ position: Int) -> Bool {
        let scalar = text.scalars[position]
        if scalar < 0x80 {
            return scalar != 0x60 && ((0x21...0x2F).contains(scalar) || (0x3A...0x40).contains(scalar)
                || (0x5B...0x5F).contains(scalar) || (0x7B...0x7E).contains(scalar))
        }
        return text.classes[position].contains(.punctuation)
    }

    /// `[0-9][0-9][0-9]`: three ASCII digits here.
    static func matchASCIIDigitTriple(_ text: ScalarText, _ position: Int, _ end: Int) -> Int {
        guard position + 3 <= end else { return 0 }
        for k in 0..<3 where !(0x30...0x39).contains(text.scalars[position + k]) { return 0 }
        return 3
    }
}
