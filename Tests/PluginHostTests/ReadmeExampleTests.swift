import Foundation
import PluginHost
import Testing
import TestSupport

/// The complete plugin in Plugins/README.md compiles warning-free from the header alone
/// and passes the conformance check: the documentation cannot drift from the ABI.
@Suite struct ReadmeExampleTests {
    @Test func readmePluginBuildsAndConforms() throws {
        let readme = try String(contentsOfFile: Repository.path("Plugins/README.md"), encoding: .utf8)
        let start = try #require(readme.range(of: "```c\n"))
        let end = try #require(readme.range(of: "\n```", range: start.upperBound..<readme.endIndex))
        let source = String(readme[start.upperBound..<end.lowerBound])
        #expect(source.contains("edge_optimizer_entry"))
        let path = try TestPlugins.build("myopt", source: source)

        let results = PluginHost.checkConformance(path)
        for r in results where !r.passed { Issue.record("\(r)") }
        var settings = ConformanceSettings()
        settings.options = ["clip=0.5"]
        let clipped = PluginHost.checkConformance(path, settings: settings)
        for r in clipped where !r.passed { Issue.record("clip=0.5: \(r)") }
        do {
            _ = try PluginHost.loadOptimizer(path, options: ["clip=-1"], groups: [("x", 3)])
            Issue.record("clip=-1 was accepted")
        } catch {
            #expect(error.description.contains("rejected clip=-1.0 (invalid argument): clip must be > 0, got -1"), "\(error)")
        }
    }
}
