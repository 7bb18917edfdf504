// Distillation: a teacher model's next-token distributions as the training target, so a
// run can pull a model toward another (e.g. a requantized model toward its original)
// instead of toward the training text itself.

import Model
import Quant

public enum Distillation {
    /// Attaches to every example the teacher's `k` most likely next tokens at each scored
    /// position (probabilities renormalized over them). The teacher must share the student's
    /// vocabulary.
    public static func attachTeacher(_ teacher: LlamaModel, to examples: inout [Example], k: Int,
                                     contextLength: Int, weights: WeightSource? = nil) throws(TrainingError) {
        let longest = examples.map(\.tokens.count).max() ?? 1
        let state = RunState(config: teacher.config, capacity: longest, contextLength: contextLength)
        for i in examples.indices {
            let batch = Batch(sequences: [examples[i].tokens])
            do { try teacher.validate(batch, state) } catch { throw .model(error) }
            teacher.forward(batch, state, weights: weights)
            examples[i].soft = teacher.topTokens(batch, state, targets: examples[i].targets, k: k, weights: weights)
        }
    }

    /// Mean teacher entropy over the soft targets: the part of the cross-entropy that no
    /// student can remove (cross-entropy − this = KL divergence to the teacher's top tokens).
    public static func teacherEntropy(_ examples: [Example]) -> Double {
        let all = examples.flatMap { $0.soft ?? [] }.compactMap { $0 }
        return all.isEmpty ? .nan : all.reduce(0.0) { $0 + $1.entropy } / Double(all.count)
    }
}
