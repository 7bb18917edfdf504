// Loading one plugin library: dlopen, the entry symbol, the version handshake, and the
// checks on the descriptor it returns, in that order. Nothing else in the plugin is
// called before the versions agree.

import COptimizerABI
import Foundation
import GGUF
import ZerothOrder

/// What `plugins list` and `plugins describe` show of a plugin.
public struct PluginDescription: Equatable, Sendable {
    /// The descriptor's name ("zo-adam").
    public var name: String
    /// The plugin's own version ("1.0.0").
    public var version: String
    /// One line, possibly empty.
    public var summary: String
    /// The file it was loaded from.
    public var path: String
    /// The ABI the plugin speaks.
    public var abi: ABIVersion
    public var needsUnperturbedLoss: Bool
    public var providesPerturbationScale: Bool
    /// Chooses its own perturbations (ABI 1.1's perturbation hook).
    public var providesPerturbation: Bool
    /// Never dlclosed (Swift plugins, and any that ask).
    public var keepLoaded: Bool
    public var options: [OptionDescription]
}

/// A loaded, negotiated and validated plugin library. Configs and optimizers made from
/// it keep it alive; when the last goes the library is dlclosed, unless the plugin set
/// EDGE_OPT_PLUGIN_KEEP_LOADED: a Swift plugin's types are registered with the Swift
/// runtime, which has no way to forget them, so unloading one would leave the runtime
/// pointing into unmapped memory.
public final class LoadedPlugin {
    public let description: PluginDescription
    /// The descriptor as the plugin wrote it, zero-extended to this host's size.
    let descriptor: edge_opt_plugin
    /// The declared options, in declaration order, with their setters.
    let setters: [@convention(c) () -> Void]
    private let handle: UnsafeMutableRawPointer

    public var name: String { description.name }
    public var path: String { description.path }
    /// "zo-adam (/path/libzo-adam.so)", the way errors name the plugin.
    var label: String { "\(name) (\(path))" }

