// Per-operation wall-clock totals of the forward pass, for `edge-finetune bench --profile`.
// Off by default: a disabled measurement costs one load and a branch.

#if canImport(Glibc)
import Glibc
#endif

/// Accumulates time spent in each step of the forward pass and the output head.
/// Not thread-safe by design: only the thread driving a pass records, around calls
/// that themselves fan out to the pool.
public enum Profile {
    /// The steps that are timed, in the order a report lists them.
    public enum Op: Int, CaseIterable, Sendable {
        case embed, attnNorm, qkv, rope, kvCache, attention, wo, ffnNorm, gateUp, silu, wDown, residual
        case finalNorm, outputHead

        public var name: String {
            switch self {
            case .embed: "embedding lookup"
            case .attnNorm: "attention rmsnorm"
            case .qkv: "matmuls Wq, Wk, Wv"
            case .rope: "rope (q, k)"
            case .kvCache: "kv-cache copy"
            case .attention: "attention (scores, softmax, ·V)"
            case .wo: "matmul Wo"
            case .ffnNorm: "ffn rmsnorm"
            case .gateUp: "matmuls Wgate, Wup"
            case .silu: "silu ⊙ up"
            case .wDown: "matmul Wdown"
            case .residual: "residual adds"
            case .finalNorm: "final rmsnorm"
            case .outputHead: "output projection (+ log-sum-exp)"
            }
        }
    }

    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) static var nanoseconds = [UInt64](repeating: 0, count: Op.allCases.count)
    nonisolated(unsafe) static var calls = [Int](repeating: 0, count: Op.allCases.count)

    /// Monotonic time in nanoseconds.
    @inlinable public static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    /// Runs `body`, adding its wall time to `op` when profiling is on.
    @inlinable @inline(__always)
    public static func measure<R>(_ op: Op, _ body: () throws -> R) rethrows -> R {
        guard enabled else { return try body() }
        let start = now()
        let result = try body()
        record(op, now() - start)
        return result
    }

    @usableFromInline static func record(_ op: Op, _ ns: UInt64) {
        nanoseconds[op.rawValue] += ns
        calls[op.rawValue] += 1
    }

    public static func reset() {
        for i in nanoseconds.indices {
            nanoseconds[i] = 0
            calls[i] = 0
        }
    }

    /// (op, seconds, calls) for every op that was recorded, in `Op` order.
    public static var totals: [(op: Op, seconds: Double, calls: Int)] {
        Op.allCases.compactMap { op in
            calls[op.rawValue] > 0 ? (op, Double(nanoseconds[op.rawValue]) / 1e9, calls[op.rawValue]) : nil
        }
    }
}
