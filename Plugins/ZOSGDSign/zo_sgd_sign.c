/*
 * ZO-SGD-Sign: theta -= eta * (1/n) sum_j sign(d_j) z_j, plus decoupled weight decay.
 * Only the sign of each directional derivative is used, so the step size does not
 * depend on the loss's scale and one huge loss difference cannot throw the
 * parameters far (METHODS.md, "Other zeroth-order optimizers"). With a dense
 * estimate g (the engine transformed it), the step is sign(g) elementwise.
 *
 * Written in plain C11 against edge_optimizer.h alone, as any plugin author would:
 *   cc -std=c11 -O2 -shared -fPIC -I<include dir> zo_sgd_sign.c -o libzo-sgd-sign.so -lm
 * It keeps no state beyond its options, so its saved state is just a tagged header.
 */

#include "edge_optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Options, as set before create. */
typedef struct sign_config {
    const edge_opt_host *host;
    double weight_decay;
    char message[160]; /* the last error message of a call on this config */
} sign_config;

/* One instance: the group sizes it was made for. */
typedef struct sign_instance {
    const edge_opt_host *host;
    float weight_decay;
    uint32_t group_count;
    uint64_t *group_counts; /* (group_count), from host->mem_alloc */
    char message[160];      /* the last error message of a call on this instance */
} sign_instance;

/* The saved state: a tag and the instance's shape, so that load_state can refuse a
 * state saved by another plugin or for other groups. */
typedef struct sign_state {
    char magic[4];           /* "ZSGS" */
    uint32_t format_version; /* 1 */
    uint64_t total_count;    /* sum of the group counts */
} sign_state;

/* ---- options ---------------------------------------------------------------- */

