/*
 * edge_optimizer.h: the EdgeFinetune optimizer plugin ABI, version 1.0.
 *
 * An optimizer plugin is a shared library that exports one C symbol,
 * edge_optimizer_entry, and is written against this header alone: it never links
 * the host. Everything else goes through tables of function pointers:
 *
 *   host                                   plugin
 *   ----                                   ------
 *   dlopen, dlsym("edge_optimizer_entry")
 *   entry(&negotiation) ------------------> answers its ABI version; returns its
 *                                           edge_opt_plugin descriptor, or refuses
 *   config_create(host) ------------------> a config holding every option's default
 *   setter(config, value, &msg) ----------> through libffi, one call per --opt name=value
 *   create(host, config, groups) ---------> an instance; the config may go now
 *   step(instance, args) * N -------------> updates the groups' values in place
 *   state_size / save_state / load_state -> checkpoints
 *   destroy(instance)
 *
 * Compiles as C11 and C++17 (-Wall -Wextra -pedantic). Build a plugin with
 *   cc -std=c11 -O2 -shared -fPIC -I<dir of this header> myopt.c -o libmyopt.so -lm
 * and check it with `edge-finetune plugins check ./libmyopt.so`. Plugins/README.md
 * walks through a complete one.
 *
 * ---------------------------------------------------------------------------------
 * Versioning
 * ---------------------------------------------------------------------------------
 * The ABI has a major and a minor version (EDGE_OPT_ABI_MAJOR/MINOR below).
 *   - A major change breaks compatibility: a host and a plugin work together only
 *     when they speak the same major. The host refuses any other, naming both.
 *   - A minor change only appends: new fields at the end of structs, new flags, new
 *     status codes, new option types. Nothing is removed, reordered or retyped.
 *     Host and plugin of the same major but different minors work together: each
 *     side reads only the fields inside the struct_size the other side wrote.
 *   - The layout of edge_opt_negotiation is frozen for every major, so that any host
 *     can learn any plugin's version, and the entry symbol's name never changes.
 *
 * Every struct begins with two uint32_t: struct_size (sizeof the struct as its
 * writer was compiled) and struct_version (the EDGE_OPT_*_VERSION constant of that
 * struct; it counts the appends). A reader:
 *   - refuses a struct whose struct_size is below the size of version 1 of that
 *     struct (the EDGE_OPT_*_SIZE_V1 constants), and
 *   - treats fields past struct_size as absent (zero or NULL); EDGE_OPT_HAS_FIELD
 *     tests this.
 * Fields named reserved* are written as zero and never read. The static asserts at
 * the end pin every field's offset and size; the ABI is defined for 64-bit targets
 * (LP64 and LLP64: 8-byte pointers, 8-byte int64_t and double alignment).
 *
 * ---------------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------------------
 * Nothing traps across the boundary: no C++ exception, Swift error, longjmp, abort
 * or signal may leave a plugin function. A function that can fail returns an
 * edge_opt_status (EDGE_OPT_OK or an EDGE_OPT_ERROR_*) and may point *message at a
 * NUL-terminated, one-line UTF-8 explanation. The message is owned by the plugin
 * and stays valid until the next call into the plugin on the same object (the
 * config, or the instance) or until that object is destroyed; a string literal is
 * always fine. The host copies it before doing anything else. The host always
 * passes a non-NULL message pointer whose target is NULL.
 *
 * A call that fails has no effect: parameters, options and state are as before.
 * In particular step validates every input it reads (derivatives, losses, dense
 * estimates, learning rate, epsilon) before it writes anything, and returns
 * EDGE_OPT_ERROR_INVALID_ARGUMENT for a non-finite one. The host checks the
 * derivatives, learning rate, epsilon, unperturbed loss and dense estimates too,
 * and undoes a step that leaves a non-finite value; `plugins check` tests the
 * plugin's own checks.
 *
 * ---------------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------------------
 *   - edge_optimizer_entry may be called more than once, from any thread, also
 *     concurrently; it has no side effects beyond its answer.
 *   - Calls on one config, or on one instance, never overlap: the host serializes
 *     them, though successive calls may come from different threads.
 *   - Different instances (of the same plugin, in the same process) may be used at
 *     the same time from different threads. A plugin keeps no mutable global state:
 *     everything lives in its configs and instances.
 *   - A plugin may run its own threads inside a call, and must have joined them (no
 *     work of theirs outstanding) when the call returns.
 *   - Host services may be called from any thread, concurrently, while the table
 *     they came in is valid (see edge_opt_host).
 *   - A plugin leaves the floating-point environment (rounding mode, flush-to-zero)
 *     as it found it.
 */

