import Foundation
import PluginHost
import Testing
import TestSupport
import ZerothOrder

/// Options parsed on the host and set through libffi with their declared C types; the
/// probe plugin's state is the options it was created with, so it shows what arrived.
@Suite struct OptionTests {
    /// The probe's probe_options struct: flag (u8, 7 pad), count (i64), rate (f64), label (48 chars).
    struct Received: Equatable {
        var flag: Bool
        var count: Int64
        var rate: Double
        var label: String
    }

    static let probe: String = {
        // One build for the suite (each test loads it; dlopen shares the mapping).
        try! TestPlugins.build("probe-options")
    }()

    func received(_ options: [String]) throws -> Received {
        let optimizer = try PluginHost.loadOptimizer(Self.probe, options: options, groups: [("x", 3)])
        let state = try optimizer.saveState()
        #expect(state.count == 72)
        return state.withUnsafeBytes { raw in
            let labelBytes = raw[24..<72].prefix { $0 != 0 }
            return Received(flag: raw[0] != 0, count: raw.loadUnaligned(fromByteOffset: 8, as: Int64.self),
                            rate: raw.loadUnaligned(fromByteOffset: 16, as: Double.self),
                            label: String(decoding: labelBytes, as: UTF8.self))
        }
    }

    @Test func defaultsAreDeclaredAndApplied() throws {
        let d = try PluginHost.describe(Self.probe)
        #expect(d.options.map(\.name) == ["flag", "count", "rate", "label"])
        #expect(d.options.map(\.type) == [.bool, .int64, .double, .string])
        #expect(d.options.map(\.defaultValue) == [.bool(false), .int64(3), .double(0.5), .string("none")])
        #expect(try received([]) == Received(flag: false, count: 3, rate: 0.5, label: "none"))
    }

    @Test func eachTypeArrivesWithItsCType() throws {
        let r = try received(["flag=yes", "count=-9000000000123", "rate=1e-300", "label=hello world=x"])
        #expect(r == Received(flag: true, count: -9_000_000_000_123, rate: 1e-300, label: "hello world=x"))
        #expect(try received(["flag=true", "flag=off"]).flag == false)  // in order; the last wins
        #expect(try received(["count=9223372036854775807"]).count == .max)
        #expect(try received(["rate=-0x1p-3"]).rate == -0.125)
        #expect(try received(["label="]).label == "")
    }

    @Test(arguments: [
        ("count=1.5", "option count is an int64, and '1.5' is not; expected an integer"),
        ("count=99999999999999999999", "option count is an int64"),
        ("flag=maybe", "option flag is a bool, and 'maybe' is not; expected true or false"),
        ("rate=abc", "option rate is a double, and 'abc' is not; expected a number"),
        ("rate=nan", "option rate is a double"),
        ("nope=1", "has no option 'nope'; it has flag, count, rate, label"),
        ("rate", "option 'rate' is not of the form name=value"),
        ("count=13", "rejected count=13 (invalid argument): count 13 is unlucky"),
    ])
    func badOptionsAreRefusedClearly(_ option: String, _ phrase: String) {
        do {
            _ = try received([option])
            Issue.record("\(option) was accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains(phrase), "\(text)")
            #expect(text.contains(Self.probe) && !text.contains("\n"), "\(text)")
        }
    }

    @Test func shippedPluginRejectsWrongType() {
        #expect(throws: PluginError.badOptionValue(plugin: "zo-sgd", path: TestPlugins.shipped("zo-sgd"), option: "momentum",
                                                   type: .double, value: "abc")) {
            _ = try PluginHost.loadOptimizer(TestPlugins.shipped("zo-sgd"), options: ["momentum=abc"], groups: [("x", 3)])
        }
        do {
            _ = try PluginHost.loadOptimizer("zo-sgd", options: ["momentum=abc"], groups: [("x", 3)])
        } catch {
            #expect(error.description.contains("plugin zo-sgd (") && error.description.contains("option momentum is a double, and 'abc' is not"))
        }
        do {
            _ = try PluginHost.loadOptimizer("zo-adam", options: ["beta3=0.5"], groups: [("x", 3)])
        } catch {
            #expect(error.description.contains("has no option 'beta3'; it has beta1, beta2, eps, weight_decay, bias_correction"))
        }
    }

    /// mem_alloc counts against the instance's budget; a create that cannot get its memory fails cleanly.
    @Test func memoryIsCountedAndBudgeted() throws {
        let optimizer = try PluginHost.loadOptimizer(Self.probe, groups: [("x", 3)])
        #expect(optimizer.allocatedBytes > 0)
        #expect(PluginHost.allocatedBytes >= optimizer.allocatedBytes)
        do {
            _ = try PluginHost.loadOptimizer(Self.probe, groups: [("x", 3)], memoryBudget: 8)
            Issue.record("created within an 8-byte budget")
        } catch {
            // The config and the instance count against the budget: whichever allocates first fails.
            #expect(error.description.contains("out of memory"), "\(error)")
        }
        // ZO-Adam's moments: two floats a value, in host memory.
        let adam = try PluginHost.loadOptimizer(TestPlugins.shipped("zo-adam"), groups: [("a", 1000), ("b", 24)])
        #expect(adam.allocatedBytes >= 8 * 1024)
    }

    /// Plugin log lines reach the host's handler, named after the plugin.
    @Test func logLinesReachTheHandler() throws {
        final class Lines: @unchecked Sendable {
            let lock = NSLock()
            var lines: [String] = []
        }
        let lines = Lines()
        PluginHost.logHandler = { plugin, level, message in
            guard plugin == "probe" else { return }
            lines.lock.lock()
            lines.lines.append("\(level) \(message)")
            lines.lock.unlock()
        }
        defer { PluginHost.logHandler = nil }
        _ = try PluginHost.loadOptimizer(Self.probe, options: ["label=logged", "count=77"], groups: [("x", 3)])
        lines.lock.lock()
        defer { lines.lock.unlock() }
        #expect(lines.lines.contains("info probe created: flag=0 count=77 rate=0.5 label=logged"), "\(lines.lines)")
    }
}
