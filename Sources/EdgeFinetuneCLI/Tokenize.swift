// `edge-finetune tokenize`: token ids (and pieces) of a text.

import ArgumentParser
import Model

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids (and pieces) of a text.")

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "The text to tokenize.")
    var text: String

    @Flag(name: .long, inversion: .prefixedNo, help: "Recognise special tokens such as <|im_start|> in the text.")
    var special = true

    @Flag(name: .long, help: "Print JSON: {\"ids\": [...], \"pieces\": [...]}.")
    var json = false

    func run() throws {
        let m = try LlamaModel(path: model.model)
        let ids = m.tokenizer.encode(text, addSpecial: true, parseSpecial: special)
        let pieces = ids.map { m.tokenizer.decode([$0], renderSpecial: true) }
        if json {
            print(jsonText(["ids": ids.map { Int($0) }, "pieces": pieces]))
        } else {
            print(ids.map(String.init).joined(separator: " "))
            print(table(zip(ids, pieces).map { [String($0), "\($1.debugDescription)"] }))
            print("\(ids.count) tokens")
        }
    }
}