    /// Loads the library at `path` (a file path, not a name; see PluginHost.load).
    public init(path: String) throws(PluginError) {
        guard FileManager.default.fileExists(atPath: path) else { throw .noSuchFile(path: path) }
        if let problem = sharedObjectProblem(path) { throw .notASharedLibrary(path: path, detail: problem) }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw .loadFailed(path: path, detail: dlerror().map { String(cString: $0) } ?? "unknown error")
        }
        // From here on a failure leaves the library loaded: whether it can be unloaded
        // safely is something only an accepted descriptor says.
        guard let symbol = dlsym(handle, EDGE_OPT_ENTRY_SYMBOL) else { throw .missingEntrySymbol(path: path) }
        let entry = unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<edge_opt_negotiation>?) -> Int32).self)

        // The handshake: the host says what it speaks; the plugin answers with its own
        // version and a descriptor, or refuses.
        var negotiation = edge_opt_negotiation()
        negotiation.struct_size = UInt32(MemoryLayout<edge_opt_negotiation>.size)
        negotiation.struct_version = UInt32(EDGE_OPT_NEGOTIATION_VERSION)
        negotiation.host_abi_major = UInt32(EDGE_OPT_ABI_MAJOR)
        negotiation.host_abi_minor = UInt32(EDGE_OPT_ABI_MINOR)
        let status = entry(&negotiation)
        let host = PluginHost.abiVersion
        let theirs = ABIVersion(major: negotiation.plugin_abi_major, minor: negotiation.plugin_abi_minor)
        let refusal = negotiation.message.map { String(cString: $0) }
        guard theirs.major == host.major else {
            throw .incompatibleVersion(path: path, host: host, plugin: theirs, message: refusal)
        }
        guard status == EDGE_OPT_OK else {
            if status == EDGE_OPT_ERROR_UNSUPPORTED_VERSION {
                throw .incompatibleVersion(path: path, host: host, plugin: theirs, message: refusal)
            }
            throw .entryFailed(path: path, status: status, message: refusal)
        }
        guard let raw = negotiation.plugin else {
            throw .invalidDescriptor(path: path, detail: "edge_optimizer_entry returned EDGE_OPT_OK without a descriptor")
        }

        // The descriptor: at least version 1's size; fields past its size read as zero.
        let size = Int(raw.pointee.struct_size)
        guard size >= Int(EDGE_OPT_PLUGIN_SIZE_V1) else {
            throw .structTooSmall(path: path, structure: "edge_opt_plugin", size: size, expected: Int(EDGE_OPT_PLUGIN_SIZE_V1))
        }
        let d: edge_opt_plugin = zeroExtended(raw, size: size)

        guard let namePointer = d.name else { throw .invalidDescriptor(path: path, detail: "the descriptor's name is NULL") }
        let name = String(cString: namePointer)
        guard isIdentifier(name, allowing: "-_") else {
            throw .invalidDescriptor(path: path, detail: "plugin name '\(name)' is not [a-z0-9_-]+")
        }
        guard let versionPointer = d.version else {
            throw .invalidDescriptor(path: path, detail: "the descriptor's version is NULL")
        }
        let required: [(String, Bool)] = [
            ("config_create", d.config_create != nil), ("config_destroy", d.config_destroy != nil),
            ("create", d.create != nil), ("destroy", d.destroy != nil), ("step", d.step != nil),
            ("state_size", d.state_size != nil), ("save_state", d.save_state != nil), ("load_state", d.load_state != nil),
        ]
        if let missing = required.first(where: { !$0.1 }) { throw .missingFunction(path: path, function: missing.0) }

        // The options: each a valid struct with a unique name, a known type and a setter.
        var options: [OptionDescription] = []
        var setters: [@convention(c) () -> Void] = []
        guard d.option_count <= 1024 else {
            throw .invalidDescriptor(path: path, detail: "option_count is \(d.option_count); more than 1024 options is surely garbage")
        }
        if d.option_count > 0 && d.options == nil {
            throw .invalidDescriptor(path: path, detail: "option_count is \(d.option_count) but options is NULL")
        }
        for i in 0..<Int(d.option_count) {
            guard let rawOption = d.options![i] else {
                throw .invalidDescriptor(path: path, detail: "options[\(i)] is NULL")
            }
            let optionSize = Int(rawOption.pointee.struct_size)
            guard optionSize >= Int(EDGE_OPT_OPTION_SIZE_V1) else {
                throw .structTooSmall(path: path, structure: "edge_opt_option \(i)", size: optionSize,
                                      expected: Int(EDGE_OPT_OPTION_SIZE_V1))
            }
            let o: edge_opt_option = zeroExtended(rawOption, size: optionSize)
            guard let optionName = o.name.map({ String(cString: $0) }), isIdentifier(optionName, allowing: "_.-") else {
                throw .invalidDescriptor(path: path, detail: "option \(i) has no valid name ([A-Za-z0-9_.-]+)")
            }
            guard !options.contains(where: { $0.name == optionName }) else {
                throw .invalidDescriptor(path: path, detail: "option \(optionName) is declared twice")
            }
            guard let type = OptionType(rawValue: o.type) else {
                throw .invalidDescriptor(path: path, detail: "option \(optionName) has unknown type \(o.type)")
            }
            guard let setter = o.setter else { throw .missingFunction(path: path, function: "the setter of option \(optionName)") }
            if type == .string && o.default_string == nil {
                throw .invalidDescriptor(path: path, detail: "string option \(optionName) has a NULL default_string")
            }
            options.append(OptionDescription(name: optionName, type: type, defaultValue: OptionValue(defaultOf: o, type: type),
                                             help: o.help.map { String(cString: $0) } ?? ""))
            setters.append(setter)
        }

        self.handle = handle
        self.descriptor = d
        self.setters = setters
        self.description = PluginDescription(
            name: name, version: String(cString: versionPointer),
            summary: d.description.map { String(cString: $0) } ?? "", path: path, abi: theirs,
            needsUnperturbedLoss: d.flags & UInt32(EDGE_OPT_PLUGIN_NEEDS_UNPERTURBED_LOSS) != 0,
            providesPerturbationScale: d.perturbation_scale != nil,
            providesPerturbation: d.perturbation != nil,
            keepLoaded: d.flags & UInt32(EDGE_OPT_PLUGIN_KEEP_LOADED) != 0,
            options: options)
    }

    deinit {
        if !description.keepLoaded { dlclose(handle) }
    }

    /// Turns `name=value` texts into typed values for the declared options, in order.
    public func parseOptions(_ texts: [String]) throws(PluginError) -> [(option: Int, value: OptionValue)] {
        var parsed: [(Int, OptionValue)] = []
        for text in texts {
            guard let eq = text.firstIndex(of: "=") else { throw .malformedOption(plugin: name, path: path, text: text) }
            let key = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
            let valueText = String(text[text.index(after: eq)...])
            guard let index = description.options.firstIndex(where: { $0.name == key }) else {
                throw .unknownOption(plugin: name, path: path, option: key, known: description.options.map(\.name))
            }
            let option = description.options[index]
            guard let value = OptionValue.parse(option.type == .string ? valueText : valueText.trimmingCharacters(in: .whitespaces),
                                                as: option.type) else {
                throw .badOptionValue(plugin: name, path: path, option: key, type: option.type, value: valueText)
            }
            parsed.append((index, value))
        }
        return parsed
    }

    /// A new config with the plugin's defaults, then each option set through its setter.
    func makeConfig(options: [(option: Int, value: OptionValue)], budget: Int?) throws(PluginError) -> PluginConfig {
        let host = HostServices(pluginName: name, budget: budget)
        guard let config = descriptor.config_create!(host.table) else { throw .configFailed(plugin: name, path: path) }
        let made = PluginConfig(plugin: self, host: host, config: config)
        for (index, value) in options {
            let option = description.options[index]
            let (ffiStatus, result) = callSetter(setters[index], config: config, value: value)
            guard ffiStatus == 0 else { throw .ffiFailed(plugin: name, path: path, option: option.name, status: ffiStatus) }
            guard result.status == EDGE_OPT_OK else {
                throw .optionRejected(plugin: name, path: path, option: option.name, value: value.description,
                                      status: result.status, message: result.message)
            }
        }
        return made
    }

    /// A new optimizer for `groups` (each a vector of its count), with `options`
    /// ("name=value") applied over the defaults.
    public func makeOptimizer(options: [String] = [], groups: [(name: String, count: Int)],
                              memoryBudget: Int? = nil) throws(PluginError) -> PluginOptimizer {
        try makeOptimizer(options: options, groups: groups.map { GroupLayout(name: $0.name, count: $0.count) },
                          memoryBudget: memoryBudget)
    }

    /// A new optimizer for `groups` with their shapes and tensors (ABI 1.1). With
    /// `abi10Only` the host writes the 1.0 create_info and step arguments (no shapes, no
    /// run metadata) and refuses a perturbation hook, as a 1.0 host would.
    public func makeOptimizer(options: [String] = [], groups: [GroupLayout], memoryBudget: Int? = nil,
                              abi10Only: Bool = false) throws(PluginError) -> PluginOptimizer {
        let parsed = try parseOptions(options)
        // The config's allocations count against the same cap as the instance's.
        let config = try makeConfig(options: parsed, budget: memoryBudget)
        return try PluginOptimizer(plugin: self, config: config, groups: groups, memoryBudget: memoryBudget, abi10Only: abi10Only)
    }
}

