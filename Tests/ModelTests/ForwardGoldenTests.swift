import Foundation
import GGUF
import Model
import Quant
import TestSupport
import Testing

/// Per-position results of one text from an independent reference.
struct ReferenceText {
    let name: String
    let ids: [Int32]
    /// NLL of token i+1 at position i.
    let nll: [Double]
    /// Top-k next-token ids and logits per position (k = 20, or 5 for the files of the qwen2 and gemma3 models).
    let topIDs: [[Int]]
    let topLogits: [[Double]]
}

/// Golden file written by scripts/reference/llamacpp_golden.py and float64_forward.py.
struct LogitsGolden {
    let llamaCpp: [ReferenceText]
    let float64: [ReferenceText]

    init(model: String) throws {
        let url = URL(fileURLWithPath: Repository.golden("llamacpp-\(model).json"))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func texts(_ list: [[String: Any]], nll: String) -> [ReferenceText] {
            list.map { t in
                ReferenceText(name: t["name"] as! String,
                              ids: (t["ids"] as! [Int]).map { Int32($0) },
                              nll: (t[nll] as! [NSNumber]).map(\.doubleValue),
                              topIDs: t["top_ids"] as! [[Int]],
                              topLogits: (t["top_logits"] as! [[NSNumber]]).map { $0.map(\.doubleValue) })
            }
        }
        llamaCpp = texts(json["logits"] as! [[String: Any]], nll: "nll_batched")
        float64 = texts((json["float64"] as! [String: Any])["texts"] as! [[String: Any]], nll: "nll")
    }
}

/// Our per-position NLL, top-1 token, and the logits of the ids the references list, for
/// one text, computed in one batched pass.
struct OurText {
    let nll: [Double]
    let best: [Int]
    /// Per position: logits of the ids asked for.
    let logits: [[Int: Float]]
}

/// `wanted[i]`: ids whose logits are kept at position i.
func runOurs(_ model: LlamaModel, _ ids: [Int32], wanted: [[Int]]) throws -> OurText {
    let state = RunState(config: model.config, capacity: ids.count, contextLength: ids.count)
    let batch = Batch(sequences: [ids])
    try model.validate(batch, state)
    model.forward(batch, state)
    let targets = Array(ids.dropFirst()) + [-1]
    let nll = model.negativeLogLikelihoods(batch, state, targets: targets, scratch: OutputScratch(dim: model.config.dim, capacity: 64))
    // Logits of 32 positions at a time: (32, vocab) stays small for the 262,144-token vocabulary.
    let vocab = model.config.vocabSize
    let chunk = 32
    let rows = FloatBuffer(count: chunk * vocab)
    var best = [Int](), logits = [[Int: Float]]()
    var t0 = 0
    while t0 < ids.count - 1 {
        let n = min(chunk, ids.count - 1 - t0)
        model.logits(state, tokens: t0..<(t0 + n), into: rows.pointer)
        for i in 0..<n {
            let row = rows.pointer + i * vocab
            var b = 0
            for v in 1..<vocab where row[v] > row[b] { b = v }
            best.append(b)
            logits.append(Dictionary(uniqueKeysWithValues: Set(wanted[t0 + i] + [b]).map { ($0, row[$0]) }))
        }
        t0 += n
    }
    return OurText(nll: nll.dropLast().map(Double.init), best: best, logits: logits)
}

struct Comparison: CustomStringConvertible {
    var positions = 0
    var top1Agree = 0
    /// Positions where the reference's top two logits are within `tieMargin`: either answer is right.
    var ties = 0
    var meanNLLDifference = 0.0
    var maxLogitDifference = 0.0

    var description: String {
        "top-1 \(top1Agree)/\(positions) (ties \(ties)), |mean NLL diff| \(String(format: "%.5f", meanNLLDifference)), max |logit diff| (top-k) \(String(format: "%.4f", maxLogitDifference))"
    }
}