#ifndef EDGE_OPTIMIZER_H
#define EDGE_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>
#ifndef __cplusplus
#include <stdbool.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------ */
/* Versions, symbols, constants                                                    */
/* ------------------------------------------------------------------------------ */

/** The ABI this header defines. */
#define EDGE_OPT_ABI_MAJOR 1
#define EDGE_OPT_ABI_MINOR 0

/** The one symbol a plugin exports (type edge_opt_entry_fn). */
#define EDGE_OPT_ENTRY_SYMBOL "edge_optimizer_entry"

/** Marks the entry definition as exported from the shared library. */
#if defined(_WIN32)
#define EDGE_OPT_EXPORT __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define EDGE_OPT_EXPORT __attribute__((visibility("default")))
#else
#define EDGE_OPT_EXPORT
#endif

/** Status codes. New codes may be appended in minor versions; a host treats an
 *  unknown non-zero code as a failure. */
typedef int32_t edge_opt_status;
#define EDGE_OPT_OK 0
/** An input is wrong: a non-finite number, a size that does not match, an option
 *  value out of range, a missing unperturbed loss. */
#define EDGE_OPT_ERROR_INVALID_ARGUMENT 1
/** The host's ABI major is not one the plugin speaks (entry only). */
#define EDGE_OPT_ERROR_UNSUPPORTED_VERSION 2
/** An allocation failed (host mem_alloc returned NULL: the run's memory budget). */
#define EDGE_OPT_ERROR_OUT_OF_MEMORY 3
/** load_state: the bytes are not a state this instance can load. */
#define EDGE_OPT_ERROR_BAD_STATE 4
/** Anything else. */
#define EDGE_OPT_ERROR_INTERNAL 5

/** Option types (edge_opt_option.type) and the C type of the setter's value. */
#define EDGE_OPT_TYPE_BOOL 1   /* bool (C99 _Bool, one byte) */
#define EDGE_OPT_TYPE_INT64 2  /* int64_t */
#define EDGE_OPT_TYPE_DOUBLE 3 /* double */
#define EDGE_OPT_TYPE_STRING 4 /* const char * (UTF-8, NUL-terminated) */

/** Plugin flags (edge_opt_plugin.flags). Unknown bits are ignored by the host. */
/** step needs the loss at the unperturbed parameters (one more forward pass per
 *  step): edge_opt_step_args.unperturbed_loss is then set. HiZOO needs it. */
#define EDGE_OPT_PLUGIN_NEEDS_UNPERTURBED_LOSS 0x1u
/** The host must never unload (dlclose) this library. Set it when the plugin is
 *  written in a language whose runtime cannot be unloaded (Swift registers type
 *  metadata with its runtime that would dangle), or when it registers atexit
 *  handlers or thread-local destructors. Without it the host may dlclose the
 *  library once no config or instance of it is alive. */
#define EDGE_OPT_PLUGIN_KEEP_LOADED 0x2u

/** Log levels for edge_opt_host.log. */
#define EDGE_OPT_LOG_DEBUG 0
#define EDGE_OPT_LOG_INFO 1
#define EDGE_OPT_LOG_WARNING 2
#define EDGE_OPT_LOG_ERROR 3

/** Struct versions: bumped when a minor version appends fields to that struct. */
#define EDGE_OPT_NEGOTIATION_VERSION 1
#define EDGE_OPT_HOST_VERSION 1
#define EDGE_OPT_OPTION_VERSION 1
#define EDGE_OPT_CREATE_INFO_VERSION 1
#define EDGE_OPT_STEP_ARGS_VERSION 1
#define EDGE_OPT_PLUGIN_VERSION 1

