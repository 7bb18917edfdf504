import Foundation
import TestSupport
import Testing

/// Training and evaluation of the Q4_K_M files people have, under memory budgets below the file's size: the weights
/// stream from disk block by block, and the child's peak resident set (VmHWM, sampled from /proc while it runs) must
/// stay within the budget. The planner's estimate itself is checked too: under a budget equal to the smallest plan's
/// total (read from the refusal of a smaller budget), the run must go ahead and stay within it.
@Suite(.serialized) struct RealModelBudgetTests {
    static let chat = Repository.path("examples/chat/train.jsonl")
    static let paris = Repository.path("examples/paris/train.jsonl")

    /// Half the file's size, in whole MB (10⁶ bytes), as `--memory-budget` reads "…M".
    static func halfTheFile(_ model: RealModel) -> Int {
        let real = URL(fileURLWithPath: model.path).resolvingSymlinksInPath().path  // models/ holds symlinks
        let size = (try? FileManager.default.attributesOfItem(atPath: real)[.size] as? Int) ?? 0
        return size / 2 / 1_000_000
    }

    /// The arguments of a few training steps of `method` on `model`.
    static func training(_ model: RealModel, _ method: String, steps: Int = 2, batch: Int = 4) -> [String] {
        let out = makeTemporaryDirectory("real-budget") + "/adapter.gguf"
        let common = ["train", "--model", model.path, "--steps", "\(steps)", "--batch", "\(batch)", "--out", out]
        return common + (method == "qzo" ? ["--method", "qzo", "--data", chat] : ["--new-token", " <x>", "--data", paris])
    }

