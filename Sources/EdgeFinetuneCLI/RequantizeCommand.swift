// `edge-finetune requantize`: rewrite a model with chosen tensors in another block format.

import ArgumentParser
import GGUF
import Quant
import ZerothOrder

struct RequantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "requantize",
        abstract: "Write a copy of a model with chosen tensors converted to another block format (gguf-py's quantizer, bit for bit).")

    @Option(name: .long, help: "Path of the GGUF model file.")
    var model: String

    @Option(name: .long, help: "Target type: q4_0, q4_1, q5_0, q5_1, q8_0, f16, bf16 or f32 (K-quant targets: use llama-quantize).")
    var type: String

    @Option(name: .long, help: "Comma-separated tensor name patterns (* wildcards) to convert (default: the matrices of the transformer blocks, blk.*.weight with 2 dimensions).")
    var tensors: String = "blk.*"

    @Option(name: .long, help: "Where to write the new GGUF file.")
    var out: String

    func validate() throws {
        guard let t = GGMLType(name: type), t.canQuantize else {
            throw ValidationError("--type must be one of q4_0, q4_1, q5_0, q5_1, q8_0, f16, bf16, f32 (got \(type); K-quant targets: use llama-quantize)")
        }
    }

    func run() throws {
        try checkFiles(outputs: [NamedFile("--out", out)], inputs: [NamedFile("--model", model)])
        let file = try GGUFFile(path: model)
        let patterns = tensors.split(separator: ",").map(String.init)
        let converted = try Requantize.write(file, to: out, type: GGMLType(name: type)!) { t in
            t.shape.count == 2 && patterns.contains { wildcardMatch($0, t.name) }
        }
        print("\(out): \(converted) tensors converted to \(type.uppercased())")
    }
}
