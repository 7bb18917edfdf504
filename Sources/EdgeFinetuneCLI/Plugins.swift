// `edge-finetune plugins list|describe|check`: what optimizer plugins are found, what
// options they take, and whether one conforms to the ABI. The work is in PluginHost.

import ArgumentParser
import PluginHost

struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List, describe and check optimizer plugins (shared libraries for --optimizer).",
        subcommands: [List.self, Describe.self, Check.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the plugins found beside edge-finetune and in $EDGE_FINETUNE_PLUGIN_PATH, with versions.")

        @Flag(name: .long, help: "Print one JSON object instead of text.")
        var json = false

        func run() throws {
            let found = PluginHost.discover()
            if json {
                let plugins: [[String: Any]] = found.map { f in
                    var o: [String: Any] = ["name": f.name, "path": f.path, "shadowed": f.shadowed]
                    switch f.result {
                    case let .success(d):
                        o["plugin"] = d.name
                        o["version"] = d.version
                        o["abi"] = d.abi.description
                        o["summary"] = d.summary
                    case let .failure(e):
                        o["error"] = e.description
                    }
                    return o
                }
                print(jsonText(["host_abi": PluginHost.abiVersion.description, "search": PluginHost.searchDirectories,
                                "plugins": plugins]))
                return
            }
            print("host optimizer ABI \(PluginHost.abiVersion); searched \(PluginHost.searchDirectories.joined(separator: ", "))")
            guard !found.isEmpty else {
                print("no plugins found")
                return
            }
            var rows = [["NAME", "VERSION", "ABI", "PATH", "SUMMARY"]]
            for f in found {
                switch f.result {
                case let .success(d):
                    rows.append([f.name, d.version, d.abi.description, f.path,
                                 (f.shadowed ? "(shadowed) " : "") + d.summary])
                case let .failure(e):
                    rows.append([f.name, "-", "-", f.path, "not loadable: " + e.description])
                }
            }
            print(table(rows))
        }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a plugin's options: name, type, default and help.")

        @Argument(help: "The plugin: a NAME found like --optimizer's, or a PATH to its shared library.")
        var plugin: String

        func run() throws {
            let d = try PluginHost.describe(plugin)
            print("\(d.name) \(d.version) (optimizer ABI \(d.abi)): \(d.summary)")
            print("  path: \(d.path)")
            print("  needs the unperturbed loss: \(d.needsUnperturbedLoss ? "yes (one more forward pass a step)" : "no")")
            print("  perturbation scale: \(d.providesPerturbationScale ? "its own (per value)" : "1")")
            print("  perturbation: \(d.providesPerturbation ? "its own directions (perturbation hook, ABI 1.1)" : "the engine's z")")
            guard !d.options.isEmpty else {
                print("  no options")
                return
            }
            print("  options (--opt name=value):")
            var rows = [["    NAME", "TYPE", "DEFAULT", "HELP"]]
            for o in d.options { rows.append(["    " + o.name, o.type.description, o.defaultValue.description, o.help]) }
            print(table(rows))
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the conformance checks on a plugin: one PASS/FAIL line each; exits 1 when any fails.",
            discussion: """
                Loads and negotiates; creates with the defaults and with each declared option; steps on a small \
                quadratic with a known minimum (the check forms the zeroth-order estimates itself) and checks that the \
                loss falls; save -> load -> step equals step bit for bit; two instances do not share state; NaN and \
                infinite inputs are refused with an error and leave the parameters unchanged.
                """)

        @Argument(help: "The plugin: a PATH to its shared library (./libmyopt.so) or a NAME.")
        var plugin: String

        @Option(name: .customLong("opt"), help: "An option for every instance, name=value (repeatable).")
        var options: [String] = []

        @Option(name: .long, help: "Learning rate of the quadratic descent checks.")
        var learningRate: Float = 0.01

        @Option(name: .long, help: "Steps of each descent check.")
        var steps = 400

        func validate() throws {
            guard learningRate.isFinite, learningRate > 0 else {
                throw ValidationError("--learning-rate must be a positive number (got \(learningRate))")
            }
            guard steps >= 1 && steps <= 1_000_000 else { throw ValidationError("--steps must be in 1...1000000 (got \(steps))") }
        }

        func run() throws {
            var settings = ConformanceSettings()
            settings.learningRate = learningRate
            settings.steps = steps
            settings.options = options
            let results = PluginHost.checkConformance(plugin, settings: settings)
            for r in results { print(r) }
            let failed = results.filter { !$0.passed }.count
            print(failed == 0 ? "all \(results.count) checks passed" : "\(failed) of \(results.count) checks failed")
            if failed > 0 { throw ExitCode(1) }
        }
    }
}
