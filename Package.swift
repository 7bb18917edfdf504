// swift-tools-version:6.0
// EdgeFinetune: personalize int4-quantized GGUF language models on the device,
// with forward passes only.
//
// The target list reads like the architecture; each module depends only on
// those above it:
//   GGUF        the file format: reader (mmap, bounds-checked) and writer
//   Quant       one table of block formats (Q4_0 … Q8_0, the K-quants, F16, BF16, F32) and their kernels
//   Model       tokenizers (BPE, SentencePiece), chat templates, architectures (llama, qwen2, gemma3), forward pass, sampling
//   ZerothOrder perturbations, estimators, trainable sets, optimizers, training loop, memory planner
//   MPICollective the ranks of a data-parallel run under mpirun (Open MPI, loaded at run time)
//   PluginHost  loads optimizer plugins through the C ABI (COptimizerABI)
//   edge-finetune (EdgeFinetuneCLI) the command line, the only place that parses flags or exits
import PackageDescription

/// Release builds keep Swift's checks (bounds, overflow, preconditions) everywhere except
/// the kernels' inner loops in Quant, where every index is derived from sizes validated at
/// the edges and `-Ounchecked` measurably pays (see the README's speed table). Code that
/// parses files (GGUF, checkpoints, adapters, data) is never built unchecked.
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

/// On x86-64 the numeric modules (Quant, Model, ZerothOrder, PluginHost) are compiled for
/// AVX2, FMA and F16C (Haswell, 2013, and later) unless EDGE_FINETUNE_PORTABLE=1 is set
/// when building (`EDGE_FINETUNE_PORTABLE=1 swift build -c release`): then for the x86-64
/// baseline, which runs on any x86-64 CPU. The command line and GGUF are always compiled for
/// the baseline, and the first thing edge-finetune does is check that the CPU has what the
/// numeric modules were compiled for, naming what is missing and this flag.
let portable = Context.environment["EDGE_FINETUNE_PORTABLE"] == "1"
#if arch(x86_64)
let cpuSettings: [SwiftSetting] = portable ? [] : [.unsafeFlags(["-target-cpu", "haswell"]), .define("EDGE_FINETUNE_AVX2")]
let cliCPUSettings: [SwiftSetting] = portable ? [] : [.define("EDGE_FINETUNE_NEEDS_HASWELL")]
#else
let cpuSettings: [SwiftSetting] = []
let cliCPUSettings: [SwiftSetting] = []
#endif

let package = Package(
    name: "EdgeFinetune",
    products: [
        .executable(name: "edge-finetune", targets: ["EdgeFinetuneCLI"]),
        .library(name: "EdgeFinetune", targets: ["GGUF", "Quant", "Model", "ZerothOrder"]),
        // Optimizer plugins, each its own shared library: lib<name>.so beside edge-finetune,
        // found by `--optimizer <name>`.
        .library(name: "zo-sgd", type: .dynamic, targets: ["ZOSGDPlugin"]),
        .library(name: "zo-sgd-sign", type: .dynamic, targets: ["ZOSGDSignPlugin"]),
        .library(name: "zo-adam", type: .dynamic, targets: ["ZOAdamPlugin"]),
        .library(name: "hizoo", type: .dynamic, targets: ["HiZOOPlugin"]),
        .library(name: "mfac", type: .dynamic, targets: ["MFACPlugin"]),
        .library(name: "polargrad", type: .dynamic, targets: ["PolarGradPlugin"]),
        .library(name: "lozo", type: .dynamic, targets: ["LOZOPlugin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries, each through a one-header shim.
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4",
                       providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CFFI", pkgConfig: "libffi",
                       providers: [.apt(["libffi-dev"])]),

        // What the CPU supports (a few lines of C: the compilers' __builtin_cpu_supports).
        .target(name: "CPUFeatures"),

        .target(name: "GGUF"),
        .target(name: "Quant", dependencies: ["GGUF", "COpenBLAS"], swiftSettings: kernelSettings + cpuSettings),
        .target(name: "Model", dependencies: ["GGUF", "Quant", "COpenBLAS"], swiftSettings: cpuSettings),
        .target(name: "ZerothOrder", dependencies: ["GGUF", "Quant", "Model", "COpenBLAS", "CLZ4"],
                swiftSettings: cpuSettings),

        // Data-parallel training under mpirun: Open MPI loaded at run time (dlopen), so
        // building needs no MPI and a build without it runs single-process.
        .target(name: "MPICollective", dependencies: ["ZerothOrder"]),

        // The optimizer plugin ABI (one C header) and the host that loads plugins through it.
        .target(name: "COptimizerABI"),
        .target(name: "PluginHost", dependencies: ["COptimizerABI", "CFFI", "GGUF", "Quant", "ZerothOrder"],
                swiftSettings: cpuSettings),
        // The shipped plugins, each built against the header alone, never against the host.
        .target(name: "ZOSGDPlugin", dependencies: ["COptimizerABI"], path: "Plugins/ZOSGD"),
        .target(name: "ZOSGDSignPlugin", dependencies: ["COptimizerABI"], path: "Plugins/ZOSGDSign", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("m")]),
        .target(name: "ZOAdamPlugin", dependencies: ["COptimizerABI"], path: "Plugins/ZOAdam", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("m")]),
        .target(name: "HiZOOPlugin", dependencies: ["COptimizerABI"], path: "Plugins/HiZOO", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("m")]),
        // ABI 1.1: matrix-aware (group shapes) and plugin-chosen perturbations.
        .target(name: "MFACPlugin", dependencies: ["COptimizerABI"], path: "Plugins/MFAC", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("m")]),
        .target(name: "PolarGradPlugin", dependencies: ["COptimizerABI"], path: "Plugins/PolarGrad", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("m")]),
        .target(name: "LOZOPlugin", dependencies: ["COptimizerABI"], path: "Plugins/LOZO", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("m")]),

        .executableTarget(
            name: "EdgeFinetuneCLI",
            dependencies: [
                "CPUFeatures", "GGUF", "Quant", "Model", "ZerothOrder", "MPICollective", "PluginHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cliCPUSettings),

        // Tests: one target per module, plus the helpers they share.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "TestSupport"]),
        .testTarget(name: "QuantTests", dependencies: ["GGUF", "Quant", "TestSupport"]),
        .testTarget(name: "ModelTests", dependencies: ["GGUF", "Quant", "Model", "TestSupport"]),
        .testTarget(name: "ZerothOrderTests", dependencies: ["GGUF", "Quant", "Model", "ZerothOrder", "CLZ4", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["GGUF", "TestSupport"]),
        .testTarget(name: "PluginHostTests", dependencies: ["PluginHost", "COptimizerABI", "ZerothOrder", "Model", "Quant", "TestSupport"]),
    ],
    // Swift 5 mode: the kernels share raw buffers across threads by design (each
    // thread writes a disjoint range), which Swift 6's Sendable checking cannot express.
    swiftLanguageModes: [.v5]
)
