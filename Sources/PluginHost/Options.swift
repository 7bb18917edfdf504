// Typed plugin options: a plugin declares (name, type, default, help, setter); the host
// parses `name=value`, checks the value against the type, and calls the setter through
// libffi with an argument of the declared C type. The setter's C signature is
//   edge_opt_status setter(void *config, T value, const char **message)
// with T one of bool, int64_t, double, const char * (edge_optimizer.h). libffi builds
// that call at run time from the declared type, so one code path calls every setter
// with its natural signature; no plugin needs a variant-typed setter.

import CFFI
import COptimizerABI

/// The type of a declared option (EDGE_OPT_TYPE_*).
public enum OptionType: UInt32, Sendable, CustomStringConvertible {
    case bool = 1    // EDGE_OPT_TYPE_BOOL: bool
    case int64 = 2   // EDGE_OPT_TYPE_INT64: int64_t
    case double = 3  // EDGE_OPT_TYPE_DOUBLE: double
    case string = 4  // EDGE_OPT_TYPE_STRING: const char *

    public var description: String {
        switch self {
        case .bool: return "bool"
        case .int64: return "int64"
        case .double: return "double"
        case .string: return "string"
        }
    }

    var article: String { self == .int64 ? "an" : "a" }

    /// What a value of this type looks like on the command line.
    var expectation: String {
        switch self {
        case .bool: return "true or false (also 1/0, yes/no, on/off)"
        case .int64: return "an integer in [-2^63, 2^63)"
        case .double: return "a number such as 0.9 or 1e-8"
        case .string: return "any text"
        }
    }
}

/// A parsed option value, typed.
public enum OptionValue: Equatable, Sendable, CustomStringConvertible {
    case bool(Bool)
    case int64(Int64)
    case double(Double)
    case string(String)

    public var type: OptionType {
        switch self {
        case .bool: return .bool
        case .int64: return .int64
        case .double: return .double
        case .string: return .string
        }
    }

    public var description: String {
        switch self {
        case let .bool(b): return b ? "true" : "false"
        case let .int64(i): return "\(i)"
        case let .double(d): return "\(d)"
        case let .string(s): return s
        }
    }

    /// Parses command-line text as `type`; nil when it is not one.
    public static func parse(_ text: String, as type: OptionType) -> OptionValue? {
        switch type {
        case .bool:
            switch text.lowercased() {
            case "true", "1", "yes", "on": return .bool(true)
            case "false", "0", "no", "off": return .bool(false)
            default: return nil
            }
        case .int64:
            return Int64(text).map { .int64($0) }
        case .double:
            // Swift's Double(String) accepts decimal and hex floats, "inf" and "nan"; NaN is
            // never a meaningful setting.
            guard let d = Double(text), !d.isNaN else { return nil }
            return .double(d)
        case .string:
            return .string(text)
        }
    }
}

/// One option a plugin declares, as `plugins describe` shows it.
public struct OptionDescription: Equatable, Sendable {
    public var name: String
    public var type: OptionType
    public var defaultValue: OptionValue
    public var help: String
}

/// The status and message of one setter call.
struct SetterResult {
    var status: Int32
    var message: String?
}

/// Calls `setter(config, value, &message)` through libffi, with `value` passed as the
/// C type of its OptionType.
func callSetter(_ setter: @convention(c) () -> Void, config: UnsafeMutableRawPointer,
                value: OptionValue) -> (ffiStatus: Int32, result: SetterResult) {
    // The call's signature: (pointer, T, pointer) -> int32.
    let argumentTypes = UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>.allocate(capacity: 3)
    defer { argumentTypes.deallocate() }
    argumentTypes[0] = ffiType(&ffi_type_pointer)
    switch value {
    case .bool: argumentTypes[1] = ffiType(&ffi_type_uint8)    // bool: one byte, 0 or 1
    case .int64: argumentTypes[1] = ffiType(&ffi_type_sint64)
    case .double: argumentTypes[1] = ffiType(&ffi_type_double)
    case .string: argumentTypes[1] = ffiType(&ffi_type_pointer)
    }
    argumentTypes[2] = ffiType(&ffi_type_pointer)
    var cif = ffi_cif()
    let prepared = ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 3, ffiType(&ffi_type_sint32), argumentTypes)
    guard prepared == FFI_OK else { return (Int32(bitPattern: prepared.rawValue), SetterResult(status: -1)) }

    // Argument storage: each slot holds one argument; avalues points at the slots.
    var configArgument: UnsafeMutableRawPointer? = config
    var message: UnsafePointer<CChar>? = nil
    // A small integer return comes back widened to ffi_arg (libffi's rule).
    var returned: ffi_arg = 0
    let status: Int32 = withUnsafeMutablePointer(to: &message) { messageSlot in
        var messageArgument: UnsafeMutablePointer<UnsafePointer<CChar>?>? = messageSlot
        return withUnsafeMutablePointer(to: &configArgument) { configSlot in
            withUnsafeMutablePointer(to: &messageArgument) { messageArgumentSlot in
                func invoke(_ valueSlot: UnsafeMutableRawPointer) -> Int32 {
                    var slots: [UnsafeMutableRawPointer?] = [UnsafeMutableRawPointer(configSlot), valueSlot,
                                                             UnsafeMutableRawPointer(messageArgumentSlot)]
                    slots.withUnsafeMutableBufferPointer { ffi_call(&cif, setter, &returned, $0.baseAddress) }
                    return Int32(truncatingIfNeeded: returned)
                }
                switch value {
                case let .bool(b):
                    var byte: UInt8 = b ? 1 : 0
                    return invoke(&byte)
                case let .int64(i):
                    var x = i
                    return invoke(&x)
                case let .double(d):
                    var x = d
                    return invoke(&x)
                case let .string(s):
                    return s.withCString { cString in
                        var pointer: UnsafePointer<CChar>? = cString
                        return invoke(&pointer)
                    }
                }
            }
        }
    }
    return (0, SetterResult(status: status, message: message.map { String(cString: $0) }))
}

/// The address of one of libffi's type descriptors (global C variables).
private func ffiType(_ type: UnsafeMutablePointer<ffi_type>) -> UnsafeMutablePointer<ffi_type> { type }

extension OptionValue {
    /// The declared default of an option struct, by its type.
    init(defaultOf option: edge_opt_option, type: OptionType) {
        switch type {
        case .bool: self = .bool(option.default_bool != 0)
        case .int64: self = .int64(option.default_int64)
        case .double: self = .double(option.default_double)
        case .string: self = .string(option.default_string.map { String(cString: $0) } ?? "")
        }
    }
}