/** Size in bytes of version 1 of each struct: the smallest a reader accepts. */
#define EDGE_OPT_NEGOTIATION_SIZE_V1 40
#define EDGE_OPT_HOST_SIZE_V1 64
#define EDGE_OPT_OPTION_SIZE_V1 72
#define EDGE_OPT_CREATE_INFO_SIZE_V1 32
#define EDGE_OPT_STEP_ARGS_SIZE_V1 96
#define EDGE_OPT_PLUGIN_SIZE_V1 120

/** For messages: "1" from EDGE_OPT_STRINGIFY(EDGE_OPT_ABI_MAJOR). */
#define EDGE_OPT_STRINGIFY_(x) #x
#define EDGE_OPT_STRINGIFY(x) EDGE_OPT_STRINGIFY_(x)

/** Whether the struct at `ptr` (of type `type`) was written with `field` in it. */
#define EDGE_OPT_HAS_FIELD(ptr, type, field) \
    ((size_t)(ptr)->struct_size >= offsetof(type, field) + sizeof(((const type *)0)->field))

/* ------------------------------------------------------------------------------ */
/* Host services                                                                   */
/* ------------------------------------------------------------------------------ */

typedef struct edge_opt_host edge_opt_host;

/**
 * What the host offers a plugin. Owned by the host. The table given to
 * config_create stays valid until that config_destroy returns; the table given to
 * create stays valid until that instance's destroy returns. Every function may be
 * called from any thread, concurrently, while the table is valid; none of them
 * fails in a way that needs reporting except mem_alloc (NULL).
 */
struct edge_opt_host {
    uint32_t struct_size;    /* sizeof(edge_opt_host) as the host was compiled */
    uint32_t struct_version; /* EDGE_OPT_HOST_VERSION */
    uint32_t abi_major;      /* the ABI the host speaks */
    uint32_t abi_minor;
    void *context;           /* host-private; plugins do not touch it */

    /**
     * The perturbation z of the engine: out[i] = z(seed, group, start + i) for i in
     * [0, count). z is defined exactly (same bits on every machine and for every
     * chunking of the range) as:
     *   1. Philox4x32-10 (Salmon et al., SC'11; Random123 philox4x32 with 10 rounds)
     *      key     = (seed & 0xffffffff, seed >> 32)
     *      counter = (b & 0xffffffff, b >> 32, group, 0) with b = index / 4
     *      output  = x0, x1, x2, x3 (uint32)
     *   2. u_k = ((float)(x_k >> 8) + 0.5f) * 2^-24, in (0, 1)
     *   3. Box-Muller in float with logf, sqrtf, cosf, sinf:
     *      r = sqrtf(-2 * logf(u0)), t = 6.2831855f * u1
     *      z[4b] = r * cosf(t), z[4b+1] = r * sinf(t); and (u2, u3) for z[4b+2], z[4b+3].
     * `group` is the group's index in edge_opt_create_info; a direction's seed is
     * edge_opt_step_args.seeds[j]. `out` is owned by the caller and holds `count`
     * floats.
     */
    void (*perturbation_fill)(const edge_opt_host *host, uint64_t seed, uint32_t group,
                              uint64_t start, uint64_t count, float *out);

    /**
     * values[i] += (alpha * scale[i]) * z(seed, group, start + i) for i in [0, count),
     * in float, each product rounded (no fused multiply-add); with scale NULL,
     * values[i] += alpha * z(...). The host may split the range across its threads;
     * the result does not depend on that. `values` and `scale` are owned by the
     * caller and point at the element for index `start`.
     */
    void (*perturbation_add)(const edge_opt_host *host, uint64_t seed, uint32_t group,
                             uint64_t start, uint64_t count, float alpha,
                             const float *scale, float *values);

    /**
     * `size` bytes, 64-byte aligned and zero-filled, counted against the run's memory
     * budget. NULL when the budget or the system cannot give them (the plugin then
     * fails with EDGE_OPT_ERROR_OUT_OF_MEMORY) and for size 0. The plugin owns the
     * block until it passes it to mem_free of the same table, at the latest in
     * config_destroy or destroy (the host frees, and reports, what is left then).
     */
    void *(*mem_alloc)(const edge_opt_host *host, uint64_t size);

