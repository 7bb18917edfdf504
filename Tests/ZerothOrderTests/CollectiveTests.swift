import Foundation
import Model
import Testing
import ZerothOrder

/// Ranks as threads of this process, exchanging through shared memory: the collective
/// logic (which rank measures what, how the sums come back, how a failure travels) without
/// MPI. Exchange g of every rank meets the others' exchange g.
final class ThreadRanks: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var board: [Int: [Int: [UInt8]]] = [:]

    init(size: Int) { self.size = size }

    final class Rank: Collective {
        let ranks: ThreadRanks
        let rank: Int
        var size: Int { ranks.size }
        private var generation = 0
        private(set) var bytesSent = 0
        var secondsExchanging: Double { 0 }

        init(_ ranks: ThreadRanks, _ rank: Int) {
            self.ranks = ranks
            self.rank = rank
        }

        func allgather(_ bytes: [UInt8], step: Int) throws(TrainingError) -> [[UInt8]] {
            let g = generation
            generation += 1
            bytesSent += bytes.count * (size - 1)
            ranks.condition.lock()
            defer { ranks.condition.unlock() }
            ranks.board[g, default: [:]][rank] = bytes
            ranks.condition.broadcast()
            while ranks.board[g]!.count < size { ranks.condition.wait() }
            return (0..<size).map { ranks.board[g]![$0]! }
        }
    }

    /// Runs `body` on every rank, each on its own thread, and returns their results in rank order.
    func run<T>(_ body: @escaping @Sendable (Rank) -> T) -> [T] {
        let results = RankResults<T>(size)
        let group = DispatchGroup()
        for r in 0..<size {
            nonisolated(unsafe) let rank = Rank(self, r)
            group.enter()
            Thread.detachNewThread {
                let value = body(rank)
                results.lock.lock()
                results.values[r] = value
                results.lock.unlock()
                group.leave()
            }
        }
        group.wait()
        return results.values.map { $0! }
    }
}

/// What each rank's thread returned.
final class RankResults<T>: @unchecked Sendable {
    let lock = NSLock()
    var values: [T?]
    init(_ n: Int) { values = Array(repeating: nil, count: n) }
}

/// Loss sums whose order of addition shows in the result: doubles of very different sizes.
func unitSums(_ u: Int, width: Int) -> [LossSum] {
    (0..<width).map { p in LossSum(tokens: u + p + 1, totalNLL: pow(10, Double((u * 7 + p * 3) % 17) - 8) * (1 + Double(u) / 3)) }
}

@Suite struct CollectiveTests {
    /// Every rank measures only its units (u mod N == rank) and gets every unit's sums back
    /// in unit order: the totals are the one-process totals bit for bit, on any number of ranks.
    @Test(arguments: [1, 2, 3, 5])
    func everyRankGetsTheOneProcessSums(ranks: Int) throws {
        let units = 7, width = 3
        let expected = combineInOrder((0..<units).map { unitSums($0, width: width) }, width: width)
        // The same bits as adding the sums one by one, by hand, in unit order.
        var byHand = [Double](repeating: 0, count: width)
        for u in 0..<units { for p in 0..<width { byHand[p] += unitSums(u, width: width)[p].totalNLL } }
        #expect(expected.map(\.totalNLL) == byHand)

        let results = ThreadRanks(size: ranks).run { rank -> ([LossSum], [Int]) in
            var measured = [Int]()
            let sums = try! rank.gatherLossSums(units: units, width: width, step: 1) { u throws(TrainingError) in
                measured.append(u)
                return unitSums(u, width: width)
            }
            return (combineInOrder(sums, width: width), measured)
        }
        for (r, result) in results.enumerated() {
            #expect(result.0 == expected, "rank \(r) of \(ranks)")
            #expect(result.1 == Array(stride(from: r, to: units, by: ranks)), "rank \(r) measures its own units only")
        }
    }

    /// A rank whose work fails: every rank throws, with the failing rank's number, the step
    /// and its own message.
    @Test func aFailureOnOneRankReachesEveryRank() {
        let messages = ThreadRanks(size: 3).run { rank -> String in
            do {
                _ = try rank.gatherLossSums(units: 6, width: 2, step: 7) { u throws(TrainingError) in
                    if rank.rank == 1 { throw .invalidSetting("example \(u) does not fit") }
                    return unitSums(u, width: 2)
                }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        for (r, m) in messages.enumerated() {
            #expect(m == "rank 1 failed at step 7: example 1 does not fit", "rank \(r): \(m)")
        }
    }

    /// Ranks that disagree are told what differs and on which rank; ranks that agree start.
    @Test func agreementNamesWhatDiffers() {
        let outcomes = ThreadRanks(size: 3).run { rank -> String in
            do {
                try rank.checkAgreement([("the model file", "m"), ("the training data", rank.rank == 2 ? "other" : "d")])
                return "agreed"
            } catch {
                return "\(error)"
            }
        }
        #expect(outcomes.allSatisfy { $0.hasPrefix("rank 2 and rank 0 differ in the training data") }, "\(outcomes)")
        let agreed = ThreadRanks(size: 2).run { rank -> Bool in (try? rank.checkAgreement([("the flags", "f")])) != nil }
        #expect(agreed == [true, true])
    }

    /// Held-out passes: consecutive whole examples packed greedily, as the evaluators pack them.
    @Test func greedyGroupsPackAsTheEvaluators() throws {
        let lengths = [3, 4, 2, 6, 1, 1, 5]
        let examples = lengths.map { Example(tokens: [Int32](repeating: 1, count: $0), targets: [Int32](repeating: 1, count: $0), line: 1) }
        #expect(greedyGroups(examples, capacity: 7) == [0..<2, 2..<3, 3..<5, 5..<7])
        #expect(greedyGroups(examples, capacity: 100) == [0..<7])
        #expect(greedyGroups([], capacity: 7) == [])
    }
}
