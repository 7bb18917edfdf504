// Sparse perturbations: each direction perturbs a random subset of the trained tensors
// (`--perturb-fraction f`), the others get z = 0 for that direction.
//
// The subset is a function of the direction's seed alone, so both points of the
// direction, the update and a resumed run regenerate it and nothing is stored:
//
//   units   the trained tensors, in group order (QZO: a matrix's scales and offsets are
//           one unit; a new token's row is one unit); T of them
//   k       max(1, round(f · T)) units per direction: every direction perturbs something
//   subset  the first k of a Fisher–Yates shuffle of 0..<T drawn from
//           SeededGenerator(seed ^ 0x5BA25E0000000001), swapping i with next() % (i + 1) for
//           i = T−1 … 1 (as the data order does)
//
// Every unit is in the subset with the same probability π = k / T (up to the modulo's
// bias, below 2⁻⁵⁶ for any T here). Units are chosen by count, not by values: tensors
// differ in size (SmolLM2's MLP matrices have 8× the scales of its k and v), and choosing
// "until f of the values are covered" would include large tensors more often than small
// ones, so the unbiasing factor would differ per tensor and have no closed form.
//
// Scaling. With z_S the direction restricted to the subset, E[d · z_S] = E[z_S z_Sᵀ] g = π g
// per coordinate: the plain estimate is the dense one shrunk by π. The update divides it by
// π (`estimateScale` = T / k), so its expectation is the dense estimate's and --lr keeps its
// meaning. The undivided estimate at rate η is this one at rate π · η exactly (ZO-SGD, its
// momentum and the directional-derivative clip are all linear in the estimate, and the clip
// bounds d before the scale): measure it with --lr scaled by k / T.

import Model

public struct PerturbationSubset: Sendable, Equatable {
    /// The fraction f of the units each direction perturbs, in (0, 1].
    public let fraction: Double
    /// Per group, the unit it belongs to (0..<unitCount).
    public let unitOfGroup: [Int]
    public let unitCount: Int

    /// Units per direction: max(1, round(f · T)), at most T.
    public var chosenCount: Int { max(1, min(unitCount, Int((fraction * Double(unitCount)).rounded()))) }
    /// 1 / π = T / k: what the update multiplies a perturbed group's estimate by.
    public var estimateScale: Float { Float(unitCount) / Float(chosenCount) }

    /// `unitOfGroup` maps every group to a unit in 0..<T, each unit used by at least one group.
    public init(fraction: Double, unitOfGroup: [Int]) throws(TrainingError) {
        guard let problem = Self.problem(fraction) else {
            let units = Set(unitOfGroup)
            precondition(units == Set(0..<units.count), "units must be numbered 0..<T")
            self.fraction = fraction
            self.unitOfGroup = unitOfGroup
            self.unitCount = units.count
            return
        }
        throw .invalidSetting(problem)
    }

    /// Why `fraction` is not a valid --perturb-fraction, or nil.
    public static func problem(_ fraction: Double) -> String? {
        fraction > 0 && fraction <= 1 ? nil : "--perturb-fraction must be in (0, 1] (got \(fraction))"
    }

    /// The units of the direction with `seed`, ascending.
    public func units(seed: UInt64) -> [Int] {
        var order = Array(0..<unitCount)
        var rng = SeededGenerator(seed: seed ^ 0x5BA2_5E00_0000_0001)
        for i in stride(from: unitCount - 1, to: 0, by: -1) {
            order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return order.prefix(chosenCount).sorted()
    }

    /// Per group, whether the direction with `seed` perturbs it.
    public func perturbedGroups(seed: UInt64) -> [Bool] {
        var chosen = [Bool](repeating: false, count: unitCount)
        for u in units(seed: seed) { chosen[u] = true }
        return unitOfGroup.map { chosen[$0] }
    }
}
