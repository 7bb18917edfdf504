// edge-finetune: the command line. It parses flags, calls the libraries, prints, and is
// the only part of the program that exits.

import ArgumentParser
import CPUFeatures
import GGUF
import Quant
import ZerothOrder
#if canImport(Glibc)
import Glibc
#endif

@main
struct EdgeFinetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge-finetune",
        abstract: "Personalize int4-quantized GGUF language models on the device, with forward passes only.",
        version: "0.1.0",
        subcommands: [Inspect.self, Tokenize.self, Generate.self, Eval.self, Train.self, RequantizeCommand.self,
                      ExportCommand.self, PluginsCommand.self, Bench.self])

    static func main() {
        Console.install()
        checkCPU()
        useFastBLASKernels()
        returnLargeBlocksToTheSystem()
        Self.main(nil)
    }

    /// Keeps glibc's threshold for serving a block by mmap at 1 MiB. By default glibc raises
    /// it to the size of the largest block freed so far, after which blocks of that size
    /// come from the heap, where blocks of different lifetimes fragment it: an optimizer
    /// plugin that takes and frees a copy of the 3.3 M trained values each step (mfac) made
    /// the resident set grow by that copy, 13 MB, every step (304 → 676 MB in 30 QZO steps,
    /// past the memory plan). With the threshold fixed, such blocks are mapped and unmapped
    /// whole: the same run stays at 304 MB. Plugin memory no longer depends on this: the host's
    /// mem_alloc maps blocks of 1 MiB or more itself (HostServices), for library users too (the
    /// mfac run above, with this call made a no-op, peaked at 302.0 MB against its 309.8 MB plan).
    /// It is kept for the engine's own blocks of that size taken and freed every step: the
    /// backup of θ and a perturbation hook's directions, one per group, which are 3.4 MB for
    /// a Qwen 1.5B FFN matrix's sub-block scales.
    /// (mallopt is declared in <malloc.h>, which Swift's Glibc module leaves out, so it is
    /// looked up by name; M_MMAP_THRESHOLD is −3 in glibc's ABI.)
    private static func returnLargeBlocksToTheSystem() {
        #if canImport(Glibc)
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let program = dlopen(nil, RTLD_NOW), let symbol = dlsym(program, "mallopt") else { return }
        _ = unsafeBitCast(symbol, to: Mallopt.self)(-3, 1 << 20)
        #endif
    }

    /// Stops with one line when the numeric modules were compiled for CPU features this CPU
    /// lacks (they would die of SIGILL): which ones, and how to build for any x86-64 CPU.
    /// This file is compiled for the baseline, so this check itself always runs.
    private static func checkCPU() {
        #if EDGE_FINETUNE_NEEDS_HASWELL
        var missing = [CChar](repeating: 0, count: 128)
        guard edge_cpu_has_haswell_features(&missing, UInt(missing.count)) == 0 else { return }
        let names = String(decoding: missing.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        Console.writeError("edge-finetune: this build is for x86-64 CPUs with AVX2, FMA and F16C (Haswell, 2013, and later); this CPU lacks \(names). Build for any x86-64 CPU with: EDGE_FINETUNE_PORTABLE=1 swift build -c release\n")
        Self.exit(withError: ExitCode.failure)
        #endif
    }

    /// When OpenBLAS fell back to kernels older than the CPU supports, runs this program
    /// again with OPENBLAS_CORETYPE set (it only takes effect before OpenBLAS loads).
    private static func useFastBLASKernels() {
        guard getenv("OPENBLAS_CORETYPE") == nil, let core = BLASCore.recommendedOverride else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        // execv returned: carry on with the slower kernels.
    }
}

/// Refuses, before any work, outputs that are one of the inputs (by file identity), that
/// exist and are not regular files, or whose directory cannot be written. Every command
/// that writes a file calls this first, with every file it reads and writes.
func checkFiles(outputs: [NamedFile], inputs: [NamedFile]) throws {
    try FileSafety.check(outputs: outputs, inputs: inputs)
}

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the GGUF model file.")
    var model: String

    @Option(name: .long, help: "Threads for the kernels.")
    var threads: Int = 2

    func validate() throws {
        guard threads >= 1 && threads <= 256 else {
            throw ValidationError("--threads must be between 1 and 256 (got \(threads))")
        }
    }

    /// Applies the thread count to our kernels and to OpenBLAS.
    func applyThreads() {
        Parallel.threadCount = threads
        setBLASThreads(threads)
    }
}

/// `--memory-budget`, shared by the commands that plan their memory.
struct MemoryBudgetOptions: ParsableArguments {
    @Option(name: .long, help: "Memory budget, e.g. 96M, 1.5G or 512MiB: plan smaller passes and stream weights from disk to stay under it, or refuse before starting (train's default: the model file's size plus 40 MB). k, M, G, T (or kB, MB, GB, TB) are powers of 1000, so a bare M is 10^6 bytes; KiB, MiB, GiB, TiB are powers of 1024; no unit: bytes.")
    var memoryBudget: String?

    /// The budget in bytes, when one was given.
    var bytes: Int? { memoryBudget.flatMap(MemoryPlanner.parseSize) }

    func validate() throws {
        if let memoryBudget, MemoryPlanner.parseSize(memoryBudget) == nil {
            throw ValidationError("--memory-budget must be a size from 1 byte to 4.6 EB such as 96M, 1.5G, 512MiB or 500000000 (got \(memoryBudget))")
        }
    }
}
