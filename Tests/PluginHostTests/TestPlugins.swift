// Plugins built by the test suite at test time, from C written here, with the system's
// cc and the repository's edge_optimizer.h: a valid "probe" plugin with one option of
// each type, and broken variants of it selected with -D flags.

import Foundation
import TestSupport

enum TestPlugins {
    static let includeDirectory = Repository.path("Sources/COptimizerABI/include")

    /// The probe plugin. Its state records the options it was created with, so a test
    /// can read back what the setters received through libffi. Its step is plain SGD on
    /// the estimate: theta += (-eta d_j / n) z_j. Breakage switches:
    ///   NO_ENTRY          the entry symbol is misspelled
    ///   WRONG_MAJOR       it answers ABI 2.0 and refuses
    ///   SMALL_STRUCT      its descriptor says struct_size 16
    ///   NULL_STEP         step is NULL
    ///   CREATE_FAILS      create returns an error with a message
    ///   STEP_WRITES_NAN   step writes a NaN at values[1][3] (after a normal update)
    static let probeSource = #"""
    #include "edge_optimizer.h"
    #include <math.h>
    #include <stdio.h>
    #include <string.h>

    typedef struct probe_options {
        uint8_t flag;
        uint8_t pad[7];
        int64_t count;
        double rate;
        char label[48];
    } probe_options;

    typedef struct probe_config {
        const edge_opt_host *host;
        probe_options o;
        char message[96];
    } probe_config;

    typedef struct probe_instance {
        const edge_opt_host *host;
        probe_options o;
        uint32_t group_count;
        uint64_t counts[8];
    } probe_instance;

    static edge_opt_status set_flag(void *config, bool value, const char **message) {
        (void)message;
        ((probe_config *)config)->o.flag = value ? 1 : 0;
        return EDGE_OPT_OK;
    }
    static edge_opt_status set_count(void *config, int64_t value, const char **message) {
        probe_config *c = (probe_config *)config;
        if (value == 13) {
            snprintf(c->message, sizeof c->message, "count %lld is unlucky", (long long)value);
            *message = c->message;
            return EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }
        c->o.count = value;
        return EDGE_OPT_OK;
    }
    static edge_opt_status set_rate(void *config, double value, const char **message) {
        (void)message;
        ((probe_config *)config)->o.rate = value;
        return EDGE_OPT_OK;
    }
    static edge_opt_status set_label(void *config, const char *value, const char **message) {
        (void)message;
        probe_config *c = (probe_config *)config;
        snprintf(c->o.label, sizeof c->o.label, "%s", value);
        return EDGE_OPT_OK;
    }

    static const edge_opt_option flag_option = {
        sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "flag", "a bool", EDGE_OPT_TYPE_BOOL, 0,
        EDGE_OPT_SETTER(set_flag), 0, 0.0, NULL, 0, 0,
    };
    static const edge_opt_option count_option = {
        sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "count", "an int64", EDGE_OPT_TYPE_INT64, 0,
        EDGE_OPT_SETTER(set_count), 3, 0.0, NULL, 0, 0,
    };
    static const edge_opt_option rate_option = {
        sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "rate", "a double", EDGE_OPT_TYPE_DOUBLE, 0,
        EDGE_OPT_SETTER(set_rate), 0, 0.5, NULL, 0, 0,
    };
    static const edge_opt_option label_option = {
        sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "label", "a string", EDGE_OPT_TYPE_STRING, 0,
        EDGE_OPT_SETTER(set_label), 0, 0.0, "none", 0, 0,
    };
    static const edge_opt_option *const options[] = {&flag_option, &count_option, &rate_option, &label_option};

    static void *config_create(const edge_opt_host *host) {
        probe_config *c = (probe_config *)host->mem_alloc(host, sizeof(probe_config));
        if (c == NULL) return NULL;
        c->host = host;
        c->o.flag = 0;
        c->o.count = 3;
        c->o.rate = 0.5;
        strcpy(c->o.label, "none");
        return c;
    }
    static void config_destroy(void *config) {
        probe_config *c = (probe_config *)config;
        if (c != NULL) c->host->mem_free(c->host, c);
    }

