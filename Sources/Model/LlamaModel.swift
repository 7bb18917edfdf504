// A model's weights from a GGUF file, for any supported architecture; reference:
// llama.cpp's llm_load_tensors. Matrices stay in the file's block format inside the
// mapping; only the small vectors (norms, biases) are copied out as floats.

import GGUF
import Quant

/// Where one weight matrix is: its tensor and shape.
public struct MatrixTensor: Sendable {
    public let name: String
    public let info: GGUFTensorInfo
    /// Output dimension (ne1).
    public var rows: Int { info.shape[1] }
    /// Input dimension (ne0).
    public var cols: Int { info.shape[0] }
}

/// The tensors of one transformer block.
public struct LayerTensors: Sendable {
    public let attnNorm: FloatBuffer  /// (dim)
    public let ffnNorm: FloatBuffer   /// (dim)
    public let wq: MatrixTensor       /// (qDim, dim)
    public let wk: MatrixTensor       /// (kvDim, dim)
    public let wv: MatrixTensor       /// (kvDim, dim)
    public let wo: MatrixTensor       /// (dim, qDim)
    public let wGate: MatrixTensor    /// (ffnDim, dim)
    public let wUp: MatrixTensor      /// (ffnDim, dim)
    public let wDown: MatrixTensor    /// (dim, ffnDim)
    /// The architecture's other per-block vectors (biases, q/k norms, post norms).
    public let vectors: [BlockVector: FloatBuffer]

    public var matrices: [MatrixTensor] { [wq, wk, wv, wo, wGate, wUp, wDown] }
}

/// The weights of one block as the forward pass reads them: matrices with their data
/// pointers (the mapping, or a streaming buffer) and scale overrides resolved.
public struct LayerWeights {
    public var attnNorm: UnsafePointer<Float>
    public var ffnNorm: UnsafePointer<Float>
    public var wq, wk, wv, wo, wGate, wUp, wDown: WeightMatrix
    /// (qDim), (kvDim), (kvDim); nil when the architecture has no biases.
    public var qBias, kBias, vBias: UnsafePointer<Float>?
    /// (headDim) each; per-head RMSNorm weights of q and k.
    public var qNorm, kNorm: UnsafePointer<Float>?
    /// (dim) each; norms of the attention and feed-forward outputs.
    public var postAttentionNorm, postFFNNorm: UnsafePointer<Float>?

    /// The matrices in `LayerTensors.matrices` order: wq, wk, wv, wo, wGate, wUp, wDown.
    public subscript(matrix i: Int) -> WeightMatrix {
        get { [wq, wk, wv, wo, wGate, wUp, wDown][i] }
        set {
            switch i {
            case 0: wq = newValue
            case 1: wk = newValue
            case 2: wv = newValue
            case 3: wo = newValue
            case 4: wGate = newValue
            case 5: wUp = newValue
            default: wDown = newValue
            }
        }
    }
}

public final class LlamaModel: @unchecked Sendable {
    public let file: GGUFFile
    /// What the file is, and how its blocks run.
    public let architecture: any Architecture.Type
    public let config: LlamaConfig
    public let tokenizer: Tokenizer
    /// (vocab, dim)
    public let tokenEmbedding: MatrixTensor
    /// (vocab, dim); the token embedding itself when the model ties them.
    public let output: MatrixTensor
    public let outputIsTied: Bool
    /// Rows of the embedding past the file's vocabulary (padding): valid ids that no text
    /// produces and generation never samples.
    public let paddingRows: Range<Int>
    /// (dim)
    public let outputNorm: FloatBuffer
    public let layers: [LayerTensors]

    /// QZO's float32 master copies of block scales, by tensor name; the forward pass
    /// dequantizes those tensors through them instead of the file's half-precision scales.
    public var scaleOverrides: [String: BlockScales] = [:]

    /// `addedTokens`: tokens to append to the vocabulary as user-defined tokens (textual
    /// inversion's new tokens), so that only one tokenizer is ever built.
    public convenience init(path: String, addedTokens: [String] = []) throws(ModelError) {
        let file: GGUFFile
        do { file = try GGUFFile(path: path) } catch { throw .file(error) }
        try self.init(file: file, addedTokens: addedTokens)
    }