    /** Frees a block from mem_alloc; NULL is ignored. */
    void (*mem_free)(const edge_opt_host *host, void *block);

    /** A one-line message at an EDGE_OPT_LOG_* level. The host copies `message`
     *  during the call. */
    void (*log)(const edge_opt_host *host, int32_t level, const char *message);
};

/* ------------------------------------------------------------------------------ */
/* Options                                                                         */
/* ------------------------------------------------------------------------------ */

/** A setter's type as stored in edge_opt_option.setter: cast from one of the typed
 *  setters below with EDGE_OPT_SETTER, and called back with exactly that type. */
typedef void (*edge_opt_setter_fn)(void);
#define EDGE_OPT_SETTER(fn) ((edge_opt_setter_fn)(fn))

/**
 * Typed setters. The host parses `name=value` from its command line, checks the
 * value against the option's type and calls the setter through libffi with an
 * argument of the declared C type. `config` is a config from config_create, before
 * any create that should see the value; setters are never called on an instance (an
 * option fixes what an instance allocates; to change one, create a new instance and
 * load the state). A string value is owned by the host and valid during the call
 * only: copy it. Return EDGE_OPT_OK, or EDGE_OPT_ERROR_INVALID_ARGUMENT with a
 * message ("must be in [0, 1)") for a value out of range, leaving the config as it
 * was. Same thread rules as any config call.
 */
typedef edge_opt_status (*edge_opt_set_bool_fn)(void *config, bool value, const char **message);
typedef edge_opt_status (*edge_opt_set_int64_fn)(void *config, int64_t value, const char **message);
typedef edge_opt_status (*edge_opt_set_double_fn)(void *config, double value, const char **message);
typedef edge_opt_status (*edge_opt_set_string_fn)(void *config, const char *value, const char **message);

/**
 * One declared option. Owned by the plugin; lives as long as the library is loaded
 * (a static const object). config_create must give every option its declared
 * default. Only the default_* field of the option's type is read.
 */
typedef struct edge_opt_option {
    uint32_t struct_size;        /* sizeof(edge_opt_option) */
    uint32_t struct_version;     /* EDGE_OPT_OPTION_VERSION */
    const char *name;            /* [A-Za-z0-9_.-]+, unique within the plugin: "momentum" */
    const char *help;            /* one line with the unit: "momentum on g (0 = none)" */
    uint32_t type;               /* EDGE_OPT_TYPE_* */
    uint32_t reserved0;
    edge_opt_setter_fn setter;   /* EDGE_OPT_SETTER(a setter of the type's signature) */
    int64_t default_int64;
    double default_double;
    const char *default_string;  /* non-NULL for a string option */
    uint32_t default_bool;       /* 0 or 1 */
    uint32_t reserved1;
} edge_opt_option;

/* ------------------------------------------------------------------------------ */
/* Creating an instance                                                            */
/* ------------------------------------------------------------------------------ */

/**
 * The trainable groups an instance updates: group g has group_counts[g] float32
 * values (its name only for messages). Owned by the host, valid during create
 * only: copy what is needed. The same groups, in the same order and with the same
 * counts, come in every step.
 */
typedef struct edge_opt_create_info {
    uint32_t struct_size;            /* sizeof(edge_opt_create_info) */
    uint32_t struct_version;         /* EDGE_OPT_CREATE_INFO_VERSION */
    uint32_t group_count;
    uint32_t reserved0;
    const char *const *group_names;  /* [group_count] UTF-8 names */
    const uint64_t *group_counts;    /* [group_count] values per group, each >= 1 */
} edge_opt_create_info;

/* ------------------------------------------------------------------------------ */
/* A step                                                                          */
/* ------------------------------------------------------------------------------ */

