// The memory planner: given a budget, choose how much of a batch goes through one
// forward pass and whether the weights stay mapped or stream from disk block by block,
// so that everything resident fits; or refuse before any work, with the numbers.
//
// What is resident, and how it is counted:
//   runtime       the program itself: Swift runtime, Foundation, OpenBLAS, their heaps
//                 (measured: about 27 MB on Linux x86-64 by the end of a run)
//   tokenizer     metadata, vocabulary and merge tables (measured after loading, in the child's
//                 anonymous resident set: about 80 bytes per BPE token or merge, 88 per SentencePiece
//                 token with its score and type; a vocabulary rebuilt at load to append new tokens
//                 or pad it to the embedding's rows holds its token array regrown, 16 bytes more per
//                 token, 28 for SentencePiece: Gemma 3's 262,144 tokens then take 30 MB, not 21)
//   weights       mapped: the whole file (every page is read by a forward pass);
//                 streamed: two block buffers (the one in use, the one being read ahead),
//                 one tile of the output matrix, and the norm vectors
//   activations   one run state per stream (point of the step) for the pass's tokens, with
//                 its matmul tile and attention scores, and the output head's scratch
//   trainable     master copies of the trained values, and a backup for a refused step
//   optimizer     its state (moments, Hessian estimates), plugin allocations included
//   perturbation directions
//                 for an optimizer with a perturbation hook (ABI 1.1): the directions it gives
//                 for the step, q floats per trained value, held from before the first forward
//                 pass to the update (a part of its own, so a refusal can name it)
//   other         subspace-gradient history, QZO's per-block scale buffers, checkpoint
//                 encoding (a copy of the state), and QZO's export of the adapter: its
//                 largest trained tensor read back from the file with its scales (11.3 MB
//                 for a Q6_K FFN matrix of Qwen 1.5B)
//   margin        allocator slack and thread stacks: 2 MB plus 3% of the rest
// A micro-batch is a group of whole examples run in one pass; a step's loss is summed over
// its micro-batches token by token in order, so the plan changes the result only through
// float32 rounding inside OpenBLAS (which picks other kernels for the smallest products).

import Foundation
import Model
import Quant

public struct MemoryRequest: Sendable {
    public var budget: Int
    public var config: LlamaConfig
    public var fileBytes: Int
    /// Bytes of the largest block's matrices.
    public var largestLayerBytes: Int
    /// Bytes of one row of the output matrix.
    public var outputRowBytes: Int
    /// Tokens plus merges of the tokenizer.
    public var vocabularyEntries: Int
    /// The tokenizer's resident bytes when known (`MemoryPlanner.tokenizerBytes(model:)`); else
    /// `bytesPerVocabularyEntry` per entry.
    public var tokenizerBytes: Int?
    /// Examples per step and their lengths (the longest ones decide the pass size).
    public var batchSize: Int
    public var exampleLengths: [Int]
    /// Points per step that go through the model together (one stream each for QZO;
    /// one shared stream holding all points for textual inversion).
    public var points: Int
    public var pointsShareAPass: Bool
    public var contextLength: Int
    public var trainableValues: Int
    public var optimizerStateBytes: Int
    /// The directions an optimizer's perturbation hook gives for one step (q floats per
    /// trained value, `perturbationDirectionBytes(...)`); 0 when the engine draws z itself.
    public var perturbationDirectionBytes: Int
    public var otherBytes: Int

    public init(budget: Int, config: LlamaConfig, fileBytes: Int, largestLayerBytes: Int, outputRowBytes: Int,
                vocabularyEntries: Int, batchSize: Int, exampleLengths: [Int], points: Int, pointsShareAPass: Bool,
                contextLength: Int, trainableValues: Int, optimizerStateBytes: Int, otherBytes: Int = 0,
                tokenizerBytes: Int? = nil, perturbationDirectionBytes: Int = 0) {
        self.tokenizerBytes = tokenizerBytes
        self.perturbationDirectionBytes = perturbationDirectionBytes
        self.budget = budget
        self.config = config
        self.fileBytes = fileBytes
        self.largestLayerBytes = largestLayerBytes
        self.outputRowBytes = outputRowBytes
        self.vocabularyEntries = vocabularyEntries
        self.batchSize = batchSize
        self.exampleLengths = exampleLengths
        self.points = points
        self.pointsShareAPass = pointsShareAPass
        self.contextLength = contextLength
        self.trainableValues = trainableValues
        self.optimizerStateBytes = optimizerStateBytes
        self.otherBytes = otherBytes
    }
}

