import Foundation
import TestSupport
import Testing

/// `edge-finetune plugins list|describe|check`, run as a user runs them.
@Suite struct PluginsCommandTests {
    /// The shipped plugins and the versions their sources declare (hizoo 1.1.0 gained `block`).
    static let shipped = ["zo-sgd": "1.0.0", "zo-sgd-sign": "1.0.0", "zo-adam": "1.0.0", "hizoo": "1.1.0",
                          "mfac": "1.0.0", "polargrad": "1.0.0", "lozo": "1.0.0"]

    /// The environment with `EDGE_FINETUNE_PLUGIN_PATH` set to `directory`.
    func environment(pluginPath directory: String) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["EDGE_FINETUNE_PLUGIN_PATH"] = directory
        return env
    }

    @Test func listShowsTheShippedPluginsWithVersions() throws {
        let r = try runCLI(["plugins", "list", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(object["host_abi"] as? String == "1.1")
        let plugins = object["plugins"] as! [[String: Any]]
        for (name, version) in Self.shipped {
            let p = plugins.first { $0["name"] as? String == name }
            #expect(p?["version"] as? String == version, "\(name): \(String(describing: p))")
            #expect(p?["abi"] as? String == "1.1", "\(name) is built against the 1.1 header")
            #expect((p?["path"] as? String)?.hasSuffix("/lib\(name).so") == true)
        }
        let text = try runCLI(["plugins", "list"])
        #expect(text.stdout.contains("host optimizer ABI 1.1"))
        #expect(text.stdout.contains("zo-adam") && text.stdout.contains("1.0.0"))
    }

    /// A directory in $EDGE_FINETUNE_PLUGIN_PATH is searched after the executable's.
    @Test func pluginPathIsSearched() throws {
        let dir = makeTemporaryDirectory("plugin-path")
        try FileManager.default.copyItem(atPath: Products.directory + "/libzo-sgd-sign.so", toPath: dir + "/libmy-sign.so")
        let env = environment(pluginPath: "/nonexistent:" + dir)
        let list = try runCLI(["plugins", "list", "--json"], environment: env)
        let plugins = (try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as! [String: Any])["plugins"] as! [[String: Any]]
        let mine = plugins.first { $0["name"] as? String == "my-sign" }
        #expect(mine?["plugin"] as? String == "zo-sgd-sign", "\(list.stdout)")
        #expect(mine?["path"] as? String == dir + "/libmy-sign.so")
        let check = try runCLI(["plugins", "check", "my-sign"], environment: env)
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        // Without the variable the name is not found, and the error says where it looked.
        let missing = try runCLI(["plugins", "describe", "my-sign"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("optimizer plugin 'my-sign' not found") && missing.stderr.contains("EDGE_FINETUNE_PLUGIN_PATH"))
        #expect(missing.stderr.split(separator: "\n").count == 1, "\(missing.stderr)")
    }

    @Test func describeListsOptions() throws {
        let r = try runCLI(["plugins", "describe", "hizoo"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("hizoo 1.1.0 (optimizer ABI 1.1)"), "\(r.stdout)")
        #expect(r.stdout.contains("needs the unperturbed loss: yes"))
        for line in ["alpha", "min_hessian", "weight_decay"] { #expect(r.stdout.contains(line)) }
        #expect(r.stdout.contains("1e-08"))
        let adam = try runCLI(["plugins", "describe", "zo-adam"])
        #expect(adam.stdout.contains("bias_correction  bool    true"), "\(adam.stdout)")
    }

    @Test(arguments: shipped.keys.sorted()) func checkPassesShippedPlugin(_ name: String) throws {
        let r = try runCLI(["plugins", "check", name])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(!r.stdout.contains("FAIL"))
        #expect(r.stdout.contains("PASS  save -> load -> step equals step, bit for bit"))
        #expect(r.stdout.contains("checks passed"))
    }

    @Test func checkFailsWhatIsNotAPlugin() throws {
        let dir = makeTemporaryDirectory("plugin-check")
        try "#!/bin/sh\necho hi\n".write(toFile: dir + "/libscript.so", atomically: true, encoding: .utf8)
        let r = try runCLI(["plugins", "check", dir + "/libscript.so"])
        #expect(r.status == 1)
        #expect(r.stdout.contains("FAIL  loads and negotiates: plugin \(dir)/libscript.so: not a shared library (no ELF header)"), "\(r.stdout)")
        let bad = try runCLI(["plugins", "check", "zo-sgd", "--opt", "momentum=abc"])
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("FAIL  creates with the given options") && bad.stdout.contains("option momentum is a double, and 'abc' is not"))
    }
}
