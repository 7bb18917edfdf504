// The table of block formats, like ggml's `type_traits`: for every type `Quant` computes
// with, its block geometry, where its scales are, and its kernels (dequantize a row, fast
// and scalar; quantize a row where we have a quantizer; the one-token dot product; the
// tile dequantizer of the many-token path). Everything that depends on the format goes
// through this table; nothing else switches on the type.
//
// The kernels are written once per shape as generic loops (`dequantizeRow(_:…)`,
// `rowDot(_:…)`, `rowDotGeneric(_:…)`) over a format's per-block code (`BlockFormat`,
// `BlockDot`); the table's entries are those loops specialised per format. Q4_K, Q6_K,
// Q5_0 and Q8_0 also list an integer one-token kernel on 8-bit activations (`IntegerDot`,
// IntegerDots.swift), which generation uses.

import GGUF

/// Byte offsets of a block's scale fields: `d` (a half), and `m` (Q4_1/Q5_1's offset, the
/// K-quants' dmin; a half) when the format has one.
public struct ScaleFields: Sendable, Equatable {
    public let d: Int
    public let m: Int?

    public init(d: Int, m: Int?) {
        self.d = d
        self.m = m
    }
}

/// What the one-token kernels read of one activation vector x (`cols` values).
public struct Activations {
    /// x itself.
    public var x: UnsafePointer<Float>
    /// `blockSums(x)`: one sum per 32 values (the terms of Q4_0's −8, Q4_1's m, the K-quants' mins).
    public var sums: UnsafePointer<Float>
    /// x in `nibbleOrder`, for the Q4_0/Q4_1 kernels; nil to use their plain kernels.
    public var ordered: UnsafePointer<Float>?

    public init(x: UnsafePointer<Float>, sums: UnsafePointer<Float>, ordered: UnsafePointer<Float>? = nil) {
        self.x = x
        self.sums = sums
        self.ordered = ordered
    }
}

/// A block format: its geometry and how one block dequantizes. Block `b` of a row may have
/// its scales overridden by `scales.d?[b]` (and `scales.m?[b]`).
public protocol BlockFormat {
    static var type: GGMLType { get }
    /// Weights per block.
    static var blockSize: Int { get }
    /// Bytes per block.
    static var blockBytes: Int { get }
    static var scaleFields: ScaleFields? { get }
    /// Fast dequantization of block `b` (at `block`) into out[0..<blockSize]; bit-identical
    /// to `dequantizeBlockGeneric`.
    static func dequantizeBlock(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>)
    /// Plain scalar dequantization, in gguf-py's order of operations (the reference).
    static func dequantizeBlockGeneric(_ block: UnsafeRawPointer, _ b: Int, _ scales: BlockScales, into out: UnsafeMutablePointer<Float>)
}

/// A format that `Quant` can quantize into, bit-identical to gguf-py.
public protocol QuantizableFormat: BlockFormat {
    /// Quantizes blockSize floats at `x` into one block.
    static func quantizeBlock(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer)
}

/// The inner step of a one-token dot product: block `b` of a row · its part of x, added
/// into 8 lanes and a scalar (terms that multiply sums of x); `finish` combines the two.
public protocol BlockDot {
    associatedtype Format: BlockFormat
    static func accumulate(_ block: UnsafeRawPointer, _ b: Int, _ a: Activations, _ scales: BlockScales,
                           _ acc: inout SIMD8<Float>, _ offset: inout Float)
    static func finish(_ lanes: Float, _ offset: Float) -> Float
}

// MARK: - The generic loops

/// Dequantizes `count` values (whole blocks) of one row, fast.
@inlinable @inline(__always)
func dequantizeRow<F: BlockFormat>(_: F.Type, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>,
                                   scales: BlockScales) {
    for b in 0..<(count / F.blockSize) {
        F.dequantizeBlock(src + b * F.blockBytes, b, scales, into: dst + b * F.blockSize)
    }
}

/// Dequantizes `count` values (whole blocks) of one row with the scalar code.
@inlinable @inline(__always)
func dequantizeRowGeneric<F: BlockFormat>(_: F.Type, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>,
                                          scales: BlockScales) {
    for b in 0..<(count / F.blockSize) {
        F.dequantizeBlockGeneric(src + b * F.blockBytes, b, scales, into: dst + b * F.blockSize)
    }
}