/**
 * Everything one optimizer step gets. Owned by the host, valid during step only.
 *
 * The engine measured, for each direction j in [0, direction_count), the losses
 * L+_j at theta + epsilon * s (.) z_j and L-_j at theta - epsilon * s (.) z_j, where z_j
 * is the perturbation of seeds[j] (perturbation_fill with that seed) and s the
 * instance's perturbation scale (perturbation_scale; 1 when it has none), and
 * derivatives[j] = d_j, the directional derivative (L+_j - L-_j) / (2 epsilon)
 * (one-sided estimators: (L+_j - L_0) / epsilon, with losses_minus[j] = NaN; after
 * clipping when the run clips). The gradient estimate for group g is
 *
 *     g = (1/n) * sum_j d_j * s (.) z_j,   n = max(1, direction_count)
 *
 * (summed in the order of j, each term added as perturbation_add does with
 * alpha = d_j / n). When dense is non-NULL the engine has already formed g, and
 * transformed it (e.g. projected it onto a subspace, as textual inversion's
 * subspace gradient does): dense[g] is g for group g, to be used instead of the
 * directions (which are still given, e.g. for curvature estimates).
 *
 * The plugin updates values[g][0 .. group_counts[g]) in place. Everything except
 * `values` is read-only; no pointer is kept after the call.
 */
typedef struct edge_opt_step_args {
    uint32_t struct_size;           /* sizeof(edge_opt_step_args) */
    uint32_t struct_version;        /* EDGE_OPT_STEP_ARGS_VERSION */
    uint64_t step;                  /* 1-based step number */
    float learning_rate;            /* eta for this step (the schedule applied) */
    float epsilon;                  /* the perturbation size */
    uint32_t direction_count;       /* n >= 0 */
    uint32_t group_count;           /* as at create */
    const uint64_t *seeds;          /* [direction_count] */
    const float *derivatives;       /* [direction_count] d_j */
    const float *losses_plus;       /* [direction_count] L+_j */
    const float *losses_minus;      /* [direction_count] L-_j; NaN for one-sided estimates */
    float unperturbed_loss;         /* L_0 at theta, when has_unperturbed_loss */
    uint32_t has_unperturbed_loss;  /* 1 when the plugin asked for it and it was measured */
    float *const *values;           /* [group_count] the groups' values, updated in place */
    const uint64_t *group_counts;   /* [group_count] as at create */
    const float *const *dense;      /* NULL, or [group_count] the dense estimates g */
} edge_opt_step_args;

/* ------------------------------------------------------------------------------ */
/* The plugin                                                                      */
/* ------------------------------------------------------------------------------ */

/**
 * A plugin's descriptor, returned by edge_optimizer_entry. Owned by the plugin;
 * lives as long as the library is loaded (a static object), and is never written
 * by the host. All strings are UTF-8 and static. Functions marked "required" must
 * be non-NULL; the host refuses the plugin otherwise.
 *
 * `config` and `instance` are the plugin's own opaque objects, owned by the plugin
 * and handed back to it; the host never looks inside.
 */