    public init(file: GGUFFile, addedTokens: [String] = []) throws(ModelError) {
        self.file = file
        let m = file.metadata
        guard let archValue = m["general.architecture"] else { throw .missingKey("general.architecture") }
        guard let archName = archValue.stringValue else {
            throw .keyType(key: "general.architecture", expected: "a string", found: "\(archValue.type)")
        }
        let arch = try Architectures.named(archName)
        architecture = arch

        // Token embedding first: its shape fixes the vocabulary size.
        guard let embd = file.tensor(named: "token_embd.weight") else { throw .missingTensor("token_embd.weight") }
        guard embd.shape.count == 2 else {
            throw .tensorShape(name: embd.name, expected: [-1, -1], found: embd.shape)
        }
        let config = try arch.config(Hyperparameters(metadata: m, architecture: archName), vocabSize: embd.shape[1])
        self.config = config
        // The tokenizer. An embedding padded beyond the vocabulary (rows without a token)
        // gets placeholder tokens of type `unused` for its extra rows, so that ids and rows
        // agree everywhere: generation never samples them (`paddingRows`), and tokens added
        // for textual inversion are numbered after the embedding's last row.
        do {
            var vocabulary = try TokenizerVocabulary(metadata: m)
            let fileTokens = vocabulary.tokens.count
            guard fileTokens <= config.vocabSize else {
                throw ModelError.invalidHyperparameter(key: "tokenizer.ggml.tokens", value: "\(fileTokens) tokens",
                                                       why: "more than the \(config.vocabSize) rows of token_embd.weight")
            }
            paddingRows = fileTokens..<config.vocabSize
            for t in addedTokens where vocabulary.tokens.contains(t) {
                throw ModelError.tokenizer(.tokenAlreadyExists(t, id: Int32(vocabulary.tokens.firstIndex(of: t)!)))
            }
            let padding = paddingRows.map { "[PAD\($0)]" }
            for t in padding where vocabulary.tokens.contains(t) {
                throw ModelError.unsupportedFeature("the vocabulary has a token '\(t)' past its own end; cannot pad the vocabulary to the embedding's \(config.vocabSize) rows")
            }
            if !padding.isEmpty || !addedTokens.isEmpty {
                vocabulary.tokenTypes = (vocabulary.tokenTypes ?? [Int32](repeating: 1, count: fileTokens)).prefix(fileTokens)
                    + [Int32](repeating: TokenType.unused.rawValue, count: padding.count)
                    + [Int32](repeating: TokenType.userDefined.rawValue, count: addedTokens.count)
                vocabulary.scores = vocabulary.scores.map {
                    Array($0.prefix(fileTokens)) + [Float](repeating: 0, count: padding.count + addedTokens.count)
                }
                vocabulary.tokens += padding + addedTokens
            }
            tokenizer = try Tokenizer(vocabulary: vocabulary)
        } catch let e as TokenizerError {
            throw .tokenizer(e)
        } catch let e as ModelError {
            throw e
        } catch {
            throw .unsupportedFeature("\(error)")
        }

        func matrix(_ name: String, rows: Int, cols: Int) throws(ModelError) -> MatrixTensor {
            guard let t = file.tensor(named: name) else { throw .missingTensor(name) }
            guard t.shape == [cols, rows] else { throw .tensorShape(name: name, expected: [cols, rows], found: t.shape) }
            guard t.type.isSupportedForCompute else { throw .unsupportedTensorType(name: name, type: t.type) }
            return MatrixTensor(name: name, info: t)
        }
        func vector(_ name: String, _ n: Int) throws(ModelError) -> FloatBuffer {
            guard let t = file.tensor(named: name) else { throw .missingTensor(name) }
            guard t.shape == [n] else { throw .tensorShape(name: name, expected: [n], found: t.shape) }
            guard t.type.isSupportedForCompute else { throw .unsupportedTensorType(name: name, type: t.type) }
            let out = FloatBuffer(count: n)
            // Read with pread, not through the mapping: a touched page of a file that sits in
            // the page cache as large folios maps the whole folio, and the norm vectors are
            // spread through the file (a streaming run keeps the mapping's pages out).
            let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, t.byteCount), alignment: 64)
            defer { bytes.deallocate() }
            let source = file.read(t, into: bytes) ? UnsafeRawPointer(bytes) : file.bytes(of: t).baseAddress!
            dequantizeRowGeneric(t.type, source, count: n, into: out.pointer)
            if let i = (0..<n).first(where: { !out[$0].isFinite }) {
                throw .nonFiniteWeight(tensor: name, position: "element \(i)", value: out[i])
            }
            return out
        }

        let c = config
        tokenEmbedding = try matrix("token_embd.weight", rows: c.vocabSize, cols: c.dim)
        if file.tensor(named: "output.weight") != nil {
            output = try matrix("output.weight", rows: c.vocabSize, cols: c.dim)
            outputIsTied = false
        } else {
            output = tokenEmbedding
            outputIsTied = true
        }
        outputNorm = try vector("output_norm.weight", c.dim)

        // Every tensor must be one the architecture uses: a file with more (an output bias,
        // rope frequency factors) is a variant whose forward pass this runtime does not know.
        let blockNames = ["attn_norm.weight", "ffn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                          "attn_output.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]
            + arch.blockVectors.map(\.tensorName)
        var known = Set(["token_embd.weight", "output.weight", "output_norm.weight"])
        for l in 0..<c.layerCount { for n in blockNames { known.insert("blk.\(l).\(n)") } }
        if let extra = file.tensors.first(where: { !known.contains($0.name) }) {
            throw .unsupportedFeature("tensor '\(extra.name)' is not part of the \(archName) architecture as this runtime runs it")
        }

        var layers = [LayerTensors]()
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            var vectors = [BlockVector: FloatBuffer]()
            for v in arch.blockVectors { vectors[v] = try vector(p + v.tensorName, v.count(c)) }
            layers.append(LayerTensors(
                attnNorm: try vector(p + "attn_norm.weight", c.dim),
                ffnNorm: try vector(p + "ffn_norm.weight", c.dim),
                wq: try matrix(p + "attn_q.weight", rows: c.qDim, cols: c.dim),
                wk: try matrix(p + "attn_k.weight", rows: c.kvDim, cols: c.dim),
                wv: try matrix(p + "attn_v.weight", rows: c.kvDim, cols: c.dim),
                wo: try matrix(p + "attn_output.weight", rows: c.dim, cols: c.qDim),
                wGate: try matrix(p + "ffn_gate.weight", rows: c.ffnDim, cols: c.dim),
                wUp: try matrix(p + "ffn_up.weight", rows: c.ffnDim, cols: c.dim),
                wDown: try matrix(p + "ffn_down.weight", rows: c.dim, cols: c.ffnDim),
                vectors: vectors))
        }
        self.layers = layers

        // Scales of every block format, and every value of float matrices, must be finite.
        for t in [tokenEmbedding] + (outputIsTied ? [] : [output]) + layers.flatMap(\.matrices) {
            try WeightScan.checkFinite(t.info, in: file)
        }
    }

    /// A matrix as the kernels take it, reading the mapped file (or `data` when given).
    public func weight(_ t: MatrixTensor, data: UnsafeRawPointer? = nil) -> WeightMatrix {
        WeightMatrix(type: t.info.type, rows: t.rows, cols: t.cols,
                     data: data ?? file.bytes(of: t.info).baseAddress!,
                     scales: scaleOverrides[t.name] ?? .file)
    }

    /// Block `l`'s weights read from the mapped file.
    public func layerWeights(_ l: Int) -> LayerWeights {
        layerWeights(l) { file.bytes(of: $0.info).baseAddress! }
    }

    /// Block `l`'s weights with each matrix's bytes found by `data`.
    public func layerWeights(_ l: Int, data: (MatrixTensor) -> UnsafeRawPointer) -> LayerWeights {
        let t = layers[l]
        func v(_ which: BlockVector) -> UnsafePointer<Float>? { t.vectors[which].map { UnsafePointer($0.pointer) } }
        return LayerWeights(attnNorm: t.attnNorm.pointer, ffnNorm: t.ffnNorm.pointer,
                            wq: weight(t.wq, data: data(t.wq)), wk: weight(t.wk, data: data(t.wk)),
                            wv: weight(t.wv, data: data(t.wv)), wo: weight(t.wo, data: data(t.wo)),
                            wGate: weight(t.wGate, data: data(t.wGate)), wUp: weight(t.wUp, data: data(t.wUp)),
                            wDown: weight(t.wDown, data: data(t.wDown)),
                            qBias: v(.qBias), kBias: v(.kBias), vBias: v(.vBias), qNorm: v(.qNorm), kNorm: v(.kNorm),
                            postAttentionNorm: v(.postAttentionNorm), postFFNNorm: v(.postFFNNorm))
    }

    /// Bytes of every block's matrices: what streaming has to read per forward pass.
    public var layerBytes: [Int] { layers.map { $0.matrices.reduce(0) { $0 + $1.info.byteCount } } }
}