func compare(_ ours: OurText, _ ref: ReferenceText, tieMargin: Double) -> Comparison {
    var c = Comparison()
    let n = ref.nll.count
    c.positions = n
    for i in 0..<n {
        let row = ours.logits[i]
        let best = ours.best[i]
        if best == ref.topIDs[i][0] {
            c.top1Agree += 1
        } else if ref.topLogits[i][0] - ref.topLogits[i][1] < tieMargin, ref.topIDs[i].prefix(2).contains(best) {
            c.top1Agree += 1
            c.ties += 1
        }
        for (id, logit) in zip(ref.topIDs[i], ref.topLogits[i]) {
            c.maxLogitDifference = max(c.maxLogitDifference, abs(Double(row[id]!) - logit))
        }
    }
    let ourMean = ours.nll.reduce(0, +) / Double(n)
    let refMean = ref.nll.reduce(0, +) / Double(n)
    c.meanNLLDifference = abs(ourMean - refMean)
    return c
}

/// Tolerances, named after what they bound (issue: inference agreement).
enum Tolerance {
    /// Our float32 pass vs the float64 ground truth, per-text mean NLL.
    static let meanNLLVsFloat64 = 0.005
    /// vs llama.cpp's batched path (which quantizes activations to 8 bits), per-text mean NLL.
    static let meanNLLVsLlamaCpp = 0.06
    /// Fraction of positions whose top-1 token must equal llama.cpp's.
    static let top1VsLlamaCpp = 0.98
    /// Reference top-two logits closer than this are a tie at float32 precision.
    static let tieMargin = 1e-3
}

/// How far the float64 ground truth itself is from llama.cpp on one text.
func groundTruthDistance(_ f64: ReferenceText, _ cpp: ReferenceText) -> (top1Agree: Int, meanNLLDifference: Double) {
    let agree = zip(f64.topIDs, cpp.topIDs).prefix(f64.nll.count).filter { $0[0] == $1[0] }.count
    let n = Double(f64.nll.count)
    return (agree, abs(f64.nll.reduce(0, +) / n - cpp.nll.reduce(0, +) / n))
}

/// Against llama.cpp the bounds are the issue's (98% top-1, 0.06 nats), except where the
/// float64 ground truth itself is further from llama.cpp than that (llama.cpp rounds
/// activations to 8 bits inside its int4 matmuls; SmolLM2's outlier activations make that
/// rounding coarse): there ours must be no further from llama.cpp than float64 is, with a
/// margin of one position and 0.005 nats.
///
/// `checkTop1VsLlamaCpp`: the 98% top-1 bound applies to trained models. The tiny test
/// models have random weights and many near-tied logits, where llama.cpp's 8-bit
/// activations flip the winner: the float64 ground truth itself agrees with llama.cpp
/// on only 94-98% of their positions (scripts/reference/README.md), so for them only
/// the mean NLL is compared with llama.cpp.
func checkAgainstGoldens(modelPath: String, goldenName: String, checkTop1VsLlamaCpp: Bool) throws {
    let model = try LlamaModel(path: modelPath)
    let golden = try LogitsGolden(model: goldenName)
    #expect(!golden.float64.isEmpty && golden.llamaCpp.count == golden.float64.count)
    for (cpp, f64) in zip(golden.llamaCpp, golden.float64) {
        #expect(cpp.ids == f64.ids)
        let ours = try runOurs(model, f64.ids, wanted: zip(f64.topIDs, cpp.topIDs).map { $0 + $1 })
        let vs64 = compare(ours, f64, tieMargin: Tolerance.tieMargin)
        let vsCpp = compare(ours, cpp, tieMargin: Tolerance.tieMargin)
        print("[\(goldenName)] \(f64.name) (\(f64.ids.count) tokens) vs float64: \(vs64); vs llama.cpp: \(vsCpp)")
        #expect(vs64.top1Agree == vs64.positions, "\(f64.name): top-1 vs float64 \(vs64)")
        #expect(vs64.meanNLLDifference <= Tolerance.meanNLLVsFloat64, "\(f64.name): \(vs64)")
        let truth = groundTruthDistance(f64, cpp)
        print("[\(goldenName)] \(f64.name) float64 vs llama.cpp: top-1 \(truth.top1Agree)/\(f64.nll.count), |mean NLL diff| \(String(format: "%.5f", truth.meanNLLDifference))")
        if checkTop1VsLlamaCpp {
            let required = min(Tolerance.top1VsLlamaCpp * Double(vsCpp.positions), Double(truth.top1Agree - 1))
            #expect(Double(vsCpp.top1Agree) >= required, "\(f64.name): \(vsCpp)")
        }
        let allowed = max(Tolerance.meanNLLVsLlamaCpp, truth.meanNLLDifference + 0.005)
        #expect(vsCpp.meanNLLDifference <= allowed, "\(f64.name): \(vsCpp)")
    }
}

