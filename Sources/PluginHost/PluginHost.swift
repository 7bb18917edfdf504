// Finding and loading optimizer plugins: what `--optimizer NAME|PATH` and
// `edge-finetune plugins` call.
//
// NAME (no '/') is looked up as lib<NAME>.so, then <NAME>.so, in the directory of the
// running executable, then in each directory of $EDGE_FINETUNE_PLUGIN_PATH (':'-separated),
// first match wins. A PATH (anything with a '/') is loaded as it is.

import COptimizerABI
import Foundation
import ZerothOrder

public enum PluginHost {
    /// The optimizer ABI this host speaks.
    public static let abiVersion = ABIVersion(major: UInt32(EDGE_OPT_ABI_MAJOR), minor: UInt32(EDGE_OPT_ABI_MINOR))

    /// The environment variable with extra plugin directories.
    public static let pathVariable = "EDGE_FINETUNE_PLUGIN_PATH"

    /// Where names are looked up, in order: beside the executable, then $EDGE_FINETUNE_PLUGIN_PATH.
    public static var searchDirectories: [String] {
        var directories = [executableDirectory]
        if let extra = ProcessInfo.processInfo.environment[pathVariable] {
            directories += extra.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        return directories
    }

    /// The directory of the running executable (/proc/self/exe on Linux).
    public static let executableDirectory: String = {
        #if os(Linux)
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return (path as NSString).deletingLastPathComponent
        }
        #endif
        return URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
    }()

    /// The file a name or path refers to.
    public static func resolve(_ nameOrPath: String) throws(PluginError) -> String {
        if nameOrPath.contains("/") { return nameOrPath }
        var tried: [String] = []
        for directory in searchDirectories {
            for file in ["lib\(nameOrPath).so", "\(nameOrPath).so"] {
                let candidate = (directory as NSString).appendingPathComponent(file)
                if FileManager.default.fileExists(atPath: candidate) { return candidate }
                tried.append(candidate)
            }
        }
        throw .notFound(name: nameOrPath, searched: tried)
    }

    /// Loads, negotiates with and validates the plugin NAME or PATH.
    public static func load(_ nameOrPath: String) throws(PluginError) -> LoadedPlugin {
        try LoadedPlugin(path: resolve(nameOrPath))
    }

    /// The call `train --optimizer NAME|PATH --opt name=value ...` makes: an optimizer for
    /// `groups` (name and value count of each trainable group, in the order the engine
    /// numbers them), with `options` applied over the plugin's defaults. `memoryBudget`
    /// caps what the instance may allocate through the host (nil: no cap).
    public static func loadOptimizer(_ nameOrPath: String, options: [String] = [], groups: [(name: String, count: Int)],
                                     memoryBudget: Int? = nil) throws(PluginError) -> PluginOptimizer {
        try load(nameOrPath).makeOptimizer(options: options, groups: groups, memoryBudget: memoryBudget)
    }

    /// The same for groups with their shapes and tensors (ABI 1.1).
    public static func loadOptimizer(_ nameOrPath: String, options: [String] = [], groups: [GroupLayout],
                                     memoryBudget: Int? = nil) throws(PluginError) -> PluginOptimizer {
        try load(nameOrPath).makeOptimizer(options: options, groups: groups, memoryBudget: memoryBudget)
    }

    /// What `plugins describe NAME` shows.
    public static func describe(_ nameOrPath: String) throws(PluginError) -> PluginDescription {
        try load(nameOrPath).description
    }

    /// One file found in a search directory.
    public struct Discovery {
        /// The name to pass to --optimizer (the file name without lib and .so).
        public var name: String
        public var path: String
        /// The plugin, or why it could not be loaded.
        public var result: Result<PluginDescription, PluginError>
        /// True when an earlier directory has a file of the same name.
        public var shadowed: Bool
    }

    /// Every `*.so` in the search directories that exports edge_optimizer_entry, in
    /// search order, loaded and checked. Shared libraries without the entry symbol are
    /// not plugins and are left out. Each candidate is dlopened (and stays loaded unless
    /// it is an accepted plugin that allows unloading).
    public static func discover() -> [Discovery] {
        var found: [Discovery] = []
        var seen = Set<String>()
        for directory in searchDirectories {
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for file in files.sorted() where file.hasSuffix(".so") {
                let path = (directory as NSString).appendingPathComponent(file)
                var name = String(file.dropLast(3))
                if name.hasPrefix("lib") { name = String(name.dropFirst(3)) }
                do {
                    let plugin = try LoadedPlugin(path: path)
                    found.append(Discovery(name: name, path: path, result: .success(plugin.description), shadowed: seen.contains(name)))
                } catch .missingEntrySymbol {
                    continue
                } catch {
                    found.append(Discovery(name: name, path: path, result: .failure(error), shadowed: seen.contains(name)))
                }
                seen.insert(name)
            }
        }
        return found
    }

    /// Bytes every plugin config and instance in this process holds through mem_alloc.
    public static var allocatedBytes: Int {
        HostRegistry.lock.lock()
        defer { HostRegistry.lock.unlock() }
        return HostRegistry.totalBytes
    }

    /// Receives every plugin log line (plugin name, level, message). nil (the default)
    /// writes lines at `logThreshold` or above to standard error.
    public static var logHandler: (@Sendable (_ plugin: String, _ level: PluginLogLevel, _ message: String) -> Void)? {
        get {
            HostRegistry.lock.lock()
            defer { HostRegistry.lock.unlock() }
            return HostRegistry.logHandler
        }
        set {
            HostRegistry.lock.lock()
            HostRegistry.logHandler = newValue
            HostRegistry.lock.unlock()
        }
    }

    /// The lowest level the default log handler prints (default: warning).
    public static var logThreshold: PluginLogLevel {
        get {
            HostRegistry.lock.lock()
            defer { HostRegistry.lock.unlock() }
            return HostRegistry.logThreshold
        }
        set {
            HostRegistry.lock.lock()
            HostRegistry.logThreshold = newValue
            HostRegistry.lock.unlock()
        }
    }
}