static edge_opt_status set_weight_decay(void *config, double value, const char **message) {
    sign_config *c = (sign_config *)config;
    if (!(value >= 0 && value < 1)) {
        snprintf(c->message, sizeof c->message, "weight_decay must be in [0, 1), got %g", value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->weight_decay = value;
    return EDGE_OPT_OK;
}

static const edge_opt_option weight_decay_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION,
    "weight_decay", "decoupled weight decay lambda: theta -= eta * lambda * theta each step (0 = none)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_weight_decay),
    0, 0.0, NULL, 0, 0,
};

static const edge_opt_option *const options[] = {&weight_decay_option};

/* ---- config ----------------------------------------------------------------- */

static void *config_create(const edge_opt_host *host) {
    sign_config *c = (sign_config *)host->mem_alloc(host, sizeof(sign_config));
    if (c == NULL) return NULL;
    c->host = host;
    c->weight_decay = 0.0; /* the declared default */
    return c;
}

static void config_destroy(void *config) {
    sign_config *c = (sign_config *)config;
    if (c != NULL) c->host->mem_free(c->host, c);
}

/* ---- instance --------------------------------------------------------------- */

static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                              void **instance, const char **message) {
    sign_config *c = (sign_config *)config;
    if (info == NULL || info->struct_size < EDGE_OPT_CREATE_INFO_SIZE_V1 || info->group_count == 0) {
        *message = "create needs at least one group";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    sign_instance *s = (sign_instance *)host->mem_alloc(host, sizeof(sign_instance));
    if (s == NULL) {
        *message = "out of memory for the instance";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->group_counts = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    if (s->group_counts == NULL) {
        host->mem_free(host, s);
        snprintf(c->message, sizeof c->message, "out of memory for %u group sizes", info->group_count);
        *message = c->message;
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->host = host;
    s->weight_decay = (float)c->weight_decay;
    s->group_count = info->group_count;
    memcpy(s->group_counts, info->group_counts, sizeof(uint64_t) * info->group_count);
    *instance = s;
    return EDGE_OPT_OK;
}

static void destroy(void *instance) {
    sign_instance *s = (sign_instance *)instance;
    if (s == NULL) return;
    const edge_opt_host *host = s->host;
    host->mem_free(host, s->group_counts);
    host->mem_free(host, s);
}

static float sign_of(float x) { return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f); }

/* Checks everything a step reads; nothing is written before this passes. */
static edge_opt_status check_step(sign_instance *s, const edge_opt_step_args *a, const char **message) {
    if (a == NULL || a->struct_size < EDGE_OPT_STEP_ARGS_SIZE_V1) {
        *message = "step arguments missing or too small";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    if (!isfinite(a->learning_rate) || !isfinite(a->epsilon)) {
        snprintf(s->message, sizeof s->message, "learning rate %g or epsilon %g is not finite", a->learning_rate, a->epsilon);
        *message = s->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    if (a->group_count != s->group_count) {
        snprintf(s->message, sizeof s->message, "step has %u groups, the instance was created for %u", a->group_count, s->group_count);
        *message = s->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    for (uint32_t g = 0; g < a->group_count; g++) {
        if (a->group_counts[g] != s->group_counts[g] || a->values[g] == NULL) {
            snprintf(s->message, sizeof s->message, "group %u has %llu values, the instance was created for %llu", g,
                     (unsigned long long)a->group_counts[g], (unsigned long long)s->group_counts[g]);
            *message = s->message;
            return EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }
    }
    for (uint32_t j = 0; j < a->direction_count; j++) {
        if (!isfinite(a->derivatives[j])) {
            snprintf(s->message, sizeof s->message, "directional derivative %u is %g", j, a->derivatives[j]);
            *message = s->message;
            return EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }
    }
    if (a->dense != NULL) {
        for (uint32_t g = 0; g < a->group_count; g++) {
            for (uint64_t i = 0; i < s->group_counts[g]; i++) {
                if (!isfinite(a->dense[g][i])) {
                    snprintf(s->message, sizeof s->message, "dense estimate of group %u is %g at index %llu", g,
                             a->dense[g][i], (unsigned long long)i);
                    *message = s->message;
                    return EDGE_OPT_ERROR_INVALID_ARGUMENT;
                }
            }
        }
    }
    return EDGE_OPT_OK;
}

static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
    sign_instance *s = (sign_instance *)instance;
    edge_opt_status status = check_step(s, a, message);
    if (status != EDGE_OPT_OK) return status;

    const float eta = a->learning_rate;
    const float n = (float)(a->direction_count > 0 ? a->direction_count : 1);
    for (uint32_t g = 0; g < a->group_count; g++) {
        float *theta = a->values[g];
        const uint64_t count = s->group_counts[g];
        /* Decay first, from the values before the step. */
        if (s->weight_decay != 0) {
            for (uint64_t i = 0; i < count; i++) theta[i] -= eta * s->weight_decay * theta[i];
        }
        if (a->dense != NULL) {
            /* signSGD on the engine's estimate. */
            for (uint64_t i = 0; i < count; i++) theta[i] -= eta * sign_of(a->dense[g][i]);
        } else {
            /* theta += (-eta * sign(d_j) / n) * z_j, z_j regenerated by the host. */
            for (uint32_t j = 0; j < a->direction_count; j++) {
                const float alpha = -eta * sign_of(a->derivatives[j]) / n;
                if (alpha != 0) s->host->perturbation_add(s->host, a->seeds[j], g, 0, count, alpha, NULL, theta);
            }
        }
    }
    return EDGE_OPT_OK;
}

/* ---- state ------------------------------------------------------------------ */

static uint64_t total_count(const sign_instance *s) {
    uint64_t total = 0;
    for (uint32_t g = 0; g < s->group_count; g++) total += s->group_counts[g];
    return total;
}

static uint64_t state_size(void *instance) {
    (void)instance;
    return sizeof(sign_state);
}

static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
    sign_instance *s = (sign_instance *)instance;
    if (size != sizeof(sign_state)) {
        *message = "save_state: wrong buffer size";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    sign_state state;
    memcpy(state.magic, "ZSGS", 4);
    state.format_version = 1;
    state.total_count = total_count(s);
    memcpy(bytes, &state, sizeof state);
    return EDGE_OPT_OK;
}

static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
    sign_instance *s = (sign_instance *)instance;
    sign_state state;
    if (size != sizeof(sign_state)) {
        *message = "not a zo-sgd-sign state (wrong size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    memcpy(&state, bytes, sizeof state);
    if (memcmp(state.magic, "ZSGS", 4) != 0 || state.format_version != 1) {
        *message = "not a zo-sgd-sign state (bad magic or format version)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    if (state.total_count != total_count(s)) {
        *message = "the state was saved for groups of another size";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    return EDGE_OPT_OK;
}

/* ---- descriptor and entry ---------------------------------------------------- */

static const edge_opt_plugin plugin = {
    sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION,
    "zo-sgd-sign", "1.0.0", "ZO-SGD-Sign: theta -= eta * sign(d) * z (plain C)",
    0, /* flags */
    1, options,
    config_create, config_destroy, create, destroy, step,
    state_size, save_state, load_state,
    NULL, /* perturbation_scale: s = 1 */
    NULL, /* perturbation: the engine's z */
};

EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
    return edge_opt_negotiate(negotiation, &plugin);
}