/// Rows `range` of a matrix dequantized into `dst` ((range.count, cols), row-major): the
/// tile dequantizer of the many-token path.
@inlinable @inline(__always)
func dequantizeRows<F: BlockFormat>(_: F.Type, _ w: WeightMatrix, _ range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
    let rowBytes = w.cols / F.blockSize * F.blockBytes
    let blocks = w.cols / F.blockSize
    for (i, r) in range.enumerated() {
        dequantizeRow(F.self, w.data + r * rowBytes, count: w.cols, into: dst + i * w.cols, scales: w.scales.advanced(by: r * blocks))
    }
}

/// One row · x. Two blocks per step into two accumulators: with one, every block waits for
/// the previous block's multiply-add (4 cycles of latency) and the loop runs at that pace
/// instead of at the pace of its instructions.
@inlinable @inline(__always)
func rowDot<K: BlockDot>(_: K.Type, _ row: UnsafeRawPointer, _ a: Activations, blocks: Int, scales: BlockScales) -> Float {
    let stride = K.Format.blockBytes
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var offset0: Float = 0, offset1: Float = 0
    var b = 0
    while b + 2 <= blocks {
        K.accumulate(row + b * stride, b, a, scales, &acc0, &offset0)
        K.accumulate(row + (b + 1) * stride, b + 1, a, scales, &acc1, &offset1)
        b += 2
    }
    if b < blocks {
        K.accumulate(row + b * stride, b, a, scales, &acc0, &offset0)
    }
    return K.finish(laneSum(acc0 + acc1), offset0 + offset1)
}

/// y[r] = row r · x for r in `range`.
@inlinable @inline(__always)
func rowDots<K: BlockDot>(_: K.Type, _ w: WeightMatrix, _ range: Range<Int>, _ a: Activations, into y: UnsafeMutablePointer<Float>) {
    let blocks = w.cols / K.Format.blockSize
    let rowBytes = blocks * K.Format.blockBytes
    for r in range {
        y[r] = rowDot(K.self, w.data + r * rowBytes, a, blocks: blocks, scales: w.scales.advanced(by: r * blocks))
    }
}

/// Scalar twin of `rowDot`: each block dequantized by the scalar code, products summed in order.
@inlinable
func rowDotGeneric<F: BlockFormat>(_: F.Type, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                                   scales: BlockScales) -> Float {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: F.blockSize) { tmp in
        var sum: Float = 0
        for b in 0..<blocks {
            F.dequantizeBlockGeneric(row + b * F.blockBytes, b, scales, into: tmp.baseAddress!)
            for i in 0..<F.blockSize { sum += tmp[i] * x[b * F.blockSize + i] }
        }
        return sum
    }
}

// MARK: - The table

/// One row of the table of block formats. Rows are whole numbers of blocks; `scales` are
/// per-block overrides of the file's scales (`BlockScales`), indexed from the row's first block.
public struct BlockFormatTraits: @unchecked Sendable {
    public typealias RowDequantizer = (_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>, _ scales: BlockScales) -> Void

    public let type: GGMLType
    /// Weights per block (1 for F32, F16, BF16).
    public let blockSize: Int
    public let blockBytes: Int
    /// Where a block's scales are; nil for F32, F16, BF16.
    public let scales: ScaleFields?
    /// Whether the one-token kernel reads x in `nibbleOrder` too (Q4_0, Q4_1).
    public let wantsNibbleOrder: Bool
    /// Dequantize one row, fast; bit-identical to `dequantizeRowGeneric`.
    public let dequantizeRow: RowDequantizer
    /// Dequantize one row with plain scalar code: bit-identical to gguf-py's dequantize.
    public let dequantizeRowGeneric: RowDequantizer
    /// Quantize one row (bit-identical to gguf-py), where we have a quantizer.
    public let quantizeRow: ((_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer) -> Void)?
    /// The tile dequantizer: rows `range` of W into dst ((range.count, cols), row-major).
    public let dequantizeRows: (_ w: WeightMatrix, _ range: Range<Int>, _ dst: UnsafeMutablePointer<Float>) -> Void
    /// The one-token kernel on float x: y[r] = row r · x for r in range.
    public let dots: (_ w: WeightMatrix, _ range: Range<Int>, _ a: Activations, _ y: UnsafeMutablePointer<Float>) -> Void
    /// Scalar twin of one row · x (`cols` values).
    public let dotGeneric: (_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ cols: Int, _ scales: BlockScales) -> Float
    /// The 8-bit blocks of x the format's integer one-token kernel reads (IntegerDots.swift),
    /// nil when it has none. The one-token matmul (generation) uses `integerDots` where there
    /// is one, with x quantized once per token, and `dots` (float x) otherwise.
    public let integerBlocks: ActivationBlocks?
    /// The integer one-token kernel: y[r] = row r · x̂ for r in range, x̂ the blocks at the pointer.
    public let integerDots: ((_ w: WeightMatrix, _ range: Range<Int>, _ y8: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) -> Void)?
    /// Its scalar twin for one row (`cols` values), equal bit for bit.
    public let integerDotGeneric: ((_ row: UnsafeRawPointer, _ y8: UnsafeRawPointer, _ cols: Int, _ scales: BlockScales) -> Float)?