    /// A run under `budget` MB: it must stream, succeed and stay within the budget (and, with `withinThePlan`,
    /// within the total of the plan it printed).
    func expectWithin(_ arguments: [String], budget: Int, withinThePlan: Bool = false,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try runCLI(arguments + ["--memory-budget", "\(budget)M"])
        if withinThePlan {
            let total = Self.planLine(r.stderr).components(separatedBy: "; total ").last?.split(separator: " ").first
            let planned = try #require(total.flatMap { Double($0) }, "no total in the plan: \(r.stderr)", sourceLocation: sourceLocation)
            #expect(r.peakRSS > 0 && Double(r.peakRSS) <= planned * 1e6,
                    "peak RSS \(r.peakRSS) over the plan's \(planned) MB: \(Self.planLine(r.stderr))", sourceLocation: sourceLocation)
        }
        #expect(r.status == 0, "\(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains("memory plan") && r.stderr.contains("streaming weights"), "\(r.stderr)",
                sourceLocation: sourceLocation)
        #expect(r.peakRSS > 0 && r.peakRSS <= budget * 1_000_000,
                "peak RSS \(r.peakRSS) over the budget of \(budget) MB; plan: \(Self.planLine(r.stderr))",
                sourceLocation: sourceLocation)
    }

    static func planLine(_ stderr: String) -> String {
        stderr.split(separator: "\n").first { $0.contains("memory plan") }.map(String.init) ?? "(none)"
    }

    /// The total of the smallest plan, from the refusal of a budget too small for anything.
    static func smallestPlan(_ arguments: [String]) throws -> (mb: Double, largest: String) {
        let r = try runCLI(arguments + ["--memory-budget", "10M"])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("too small") && r.stderr.contains("the largest part is"), "\(r.stderr)")
        let needs = try #require(r.stderr.range(of: #"\) needs ([0-9.]+) MB"#, options: .regularExpression), "\(r.stderr)")
        let mb = try #require(Double(r.stderr[needs].split(separator: " ")[2]))
        let largest = try #require(r.stderr.range(of: #"the largest part is [a-z ()]+"#, options: .regularExpression))
        return (mb, String(r.stderr[largest]))
    }

    @Test(.enabled(if: RealModel.qwen05.enabled, "run scripts/setup --all"))
    func qzoOnQwen05UnderHalfTheFile() throws {
        try expectWithin(Self.training(.qwen05, "qzo"), budget: Self.halfTheFile(.qwen05))
    }

    @Test(.enabled(if: RealModel.gemma270.enabled, "run scripts/setup --all"))
    func qzoOnGemmaUnderHalfTheFile() throws {
        try expectWithin(Self.training(.gemma270, "qzo"), budget: Self.halfTheFile(.gemma270))
    }

    @Test(.enabled(if: RealModel.gemma270.enabled, "run scripts/setup --all"))
    func textualInversionOnGemmaUnderHalfTheFile() throws {
        try expectWithin(Self.training(.gemma270, "ti"), budget: Self.halfTheFile(.gemma270))
    }

    /// The planner's smallest plan is an upper bound of what the run holds: run under exactly that budget.
    @Test(.enabled(if: RealModel.gemma270.enabled && RealModel.qwen05.enabled, "run scripts/setup --all"),
          arguments: ["gemma-qzo", "gemma-ti", "qwen05-qzo"])
    func smallestPlanIsEnough(_ which: String) throws {
        let model: RealModel = which.hasPrefix("gemma") ? .gemma270 : .qwen05
        let arguments = Self.training(model, which.hasSuffix("qzo") ? "qzo" : "ti", steps: 1, batch: 2)
        let (mb, _) = try Self.smallestPlan(arguments)
        try expectWithin(arguments, budget: Int(mb.rounded(.up)))
    }

    @Test(.enabled(if: RealModel.qwen15.enabled, "run scripts/setup --all"))
    func evalOnQwen15UnderHalfTheFile() throws {
        let budget = Self.halfTheFile(.qwen15)
        let r = try runCLI(["eval", "--model", RealModel.qwen15.path, "--data", Repository.path("examples/chat/heldout.jsonl"),
                            "--memory-budget", "\(budget)M", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("streaming weights"), "\(r.stderr)")
        #expect(r.peakRSS > 0 && r.peakRSS <= budget * 1_000_000, "peak RSS \(r.peakRSS); \(Self.planLine(r.stderr))")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Double]
        #expect(object["nll"]!.isFinite && object["nll"]! < 6, "\(r.stdout)")
    }

    /// QZO of the 1.5B file's d/dmin per 256 weights (`--kquant-scales super`, 10 M values) under half the file:
    /// within the budget and within its plan.
    @Test(.enabled(if: RealModel.qwen15.enabled, "run scripts/setup --all"))
    func qzoOnQwen15UnderHalfTheFile() throws {
        let out = makeTemporaryDirectory("real-budget") + "/adapter.gguf"
        try expectWithin(["train", "--model", RealModel.qwen15.path, "--method", "qzo", "--kquant-scales", "super",
                          "--data", Repository.path("examples/qzo/train.jsonl"), "--max-length", "64",
                          "--steps", "2", "--batch", "4", "--out", out],
                         budget: Self.halfTheFile(.qwen15), withinThePlan: true)
        #expect(FileManager.default.fileExists(atPath: out))
    }

    /// QZO of one Q6_K matrix's d/dmin (53,760 values): the adapter's export reads the 11.3 MB tensor back from
    /// the file, which is most of what the run holds besides the streamed weights. Under exactly its smallest plan
    /// the run stays within it, export included.
    @Test(.enabled(if: RealModel.qwen15.enabled, "run scripts/setup --all"))
    func qzoOfOneQwen15MatrixStaysWithinItsPlanThroughTheExport() throws {
        let out = makeTemporaryDirectory("real-budget") + "/adapter.gguf"
        let arguments = ["train", "--model", RealModel.qwen15.path, "--method", "qzo", "--kquant-scales", "super",
                         "--tensors", "blk.0.ffn_down.weight", "--data", Repository.path("examples/qzo/train.jsonl"),
                         "--max-length", "64", "--steps", "1", "--batch", "1", "--out", out]
        let (mb, _) = try Self.smallestPlan(arguments)
        try expectWithin(arguments, budget: Int(mb.rounded(.up)), withinThePlan: true)
        #expect(FileManager.default.fileExists(atPath: out))
    }

    /// Textual inversion of the 1.5B file under half the file: within the budget and within its plan.
    @Test(.enabled(if: RealModel.qwen15.enabled, "run scripts/setup --all"))
    func textualInversionOnQwen15UnderHalfTheFile() throws {
        try expectWithin(Self.training(.qwen15, "ti", steps: 2, batch: 4), budget: Self.halfTheFile(.qwen15), withinThePlan: true)
    }

    /// A budget that cannot work on the 1.5B file is refused before any work, naming the largest part (two blocks of
    /// streamed weights); the process never holds more than loading the tokenizer takes.
    @Test(.enabled(if: RealModel.qwen15.enabled, "run scripts/setup --all"))
    func impossibleBudgetOnQwen15IsRefusedNamingTheLargestPart() throws {
        let arguments = Self.training(.qwen15, "ti", steps: 1, batch: 2)
        let (mb, largest) = try Self.smallestPlan(arguments)
        #expect(largest.hasPrefix("the largest part is weights (streamed)"), "\(largest)")
        #expect(mb > 60 && mb < Double(Self.halfTheFile(.qwen15)), "\(mb)")
        let r = try runCLI(arguments + ["--memory-budget", "\(Int(mb) - 1)M"])
        #expect(r.status == 1 && r.stderr.contains("too small"), "\(r.stderr)")
        #expect(r.peakRSS < 100_000_000, "peak RSS \(r.peakRSS) before refusing")
    }

    /// QZO with nothing to train is one line naming the pattern, before any work: never a run that trains nothing.
    @Test(.enabled(if: RealModel.qwen15.enabled, "run scripts/setup --all"))
    func qzoWithNothingTrainableIsOneLine() throws {
        let r = try runCLI(Self.training(.qwen15, "qzo", steps: 1) + ["--tensors", "blk.*.ffn_nothing.weight", "--memory-budget", "560M"])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("blk.*.ffn_nothing.weight"), "\(r.stderr)")
        #expect(!r.stderr.contains("step 1"), "\(r.stderr)")
    }
}
