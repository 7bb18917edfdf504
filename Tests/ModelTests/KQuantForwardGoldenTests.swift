import Foundation
import GGUF
import Quant
import TestSupport
import Testing

/// The forward pass on tiny llama models in the K-quants and Q5_0, quantized by llama.cpp
/// itself (scripts/reference/make_tiny_models.py --kquants), against llama.cpp's logits and
/// the float64 forward (Tests/Golden/llamacpp-tiny-q*_k*.json, tiny-q5_0.json): the
/// reference-model-style comparison of ForwardGoldenTests, with the same tolerances.
@Suite struct KQuantForwardGoldenTests {
    /// Model file stem, and the block formats its tensors use (llama.cpp's choice per tensor).
    static let models: [(name: String, formats: Set<String>)] = [
        ("tiny-q4_k_m", ["Q4_K", "Q6_K"]),
        ("tiny-q5_k_m", ["Q5_K", "Q6_K"]),
        ("tiny-q3_k_m", ["Q3_K", "Q4_K", "Q5_K", "Q6_K"]),
        ("tiny-q2_k", ["Q2_K", "Q3_K", "Q6_K"]),
        ("tiny-q5_0", ["Q5_0", "Q6_K"]),
    ]

    @Test(arguments: models.map(\.name))
    func kQuantModelAgreesWithReferences(_ name: String) throws {
        let path = Repository.path("models/\(name).gguf")
        let file = try GGUFFile(path: path)
        let formats = Set(file.tensors.map(\.type.name)).subtracting(["F32"])
        #expect(formats == Self.models.first { $0.name == name }!.formats, "\(name): \(formats.sorted())")
        try checkAgainstGoldens(modelPath: path, goldenName: name, checkTop1VsLlamaCpp: false)
    }
}
