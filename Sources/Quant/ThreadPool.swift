// Parallel loops over the cores, on a small persistent pool of worker threads.
//
// A forward pass makes a few hundred parallel calls per token (every matmul, norm and
// attention step), each only tens of microseconds long in generation. Dispatch's
// concurrentPerform costs several microseconds per call to wake its workers and they
// fall asleep between calls; here the workers spin for a while after each job (so the
// next call of the same pass starts within a microsecond) and only then sleep on a
// condition variable. The calling thread takes part in every job.
//
// One job at a time: a call made while the pool is busy (from inside a job, or from
// another thread, e.g. tests running in parallel) runs its chunks inline.

import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum Parallel {
    /// Threads our own kernels split work across, the caller included.
    nonisolated(unsafe) public static var threadCount = 2

    /// Runs `body(chunk)` for chunk in 0..<chunks, spread over `threadCount` threads.
    /// Runs inline when there is one chunk or one thread, or when the pool is busy.
    public static func forEach(_ chunks: Int, _ body: (Int) -> Void) {
        if chunks <= 1 || threadCount <= 1 {
            for c in 0..<chunks { body(c) }
            return
        }
        withoutActuallyEscaping(body) { body in
            WorkerPool.shared(threads: threadCount).run(chunks) { chunk, _ in body(chunk) }
        }
    }

    /// Like `forEach`, also telling `body` which thread runs the chunk (0..<threadCount;
    /// the caller is 0), e.g. to pick that thread's scratch buffer. Chunks are handed out
    /// one at a time in order, so putting the longest first balances uneven chunks.
    /// `threads` (default `threadCount`) bounds the thread numbers, e.g. by the scratch
    /// buffers there are.
    public static func forEachOnThread(_ chunks: Int, threads: Int? = nil, _ body: (_ chunk: Int, _ thread: Int) -> Void) {
        let threads = min(threads ?? threadCount, threadCount)
        if chunks <= 1 || threads <= 1 {
            for c in 0..<chunks { body(c, 0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            WorkerPool.shared(threads: threads).run(chunks, body)
        }
    }

    /// Splits 0..<count into one contiguous range per thread (multiples of `granule`)
    /// and runs `body(range)` for each.
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

/// `threads − 1` worker threads plus the caller. Chunks are claimed one at a time, so a
/// thread that is descheduled (the machine is shared) holds up at most the chunk it has
/// claimed: the others take the rest.
///
/// All of a job's state that workers race on lives in one atomic word, the ticket:
/// job number (24 bits) | chunk count (20 bits) | next chunk (20 bits). A claim is a
/// compare-and-swap that succeeds only while the ticket still names the same job with
/// chunks left, so a worker that wakes late can never run a chunk of a job that is over
/// or not yet published, and the caller publishes a new job only when every claimed
/// chunk of the last one has finished.
final class WorkerPool: @unchecked Sendable {
    /// Spins of a worker waiting for the next job before it sleeps (roughly 100 µs).
    static let spinLimit = 100_000
    static let indexBits = 20
    static let maxChunks = 1 << indexBits

    let threads: Int
    private let ticket = Atomic<Int>(0)
    /// Chunks of the current job that have finished.
    private let finished = Atomic<Int>(0)
    /// 1 while a job runs (the pool serves one caller at a time).
    private let busy = Atomic<Int>(0)
    /// Workers blocked on `wake`.
    private let sleepers = Atomic<Int>(0)
    /// 1 while the caller sleeps on `done`, waiting for a worker's last chunk.
    private let callerSleeping = Atomic<Int>(0)
    /// Spins of the caller waiting for a worker's chunk before it sleeps (a few µs).
    static let callerSpinLimit = 20_000
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The current job's body; written by the caller before it publishes the ticket.
    nonisolated(unsafe) private var body: ((Int, Int) -> Void)?
    private var job = 0

    private init(threads: Int) {
        self.threads = threads
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
        for index in 1..<threads {
            var thread = pthread_t()
            let box = Unmanaged.passRetained(WorkerStart(pool: self, index: index)).toOpaque()
            pthread_create(&thread, nil, { arg in
                let start = Unmanaged<WorkerStart>.fromOpaque(arg!).takeRetainedValue()
                start.pool.workerLoop(index: start.index)
                return nil
            }, box)
            pthread_detach(thread)
        }
    }

    private final class WorkerStart {
        let pool: WorkerPool
        let index: Int
        init(pool: WorkerPool, index: Int) {
            self.pool = pool
            self.index = index
        }
    }

    nonisolated(unsafe) private static var pools = [Int: WorkerPool]()
    private static let poolsLock = Mutex<Void>(())

    /// The pool of `threads` threads (created on first use and kept for the process).
    static func shared(threads: Int) -> WorkerPool {
        poolsLock.withLock { _ in
            if let p = pools[threads] { return p }
            let p = WorkerPool(threads: threads)
            pools[threads] = p
            return p
        }
    }

    private static func jobOf(_ t: Int) -> Int { t >> (2 * indexBits) }

    func run(_ chunks: Int, _ body: @escaping (Int, Int) -> Void) {
        guard chunks < Self.maxChunks,
              busy.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged else {
            for c in 0..<chunks { body(c, 0) }
            return
        }
        // Publish: body first, then the ticket that names it.
        self.body = body
        finished.store(0, ordering: .relaxed)
        job = (job + 1) & 0xff_ffff
        ticket.store((job << (2 * Self.indexBits)) | (chunks << Self.indexBits), ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
        }
        work(job: job, thread: 0, body)
        // A worker may still run a chunk it claimed. Spin a little (the usual case: it
        // finishes within microseconds); if it takes longer, it has probably lost its
        // core to another process, so sleep and free ours for it: it signals when done.
        var spins = 0
        while finished.load(ordering: .acquiring) < chunks {
            spins += 1
            if spins > Self.callerSpinLimit {
                pthread_mutex_lock(mutex)
                callerSleeping.store(1, ordering: .sequentiallyConsistent)
                while finished.load(ordering: .sequentiallyConsistent) < chunks {
                    pthread_cond_wait(done, mutex)
                }
                callerSleeping.store(0, ordering: .relaxed)
                pthread_mutex_unlock(mutex)
            }
        }
        self.body = nil
        busy.store(0, ordering: .releasing)
    }

    /// Claims and runs chunks of job `job` until none are left or the job is over.
    private func work(job: Int, thread: Int, _ body: (Int, Int) -> Void) {
        let mask = Self.maxChunks - 1
        var t = ticket.load(ordering: .acquiring)
        while Self.jobOf(t) == job {
            let index = t & mask
            let chunks = (t >> Self.indexBits) & mask
            if index >= chunks { return }
            let (exchanged, original) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
            if exchanged {
                body(index, thread)
                finished.add(1, ordering: .sequentiallyConsistent)
                if callerSleeping.load(ordering: .sequentiallyConsistent) != 0 {
                    pthread_mutex_lock(mutex)
                    pthread_cond_signal(done)
                    pthread_mutex_unlock(mutex)
                }
                t += 1
            } else {
                t = original
            }
        }
    }

    private func workerLoop(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var current = Self.jobOf(ticket.load(ordering: .acquiring))
            while current == seen {
                spins += 1
                if spins > Self.spinLimit {
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while Self.jobOf(ticket.load(ordering: .sequentiallyConsistent)) == seen {
                        pthread_cond_wait(wake, mutex)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                    spins = 0
                }
                current = Self.jobOf(ticket.load(ordering: .acquiring))
            }
            seen = current
            // A successful claim pins the job: its body stays until the claim finishes.
            work(job: current, thread: index) { chunk, thread in self.body?(chunk, thread) }
        }
    }
}