@Suite struct ForwardGoldenTests {
    @Test(arguments: ["tiny-q4_0", "tiny-q4_1", "tiny-mixed", "tiny-qwen2", "tiny-gemma3"])
    func tinyModelAgreesWithReferences(_ name: String) throws {
        try checkAgainstGoldens(modelPath: Repository.path("models/\(name).gguf"), goldenName: name, checkTop1VsLlamaCpp: false)
    }

    @Test(.enabled(if: ReferenceModel.enabled, "reference model not fetched; run scripts/setup"))
    func referenceModelAgreesWithReferences() throws {
        try checkAgainstGoldens(modelPath: ReferenceModel.path, goldenName: "SmolLM2-135M-Instruct.Q4_1", checkTop1VsLlamaCpp: true)
    }
}

/// The real Q4_K_M files (release build; `RealModel.*.enabled`): per text, mean NLL within
/// 0.005 nats of the float64 forward and top-1 equal at ≥ 99% of positions. llama.cpp's own
/// distance from float64 (its 8-bit activation rounding) is printed, not bounded: on the
/// Qwen 1.5B file its first-position logits are off by 11–13 (the first token's hidden
/// state, about 3,800, ruins its 8-bit activation blocks), so float64 is the reference.
func checkRealModel(_ real: RealModel) throws {
    let model = try LlamaModel(path: real.path)
    let golden = try LogitsGolden(model: real.name)
    #expect(!golden.float64.isEmpty && golden.llamaCpp.count == golden.float64.count)
    var positions = 0, agree = 0
    for (cpp, f64) in zip(golden.llamaCpp, golden.float64) {
        #expect(cpp.ids == f64.ids)
        let ours = try runOurs(model, f64.ids, wanted: zip(f64.topIDs, cpp.topIDs).map { $0 + $1 })
        let vs64 = compare(ours, f64, tieMargin: Tolerance.tieMargin)
        let vsCpp = compare(ours, cpp, tieMargin: Tolerance.tieMargin)
        let truth = groundTruthDistance(f64, cpp)
        print("[\(real.name)] \(f64.name) (\(f64.ids.count) tokens) vs float64: \(vs64); vs llama.cpp: \(vsCpp); "
              + "llama.cpp vs float64: top-1 \(truth.top1Agree)/\(f64.nll.count), |mean NLL diff| \(String(format: "%.5f", truth.meanNLLDifference))")
        #expect(Double(vs64.top1Agree) >= Tolerance.top1VsFloat64RealModels * Double(vs64.positions), "\(f64.name): \(vs64)")
        #expect(vs64.meanNLLDifference <= Tolerance.meanNLLVsFloat64, "\(f64.name): \(vs64)")
        positions += vs64.positions
        agree += vs64.top1Agree
    }
    print("[\(real.name)] all texts: top-1 \(agree)/\(positions) vs float64")
}

extension Tolerance {
    /// Real files: fraction of positions whose top-1 must equal float64's (float32
    /// accumulation over widths of thousands can flip near-ties).
    static let top1VsFloat64RealModels = 0.99
}

@Suite(.serialized) struct RealModelForwardTests {
    @Test(.enabled(if: RealModel.qwen05.enabled, "Qwen2.5-Coder-0.5B not fetched; run scripts/setup --all"))
    func qwen05AgreesWithFloat64() throws { try checkRealModel(.qwen05) }

    @Test(.enabled(if: RealModel.qwen15.enabled, "Qwen2.5-Coder-1.5B not fetched; run scripts/setup --all"))
    func qwen15AgreesWithFloat64() throws { try checkRealModel(.qwen15) }

    @Test(.enabled(if: RealModel.gemma270.enabled, "Gemma 3 270M not fetched; run scripts/setup --all"))
    func gemma270AgreesWithFloat64() throws { try checkRealModel(.gemma270) }
}
