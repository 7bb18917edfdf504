// Where the forward pass reads its weights from.
//
//   mapped    (LlamaModel itself) the file's memory mapping: every page read stays resident,
//             so the whole model counts in the resident set;
//   streamed  (WeightStreamer) ZO2's idea, disk to RAM: each block's matrices are read with
//             pread into one of two reusable buffers only while that block runs, and the next
//             block is read on another thread while the current one computes; the output
//             matrix is read a tile of rows at a time. The resident set holds two blocks and a
//             tile instead of the model; the file stays in the page cache when memory allows,
//             so a read is mostly a copy.

#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import GGUF
import Quant

/// Weights for one forward pass, block by block.
public protocol WeightSource: AnyObject {
    /// Block `l`'s weights; valid until the next call to `layer`.
    func layer(_ l: Int) -> LayerWeights
    /// Rows `rows` of the output matrix as a matrix of `rows.count` rows (at most
    /// `outputTileRows`); valid until the next call with the same `thread` (0..<Parallel.threadCount),
    /// and calls with different threads may run at the same time.
    func outputRows(_ rows: Range<Int>, thread: Int) -> WeightMatrix
    /// Dequantizes token `id`'s embedding into `out` (dim floats).
    func embedding(_ id: Int, into out: UnsafeMutablePointer<Float>)
    /// Rows of the output matrix the caller should take per `outputRows` call at most.
    var outputTileRows: Int { get }
}

extension LlamaModel: WeightSource {
    public func layer(_ l: Int) -> LayerWeights { layerWeights(l) }

    public func outputRows(_ rows: Range<Int>, thread: Int) -> WeightMatrix {
        var w = weight(output)
        w.data += rows.lowerBound * w.rowBytes
        w.scales = w.scales.advanced(by: rows.lowerBound * w.blocksPerRow)
        w.rows = rows.count
        return w
    }

    public func embedding(_ id: Int, into out: UnsafeMutablePointer<Float>) {
        weight(tokenEmbedding).dequantize(rows: id..<(id + 1), into: out)
    }

    public var outputTileRows: Int { config.vocabSize }
}

/// Reads block weights from the file into two alternating buffers, one block ahead.
public final class WeightStreamer: WeightSource {
    public let model: LlamaModel
    public let outputTileRows: Int
    private let descriptor: Int32
    private let slotBytes: Int
    private let slots: [UnsafeMutableRawPointer]
    /// Which block each slot holds (or is being filled with).
    private var slotLayer: [Int?] = [nil, nil]
    private let reads = DispatchQueue(label: "edge-finetune.weight-streamer")
    private var pending: [DispatchWorkItem?] = [nil, nil]
    /// One tile of output rows per thread.
    private let tiles: [UnsafeMutableRawPointer]
    private let row: UnsafeMutableRawPointer
    /// Bytes read from the file so far.
    public private(set) var bytesRead = 0

    public init(model: LlamaModel, outputTileRows: Int = 256) {
        self.model = model
        self.outputTileRows = outputTileRows
        descriptor = model.file.mapping.descriptor
        slotBytes = model.layerBytes.max() ?? 0
        slots = (0..<2).map { _ in UnsafeMutableRawPointer.allocate(byteCount: max(1, model.layerBytes.max() ?? 1), alignment: 64) }
        let tileBytes = max(1, outputTileRows * model.output.info.type.rowBytes(model.config.dim)!)
        tiles = (0..<max(1, Parallel.threadCount)).map { _ in .allocate(byteCount: tileBytes, alignment: 64) }
        row = .allocate(byteCount: max(1, model.tokenEmbedding.info.type.rowBytes(model.config.dim)!), alignment: 64)
    }

    deinit {
        reads.sync {}
        slots.forEach { $0.deallocate() }
        tiles.forEach { $0.deallocate() }
        row.deallocate()
    }

    /// Resident bytes of the buffers.
    public var byteCount: Int {
        2 * slotBytes + tiles.count * outputTileRows * model.output.info.type.rowBytes(model.config.dim)!
    }

    /// Reads `count` bytes at file offset `offset` into `buffer`, whole.
    private func read(_ buffer: UnsafeMutableRawPointer, _ count: Int, at offset: Int) {
        var done = 0
        while done < count {
            let n = pread(descriptor, buffer + done, count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            // The mapping was checked against the file size at load; a short read means the
            // file changed under us, which is not recoverable here.
            precondition(n > 0, "weight streaming: reading \(model.file.path) failed at byte \(offset + done)")
            done += n
        }
    }

    /// Fills `slot` with block `l`'s matrices, back to back.
    private func fill(slot: Int, layer l: Int) {
        var offset = 0
        for t in model.layers[l].matrices {
            let range = model.file.fileRange(of: t.info)
            read(slots[slot] + offset, range.count, at: range.lowerBound)
            offset += range.count
        }
    }

    public func layer(_ l: Int) -> LayerWeights {
        let slot = l % 2
        if slotLayer[slot] == l, let work = pending[slot] {
            work.wait()
        } else {
            pending[slot]?.wait()
            fill(slot: slot, layer: l)
            slotLayer[slot] = l
        }
        pending[slot] = nil
        // Read the next block into the other slot while this one computes.
        let next = (l + 1) % model.config.layerCount
        let other = 1 - slot
        if model.config.layerCount > 1 && slotLayer[other] != next {
            pending[other]?.wait()
            slotLayer[other] = next
            let work = DispatchWorkItem { [unowned self] in self.fill(slot: other, layer: next) }
            pending[other] = work
            reads.async(execute: work)
        }
        // The slot holds the matrices back to back, in `matrices` order.
        var offsets = [String: Int]()
        var offset = 0
        for t in model.layers[l].matrices {
            offsets[t.name] = offset
            offset += t.info.byteCount
        }
        bytesRead += offset
        let base = slots[slot]
        return model.layerWeights(l) { UnsafeRawPointer(base + offsets[$0.name]!) }
    }

    public func outputRows(_ rows: Range<Int>, thread: Int) -> WeightMatrix {
        precondition(rows.count <= outputTileRows, "output tile of \(rows.count) rows exceeds \(outputTileRows)")
        var w = model.weight(model.output)
        let range = model.file.fileRange(of: model.output.info)
        let tile = tiles[thread % tiles.count]
        read(tile, rows.count * w.rowBytes, at: range.lowerBound + rows.lowerBound * w.rowBytes)
        w.data = UnsafeRawPointer(tile)
        w.scales = w.scales.advanced(by: rows.lowerBound * w.blocksPerRow)
        w.rows = rows.count
        return w
    }

    public func embedding(_ id: Int, into out: UnsafeMutablePointer<Float>) {
        var w = model.weight(model.tokenEmbedding)
        let range = model.file.fileRange(of: model.tokenEmbedding.info)
        read(row, w.rowBytes, at: range.lowerBound + id * w.rowBytes)
        w.data = UnsafeRawPointer(row)
        w.scales = w.scales.advanced(by: id * w.blocksPerRow)
        w.rows = 1
        w.dequantize(rows: 0..<1, into: out)
    }
}
