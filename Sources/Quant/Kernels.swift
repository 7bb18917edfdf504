// Row kernels: fast dequantization and fused dot products for Q4_0, Q4_1 and Q8_0,
// each beside its plain scalar twin (`…Generic`), which tests compare them against.
//
// The fast versions work a block (32 weights) at a time in SIMD16<Float> lanes:
// 16 code bytes hold weights 0..15 in their low nibbles and 16..31 in their high
// nibbles, so one 16-byte load gives two 16-lane vectors that line up with x[0..<16]
// and x[16..<32]. Offsets (Q4_1's m, Q4_0's −8) are folded out of the inner product
// through the sum of x over the block, computed once per input vector.

import GGUF

// MARK: - Lane helpers

@inline(__always) @usableFromInline
func lowNibbles(_ v: SIMD16<UInt8>) -> SIMD16<Float> {
    SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: v & 0x0f))
}

@inline(__always) @usableFromInline
func highNibbles(_ v: SIMD16<UInt8>) -> SIMD16<Float> {
    SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: v &>> 4))
}

@inline(__always) @usableFromInline
func loadFloats16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) @usableFromInline
func storeFloats16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

// MARK: - Dequantization

/// Dequantizes one row of `count` values (whole blocks) into `dst`; bit-identical to
/// `dequantizeRowGeneric` (each value is one multiply and at most one add, in the same order).
public func dequantizeRow(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int,
                          into dst: UnsafeMutablePointer<Float>, scales: BlockScales = .file) {
    let blocks = count / 32
    switch type {
    case .q4_0:
        for b in 0..<blocks {
            let block = src + b * 18
            let d = scales.d?[b] ?? loadHalf(block, 0)
            let v = (block + 2).loadUnaligned(as: SIMD16<UInt8>.self)
            let eight = SIMD16<Float>(repeating: 8)
            storeFloats16(d * (lowNibbles(v) - eight), dst + b * 32)
            storeFloats16(d * (highNibbles(v) - eight), dst + b * 32 + 16)
        }
    case .q4_1:
        for b in 0..<blocks {
            let block = src + b * 20
            let d = scales.d?[b] ?? loadHalf(block, 0)
            let m = scales.m?[b] ?? loadHalf(block, 2)
            let v = (block + 4).loadUnaligned(as: SIMD16<UInt8>.self)
            storeFloats16(d * lowNibbles(v) + m, dst + b * 32)
            storeFloats16(d * highNibbles(v) + m, dst + b * 32 + 16)
        }
    case .q8_0:
        for b in 0..<blocks {
            let block = src + b * 34
            let d = scales.d?[b] ?? loadHalf(block, 0)
            let q0 = (block + 2).loadUnaligned(as: SIMD16<Int8>.self)
            let q1 = (block + 18).loadUnaligned(as: SIMD16<Int8>.self)
            storeFloats16(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q0)) * d, dst + b * 32)
            storeFloats16(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q1)) * d, dst + b * 32 + 16)
        }
    default:
        dequantizeRowGeneric(type, src, count: count, into: dst, scales: scales)
    }
}

// MARK: - Dot products of a quantized row with a float vector

/// Sums of `x` over each block of 32: the term that Q4_0's −8 and Q4_1's m multiply.
public func blockSums(_ x: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Float>) {
    for b in 0..<(count / 32) {
        sums[b] = (loadFloats16(x + b * 32) + loadFloats16(x + b * 32 + 16)).sum()
    }
}

/// Q4_0 row · x. `xSums` holds `blockSums(x)`.
@inlinable
public func dotQ4_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                    blocks: Int, scales: BlockScales = .file) -> Float {
    var acc = SIMD16<Float>()
    var offset: Float = 0
    for b in 0..<blocks {
        let block = row + b * 18
        let d = scales.d?[b] ?? loadHalf(block, 0)
        let v = (block + 2).loadUnaligned(as: SIMD16<UInt8>.self)
        let s = (lowNibbles(v) * loadFloats16(x + b * 32)).addingProduct(highNibbles(v), loadFloats16(x + b * 32 + 16))
        acc = acc.addingProduct(s, d)
        offset += d * xSums[b]
    }
    return acc.sum() - 8 * offset
}

/// Scalar twin of `dotQ4_0`.
public func dotQ4_0Generic(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                           scales: BlockScales = .file) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = row + b * 18
        let d = scales.d?[b] ?? loadHalf(block, 0)
        for j in 0..<16 {
            let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
            sum += d * Float(Int(byte & 15) - 8) * x[b * 32 + j]
            sum += d * Float(Int(byte >> 4) - 8) * x[b * 32 + j + 16]
        }
    }
    return sum
}

/// Q4_1 row · x. `xSums` holds `blockSums(x)`.
@inlinable
public func dotQ4_1(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ xSums: UnsafePointer<Float>,
                    blocks: Int, scales: BlockScales = .file) -> Float {
    var acc = SIMD16<Float>()
    var offset: Float = 0
    for b in 0..<blocks {
        let block = row + b * 20
        let d = scales.d?[b] ?? loadHalf(block, 0)
        let m = scales.m?[b] ?? loadHalf(block, 2)
        let v = (block + 4).loadUnaligned(as: SIMD16<UInt8>.self)
        let s = (lowNibbles(v) * loadFloats16(x + b * 32)).addingProduct(highNibbles(v), loadFloats16(x + b * 32 + 16))
        acc = acc.addingProduct(s, d)
        offset += m * xSums[b]
    }
    return acc.sum() + offset
}

/// Scalar twin of `dotQ4_1`.
public func dotQ4_1Generic(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                           scales: BlockScales = .file) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = row + b * 20
        let d = scales.d?[b] ?? loadHalf(block, 0)
        let m = scales.m?[b] ?? loadHalf(block, 2)
        for j in 0..<16 {
            let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
            sum += (d * Float(byte & 15) + m) * x[b * 32 + j]
            sum += (d * Float(byte >> 4) + m) * x[b * 32 + j + 16]
        }
    }
    return sum
}

/// Q8_0 row · x.
@inlinable
public func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                    scales: BlockScales = .file) -> Float {
    var acc = SIMD16<Float>()
    for b in 0..<blocks {
        let block = row + b * 34
        let d = scales.d?[b] ?? loadHalf(block, 0)
        let q0 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: (block + 2).loadUnaligned(as: SIMD16<Int8>.self)))
        let q1 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: (block + 18).loadUnaligned(as: SIMD16<Int8>.self)))
        let s = (q0 * loadFloats16(x + b * 32)).addingProduct(q1, loadFloats16(x + b * 32 + 16))
        acc = acc.addingProduct(s, d)
    }
    return acc.sum()
}

/// Scalar twin of `dotQ8_0`.
public func dotQ8_0Generic(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int,
                           scales: BlockScales = .file) -> Float {
    var sum: Float = 0
    for b in 0..<blocks {
        let block = row + b * 34
        let d = scales.d?[b] ?? loadHalf(block, 0)
        for j in 0..<32 {
            sum += d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * x[b * 32 + j]
        }
    }
    return sum
}

/// Float row · x, 16 lanes at a time with a scalar tail.
@inlinable
public func dotF32(_ a: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
        acc = acc.addingProduct(loadFloats16(a + i), loadFloats16(x + i))
        i += 16
    }
    var sum = acc.sum()
    while i < count {
        sum += a[i] * x[i]
        i += 1
    }
    return sum
}
