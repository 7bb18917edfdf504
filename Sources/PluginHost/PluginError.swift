// What can go wrong between the host and an optimizer plugin, one case per problem.
// Every description is one line that names the plugin (its path, and its name once
// the descriptor is known) and says what is wrong, with a hint where there is one.

/// An ABI version, major.minor (edge_optimizer.h's EDGE_OPT_ABI_MAJOR/MINOR).
public struct ABIVersion: Equatable, Sendable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    public var description: String { "\(major).\(minor)" }
}

public enum PluginError: Error, Equatable, CustomStringConvertible {
    /// NAME was found in none of the search directories.
    case notFound(name: String, searched: [String])
    /// The file does not exist (a path was given).
    case noSuchFile(path: String)
    /// The file is not an ELF shared object (text, an executable, an object file).
    case notASharedLibrary(path: String, detail: String)
    /// An ELF shared object that the dynamic loader refused (missing dependency, wrong architecture).
    case loadFailed(path: String, detail: String)
    /// The library does not export edge_optimizer_entry.
    case missingEntrySymbol(path: String)
    /// The plugin speaks another ABI major than the host.
    case incompatibleVersion(path: String, host: ABIVersion, plugin: ABIVersion, message: String?)
    /// The entry failed without naming a version problem.
    case entryFailed(path: String, status: Int32, message: String?)
    /// A struct the plugin wrote is smaller than version 1 of that struct.
    case structTooSmall(path: String, structure: String, size: Int, expected: Int)
    /// A required function pointer is NULL.
    case missingFunction(path: String, function: String)
    /// Something else in the descriptor or its option declarations is malformed.
    case invalidDescriptor(path: String, detail: String)
    /// `--opt` text without '='.
    case malformedOption(plugin: String, path: String, text: String)
    /// `--opt name=...` for a name the plugin did not declare.
    case unknownOption(plugin: String, path: String, option: String, known: [String])
    /// The value does not parse as the option's declared type.
    case badOptionValue(plugin: String, path: String, option: String, type: OptionType, value: String)
    /// The plugin's setter refused the value.
    case optionRejected(plugin: String, path: String, option: String, value: String, status: Int32, message: String?)
    /// libffi could not prepare the setter call.
    case ffiFailed(plugin: String, path: String, option: String, status: Int32)
    /// config_create returned NULL.
    case configFailed(plugin: String, path: String)
    /// The trainable groups handed to create are unusable (none, or an empty one).
    case invalidGroups(plugin: String, path: String, detail: String)
    /// create returned an error.
    case createFailed(plugin: String, path: String, status: Int32, message: String?)

    public var description: String {
        switch self {
        case let .notFound(name, searched):
            return "optimizer plugin '\(name)' not found; looked for \(searched.joined(separator: ", ")); "
                + "pass a path, or add its directory to EDGE_FINETUNE_PLUGIN_PATH"
        case let .noSuchFile(path):
            return "plugin \(path): no such file"
        case let .notASharedLibrary(path, detail):
            return "plugin \(path): not a shared library (\(detail)); build it with cc -shared -fPIC"
        case let .loadFailed(path, detail):
            return "plugin \(path): the dynamic loader refused it: \(oneLine(detail))"
        case let .missingEntrySymbol(path):
            return "plugin \(path): no exported symbol edge_optimizer_entry; define it with EDGE_OPT_EXPORT "
                + "(C) or @_cdecl(\"edge_optimizer_entry\") (Swift)"
        case let .incompatibleVersion(path, host, plugin, message):
            return "plugin \(path) speaks optimizer ABI \(plugin), this host speaks ABI \(host) (the majors must match)"
                + (message.map { ": \(oneLine($0))" } ?? "") + "; rebuild it against edge_optimizer.h \(host.major).x"
        case let .entryFailed(path, status, message):
            return "plugin \(path): edge_optimizer_entry failed (\(statusName(status)))" + (message.map { ": \(oneLine($0))" } ?? "")
        case let .structTooSmall(path, structure, size, expected):
            return "plugin \(path): \(structure) has struct_size \(size), smaller than the \(expected) bytes of its version 1; "
                + "set struct_size = sizeof(...) and rebuild against edge_optimizer.h"
        case let .missingFunction(path, function):
            return "plugin \(path): required function \(function) is NULL"
        case let .invalidDescriptor(path, detail):
            return "plugin \(path): \(oneLine(detail))"
        case let .malformedOption(plugin, path, text):
            return "plugin \(plugin) (\(path)): option '\(oneLine(text))' is not of the form name=value"
        case let .unknownOption(plugin, path, option, known):
            return "plugin \(plugin) (\(path)) has no option '\(oneLine(option))'; "
                + (known.isEmpty ? "it declares none" : "it has \(known.joined(separator: ", "))")
        case let .badOptionValue(plugin, path, option, type, value):
            return "plugin \(plugin) (\(path)): option \(option) is \(type.article) \(type), and '\(oneLine(value))' is not; "
                + "expected \(type.expectation)"
        case let .optionRejected(plugin, path, option, value, status, message):
            return "plugin \(plugin) (\(path)) rejected \(option)=\(oneLine(value)) (\(statusName(status)))"
                + (message.map { ": \(oneLine($0))" } ?? "")
        case let .ffiFailed(plugin, path, option, status):
            return "plugin \(plugin) (\(path)): libffi could not prepare the setter of \(option) (ffi_status \(status))"
        case let .configFailed(plugin, path):
            return "plugin \(plugin) (\(path)): config_create returned NULL (out of memory)"
        case let .invalidGroups(plugin, path, detail):
            return "plugin \(plugin) (\(path)): \(detail)"
        case let .createFailed(plugin, path, status, message):
            return "plugin \(plugin) (\(path)): create failed (\(statusName(status)))"
                + (message.map { ": \(oneLine($0))" } ?? " without a message")
        }
    }
}

/// The name of an edge_opt_status, for messages.
func statusName(_ status: Int32) -> String {
    switch status {
    case 0: return "ok"
    case 1: return "invalid argument"
    case 2: return "unsupported version"
    case 3: return "out of memory"
    case 4: return "bad state"
    case 5: return "internal error"
    default: return "status \(status)"
    }
}

/// A plugin-supplied text on one line: control characters (newlines included) become spaces.
func oneLine(_ text: String) -> String {
    String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? " " : $0 }))
}
