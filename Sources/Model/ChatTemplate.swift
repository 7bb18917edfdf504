// Chat formatting from the model's `tokenizer.chat_template`. The template is Jinja;
// rather than interpret Jinja, the known formats are recognised and written out
// directly. ChatML (SmolLM, Qwen, ...) is recognised by its `<|im_start|>` markers,
// including a default system message the template adds when none is given.

import Foundation

public struct ChatTemplate: Sendable {
    public enum Format: String, Sendable {
        case chatML
    }

    public let format: Format
    /// The system message the template inserts when the conversation has none.
    public let defaultSystem: String?

    /// Recognises the template, or throws naming what was found.
    public init(template: String?) throws(ModelError) {
        guard let template else {
            throw .unsupportedFeature("the model has no tokenizer.chat_template; write the prompt's chat markup yourself and omit --chat")
        }
        guard template.contains("<|im_start|>") else {
            throw .unsupportedFeature("chat template not recognised (only ChatML is supported); write the prompt's chat markup yourself and omit --chat")
        }
        format = .chatML
        // A literal '<|im_start|>system\n…<|im_end|>' in the template is its default system message.
        let marker = "<|im_start|>system\n"
        if let start = template.range(of: marker), let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) {
            defaultSystem = String(template[start.upperBound..<end.lowerBound])
        } else {
            defaultSystem = nil
        }
    }

    /// The text of a one-turn conversation ending where the assistant's reply begins.
    public func prompt(user: String, system: String? = nil) -> String {
        var text = ""
        if let system = system ?? defaultSystem {
            text += "<|im_start|>system\n\(system)<|im_end|>\n"
        }
        text += "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
        return text
    }
}
