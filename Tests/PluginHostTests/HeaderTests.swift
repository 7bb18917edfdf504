import COptimizerABI
import Foundation
import Testing
import TestSupport

/// edge_optimizer.h compiles cleanly as C11 and C++17, and Swift sees the layout the
/// static asserts pin.
@Suite struct HeaderTests {
    /// A translation unit valid in both languages that uses the header's macros and helper.
    static let user = """
        #include "edge_optimizer.h"
        #include <string.h>

        static edge_opt_status set_x(void *config, double value, const char **message) {
            (void)config; (void)message;
            return value > 0 ? EDGE_OPT_OK : EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }

        int header_user(void);
        int header_user(void) {
            edge_opt_option option;
            memset(&option, 0, sizeof option);
            option.struct_size = sizeof option;
            option.type = EDGE_OPT_TYPE_DOUBLE;
            option.setter = EDGE_OPT_SETTER(set_x);
            edge_opt_negotiation n;
            memset(&n, 0, sizeof n);
            n.struct_size = sizeof n;
            n.host_abi_major = EDGE_OPT_ABI_MAJOR;
            edge_opt_status status = edge_opt_negotiate(&n, NULL);
            return status == EDGE_OPT_OK && EDGE_OPT_HAS_FIELD(&n, edge_opt_negotiation, message) &&
                   EDGE_OPT_HAS_FIELD(&option, edge_opt_option, reserved1) ? 0 : 1;
        }
        """

    @Test(arguments: [("cc", "c", "-std=c11"), ("c++", "cpp", "-std=c++17")])
    func compilesCleanly(_ compiler: String, _ ext: String, _ standard: String) throws {
        let dir = makeTemporaryDirectory("header")
        let source = dir + "/user.\(ext)"
        try Self.user.write(toFile: source, atomically: true, encoding: .utf8)
        let r = try runProcess("/usr/bin/env", [compiler, standard, "-Wall", "-Wextra", "-pedantic", "-Werror",
                                                "-I", TestPlugins.includeDirectory, "-c", source, "-o", dir + "/user.o"])
        #expect(r.status == 0, "\(compiler) \(standard): \(r.stderr)")
        #expect(r.stderr.isEmpty, "\(r.stderr)")
    }

    /// The header refuses to compile when a pinned offset moves (the asserts are live).
    @Test func staticAssertsBite() throws {
        let dir = makeTemporaryDirectory("header")
        let source = dir + "/moved.c"
        try """
            #include "edge_optimizer.h"
            EDGE_OPT_PIN(edge_opt_step_args, values, 64, 8);
            """.write(toFile: source, atomically: true, encoding: .utf8)
        let r = try runProcess("/usr/bin/env", ["cc", "-std=c11", "-I", TestPlugins.includeDirectory, "-c", source, "-o", dir + "/m.o"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("edge_opt_step_args.values offset"), "\(r.stderr)")
    }

    /// Swift imports the structs with the sizes and offsets the header pins.
    @Test func swiftSeesThePinnedLayout() {
        #expect(MemoryLayout<edge_opt_negotiation>.size == Int(EDGE_OPT_NEGOTIATION_SIZE_V1))
        #expect(MemoryLayout<edge_opt_host>.size == Int(EDGE_OPT_HOST_SIZE_V1))
        #expect(MemoryLayout<edge_opt_option>.size == Int(EDGE_OPT_OPTION_SIZE_V1))
        #expect(MemoryLayout<edge_opt_create_info>.size == Int(EDGE_OPT_CREATE_INFO_SIZE_V2))
        #expect(MemoryLayout<edge_opt_step_args>.size == Int(EDGE_OPT_STEP_ARGS_SIZE_V2))
        #expect(MemoryLayout<edge_opt_plugin>.size == Int(EDGE_OPT_PLUGIN_SIZE_V2))
        #expect(MemoryLayout<edge_opt_step_args>.offset(of: \.values) == 72)
        #expect(MemoryLayout<edge_opt_step_args>.offset(of: \.dense) == 88)
        #expect(MemoryLayout<edge_opt_plugin>.offset(of: \.perturbation_scale) == 112)
        #expect(MemoryLayout<edge_opt_option>.offset(of: \.default_bool) == 64)
        #expect(MemoryLayout<edge_opt_host>.offset(of: \.log) == 56)
        // ABI 1.1's appends start where 1.0's structs ended.
        #expect(MemoryLayout<edge_opt_create_info>.offset(of: \.group_ranks) == Int(EDGE_OPT_CREATE_INFO_SIZE_V1))
        #expect(MemoryLayout<edge_opt_step_args>.offset(of: \.total_steps) == Int(EDGE_OPT_STEP_ARGS_SIZE_V1))
        #expect(MemoryLayout<edge_opt_plugin>.offset(of: \.perturbation) == Int(EDGE_OPT_PLUGIN_SIZE_V1))
        #expect(MemoryLayout<edge_opt_perturbation_args>.size == Int(EDGE_OPT_PERTURBATION_ARGS_SIZE_V1))
    }
}
