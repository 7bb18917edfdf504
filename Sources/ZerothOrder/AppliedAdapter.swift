// An adapter applied to its base model for generation, evaluation or export: the new
// tokens join the tokenizer and the forward pass, tuned scales replace the file's.

import Model
import Quant

public final class AppliedAdapter {
    public let adapter: Adapter
    public let tokenizer: Tokenizer
    /// (new tokens, dim) embeddings, when the adapter has new tokens.
    public let embeddings: FloatBuffer?
    /// (new tokens, dim) output rows, when they are not the embeddings (the init token's).
    public let outputRows: FloatBuffer?
    /// Tuned scales by tensor name, kept alive while the model reads them.
    private var scaleBuffers: [String: (d: FloatBuffer, m: FloatBuffer?)] = [:]
    private let model: LlamaModel

    /// Applies `adapter` to `model` (which it must belong to; `Adapter.read` checked that).
    public init(_ adapter: Adapter, model: LlamaModel) throws(TrainingError) {
        self.adapter = adapter
        self.model = model
        let vocab = model.config.vocabSize
        if adapter.newTokens.isEmpty {
            tokenizer = model.tokenizer
            embeddings = nil
        } else if model.tokenizer.count == vocab + adapter.newTokens.count,
                  adapter.newTokens.enumerated().allSatisfy({ model.tokenizer.id(of: $1) == Int32(vocab + $0) }) {
            // The model was loaded with the adapter's tokens.
            tokenizer = model.tokenizer
            embeddings = FloatBuffer(adapter.embeddings)
        } else {
            do { tokenizer = try model.tokenizer.adding(tokens: adapter.newTokens) } catch { throw .newToken("\(error)") }
            embeddings = FloatBuffer(adapter.embeddings)
        }
        outputRows = adapter.newTokenOutput.map { NewTokenRows.initOutputRows(model, Int($0.initToken), count: adapter.newTokens.count) }
        for (name, d) in adapter.scales {
            let m = adapter.offsets[name].map(FloatBuffer.init)
            let db = FloatBuffer(d)
            scaleBuffers[name] = (db, m)
            if let perBlock = adapter.subBlocks[name] {
                model.scaleOverrides[name] = BlockScales(sub: UnsafePointer(db.pointer), subMin: m.map { UnsafePointer($0.pointer) },
                                                         subPerBlock: perBlock)
            } else {
                model.scaleOverrides[name] = BlockScales(d: UnsafePointer(db.pointer), m: m.map { UnsafePointer($0.pointer) })
            }
        }
    }

    deinit {
        for name in scaleBuffers.keys { model.scaleOverrides[name] = nil }
    }

    /// The new tokens for the forward pass, or nil when there are none.
    public var extra: ExtraTokens? {
        embeddings.map {
            ExtraTokens(firstID: model.config.vocabSize, count: adapter.newTokens.count, tables: [UnsafePointer($0.pointer)],
                        outputTable: outputRows.map { UnsafePointer($0.pointer) })
        }
    }

    /// Loads and applies the adapter at `path`.
    public static func load(path: String, model: LlamaModel) throws(TrainingError) -> AppliedAdapter {
        try AppliedAdapter(Adapter.read(path: path, for: model), model: model)
    }
}
