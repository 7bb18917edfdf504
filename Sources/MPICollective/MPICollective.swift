// The ranks of `mpirun -np N edge-finetune train …`, through Open MPI loaded at run time.
//
// Open MPI's libmpi.so.40 is opened with dlopen when the process was started by mpirun,
// so building needs no MPI and a build without it runs single-process as before. Its
// handles are addresses of exported objects: MPI_COMM_WORLD is &ompi_mpi_comm_world and
// MPI_BYTE is &ompi_mpi_byte (Open MPI's mpi.h defines them so); requests are pointers.
// MPICH and its derivatives name these differently (integer handles) and are not loaded.
//
// The allgather is point to point (a send to and a receive from every other rank, all
// non-blocking) and polled with a deadline, so a rank that stops answering ends the run
// with one line naming it and the step instead of hanging every other rank.

import ZerothOrder
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum MPIError: Error, CustomStringConvertible {
    /// Started by mpirun, but Open MPI's library could not be loaded.
    case unavailable(ranks: Int, reason: String)
    case call(String, Int32)

    public var description: String {
        switch self {
        case .unavailable(let ranks, let reason):
            return "started by mpirun as one of \(ranks) ranks, but Open MPI's library (libmpi.so.40) could not be loaded (\(reason)); install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev; scripts/setup does), or run without mpirun for one process"
        case .call(let name, let code):
            return "\(name) failed with MPI error \(code)"
        }
    }
}

public final class MPICollective: Collective {
    public let rank: Int
    public let size: Int
    public private(set) var bytesSent = 0
    public private(set) var secondsExchanging = 0.0
    /// How long a rank waits for the others at one exchange before ending the run.
    public var timeoutSeconds: Double = 600

