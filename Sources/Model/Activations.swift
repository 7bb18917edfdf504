// Activations of gated feed-forward blocks that are not in Quant's vector kernels.

#if canImport(Glibc)
import Glibc
#endif
import Quant

/// gate[i] = gelu_tanh(gate[i]) · up[i], with GELU's tanh approximation
///   gelu_tanh(x) = ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 x³))),
/// computed as x · σ(2u), u = √(2/π)(x + 0.044715x³) (the same function: 1 + tanh(u) =
/// 2σ(2u)), which has no cancellation near 0 and needs one exponential. 16 lanes, scalar tail.
public func geluTanhMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    let c = SIMD16<Float>(repeating: -2 * 0.797_884_56)   // −2·√(2/π)
    var i = 0
    while i + 16 <= count {
        let x = UnsafeRawPointer(gate + i).loadUnaligned(as: SIMD16<Float>.self)
        let u = UnsafeRawPointer(up + i).loadUnaligned(as: SIMD16<Float>.self)
        let x3 = x * x * x
        let inner: SIMD16<Float> = x + 0.044_715 * x3
        let e = exp16(c * inner)
        let g: SIMD16<Float> = x / (1 + e)
        UnsafeMutableRawPointer(gate + i).storeBytes(of: g * u, as: SIMD16<Float>.self)
        i += 16
    }
    while i < count {
        let x = gate[i]
        gate[i] = x / (1 + expf(-2 * 0.797_884_56 * (x + 0.044_715 * x * x * x))) * up[i]
        i += 1
    }
}

/// Scalar twin of `geluTanhMultiply`, written as the definition with tanh.
public func geluTanhMultiplyGeneric(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    for i in 0..<count {
        let x = Double(gate[i])
        let g = 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
        gate[i] = Float(g) * up[i]
    }
}