typedef struct edge_opt_plugin {
    uint32_t struct_size;      /* sizeof(edge_opt_plugin) */
    uint32_t struct_version;   /* EDGE_OPT_PLUGIN_VERSION */
    const char *name;          /* required: short id, [a-z0-9_-]+: "zo-adam" */
    const char *version;       /* required: the plugin's own version: "1.0.0" */
    const char *description;   /* one line, or NULL */
    uint32_t flags;            /* EDGE_OPT_PLUGIN_* */
    uint32_t option_count;
    const edge_opt_option *const *options; /* [option_count] pointers, NULL if none */

    /** Required. A new config holding every option's default, or NULL when out of
     *  memory. `host` stays valid until config_destroy returns. Any thread. */
    void *(*config_create)(const edge_opt_host *host);

    /** Required. Frees a config (and the messages it holds). Instances created
     *  from it are unaffected. NULL is ignored. */
    void (*config_destroy)(void *config);

    /**
     * Required. A new instance for `info`'s groups with the options in `config`,
     * in *instance. `config` is not changed (except for the message it may hold)
     * and may be destroyed right after: the instance copies what it needs.
     * `host` stays valid until this instance's destroy returns; allocate the state
     * with host->mem_alloc so that it counts against the memory budget. On failure
     * *instance stays NULL, nothing leaks, and *message lives in the config.
     */
    edge_opt_status (*create)(const edge_opt_host *host, void *config,
                              const edge_opt_create_info *info, void **instance,
                              const char **message);

    /** Required. Frees an instance and everything it allocated. NULL is ignored. */
    void (*destroy)(void *instance);

    /**
     * Required. One update of args->values in place (see edge_opt_step_args).
     * Validates everything first; a failure leaves the values and the instance's
     * state exactly as they were.
     */
    edge_opt_status (*step)(void *instance, const edge_opt_step_args *args,
                            const char **message);

    /** Required. Bytes save_state writes; fixed for the life of the instance. */
    uint64_t (*state_size)(void *instance);

    /**
     * Required. Writes the state (moments, curvature, step counters) into
     * bytes[0 .. size); `size` equals state_size. `bytes` is owned by the host.
     * Loading it into an instance created with the same options and groups must
     * make its next step bit-identical to this instance's next step. Put a magic
     * number and a format version at the start of the state so that load_state
     * can refuse a foreign one.
     */
    edge_opt_status (*save_state)(void *instance, void *bytes, uint64_t size,
                                  const char **message);

    /** Required. Replaces the state with one save_state wrote, bytes[0 .. size),
     *  owned by the host. EDGE_OPT_ERROR_BAD_STATE, with the instance unchanged,
     *  for a wrong size or a foreign state. */
    edge_opt_status (*load_state)(void *instance, const void *bytes, uint64_t size,
                                  const char **message);

    /**
     * Optional. The per-value scale s of the perturbation for group `group`
     * (HiZOO's Sigma^-1/2): [group_counts[group]] floats, finite and positive, owned
     * by the instance and valid until the next step, load_state or destroy on it.
     * NULL (or a NULL function) means s = 1.
     */
    const float *(*perturbation_scale)(void *instance, uint32_t group);
} edge_opt_plugin;

/* ------------------------------------------------------------------------------ */
/* Negotiation and the entry symbol                                                */
/* ------------------------------------------------------------------------------ */

/**
 * The version handshake; its layout is frozen for every major version. The host
 * fills the first four fields and zeroes the rest; the plugin fills the rest.
 * Owned by the host, valid during the entry call only.
 */
typedef struct edge_opt_negotiation {
    uint32_t struct_size;       /* in: sizeof(edge_opt_negotiation) */
    uint32_t struct_version;    /* in: EDGE_OPT_NEGOTIATION_VERSION */
    uint32_t host_abi_major;    /* in: the ABI the host speaks */
    uint32_t host_abi_minor;    /* in */
    uint32_t plugin_abi_major;  /* out: the ABI the plugin speaks; set also when refusing */
    uint32_t plugin_abi_minor;  /* out */
    const edge_opt_plugin *plugin; /* out: the descriptor, or NULL when refusing */
    const char *message;        /* out: why the plugin refused (static), or NULL */
} edge_opt_negotiation;

/**
 * The entry: answers the host's version, and returns EDGE_OPT_OK with
 * negotiation->plugin set, or EDGE_OPT_ERROR_UNSUPPORTED_VERSION with plugin NULL
 * when it cannot speak the host's major. It is the first call into the plugin, and
 * the only one made before the host has checked the versions.
 */
typedef edge_opt_status (*edge_opt_entry_fn)(edge_opt_negotiation *negotiation);

#ifndef EDGE_OPT_NO_ENTRY_PROTOTYPE
EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation);
#endif

/**
 * The usual body of edge_optimizer_entry for a plugin that speaks exactly this
 * header's major:  return edge_opt_negotiate(negotiation, &my_plugin);
 */