public struct MemoryPlan: Sendable, CustomStringConvertible {
    /// Examples per forward pass.
    public var microBatchSize: Int
    /// Rows of weight matrices dequantized at a time.
    public var tileRows: Int
    /// Tokens per pass of one stream (all points' copies for textual inversion).
    public var passTokens: Int
    public var streaming: Bool
    public var parts: [(name: String, bytes: Int)]

    public var total: Int { parts.reduce(0) { $0 + $1.bytes } }
    public var largestPart: (name: String, bytes: Int) { parts.max { $0.bytes < $1.bytes }! }

    public var description: String {
        let mb = { (b: Int) in String(format: "%.1f MB", Double(b) / 1_000_000) }
        return "\(streaming ? "streaming weights" : "weights mapped"), \(microBatchSize) example(s) per pass: "
            + parts.map { "\($0.name) \(mb($0.bytes))" }.joined(separator: ", ") + "; total \(mb(total))"
    }
}

public struct MemoryPlanError: Error, CustomStringConvertible {
    public var budget: Int
    public var smallest: MemoryPlan

    public var description: String {
        let mb = { (b: Int) in String(format: "%.1f MB", Double(b) / 1_000_000) }
        let big = smallest.largestPart
        return "the memory budget of \(mb(budget)) is too small: the smallest plan (\(smallest.description)) needs \(mb(smallest.total)); "
            + "the largest part is \(big.name) (\(mb(big.bytes))). Raise --memory-budget (a training run can also train fewer values: fewer --tensors or new tokens, or --kquant-scales super on K-quant files"
            + (big.name == "perturbation directions" ? "; or use fewer --directions: the optimizer's perturbation hook gives q floats per trained value" : "") + ")."
    }
}

public enum MemoryPlanner {
    /// Resident size of the program before any model is loaded (measured, Linux x86-64).
    public static let runtimeBytes = 27_000_000
    /// Tokenizer tables per vocabulary entry (token or merge), measured.
    public static let bytesPerVocabularyEntry = 80

    /// What a loaded model's tokenizer holds (see the table at the top): per BPE token or merge
    /// 80 bytes, per SentencePiece token 88; when the vocabulary was rebuilt at load (new tokens
    /// appended, or padding rows), 16 more per token for BPE, 28 for SentencePiece.
    public static func tokenizerBytes(model m: LlamaModel) -> Int {
        let v = m.tokenizer.vocabulary
        let sentencePiece = v.model == "llama"
        let tokens = m.tokenizer.count
        let rebuilt = tokens > m.config.vocabSize || !m.paddingRows.isEmpty
        return (sentencePiece ? 88 : 80) * tokens + bytesPerVocabularyEntry * v.merges.count
            + (rebuilt ? (sentencePiece ? 28 : 16) * tokens : 0)
    }
    /// What `Trainer.runStep` holds for an optimizer with a perturbation hook: for each of
    /// the step's `directions`, one float buffer per group (at least one float each).
    public static func perturbationDirectionBytes(groupCounts: [Int], directions: Int) -> Int {
        4 * max(0, directions) * groupCounts.reduce(0) { $0 + max(1, $1) }
    }

    /// Allocator slack and thread stacks, besides 3% of the estimate.
    public static let marginBytes = 2_000_000
    /// Rows of the output matrix read per tile when streaming.
    public static let outputTileRows = 256
    /// Rows of a weight matrix each thread dequantizes at a time when memory is short.
    public static let smallTileRows = 128