    private typealias InitThread = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<Int32>) -> Int32
    private typealias CommQuery = @convention(c) (UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    private typealias Transfer = @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutableRawPointer, Int32, Int32, UnsafeMutableRawPointer,
                                                 UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> Int32
    private typealias Test = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
    private typealias Abort = @convention(c) (UnsafeMutableRawPointer, Int32) -> Int32
    private typealias Finalize = @convention(c) () -> Int32

    private let world: UnsafeMutableRawPointer
    private let byte: UnsafeMutableRawPointer
    private let isend: Transfer
    private let irecv: Transfer
    private let test: Test
    private let abortCall: Abort
    private let finalizeCall: Finalize
    private var finalized = false

    /// The number of ranks mpirun started, from its environment (Open MPI, or MPICH's and
    /// PMIx's variables, so that an MPICH mpirun is recognised and refused by name); nil
    /// when this process was not started by mpirun.
    public static var launchedRanks: Int? {
        for key in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"] {
            if let v = getenv(key), let n = Int(String(cString: v)) { return n }
        }
        return nil
    }

    /// Joins the ranks when started by mpirun: nil when not, the collective when Open MPI
    /// loads, and an error saying how to get it when it does not. EDGE_FINETUNE_LIBMPI names
    /// the library to load instead of libmpi.so.40 (an Open MPI installed elsewhere).
    public static func join() throws(MPIError) -> MPICollective? {
        guard let ranks = launchedRanks else { return nil }
        guard getenv("OMPI_COMM_WORLD_SIZE") != nil else {
            throw .unavailable(ranks: ranks, reason: "this mpirun is not Open MPI's; only Open MPI is supported")
        }
        // RTLD_GLOBAL: Open MPI's own components, which it dlopens, resolve symbols of libmpi.
        var handle: UnsafeMutableRawPointer?
        var reasons = [String]()
        let names = getenv("EDGE_FINETUNE_LIBMPI").map { [String(cString: $0)] } ?? ["libmpi.so.40", "libmpi.so"]
        for name in names {
            handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
            if handle != nil { break }
            reasons.append(dlerror().map { String(cString: $0) } ?? name)
        }
        guard let handle else { throw .unavailable(ranks: ranks, reason: reasons.joined(separator: "; ")) }
        func symbol(_ name: String) throws(MPIError) -> UnsafeMutableRawPointer {
            guard let p = dlsym(handle, name) else { throw .unavailable(ranks: ranks, reason: "it lacks \(name)") }
            return p
        }
        let initThread = unsafeBitCast(try symbol("MPI_Init_thread"), to: InitThread.self)
        let commRank = unsafeBitCast(try symbol("MPI_Comm_rank"), to: CommQuery.self)
        let commSize = unsafeBitCast(try symbol("MPI_Comm_size"), to: CommQuery.self)
        let world = try symbol("ompi_mpi_comm_world")
        // MPI_THREAD_FUNNELED: only the main thread calls MPI (the kernels' threads never do).
        var provided: Int32 = 0
        var code = initThread(nil, nil, 1, &provided)
        guard code == 0 else { throw .call("MPI_Init_thread", code) }
        var r: Int32 = 0, n: Int32 = 0
        code = commRank(world, &r)
        guard code == 0 else { throw .call("MPI_Comm_rank", code) }
        code = commSize(world, &n)
        guard code == 0 else { throw .call("MPI_Comm_size", code) }
        return MPICollective(rank: Int(r), size: Int(n), world: world, byte: try symbol("ompi_mpi_byte"),
                             isend: unsafeBitCast(try symbol("MPI_Isend"), to: Transfer.self),
                             irecv: unsafeBitCast(try symbol("MPI_Irecv"), to: Transfer.self),
                             test: unsafeBitCast(try symbol("MPI_Test"), to: Test.self),
                             abort: unsafeBitCast(try symbol("MPI_Abort"), to: Abort.self),
                             finalize: unsafeBitCast(try symbol("MPI_Finalize"), to: Finalize.self))
    }

    private init(rank: Int, size: Int, world: UnsafeMutableRawPointer, byte: UnsafeMutableRawPointer, isend: Transfer, irecv: Transfer,
                 test: Test, abort: Abort, finalize: Finalize) {
        self.rank = rank
        self.size = size
        self.world = world
        self.byte = byte
        self.isend = isend
        self.irecv = irecv
        self.test = test
        self.abortCall = abort
        self.finalizeCall = finalize
    }

    public func allgather(_ bytes: [UInt8], step: Int) throws(TrainingError) -> [[UInt8]] {
        let n = bytes.count
        guard size > 1 else { return [bytes] }
        let started = now()
        defer { secondsExchanging += now() - started }
        // Buffers and requests live until every transfer has completed.
        let send = UnsafeMutableRawPointer.allocate(byteCount: max(1, n), alignment: 8)
        let receive = UnsafeMutableRawPointer.allocate(byteCount: max(1, n * size), alignment: 8)
        let requests = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 2 * size)
        requests.initialize(repeating: nil, count: 2 * size)
        defer { send.deallocate(); receive.deallocate(); requests.deallocate() }
        bytes.withUnsafeBytes { send.copyMemory(from: $0.baseAddress!, byteCount: n) }
        let tag: Int32 = 17
        for peer in 0..<size where peer != rank {
            let code = irecv(receive + peer * n, Int32(n), byte, Int32(peer), tag, world, requests + peer)
            guard code == 0 else { throw .rankLost("MPI_Irecv failed with MPI error \(code) at step \(step)") }
        }
        for peer in 0..<size where peer != rank {
            let code = isend(send, Int32(n), byte, Int32(peer), tag, world, requests + size + peer)
            guard code == 0 else { throw .rankLost("MPI_Isend failed with MPI error \(code) at step \(step)") }
            bytesSent += n
        }
        // Poll every transfer until all are done or the deadline passes.
        var pending = Set((0..<size).filter { $0 != rank }.flatMap { [$0, size + $0] })
        let deadline = now() + timeoutSeconds
        var spins = 0
        while !pending.isEmpty {
            for i in pending {
                var done: Int32 = 0
                let code = test(requests + i, &done, nil)
                guard code == 0 else { throw .rankLost("MPI_Test failed with MPI error \(code) at step \(step)") }
                if done != 0 { pending.remove(i) }
            }
            if pending.isEmpty { break }
            spins += 1
            if spins > 1000 {
                if now() > deadline {
                    let silent = pending.filter { $0 < size }.sorted()
                    let who = silent.isEmpty ? "ranks \(Set(pending.map { $0 - size }).sorted())" : "rank(s) \(silent.map(String.init).joined(separator: ", "))"
                    throw .rankLost("no answer from \(who) within \(Int(timeoutSeconds)) s \(step < 0 ? "in a held-out evaluation" : "at step \(step)"); ending the run")
                }
                usleep(50)
            }
        }
        var out = [[UInt8]]()
        for r in 0..<size {
            out.append(r == rank ? bytes : Array(UnsafeRawBufferPointer(start: receive + r * n, count: n)))
        }
        return out
    }

    /// Ends every rank of the run now (mpirun then stops them all).
    public func abort(code: Int32) -> Never {
        _ = abortCall(world, code)
        exit(code)
    }

    /// Leaves MPI at the end of a run (every rank must call it).
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        _ = finalizeCall()
    }

    private func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
}
