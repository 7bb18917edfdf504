import Foundation
import TestSupport
import Testing

/// Open MPI's launcher, for the multi-rank tests.
enum OpenMPI {
    static let mpirun: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return (path.split(separator: ":").map { "\($0)/mpirun" } + ["/usr/bin/mpirun"])
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Whether the multi-rank tests run: when mpirun is installed (scripts/setup installs
    /// Open MPI), and always under CI (CI=true), where a missing mpirun fails them.
    static var enabled: Bool { mpirun != nil || ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Open MPI refuses to start as root without these; shared-memory transfers without
    /// the single-copy mechanism, which containers often forbid (ptrace).
    static var environment: [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        e["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        e["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
        return e
    }
}

/// `mpirun -np N edge-finetune train …`: N ranks give the one-process adapter bit for bit.
@Suite(.enabled(if: OpenMPI.enabled, "mpirun not found (scripts/setup installs Open MPI: openmpi-bin); under CI=true these tests run and fail"))
struct MPITests {
    let model = Repository.path("models/tiny-q4_1.gguf")
    let data = Repository.path("examples/paris/train.jsonl")
    let held = Repository.path("examples/paris/heldout.jsonl")

    /// Runs `edge-finetune` as N ranks; `perRank` gives each rank its own arguments (MPMD).
    func mpirun(_ ranks: Int, _ arguments: [String], perRank: [[String]]? = nil) throws -> ProcessResult {
        let launcher = try #require(OpenMPI.mpirun, "mpirun not found: scripts/setup installs Open MPI (openmpi-bin, libopenmpi-dev)")
        var argv = ["--oversubscribe", "--bind-to", "none"]
        if let perRank {
            for (i, a) in perRank.enumerated() { argv += (i > 0 ? [":"] : []) + ["-np", "1", Products.cli] + a }
        } else {
            argv += ["-np", "\(ranks)", Products.cli] + arguments
        }
        return try runProcess(launcher, argv, environment: OpenMPI.environment)
    }

    func textualInversion(_ out: String, steps: Int = 8) -> [String] {
        ["train", "--model", model, "--data", data, "--eval-data", held, "--new-token", " <x>", "--steps", "\(steps)", "--batch", "6",
         "--micro-batch", "2", "--lr", "0.05", "--eps", "0.01", "--eval-every", "4", "--threads", "1", "--out", out]
    }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// The held-out NLLs of a --log-json file, in order.
    func evaluations(_ path: String) throws -> [Double] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
            (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["eval_nll"] as? Double
        }
    }

    /// Textual inversion, batch 6 in micro-batches of 2: one process, then 1, 2 and 3 ranks
    /// (three micro-batches: all on one rank, 2 + 1, one each). The adapters are the same
    /// bytes and so are the held-out evaluations, which the ranks also share.
    @Test func textualInversionOnOneTwoAndThreeRanksGivesTheOneProcessAdapter() throws {
        let dir = makeTemporaryDirectory("mpi-ti")
        let single = try runCLI(textualInversion(dir + "/single.gguf") + ["--log-json", dir + "/single.jsonl"])
        #expect(single.status == 0, "\(single.stderr)")
        let reference = try bytes(dir + "/single.gguf")
        let referenceEvals = try evaluations(dir + "/single.jsonl")
        #expect(referenceEvals.count == 3, "before training, after steps 4 and 8")
        for ranks in 1...3 {
            let out = dir + "/ranks\(ranks).gguf"
            let r = try mpirun(ranks, textualInversion(out) + ["--log-json", dir + "/ranks\(ranks).jsonl"])
            #expect(r.status == 0, "\(ranks) ranks: \(r.stderr)")
            #expect(try bytes(out) == reference, "\(ranks) ranks: the adapter differs from one process's")
            #expect(try evaluations(dir + "/ranks\(ranks).jsonl") == referenceEvals, "\(ranks) ranks")
            // Only rank 0 prints: one memory plan, one summary.
            #expect(r.stderr.components(separatedBy: "memory plan").count == 2, "\(r.stderr)")
            #expect(r.stdout.components(separatedBy: "held-out NLL").count == 2, "\(r.stdout)")
            if ranks > 1 {
                // The exchange: a status byte and 16 bytes per point and micro-batch slot, to each other rank.
                let sent = r.stdout.split(separator: "\n").first { $0.contains("bytes sent per step") }
                let fields = sent.map { $0.split(separator: ",") } ?? []
                let perStep = fields.count > 1 ? fields[1].split(separator: " ").first.flatMap { Int($0) } : nil
                #expect(perStep.map { $0 > 0 && $0 < 1000 } == true, "\(r.stdout)")
            }
        }
    }

    /// QZO (every point a stream of its own, block by block) on 2 and 3 ranks, against one process.
    @Test func qzoOnTwoAndThreeRanksGivesTheOneProcessAdapter() throws {
        let dir = makeTemporaryDirectory("mpi-qzo")
        func args(_ out: String) -> [String] {
            ["train", "--method", "qzo", "--model", Repository.path("models/tiny-q4_0.gguf"), "--data", Repository.path("examples/qzo/train.jsonl"),
             "--eval-data", Repository.path("examples/qzo/heldout.jsonl"), "--steps", "4", "--batch", "4", "--micro-batch", "1",
             "--eval-every", "2", "--threads", "1", "--out", out]
        }
        let single = try runCLI(args(dir + "/single.gguf"))
        #expect(single.status == 0, "\(single.stderr)")
        for ranks in [2, 3] {
            let r = try mpirun(ranks, args(dir + "/ranks\(ranks).gguf"))
            #expect(r.status == 0, "\(ranks) ranks: \(r.stderr)")
            #expect(try bytes(dir + "/ranks\(ranks).gguf") == bytes(dir + "/single.gguf"), "\(ranks) ranks")
        }
    }

    /// Checkpoints written by 2 ranks resume on 3 and end where one process does.
    @Test func aRunResumesOnAnotherNumberOfRanks() throws {
        let dir = makeTemporaryDirectory("mpi-resume")
        let single = try runCLI(textualInversion(dir + "/single.gguf", steps: 8))
        #expect(single.status == 0, "\(single.stderr)")
        let first = try mpirun(2, textualInversion(dir + "/a.gguf", steps: 4) + ["--checkpoint-dir", dir + "/ckpt", "--checkpoint-every", "2"])
        #expect(first.status == 0, "\(first.stderr)")
        let resumed = try mpirun(3, textualInversion(dir + "/a.gguf", steps: 8) + ["--checkpoint-dir", dir + "/ckpt", "--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming from") && resumed.stderr.contains("at step 5"), "\(resumed.stderr)")
        #expect(try bytes(dir + "/a.gguf") == bytes(dir + "/single.gguf"))
    }

    /// A rank killed (SIGKILL) once the first checkpoint is on disk: the run ends on every
    /// rank (mpirun returns), rank 0 leaves one line with its step, mpirun names the dead
    /// rank, and the checkpoint left behind resumes, in one process, to the adapter of an
    /// uninterrupted run.
    @Test func aRankThatDiesEndsTheRunAndItsCheckpointResumes() throws {
        let dir = makeTemporaryDirectory("mpi-killed")
        let steps = 600
        let single = try runCLI(textualInversion(dir + "/single.gguf", steps: steps))
        #expect(single.status == 0, "\(single.stderr)")
        let args = textualInversion(dir + "/a.gguf", steps: steps) + ["--checkpoint-dir", dir + "/ckpt", "--checkpoint-every", "10", "--rank-timeout", "30"]
        let launcher = try #require(OpenMPI.mpirun, "mpirun not found: scripts/setup installs Open MPI (openmpi-bin, libopenmpi-dev)")
        // Rank 1 is a shell that starts a watcher, then becomes edge-finetune (exec keeps its
        // pid); the watcher kills it as soon as rank 0 has written a checkpoint.
        let killer = "(while ! ls \"$CKPT\" 2>/dev/null | grep -q 'efck$'; do sleep 0.05; done; kill -9 $$) & exec \"$0\" \"$@\""
        var environment = OpenMPI.environment
        environment["CKPT"] = dir + "/ckpt"
        let r = try runProcess(launcher, ["--oversubscribe", "--bind-to", "none", "-np", "1", Products.cli] + args
                                   + [":", "-np", "1", "/bin/sh", "-c", killer, Products.cli] + args,
                               environment: environment)
        #expect(r.status != 0, "the run must fail when a rank dies: \(r.stderr)")
        let lines = r.stderr.split(separator: "\n").filter { $0.contains("rank 0: stopped by mpirun") }
        #expect(lines.count == 1 && lines[0].contains("at step"), "rank 0's one line with its step: \(r.stderr)")
        #expect(r.stderr.contains("rank 1"), "mpirun names the dead rank: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.gguf"), "no adapter from a run that did not finish")
        let resumed = try runCLI(textualInversion(dir + "/a.gguf", steps: steps) + ["--checkpoint-dir", dir + "/ckpt", "--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming from"), "\(resumed.stderr)")
        #expect(try bytes(dir + "/a.gguf") == bytes(dir + "/single.gguf"), "the resumed run ends on the uninterrupted adapter")
    }

    /// Ranks started with different flags or data refuse to start, naming what differs, in one line.
    @Test func ranksThatDisagreeRefuseToStart() throws {
        let dir = makeTemporaryDirectory("mpi-disagree")
        let base = textualInversion(dir + "/a.gguf")
        let flags = try mpirun(2, [], perRank: [base, base.map { $0 == "0.05" ? "0.06" : $0 }])
        #expect(flags.status != 0)
        #expect(flags.stderr.components(separatedBy: "rank 1 and rank 0 differ in the flags").count == 2, "\(flags.stderr)")
        let other = dir + "/other.jsonl"
        try (String(contentsOfFile: data, encoding: .utf8) + "{\"text\": \"One more line about <x>.\"}\n").write(toFile: other, atomically: true, encoding: .utf8)
        let dataset = try mpirun(2, [], perRank: [base, base.map { $0 == data ? other : $0 }])
        #expect(dataset.status != 0)
        #expect(dataset.stderr.contains("rank 1 and rank 0 differ in the training data"), "\(dataset.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.gguf"), "nothing is written by a run that did not start")
    }

    /// Started by mpirun, but Open MPI's library cannot be loaded: refused with how to get it.
    @Test func aMissingOpenMPILibraryIsRefusedWithHowToGetIt() throws {
        let dir = makeTemporaryDirectory("mpi-missing")
        var env = ProcessInfo.processInfo.environment
        env["OMPI_COMM_WORLD_SIZE"] = "2"
        env["OMPI_COMM_WORLD_RANK"] = "0"
        env["EDGE_FINETUNE_LIBMPI"] = dir + "/libmpi-absent.so.40"
        let r = try runCLI(textualInversion(dir + "/a.gguf"), environment: env)
        #expect(r.status == 1)
        #expect(r.stderr.contains("one of 2 ranks") && r.stderr.contains("apt-get install openmpi-bin libopenmpi-dev"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
    }

    /// Started by an mpirun that is not Open MPI's (MPICH sets PMI_SIZE): refused with how to get Open MPI.
    @Test func anotherMPIIsRefusedWithHowToGetOpenMPI() throws {
        let dir = makeTemporaryDirectory("mpi-other")
        var env = ProcessInfo.processInfo.environment
        env["PMI_SIZE"] = "2"
        env["PMI_RANK"] = "0"
        env["OMPI_COMM_WORLD_SIZE"] = nil
        let r = try runCLI(textualInversion(dir + "/a.gguf"), environment: env)
        #expect(r.status == 1)
        #expect(r.stderr.contains("apt-get install openmpi-bin libopenmpi-dev"), "\(r.stderr)")
    }
}