    /// The row for `type`, or nil when `Quant` does not compute with it.
    @inlinable public static func of(_ type: GGMLType) -> BlockFormatTraits? {
        let i = Int(type.rawValue)
        return i < table.count ? table[i] : nil
    }

    /// Every supported format, in ggml's type order.
    public static var all: [BlockFormatTraits] { table.compactMap { $0 } }

    @usableFromInline static let table: [BlockFormatTraits?] = {
        let rows: [BlockFormatTraits] = [
            plain(F32Format.self), plain(F16Format.self), plain(BF16Format.self),
            quantizable(Q4_0Format.self, dot: Q4_0Dot.self, ordered: Q4_0OrderedDot.self),
            quantizable(Q4_1Format.self, dot: Q4_1Dot.self, ordered: Q4_1OrderedDot.self),
            quantizable(Q5_0Format.self, dot: Q5_0Dot.self).integer(Q5_0Q8Dot.self),
            quantizable(Q5_1Format.self, dot: Q5_1Dot.self),
            quantizable(Q8_0Format.self, dot: Q8_0Dot.self).integer(Q8_0Q8Dot.self),
            block(Q2_KFormat.self, dot: Q2_KDot.self),
            block(Q3_KFormat.self, dot: Q3_KDot.self),
            block(Q4_KFormat.self, dot: Q4_KDot.self).integer(Q4_KQ8Dot.self),
            block(Q5_KFormat.self, dot: Q5_KDot.self),
            block(Q6_KFormat.self, dot: Q6_KDot.self).integer(Q6_KQ8Dot.self),
        ]
        var t = [BlockFormatTraits?](repeating: nil, count: 42)
        for r in rows {
            precondition(r.blockSize == r.type.blockSize && r.blockBytes == r.type.bytesPerBlock, "\(r.type): geometry differs from GGMLType's")
            t[Int(r.type.rawValue)] = r
        }
        return t
    }()

    /// A row for block format F: K is its one-token kernel, O its kernel on nibble-ordered x
    /// (used when `wantsNibbleOrder` and the activations carry that order).
    static func make<F: BlockFormat, K: BlockDot, O: BlockDot>(
        _: F.Type, dot: K.Type, ordered: O.Type, wantsNibbleOrder: Bool,
        quantize: ((UnsafePointer<Float>, Int, UnsafeMutableRawPointer) -> Void)?
    ) -> BlockFormatTraits where K.Format == F, O.Format == F {
        BlockFormatTraits(
            type: F.type, blockSize: F.blockSize, blockBytes: F.blockBytes, scales: F.scaleFields,
            wantsNibbleOrder: wantsNibbleOrder,
            dequantizeRow: { Quant.dequantizeRow(F.self, $0, count: $1, into: $2, scales: $3) },
            dequantizeRowGeneric: { Quant.dequantizeRowGeneric(F.self, $0, count: $1, into: $2, scales: $3) },
            quantizeRow: quantize,
            dequantizeRows: { Quant.dequantizeRows(F.self, $0, $1, into: $2) },
            // Closures that capture nothing (not even the flag): copying a row of the table
            // then costs no reference counting, so threads can look kernels up per chunk.
            dots: wantsNibbleOrder
                ? { w, range, a, y in
                    if a.ordered != nil { rowDots(O.self, w, range, a, into: y) } else { rowDots(K.self, w, range, a, into: y) }
                }
                : { w, range, a, y in rowDots(K.self, w, range, a, into: y) },
            dotGeneric: { row, x, cols, scales in rowDotGeneric(F.self, row, x, blocks: cols / F.blockSize, scales: scales) },
            integerBlocks: nil, integerDots: nil, integerDotGeneric: nil)
    }

