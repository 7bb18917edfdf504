// edge-finetune: the command line. It parses flags, calls the libraries, prints, and is
// the only part of the program that exits.

import ArgumentParser
import Quant

@main
struct EdgeFinetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge-finetune",
        abstract: "Personalize int4-quantized GGUF language models on the device, with forward passes only.",
        version: "0.1.0",
        subcommands: [Inspect.self, Tokenize.self, Generate.self, Eval.self])
}

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the GGUF model file.")
    var model: String

    @Option(name: .long, help: "Threads for the kernels (default: 2).")
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
