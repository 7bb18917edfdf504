// Parallel loops over the cores, on Dispatch's persistent worker threads (no thread
// is created per call).

import Dispatch

public enum Parallel {
    /// Threads our own kernels split work across (OpenBLAS has its own setting).
    nonisolated(unsafe) public static var threadCount = 2

    /// Runs `body(chunk)` for chunk in 0..<chunks, spread over `threadCount` threads.
    /// Runs inline when there is one chunk or one thread.
    @inlinable
    public static func forEach(_ chunks: Int, _ body: (Int) -> Void) {
        if chunks <= 1 || threadCount <= 1 {
            for c in 0..<chunks { body(c) }
            return
        }
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: chunks) { body($0) }
        }
    }

    /// Splits 0..<count into one contiguous range per thread (multiples of `granule`)
    /// and runs `body(range)` for each.
    @inlinable
    public static func forRanges(_ count: Int, granule: Int = 1, _ body: (Range<Int>) -> Void) {
        let threads = max(1, min(threadCount, count / max(granule, 1)))
        if threads == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let units = (count + granule - 1) / granule
        forEach(threads) { t in
            let lo = min(count, units * t / threads * granule)
            let hi = min(count, units * (t + 1) / threads * granule)
            if lo < hi { body(lo..<hi) }
        }
    }
}
