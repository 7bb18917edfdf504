// Errors of loading and running a model, each naming what was wrong.

import GGUF
import Quant

public enum ModelError: Error, CustomStringConvertible {
    case file(GGUFError)
    case unsupportedArchitecture(String, supported: [String])
    case missingKey(String)
    /// A key is there with a value of another type.
    case keyType(key: String, expected: String, found: String)
    /// A weight that can only make NaN: where in the tensor ("element 3", "the scale of block 7") and its value.
    case nonFiniteWeight(tensor: String, position: String, value: Float)
    case invalidHyperparameter(key: String, value: String, why: String)
    case missingTensor(String)
    case tensorShape(name: String, expected: [Int], found: [Int])
    case unsupportedTensorType(name: String, type: GGMLType)
    case unsupportedFeature(String)
    case tokenizer(TokenizerError)
    case tokenOutOfRange(token: Int32, vocabularySize: Int)
    case contextOverflow(tokens: Int, contextLength: Int)
    case emptyInput(String)
    /// A problem with a data file, at `line` (1-based) when it concerns one line.
    case data(path: String, line: Int?, message: String)

    public var description: String {
        switch self {
        case .file(let e): return e.description
        case .unsupportedArchitecture(let a, let supported):
            return "model architecture '\(a)' is not supported (supported: \(supported.joined(separator: ", ")))"
        case .missingKey(let k): return "the model's metadata has no '\(k)'"
        case .keyType(let k, let expected, let found):
            return "'\(k)' has a value of type \(found), expected \(expected)"
        case .nonFiniteWeight(let t, let position, let v):
            return "tensor '\(t)' holds \(v) as \(position); the model can only produce NaN. The file is damaged"
        case .invalidHyperparameter(let k, let v, let why): return "'\(k)' = \(v) is invalid: \(why)"
        case .missingTensor(let n): return "the model has no tensor '\(n)'"
        case .tensorShape(let n, let e, let f):
            return "tensor '\(n)' has shape \(f), expected \(e) from the hyperparameters"
        case .unsupportedTensorType(let n, let t):
            return "tensor '\(n)' has type \(t), which is not supported (F32, F16, BF16, Q4_0, Q4_1, Q8_0 are)"
        case .unsupportedFeature(let what): return what
        case .tokenizer(let e): return e.description
        case .tokenOutOfRange(let t, let n): return "token id \(t) is outside the vocabulary (0..<\(n))"
        case .contextOverflow(let n, let ctx):
            return "\(n) tokens do not fit in the context of \(ctx); shorten the input"
        case .emptyInput(let what): return what
        case .data(let path, let line, let message):
            return "\(path)\(line.map { ":\($0)" } ?? ""): \(message)"
        }
    }
}