    /// The plan with the most examples per pass that fits, preferring mapped weights; or
    /// an error carrying the smallest plan.
    public static func plan(_ r: MemoryRequest) -> Result<MemoryPlan, MemoryPlanError> {
        // The lengths sorted once, with prefix sums: each candidate costs O(1). More
        // examples per pass than the data holds cost what all of it costs, so one estimate
        // stands for every micro-batch size from the example count up to the batch size.
        let sorted = r.exampleLengths.sorted(by: >)
        var prefix = [0]
        prefix.reserveCapacity(sorted.count + 1)
        for n in sorted { prefix.append(prefix.last! &+ n) }
        let top = max(1, r.batchSize)
        let distinct = min(top, max(1, sorted.count))
        var smallest: MemoryPlan?
        for streaming in [false, true] {
            for micro in stride(from: distinct, through: 1, by: -1) {
                var p = estimate(r, prefixSums: prefix, microBatch: micro, streaming: streaming)
                if micro == distinct { p.microBatchSize = top }
                if p.total <= r.budget { return .success(p) }
                if smallest == nil || p.total < smallest!.total { smallest = p }
            }
        }
        return .failure(MemoryPlanError(budget: r.budget, smallest: smallest!))
    }

    /// What a plan needs.
    public static func estimate(_ r: MemoryRequest, microBatch: Int, streaming: Bool) -> MemoryPlan {
        var prefix = [0]
        for n in r.exampleLengths.sorted(by: >) { prefix.append(prefix.last! &+ n) }
        return estimate(r, prefixSums: prefix, microBatch: microBatch, streaming: streaming)
    }

    /// `prefixSums[k]`: tokens of the k longest examples.
    static func estimate(_ r: MemoryRequest, prefixSums: [Int], microBatch: Int, streaming: Bool) -> MemoryPlan {
        let c = r.config
        let exampleTokens = prefixSums[min(max(0, microBatch), prefixSums.count - 1)]
        let streams = r.pointsShareAPass ? 1 : r.points
        let passTokens = max(1, r.pointsShareAPass ? exampleTokens * r.points : exampleTokens)
        let tileRows = streaming ? smallTileRows : RunState.tileRows
        let state = RunState.estimatedBytes(config: c, capacity: passTokens, contextLength: r.contextLength, tileRows: tileRows)
        let output = OutputScratch.estimatedBytes(dim: c.dim, capacity: min(passTokens, 256), vocabulary: c.vocabSize)
        let weights = streaming
            ? 2 * r.largestLayerBytes + outputTileRows * (r.outputRowBytes + 4 * c.dim) + 4 * c.dim * (2 * c.layerCount + 1)
            : r.fileBytes
        var parts: [(String, Int)] = [
            ("runtime", runtimeBytes),
            ("tokenizer", r.tokenizerBytes ?? bytesPerVocabularyEntry * r.vocabularyEntries),
            (streaming ? "weights (streamed)" : "weights (mapped)", weights),
            ("activations", streams * state + output),
            ("trainable values", 8 * r.trainableValues),
            ("optimizer state", r.optimizerStateBytes),
            ("other", r.otherBytes),
        ]
        if r.perturbationDirectionBytes > 0 {
            parts.insert(("perturbation directions", r.perturbationDirectionBytes), at: parts.count - 1)
        }
        let sum = parts.reduce(0) { $0 + $1.1 }
        let withMargin = parts + [("margin", marginBytes + 3 * sum / 100)]
        return MemoryPlan(microBatchSize: microBatch, tileRows: tileRows, passTokens: passTokens, streaming: streaming,
                          parts: withMargin.map { (name: $0.0, bytes: $0.1) })
    }

    /// Parses a size: a positive number and an optional unit, case-insensitive. k, M, G, T
    /// and kB, MB, GB, TB are powers of 1000 (a bare M is 10⁶ bytes); KiB, MiB, GiB, TiB are
    /// powers of 1024; B or no unit is bytes. nil for anything else, for sizes below one
    /// byte, and for sizes of 2⁶² bytes (4.6 EB) or more.
    public static func parseSize(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Double)] = [
            ("KIB", 0x1p10), ("MIB", 0x1p20), ("GIB", 0x1p30), ("TIB", 0x1p40),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12),
            ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("B", 1),
        ]
        var number = Substring(t)
        var factor = 1.0
        if let unit = units.first(where: { t.hasSuffix($0.0) }) {
            number = t.dropLast(unit.0.count)
            factor = unit.1
        }
        guard let v = Double(number.trimmingCharacters(in: .whitespaces)), v.isFinite, v > 0 else { return nil }
        let bytes = (v * factor).rounded(.down)
        guard bytes >= 1, bytes < 0x1p62 else { return nil }
        return Int(bytes)
    }
}
