// An owned, fixed-size float array with a stable address, freed with its owner.

#if canImport(Glibc)
import Glibc
#endif

/// Memory for `count` floats, zero-initialised, freed in deinit. Kernels take its pointer
/// directly; the address never changes. The memory comes from calloc, so the pages of a
/// large buffer join the resident set only when first written: a buffer sized for the
/// largest batch costs only what the batches actually use.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        self.count = count
        guard let raw = calloc(max(count, 1), 4) else {
            fatalError("FloatBuffer: cannot allocate \(count) floats")
        }
        pointer = raw.assumingMemoryBound(to: Float.self)
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        for (i, v) in values.enumerated() { pointer[i] = v }
    }

    deinit { free(pointer) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var array: [Float] { Array(buffer) }
    public var byteCount: Int { count * 4 }

    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}
