// New tokens for textual inversion are checked against the vocabulary in its own encoding.

import Model
import TestSupport
import Testing
import ZerothOrder

@Suite struct NewTokenTests {
    @Test("an existing token written as text is refused, naming its stored form")
    func existingTokenAsText() throws {
        let model = try tinyModel()
        let the = try #require(model.tokenizer.existingToken(renderingAs: " the"))
        do {
            _ = try NewTokenRows(model: model, tokens: [" the"], initToken: " the")
            Issue.record("\" the\" is the existing token \(the) and must be refused")
        } catch {
            #expect(error.description.contains("already exists") && error.description.contains("id \(the)"),
                    "\(error)")
            #expect(error.description.contains("Ġthe"), "\(error)")
        }
    }

    @Test("an empty new token is refused as empty")
    func emptyToken() throws {
        let model = try tinyModel()
        do {
            _ = try NewTokenRows(model: model, tokens: [""], initToken: " the")
            Issue.record("an empty token must be refused")
        } catch {
            #expect(error.description.contains("--new-token \"\" is empty"), "\(error)")
        }
    }

    @Test("a new token that is not in the vocabulary is accepted")
    func newToken() throws {
        let model = try tinyModel()
        let rows = try NewTokenRows(model: model, tokens: [" <x>"], initToken: " the")
        #expect(rows.tokenizer.id(of: " <x>") == Int32(model.config.vocabSize))
    }
}