    static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                                  void **instance, const char **message) {
        probe_config *c = (probe_config *)config;
    #ifdef CREATE_FAILS
        (void)host; (void)info; (void)instance;
        snprintf(c->message, sizeof c->message, "the probe refuses to create (count %lld)", (long long)c->o.count);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    #else
        if (info->group_count > 8) { *message = "at most 8 groups"; return EDGE_OPT_ERROR_INVALID_ARGUMENT; }
        probe_instance *s = (probe_instance *)host->mem_alloc(host, sizeof(probe_instance));
        if (s == NULL) { *message = "out of memory"; return EDGE_OPT_ERROR_OUT_OF_MEMORY; }
        s->host = host;
        s->o = c->o;
        s->group_count = info->group_count;
        for (uint32_t g = 0; g < info->group_count; g++) s->counts[g] = info->group_counts[g];
        char line[160];
        snprintf(line, sizeof line, "probe created: flag=%d count=%lld rate=%g label=%s", s->o.flag,
                 (long long)s->o.count, s->o.rate, s->o.label);
        host->log(host, EDGE_OPT_LOG_INFO, line);
        *instance = s;
        return EDGE_OPT_OK;
    #endif
    }
    static void destroy(void *instance) {
        probe_instance *s = (probe_instance *)instance;
        if (s != NULL) s->host->mem_free(s->host, s);
    }

    #ifdef NULL_STEP
    __attribute__((unused)) /* defined, but the descriptor leaves it out */
    #endif
    static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
        probe_instance *s = (probe_instance *)instance;
        if (!isfinite(a->learning_rate)) { *message = "learning rate not finite"; return EDGE_OPT_ERROR_INVALID_ARGUMENT; }
        for (uint32_t j = 0; j < a->direction_count; j++) {
            if (!isfinite(a->derivatives[j])) { *message = "derivative not finite"; return EDGE_OPT_ERROR_INVALID_ARGUMENT; }
        }
        if (a->dense != NULL) {
            for (uint32_t g = 0; g < a->group_count; g++)
                for (uint64_t i = 0; i < s->counts[g]; i++)
                    if (!isfinite(a->dense[g][i])) { *message = "dense not finite"; return EDGE_OPT_ERROR_INVALID_ARGUMENT; }
        }
        const float n = (float)(a->direction_count > 0 ? a->direction_count : 1);
        for (uint32_t g = 0; g < a->group_count; g++) {
            if (a->dense != NULL) {
                for (uint64_t i = 0; i < s->counts[g]; i++) a->values[g][i] -= a->learning_rate * a->dense[g][i];
            } else {
                for (uint32_t j = 0; j < a->direction_count; j++)
                    s->host->perturbation_add(s->host, a->seeds[j], g, 0, s->counts[g], -a->learning_rate * a->derivatives[j] / n,
                                              NULL, a->values[g]);
            }
        }
    #ifdef STEP_WRITES_NAN
        a->values[a->group_count > 1 ? 1 : 0][3] = NAN;
    #endif
        return EDGE_OPT_OK;
    }

    static uint64_t state_size(void *instance) { (void)instance; return sizeof(probe_options); }
    static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
        if (size != sizeof(probe_options)) { *message = "wrong size"; return EDGE_OPT_ERROR_INVALID_ARGUMENT; }
        memcpy(bytes, &((probe_instance *)instance)->o, sizeof(probe_options));
        return EDGE_OPT_OK;
    }
    static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
        if (size != sizeof(probe_options)) { *message = "wrong size"; return EDGE_OPT_ERROR_BAD_STATE; }
        memcpy(&((probe_instance *)instance)->o, bytes, sizeof(probe_options));
        return EDGE_OPT_OK;
    }

    static const edge_opt_plugin plugin = {
    #ifdef SMALL_STRUCT
        16,
    #else
        sizeof(edge_opt_plugin),
    #endif
        EDGE_OPT_PLUGIN_VERSION,
        "probe", "0.1.0", "test plugin", 0,
        4, options,
        config_create, config_destroy, create, destroy,
    #ifdef NULL_STEP
        NULL,
    #else
        step,
    #endif
        state_size, save_state, load_state, NULL,
    #if EDGE_OPT_ABI_MINOR >= 1
        NULL, /* perturbation (1.1): the engine's z */
    #endif
    };

    #ifdef NO_ENTRY
    EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entri(edge_opt_negotiation *negotiation);
    EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entri(edge_opt_negotiation *negotiation) {
        return edge_opt_negotiate(negotiation, &plugin);
    }
    #elif defined(WRONG_MAJOR)
    EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
        (void)plugin;
        negotiation->plugin_abi_major = 2;
        negotiation->plugin_abi_minor = 3;
        negotiation->plugin = NULL;
        negotiation->message = "the probe speaks only ABI 2";
        return EDGE_OPT_ERROR_UNSUPPORTED_VERSION;
    }
    #else
    EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
        return edge_opt_negotiate(negotiation, &plugin);
    }
    #endif
    """#

    struct CompileError: Error, CustomStringConvertible {
        var description: String
    }

    /// Compiles `source` into `<directory>/lib<name>.so` with `defines`, and returns the path.
    /// The ABI 1.0 header as it was released, for building a 1.0 plugin from its own header.
    static let abi10IncludeDirectory = Repository.path("Tests/Fixtures/abi-1.0")

    static func build(_ name: String, defines: [String] = [], source: String = probeSource,
                      in directory: String = makeTemporaryDirectory("plugins"),
                      include: String = includeDirectory) throws -> String {
        let sourcePath = directory + "/\(name).c"
        let libraryPath = directory + "/lib\(name).so"
        try source.write(toFile: sourcePath, atomically: true, encoding: .utf8)
        let arguments = ["cc", "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1", "-shared", "-fPIC",
                         "-I", include] + defines.map { "-D" + $0 } + [sourcePath, "-o", libraryPath, "-lm"]
        let result = try runProcess("/usr/bin/env", arguments)
        guard result.status == 0 else { throw CompileError(description: "cc failed for \(name): \(result.stderr)") }
        return libraryPath
    }

    /// A shipped plugin beside the test bundle.
    static func shipped(_ name: String) -> String {
        Products.directory + "/lib\(name).so"
    }
}