/// A config object and the table it was given; destroyed with this object.
final class PluginConfig {
    let plugin: LoadedPlugin
    let host: HostServices
    let config: UnsafeMutableRawPointer

    init(plugin: LoadedPlugin, host: HostServices, config: UnsafeMutableRawPointer) {
        self.plugin = plugin
        self.host = host
        self.config = config
    }

    deinit { plugin.descriptor.config_destroy!(config) }
}

/// Copies the first `size` bytes of a plugin-written struct into a zeroed host-sized one:
/// fields the plugin's (older) layout lacks read as zero, fields a newer layout appended
/// are not read at all.
func zeroExtended<T>(_ pointer: UnsafePointer<T>, size: Int) -> T where T: ZeroInitializable {
    var value = T()
    withUnsafeMutableBytes(of: &value) { destination in
        destination.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: min(size, destination.count)))
    }
    return value
}

/// C structs imported with a zeroing init().
protocol ZeroInitializable { init() }
extension edge_opt_plugin: ZeroInitializable {}
extension edge_opt_option: ZeroInitializable {}

/// Whether `s` is non-empty and made of ASCII letters, digits and `extra`.
private func isIdentifier(_ s: String, allowing extra: String) -> Bool {
    !s.isEmpty && s.unicodeScalars.allSatisfy { c in
        (c.value < 128 && (CharacterSet.alphanumerics.contains(c))) || extra.unicodeScalars.contains(c)
    }
}

/// Why the file at `path` cannot be a shared library, or nil when it looks like one:
/// an ELF file of type ET_DYN (read from its header; what dlopen would say about a
/// text file is less clear).
private func sharedObjectProblem(_ path: String) -> String? {
    // Opened without blocking and only if regular: a directory, a FIFO or a device is
    // refused here rather than hanging in open or failing inside dlopen.
    let fd: Int32
    do { fd = try FileSafety.openRegularFile(path) } catch {
        if case .notARegularFile(let kind) = error.reason { return "it is \(kind)" }
        return "cannot be opened for reading"
    }
    defer { close(fd) }
    #if os(Linux)
    var header = [UInt8](repeating: 0, count: 18)
    var got = 0
    while got < header.count {
        let n = header.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, $0.count - got) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        got += n
    }
    guard got >= 18, header[0] == 0x7f, header[1] == 0x45, header[2] == 0x4c, header[3] == 0x46 else {
        return "no ELF header"
    }
    // e_type at byte 16, in the file's byte order (EI_DATA at byte 5: 1 little, 2 big).
    let type = header[5] == 2 ? UInt16(header[16]) << 8 | UInt16(header[17]) : UInt16(header[17]) << 8 | UInt16(header[16])
    switch type {
    case 3: return nil
    case 1: return "an ELF relocatable object (.o), not a shared object"
    case 2: return "an ELF executable, not a shared object"
    default: return "an ELF file of type \(type), not a shared object"
    }
    #else
    return nil
    #endif
}
