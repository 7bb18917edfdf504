// The learning-rate schedule: the factor f(t) the base rate is multiplied by at step t.
//
// A pure function of (t, the schedule's flags): a resumed run gets the same rates as the
// uninterrupted one, whatever step it resumes at. With W warm-up steps, T steps in all
// and a floor r (the min ratio), for the 1-based step t:
//
//   t ≤ W            f = t / W                      (linear warm-up from 0: step W is at the base rate)
//   W < t, constant  f = 1
//   W < t, linear    f = r + (1 − r) · (1 − p)      p = (t − W) / (T − W), so step T is at r
//   W < t, cosine    f = r + (1 − r) · ½ (1 + cos πp)
//
// The constant schedule without warm-up is f = 1 exactly, and the rate is the base bit for bit.

import Foundation

public struct LearningRateSchedule: Equatable, Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case constant, cosine, linear
    }

    public var kind: Kind
    /// Steps of linear warm-up from 0 to the base rate (W).
    public var warmup: Int
    /// The factor the decaying schedules end at on the last step (r, in [0, 1]).
    public var minRatio: Double
    /// The run's last step (T); the decay spans steps W + 1 … T.
    public var totalSteps: Int

    public init(kind: Kind = .constant, warmup: Int = 0, minRatio: Double = 0, totalSteps: Int) {
        self.kind = kind
        self.warmup = warmup
        self.minRatio = minRatio
        self.totalSteps = totalSteps
    }

    /// The constant rate: every step at the base.
    public static func constant(totalSteps: Int) -> LearningRateSchedule { LearningRateSchedule(totalSteps: totalSteps) }

    /// Whether every step's factor is exactly 1.
    public var isConstant: Bool { kind == .constant && warmup == 0 }

    /// What is wrong with the schedule, or nil (one line, naming the flag).
    public var problem: String? {
        if warmup < 0 { return "--warmup must be 0 or more steps (got \(warmup))" }
        if warmup > totalSteps { return "--warmup must be at most --steps (\(totalSteps)), got \(warmup)" }
        if !(minRatio >= 0 && minRatio <= 1) { return "--lr-min-ratio must be in [0, 1] (got \(minRatio))" }
        return nil
    }

    /// f(t) for the 1-based step t.
    public func factor(step t: Int) -> Double {
        if t <= warmup { return Double(max(0, t)) / Double(warmup) }
        let span = totalSteps - warmup
        let p = span > 0 ? min(1, Double(t - warmup) / Double(span)) : 1
        switch kind {
        case .constant: return 1
        case .linear: return minRatio + (1 - minRatio) * (1 - p)
        case .cosine: return minRatio + (1 - minRatio) * 0.5 * (1 + cos(Double.pi * p))
        }
    }

    /// The rate at step t for `base`: base · f(t) (base itself when f(t) = 1).
    public func rate(step t: Int, base: Float) -> Float {
        Float(Double(base) * factor(step: t))
    }

    /// What a checkpoint records of it: the flags, and the run's length when the rate depends on it.
    public var identity: String {
        switch kind {
        case .constant: "constant warmup=\(warmup)"
        case .linear, .cosine: "\(kind.rawValue) warmup=\(warmup) min_ratio=\(minRatio) steps=\(totalSteps)"
        }
    }
}
