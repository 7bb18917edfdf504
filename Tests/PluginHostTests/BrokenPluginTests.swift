import Foundation
import PluginHost
import Testing
import TestSupport
import ZerothOrder

/// Deliberately broken plugins, built at test time: each is refused with one line that
/// names the plugin and what is wrong, and a bad step leaves the parameters as they were.
@Suite struct BrokenPluginTests {
    static let groups: [(name: String, count: Int)] = [("embedding", 10), ("scales", 6)]

    /// The error of loading (and creating) `path`, or nil when it loads.
    func loadError(_ path: String) -> PluginError? {
        do {
            _ = try PluginHost.loadOptimizer(path, groups: Self.groups)
            return nil
        } catch {
            return error
        }
    }

    func expectOneLine(_ error: PluginError?, naming path: String, saying phrases: [String],
                       sourceLocation: SourceLocation = #_sourceLocation) {
        guard let error else {
            Issue.record("loaded without an error", sourceLocation: sourceLocation)
            return
        }
        let text = error.description
        #expect(!text.contains("\n"), "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains(path), "\(text)", sourceLocation: sourceLocation)
        for phrase in phrases { #expect(text.contains(phrase), "\(text)", sourceLocation: sourceLocation) }
    }

    @Test func missingEntrySymbol() throws {
        let path = try TestPlugins.build("no-entry", defines: ["NO_ENTRY"])
        expectOneLine(loadError(path), naming: path, saying: ["no exported symbol edge_optimizer_entry"])
    }

    @Test func wrongMajorVersionNamesBothVersions() throws {
        let path = try TestPlugins.build("wrong-major", defines: ["WRONG_MAJOR"])
        let error = loadError(path)
        expectOneLine(error, naming: path, saying: ["speaks optimizer ABI 2.3", "this host speaks ABI 1.1", "the probe speaks only ABI 2"])
        guard case .incompatibleVersion(_, let host, let plugin, _)? = error else {
            Issue.record("expected incompatibleVersion, got \(String(describing: error))")
            return
        }
        #expect(host == ABIVersion(major: 1, minor: 1))
        #expect(plugin == ABIVersion(major: 2, minor: 3))
    }

    @Test func structSmallerThanVersionOne() throws {
        let path = try TestPlugins.build("small-struct", defines: ["SMALL_STRUCT"])
        expectOneLine(loadError(path), naming: path, saying: ["edge_opt_plugin has struct_size 16", "the 120 bytes of its version 1"])
    }

    @Test func nullRequiredFunction() throws {
        let path = try TestPlugins.build("null-step", defines: ["NULL_STEP"])
        expectOneLine(loadError(path), naming: path, saying: ["required function step is NULL"])
    }

    @Test func createReturningAnErrorPassesItsMessage() throws {
        let path = try TestPlugins.build("create-fails", defines: ["CREATE_FAILS"])
        let error: PluginError?
        do {
            _ = try PluginHost.loadOptimizer(path, options: ["count=42"], groups: Self.groups)
            error = nil
        } catch let e {
            error = e
        }
        expectOneLine(error, naming: path, saying: ["plugin probe (", "create failed (invalid argument)",
                                                     "the probe refuses to create (count 42)"])
    }

    @Test func notASharedLibrary() throws {
        let dir = makeTemporaryDirectory("plugins")
        let text = dir + "/libjunk.so"
        try "this is not a library\n".write(toFile: text, atomically: true, encoding: .utf8)
        expectOneLine(loadError(text), naming: text, saying: ["not a shared library (no ELF header)"])
        // An object file is ELF, but not a shared object either.
        let source = dir + "/obj.c"
        try "int f(void);\nint f(void) { return 1; }\n".write(toFile: source, atomically: true, encoding: .utf8)
        #expect(try runProcess("/usr/bin/env", ["cc", "-c", source, "-o", dir + "/libobj.so"]).status == 0)
        expectOneLine(loadError(dir + "/libobj.so"), naming: dir + "/libobj.so", saying: ["not a shared library", "relocatable"])
    }

    @Test func missingFileAndUnknownName() {
        expectOneLine(loadError("/nonexistent/libnothing.so"), naming: "/nonexistent/libnothing.so", saying: ["no such file"])
        let error = loadError("surely-no-such-plugin")
        #expect(error?.description.contains("optimizer plugin 'surely-no-such-plugin' not found") == true)
        #expect(error?.description.contains(Products.directory + "/libsurely-no-such-plugin.so") == true, "\(String(describing: error))")
    }

    /// A step that writes NaN: detected, the parameters restored, and further steps refused
    /// until a state is loaded (the plugin's own state may be poisoned too).
    @Test func stepWritingNaNIsUndone() throws {
        let path = try TestPlugins.build("nan-step", defines: ["STEP_WRITES_NAN"])
        let optimizer = try PluginHost.loadOptimizer(path, groups: Self.groups)
        var embedding = (0..<10).map { Float($0) * 0.25 - 1 }
        var scales = (0..<6).map { Float($0) * 0.5 + 0.125 }
        let before = [embedding, scales]
        var values: [[Float]] { [embedding, scales] }
        let context = StepContext(step: 7, learningRate: 0.1, epsilon: 1e-3,
                                  directions: [Direction(seed: 1, derivative: 0.5, lossPlus: 1, lossMinus: 0.9)])
        func step() throws(OptimizerError) {
            try embedding.withUnsafeMutableBufferPointer { a throws(OptimizerError) in
                try scales.withUnsafeMutableBufferPointer { b throws(OptimizerError) in
                    try optimizer.step(context, [ParameterGroup(name: "embedding", values: a.baseAddress!, count: a.count),
                                                 ParameterGroup(name: "scales", values: b.baseAddress!, count: b.count)])
                }
            }
        }
        do {
            try step()
            Issue.record("the NaN step was not detected")
        } catch {
            let text = error.description
            #expect(!text.contains("\n"))
            #expect(text.contains(path) && text.contains("probe"), "\(text)")
            #expect(text.contains("step 7 wrote nan into group 'scales' at index 3"), "\(text)")
            #expect(text.contains("parameters restored"), "\(text)")
        }
        #expect(values.map { $0.map(\.bitPattern) } == before.map { $0.map(\.bitPattern) })

        // Refused until a state is loaded.
        do {
            try step()
            Issue.record("a step after a NaN step was accepted")
        } catch {
            #expect(error.description.contains("load a saved state"), "\(error)")
        }
        #expect(values.map { $0.map(\.bitPattern) } == before.map { $0.map(\.bitPattern) })
        let state = try optimizer.saveState()
        try optimizer.loadState(state)
        #expect(throws: OptimizerError.self) { try step() }  // the plugin still writes NaN
        #expect(values.map { $0.map(\.bitPattern) } == before.map { $0.map(\.bitPattern) })
    }

    /// The adapter refuses non-finite inputs before the plugin sees them.
    @Test func nonFiniteInputsNeverReachThePlugin() throws {
        let optimizer = try PluginHost.loadOptimizer(try TestPlugins.build("probe-inputs"), groups: [("x", 4)])
        var x: [Float] = [1, 2, 3, 4]
        for bad in [Float.nan, .infinity, -.infinity] {
            let c = StepContext(step: 1, learningRate: 0.1, epsilon: 1e-3,
                                directions: [Direction(seed: 1, derivative: bad, lossPlus: 1, lossMinus: 1)])
            #expect(throws: OptimizerError.self) {
                try x.withUnsafeMutableBufferPointer { p throws(OptimizerError) in
                    try optimizer.step(c, [ParameterGroup(name: "x", values: p.baseAddress!, count: 4)])
                }
            }
        }
        #expect(x == [1, 2, 3, 4])
        // Wrong group sizes are refused too.
        let c = StepContext(step: 1, learningRate: 0.1, epsilon: 1e-3, directions: [])
        #expect(throws: OptimizerError.self) {
            try x.withUnsafeMutableBufferPointer { p throws(OptimizerError) in
                try optimizer.step(c, [ParameterGroup(name: "x", values: p.baseAddress!, count: 3)])
            }
        }
    }
}