static inline edge_opt_status edge_opt_negotiate(edge_opt_negotiation *negotiation,
                                                 const edge_opt_plugin *plugin) {
    if (negotiation == NULL || negotiation->struct_size < EDGE_OPT_NEGOTIATION_SIZE_V1) {
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    negotiation->plugin_abi_major = EDGE_OPT_ABI_MAJOR;
    negotiation->plugin_abi_minor = EDGE_OPT_ABI_MINOR;
    if (negotiation->host_abi_major != EDGE_OPT_ABI_MAJOR) {
        negotiation->plugin = NULL;
        negotiation->message = "the plugin speaks only ABI major " EDGE_OPT_STRINGIFY(EDGE_OPT_ABI_MAJOR);
        return EDGE_OPT_ERROR_UNSUPPORTED_VERSION;
    }
    negotiation->plugin = plugin;
    negotiation->message = NULL;
    return EDGE_OPT_OK;
}

/* ------------------------------------------------------------------------------ */
/* Layout pins                                                                     */
/* ------------------------------------------------------------------------------ */

#ifdef __cplusplus
#define EDGE_OPT_STATIC_ASSERT(condition, message) static_assert(condition, message)
#else
#define EDGE_OPT_STATIC_ASSERT(condition, message) _Static_assert(condition, message)
#endif

/* Offset and size of one field. */
#define EDGE_OPT_PIN(type, field, offset, size)                                        \
    EDGE_OPT_STATIC_ASSERT(offsetof(type, field) == (offset), #type "." #field " offset"); \
    EDGE_OPT_STATIC_ASSERT(sizeof(((const type *)0)->field) == (size), #type "." #field " size")

EDGE_OPT_STATIC_ASSERT(sizeof(void *) == 8, "the edge_optimizer ABI is defined for 64-bit targets");
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_setter_fn) == 8, "function pointers are 8 bytes");
EDGE_OPT_STATIC_ASSERT(sizeof(bool) == 1, "bool is one byte");
EDGE_OPT_STATIC_ASSERT(sizeof(float) == 4 && sizeof(double) == 8, "IEEE 754 binary32 and binary64");

EDGE_OPT_PIN(edge_opt_negotiation, struct_size, 0, 4);
EDGE_OPT_PIN(edge_opt_negotiation, struct_version, 4, 4);
EDGE_OPT_PIN(edge_opt_negotiation, host_abi_major, 8, 4);
EDGE_OPT_PIN(edge_opt_negotiation, host_abi_minor, 12, 4);
EDGE_OPT_PIN(edge_opt_negotiation, plugin_abi_major, 16, 4);
EDGE_OPT_PIN(edge_opt_negotiation, plugin_abi_minor, 20, 4);
EDGE_OPT_PIN(edge_opt_negotiation, plugin, 24, 8);
EDGE_OPT_PIN(edge_opt_negotiation, message, 32, 8);
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_negotiation) == EDGE_OPT_NEGOTIATION_SIZE_V1, "edge_opt_negotiation size");

EDGE_OPT_PIN(edge_opt_host, struct_size, 0, 4);
EDGE_OPT_PIN(edge_opt_host, struct_version, 4, 4);
EDGE_OPT_PIN(edge_opt_host, abi_major, 8, 4);
EDGE_OPT_PIN(edge_opt_host, abi_minor, 12, 4);
EDGE_OPT_PIN(edge_opt_host, context, 16, 8);
EDGE_OPT_PIN(edge_opt_host, perturbation_fill, 24, 8);
EDGE_OPT_PIN(edge_opt_host, perturbation_add, 32, 8);
EDGE_OPT_PIN(edge_opt_host, mem_alloc, 40, 8);
EDGE_OPT_PIN(edge_opt_host, mem_free, 48, 8);
EDGE_OPT_PIN(edge_opt_host, log, 56, 8);
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_host) == EDGE_OPT_HOST_SIZE_V1, "edge_opt_host size");

EDGE_OPT_PIN(edge_opt_option, struct_size, 0, 4);
EDGE_OPT_PIN(edge_opt_option, struct_version, 4, 4);
EDGE_OPT_PIN(edge_opt_option, name, 8, 8);
EDGE_OPT_PIN(edge_opt_option, help, 16, 8);
EDGE_OPT_PIN(edge_opt_option, type, 24, 4);
EDGE_OPT_PIN(edge_opt_option, reserved0, 28, 4);
EDGE_OPT_PIN(edge_opt_option, setter, 32, 8);
EDGE_OPT_PIN(edge_opt_option, default_int64, 40, 8);
EDGE_OPT_PIN(edge_opt_option, default_double, 48, 8);
EDGE_OPT_PIN(edge_opt_option, default_string, 56, 8);
EDGE_OPT_PIN(edge_opt_option, default_bool, 64, 4);
EDGE_OPT_PIN(edge_opt_option, reserved1, 68, 4);
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_option) == EDGE_OPT_OPTION_SIZE_V1, "edge_opt_option size");

