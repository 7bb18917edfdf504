// Next-token sampling: greedy at temperature 0, otherwise temperature, top-k and
// top-p (nucleus) filtering, then a draw from a seeded generator, so the same seed
// gives the same text.

#if canImport(Glibc)
import Glibc
#endif

/// xoshiro256** seeded through SplitMix64: small, fast, reproducible across platforms.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}

public struct SamplingOptions: Sendable {
    /// 0 means greedy (the most likely token).
    public var temperature: Float = 0.7
    /// Keep only the k most likely tokens (0: all).
    public var topK: Int = 40
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    public var topP: Float = 0.95
    public var seed: UInt64 = 0

    public init(temperature: Float = 0.7, topK: Int = 40, topP: Float = 0.95, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }
}

public struct Sampler {
    public let options: SamplingOptions
    private var rng: SeededGenerator

    public init(_ options: SamplingOptions) {
        self.options = options
        rng = SeededGenerator(seed: options.seed)
    }

    /// Picks the next token from `logits` (count values).
    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        // Greedy: the first maximum.
        if options.temperature <= 0 {
            var best = 0
            for i in 1..<count where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        // Candidates by descending logit, cut to top-k.
        var order = Array(0..<count)
        let k = options.topK > 0 ? min(options.topK, count) : count
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        order.removeSubrange(k...)
        // Softmax at the temperature over the candidates.
        let top = logits[order[0]]
        var probabilities = order.map { Double(expf((logits[$0] - top) / options.temperature)) }
        let total = probabilities.reduce(0, +)
        for i in probabilities.indices { probabilities[i] /= total }
        // Nucleus: the shortest prefix whose mass reaches top-p.
        var kept = probabilities.count
        if options.topP < 1 {
            var mass = 0.0
            for (i, p) in probabilities.enumerated() {
                mass += p
                if mass >= Double(options.topP) {
                    kept = i + 1
                    break
                }
            }
        }
        let mass = probabilities[..<kept].reduce(0, +)
        var u = rng.nextUnit() * mass
        for i in 0..<kept {
            u -= probabilities[i]
            if u < 0 { return Int32(order[i]) }
        }
        return Int32(order[kept - 1])
    }
}