    /// This row with K as its integer one-token kernel (closures that capture nothing, as in `make`).
    func integer<K: IntegerDot>(_: K.Type) -> BlockFormatTraits {
        precondition(K.Format.type == type, "\(type): integer kernel of \(K.Format.type)")
        return BlockFormatTraits(
            type: type, blockSize: blockSize, blockBytes: blockBytes, scales: scales, wantsNibbleOrder: wantsNibbleOrder,
            dequantizeRow: dequantizeRow, dequantizeRowGeneric: dequantizeRowGeneric, quantizeRow: quantizeRow,
            dequantizeRows: dequantizeRows, dots: dots, dotGeneric: dotGeneric,
            integerBlocks: K.blocks,
            integerDots: { w, range, y8, y in integerRowDots(K.self, w, range, y8, into: y) },
            integerDotGeneric: { row, y8, cols, scales in K.rowGeneric(row, y8, blocks: cols / K.Format.blockSize, scales: scales) })
    }

    static func block<F: BlockFormat, K: BlockDot>(_ f: F.Type, dot: K.Type) -> BlockFormatTraits where K.Format == F {
        make(f, dot: dot, ordered: dot, wantsNibbleOrder: false, quantize: nil)
    }

    static func quantizable<F: QuantizableFormat, K: BlockDot>(_ f: F.Type, dot: K.Type) -> BlockFormatTraits where K.Format == F {
        make(f, dot: dot, ordered: dot, wantsNibbleOrder: false, quantize: quantizeRowBlocks(F.self))
    }

    static func quantizable<F: QuantizableFormat, K: BlockDot, O: BlockDot>(_ f: F.Type, dot: K.Type, ordered: O.Type) -> BlockFormatTraits
    where K.Format == F, O.Format == F {
        make(f, dot: dot, ordered: ordered, wantsNibbleOrder: true, quantize: quantizeRowBlocks(F.self))
    }

    static func quantizeRowBlocks<F: QuantizableFormat>(_: F.Type) -> (UnsafePointer<Float>, Int, UnsafeMutableRawPointer) -> Void {
        { src, count, dst in
            for b in 0..<(count / F.blockSize) { F.quantizeBlock(src + b * F.blockSize, into: dst + b * F.blockBytes) }
        }
    }

    /// F32, F16, BF16: one value per "block". The one-token kernel of F16/BF16 expands each
    /// row into a temporary and takes a float dot product.
    static func plain<P: PlainFormat>(_: P.Type) -> BlockFormatTraits {
        BlockFormatTraits(
            type: P.type, blockSize: 1, blockBytes: P.bytes, scales: nil, wantsNibbleOrder: false,
            dequantizeRow: { src, count, dst, _ in P.toFloat(src, count, dst) },
            dequantizeRowGeneric: { src, count, dst, _ in P.toFloat(src, count, dst) },
            quantizeRow: { src, count, dst in P.fromFloat(src, count, dst) },
            dequantizeRows: { w, range, dst in
                for (i, r) in range.enumerated() { P.toFloat(w.data + r * w.cols * P.bytes, w.cols, dst + i * w.cols) }
            },
            dots: { w, range, a, y in
                if P.type == .f32 {
                    for r in range { y[r] = dotF32((w.data + r * w.cols * 4).assumingMemoryBound(to: Float.self), a.x, count: w.cols) }
                    return
                }
                withUnsafeTemporaryAllocation(of: Float.self, capacity: w.cols) { tmp in
                    for r in range {
                        P.toFloat(w.data + r * w.cols * P.bytes, w.cols, tmp.baseAddress!)
                        y[r] = dotF32(tmp.baseAddress!, a.x, count: w.cols)
                    }
                }
            },
            dotGeneric: { row, x, cols, _ in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { tmp in
                    P.toFloat(row, cols, tmp.baseAddress!)
                    var sum: Float = 0
                    for i in 0..<cols { sum += tmp[i] * x[i] }
                    return sum
                }
            },
            integerBlocks: nil, integerDots: nil, integerDotGeneric: nil)
    }
}