EDGE_OPT_PIN(edge_opt_create_info, struct_size, 0, 4);
EDGE_OPT_PIN(edge_opt_create_info, struct_version, 4, 4);
EDGE_OPT_PIN(edge_opt_create_info, group_count, 8, 4);
EDGE_OPT_PIN(edge_opt_create_info, reserved0, 12, 4);
EDGE_OPT_PIN(edge_opt_create_info, group_names, 16, 8);
EDGE_OPT_PIN(edge_opt_create_info, group_counts, 24, 8);
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_create_info) == EDGE_OPT_CREATE_INFO_SIZE_V1, "edge_opt_create_info size");

EDGE_OPT_PIN(edge_opt_step_args, struct_size, 0, 4);
EDGE_OPT_PIN(edge_opt_step_args, struct_version, 4, 4);
EDGE_OPT_PIN(edge_opt_step_args, step, 8, 8);
EDGE_OPT_PIN(edge_opt_step_args, learning_rate, 16, 4);
EDGE_OPT_PIN(edge_opt_step_args, epsilon, 20, 4);
EDGE_OPT_PIN(edge_opt_step_args, direction_count, 24, 4);
EDGE_OPT_PIN(edge_opt_step_args, group_count, 28, 4);
EDGE_OPT_PIN(edge_opt_step_args, seeds, 32, 8);
EDGE_OPT_PIN(edge_opt_step_args, derivatives, 40, 8);
EDGE_OPT_PIN(edge_opt_step_args, losses_plus, 48, 8);
EDGE_OPT_PIN(edge_opt_step_args, losses_minus, 56, 8);
EDGE_OPT_PIN(edge_opt_step_args, unperturbed_loss, 64, 4);
EDGE_OPT_PIN(edge_opt_step_args, has_unperturbed_loss, 68, 4);
EDGE_OPT_PIN(edge_opt_step_args, values, 72, 8);
EDGE_OPT_PIN(edge_opt_step_args, group_counts, 80, 8);
EDGE_OPT_PIN(edge_opt_step_args, dense, 88, 8);
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_step_args) == EDGE_OPT_STEP_ARGS_SIZE_V1, "edge_opt_step_args size");

EDGE_OPT_PIN(edge_opt_plugin, struct_size, 0, 4);
EDGE_OPT_PIN(edge_opt_plugin, struct_version, 4, 4);
EDGE_OPT_PIN(edge_opt_plugin, name, 8, 8);
EDGE_OPT_PIN(edge_opt_plugin, version, 16, 8);
EDGE_OPT_PIN(edge_opt_plugin, description, 24, 8);
EDGE_OPT_PIN(edge_opt_plugin, flags, 32, 4);
EDGE_OPT_PIN(edge_opt_plugin, option_count, 36, 4);
EDGE_OPT_PIN(edge_opt_plugin, options, 40, 8);
EDGE_OPT_PIN(edge_opt_plugin, config_create, 48, 8);
EDGE_OPT_PIN(edge_opt_plugin, config_destroy, 56, 8);
EDGE_OPT_PIN(edge_opt_plugin, create, 64, 8);
EDGE_OPT_PIN(edge_opt_plugin, destroy, 72, 8);
EDGE_OPT_PIN(edge_opt_plugin, step, 80, 8);
EDGE_OPT_PIN(edge_opt_plugin, state_size, 88, 8);
EDGE_OPT_PIN(edge_opt_plugin, save_state, 96, 8);
EDGE_OPT_PIN(edge_opt_plugin, load_state, 104, 8);
EDGE_OPT_PIN(edge_opt_plugin, perturbation_scale, 112, 8);
EDGE_OPT_STATIC_ASSERT(sizeof(edge_opt_plugin) == EDGE_OPT_PLUGIN_SIZE_V1, "edge_opt_plugin size");

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* EDGE_OPTIMIZER_H */
