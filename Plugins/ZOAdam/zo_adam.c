/*
 * ZO-Adam: Adam's moments on the zeroth-order gradient estimate g = (1/n) sum_j d_j z_j
 * (or the engine's dense estimate), with decoupled weight decay (AdamW):
 *
 *   m <- beta1 m + (1 - beta1) g          v <- beta2 v + (1 - beta2) g^2
 *   m^ = m / (1 - beta1^t)                v^ = v / (1 - beta2^t)     (bias_correction)
 *   theta <- theta - eta (m^ / (sqrt(v^) + eps) + lambda theta)
 *
 * Two floats of state per parameter (METHODS.md: "ZO-Adam: Adam moments on d.z").
 * Defaults are Kingma & Ba's (beta 0.9/0.999, eps 1e-8), which ZO-Bench also uses;
 * ZOODiP's textual inversion uses a much larger denominator, eps=1e-3, which damps the
 * steps of coordinates whose estimates are tiny.
 *
 * g is formed chunk by chunk with the host's perturbation_add, the same float
 * operations as the engine's own estimate, so nothing of the parameters' size is
 * allocated besides the two moments. Plain C11, against edge_optimizer.h alone.
 */

#include "edge_optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { CHUNK = 4096 };

typedef struct adam_config {
    const edge_opt_host *host;
    double beta1, beta2, eps, weight_decay;
    bool bias_correction;
    char message[160];
} adam_config;

typedef struct adam_instance {
    const edge_opt_host *host;
    float beta1, beta2, eps, weight_decay;
    bool bias_correction;
    uint32_t group_count;
    uint64_t *group_counts; /* (group_count) */
    float **m;              /* (group_count) -> (group_counts[g]) first moments */
    float **v;              /* (group_count) -> (group_counts[g]) second moments */
    float *g;               /* (CHUNK) scratch for the estimate */
    uint64_t t;             /* completed steps */
    char message[200];
} adam_instance;

/* State: this header, then every group's m, then every group's v. */
typedef struct adam_state_header {
    char magic[4];           /* "ZADM" */
    uint32_t format_version; /* 1 */
    uint64_t total_count;    /* sum of the group counts */
    uint64_t t;
} adam_state_header;

/* ---- options ---------------------------------------------------------------- */

static edge_opt_status reject(adam_config *c, const char **message, const char *name, double value, const char *range) {
    snprintf(c->message, sizeof c->message, "%s must be in %s, got %g", name, range, value);
    *message = c->message;
    return EDGE_OPT_ERROR_INVALID_ARGUMENT;
}

static edge_opt_status set_beta1(void *config, double value, const char **message) {
    adam_config *c = (adam_config *)config;
    if (!(value >= 0 && value < 1)) return reject(c, message, "beta1", value, "[0, 1)");
    c->beta1 = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_beta2(void *config, double value, const char **message) {
    adam_config *c = (adam_config *)config;
    if (!(value >= 0 && value < 1)) return reject(c, message, "beta2", value, "[0, 1)");
    c->beta2 = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_eps(void *config, double value, const char **message) {
    adam_config *c = (adam_config *)config;
    if (!(value > 0 && value < 1e30)) return reject(c, message, "eps", value, "(0, 1e30)");
    c->eps = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_weight_decay(void *config, double value, const char **message) {
    adam_config *c = (adam_config *)config;
    if (!(value >= 0 && value < 1)) return reject(c, message, "weight_decay", value, "[0, 1)");
    c->weight_decay = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_bias_correction(void *config, bool value, const char **message) {
    (void)message;
    ((adam_config *)config)->bias_correction = value;
    return EDGE_OPT_OK;
}

static const edge_opt_option beta1_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "beta1", "decay of the first moment (mean of g)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_beta1), 0, 0.9, NULL, 0, 0,
};
static const edge_opt_option beta2_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "beta2", "decay of the second moment (mean of g^2)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_beta2), 0, 0.999, NULL, 0, 0,
};
static const edge_opt_option eps_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "eps",
    "added to sqrt(v) in the denominator (ZOODiP uses 1e-3)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_eps), 0, 1e-8, NULL, 0, 0,
};
static const edge_opt_option weight_decay_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "weight_decay",
    "decoupled weight decay lambda (AdamW): theta -= eta * lambda * theta (0 = none)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_weight_decay), 0, 0.0, NULL, 0, 0,
};
static const edge_opt_option bias_correction_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "bias_correction",
    "divide the moments by 1 - beta^t (Adam's bias correction)",
    EDGE_OPT_TYPE_BOOL, 0, EDGE_OPT_SETTER(set_bias_correction), 0, 0.0, NULL, 1, 0,
};

static const edge_opt_option *const options[] = {
    &beta1_option, &beta2_option, &eps_option, &weight_decay_option, &bias_correction_option,
};

/* ---- config ----------------------------------------------------------------- */

static void *config_create(const edge_opt_host *host) {
    adam_config *c = (adam_config *)host->mem_alloc(host, sizeof(adam_config));
    if (c == NULL) return NULL;
    c->host = host;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = 0.0;
    c->bias_correction = true;
    return c;
}

static void config_destroy(void *config) {
    adam_config *c = (adam_config *)config;
    if (c != NULL) c->host->mem_free(c->host, c);
}

/* ---- instance --------------------------------------------------------------- */

static void destroy(void *instance) {
    adam_instance *s = (adam_instance *)instance;
    if (s == NULL) return;
    const edge_opt_host *host = s->host;
    for (uint32_t g = 0; g < s->group_count; g++) {
        if (s->m != NULL) host->mem_free(host, s->m[g]);
        if (s->v != NULL) host->mem_free(host, s->v[g]);
    }
    host->mem_free(host, s->m);
    host->mem_free(host, s->v);
    host->mem_free(host, s->g);
    host->mem_free(host, s->group_counts);
    host->mem_free(host, s);
}

static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                              void **instance, const char **message) {
    adam_config *c = (adam_config *)config;
    if (info == NULL || info->struct_size < EDGE_OPT_CREATE_INFO_SIZE_V1 || info->group_count == 0) {
        *message = "create needs at least one group";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    adam_instance *s = (adam_instance *)host->mem_alloc(host, sizeof(adam_instance));
    if (s == NULL) {
        *message = "out of memory for the instance";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->host = host;
    s->beta1 = (float)c->beta1;
    s->beta2 = (float)c->beta2;
    s->eps = (float)c->eps;
    s->weight_decay = (float)c->weight_decay;
    s->bias_correction = c->bias_correction;
    s->group_count = info->group_count;
    s->group_counts = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    s->m = (float **)host->mem_alloc(host, sizeof(float *) * info->group_count);
    s->v = (float **)host->mem_alloc(host, sizeof(float *) * info->group_count);
    s->g = (float *)host->mem_alloc(host, sizeof(float) * CHUNK);
    if (s->group_counts == NULL || s->m == NULL || s->v == NULL || s->g == NULL) goto out_of_memory;
    for (uint32_t g = 0; g < info->group_count; g++) {
        uint64_t n = info->group_counts[g];
        s->group_counts[g] = n;
        s->m[g] = (float *)host->mem_alloc(host, sizeof(float) * n); /* zero-filled by the host */
        s->v[g] = (float *)host->mem_alloc(host, sizeof(float) * n);
        if (s->m[g] == NULL || s->v[g] == NULL) goto out_of_memory;
    }
    *instance = s;
    return EDGE_OPT_OK;

out_of_memory:
    destroy(s);
    snprintf(c->message, sizeof c->message, "out of memory for the moments of %u groups (2 floats per value)",
             info->group_count);
    *message = c->message;
    return EDGE_OPT_ERROR_OUT_OF_MEMORY;
}

static edge_opt_status fail(adam_instance *s, const char **message) {
    *message = s->message;
    return EDGE_OPT_ERROR_INVALID_ARGUMENT;
}

/* Checks everything a step reads; nothing is written before this passes. */
static edge_opt_status check_step(adam_instance *s, const edge_opt_step_args *a, const char **message) {
    if (a == NULL || a->struct_size < EDGE_OPT_STEP_ARGS_SIZE_V1) {
        *message = "step arguments missing or too small";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    if (!isfinite(a->learning_rate) || !isfinite(a->epsilon)) {
        snprintf(s->message, sizeof s->message, "learning rate %g or epsilon %g is not finite", a->learning_rate, a->epsilon);
        return fail(s, message);
    }
    if (a->group_count != s->group_count) {
        snprintf(s->message, sizeof s->message, "step has %u groups, the instance was created for %u", a->group_count, s->group_count);
        return fail(s, message);
    }
    for (uint32_t g = 0; g < a->group_count; g++) {
        if (a->group_counts[g] != s->group_counts[g] || a->values[g] == NULL) {
            snprintf(s->message, sizeof s->message, "group %u has %llu values, the instance was created for %llu", g,
                     (unsigned long long)a->group_counts[g], (unsigned long long)s->group_counts[g]);
            return fail(s, message);
        }
    }
    for (uint32_t j = 0; j < a->direction_count; j++) {
        if (!isfinite(a->derivatives[j])) {
            snprintf(s->message, sizeof s->message, "directional derivative %u is %g", j, a->derivatives[j]);
            return fail(s, message);
        }
    }
    if (a->dense != NULL) {
        for (uint32_t g = 0; g < a->group_count; g++) {
            for (uint64_t i = 0; i < s->group_counts[g]; i++) {
                if (!isfinite(a->dense[g][i])) {
                    snprintf(s->message, sizeof s->message, "dense estimate of group %u is %g at index %llu", g,
                             a->dense[g][i], (unsigned long long)i);
                    return fail(s, message);
                }
            }
        }
    }
    return EDGE_OPT_OK;
}

static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
    adam_instance *s = (adam_instance *)instance;
    edge_opt_status status = check_step(s, a, message);
    if (status != EDGE_OPT_OK) return status;

    const uint64_t t = s->t + 1;
    const float eta = a->learning_rate;
    const float b1 = s->beta1, b2 = s->beta2;
    /* Bias corrections in double, applied as float factors. */
    const float c1 = s->bias_correction ? (float)(1.0 / (1.0 - pow((double)b1, (double)t))) : 1.0f;
    const float c2 = s->bias_correction ? (float)(1.0 / (1.0 - pow((double)b2, (double)t))) : 1.0f;

    for (uint32_t g = 0; g < a->group_count; g++) {
        float *theta = a->values[g];
        float *m = s->m[g], *v = s->v[g];
        const uint64_t count = s->group_counts[g];
        for (uint64_t start = 0; start < count; start += CHUNK) {
            const uint64_t len = count - start < CHUNK ? count - start : CHUNK;
            /* g for this chunk: the dense estimate, or (1/n) sum_j d_j z_j. */
            edge_opt_estimate(s->host, a, g, start, len, NULL, s->g);
            const float *est = s->g;
            /* The moments and the update. */
            for (uint64_t k = 0; k < len; k++) {
                const uint64_t i = start + k;
                const float gi = est[k];
                m[i] = b1 * m[i] + (1 - b1) * gi;
                v[i] = b2 * v[i] + (1 - b2) * (gi * gi);
                const float mh = m[i] * c1, vh = v[i] * c2;
                theta[i] -= eta * (mh / (sqrtf(vh) + s->eps) + s->weight_decay * theta[i]);
            }
        }
    }
    s->t = t;
    return EDGE_OPT_OK;
}

/* ---- state ------------------------------------------------------------------ */

static uint64_t total_count(const adam_instance *s) {
    uint64_t total = 0;
    for (uint32_t g = 0; g < s->group_count; g++) total += s->group_counts[g];
    return total;
}

static uint64_t state_size(void *instance) {
    return sizeof(adam_state_header) + 2 * sizeof(float) * total_count((const adam_instance *)instance);
}

static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
    adam_instance *s = (adam_instance *)instance;
    if (size != state_size(s)) {
        *message = "save_state: wrong buffer size";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    adam_state_header h;
    memcpy(h.magic, "ZADM", 4);
    h.format_version = 1;
    h.total_count = total_count(s);
    h.t = s->t;
    unsigned char *p = (unsigned char *)bytes;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    for (uint32_t g = 0; g < s->group_count; g++) {
        memcpy(p, s->m[g], sizeof(float) * s->group_counts[g]);
        p += sizeof(float) * s->group_counts[g];
    }
    for (uint32_t g = 0; g < s->group_count; g++) {
        memcpy(p, s->v[g], sizeof(float) * s->group_counts[g]);
        p += sizeof(float) * s->group_counts[g];
    }
    return EDGE_OPT_OK;
}

static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
    adam_instance *s = (adam_instance *)instance;
    adam_state_header h;
    if (size != state_size(s)) {
        *message = "not a zo-adam state for these groups (wrong size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    memcpy(&h, bytes, sizeof h);
    if (memcmp(h.magic, "ZADM", 4) != 0 || h.format_version != 1 || h.total_count != total_count(s)) {
        *message = "not a zo-adam state for these groups (bad magic, format version or size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    const unsigned char *p = (const unsigned char *)bytes + sizeof h;
    for (uint32_t g = 0; g < s->group_count; g++) {
        memcpy(s->m[g], p, sizeof(float) * s->group_counts[g]);
        p += sizeof(float) * s->group_counts[g];
    }
    for (uint32_t g = 0; g < s->group_count; g++) {
        memcpy(s->v[g], p, sizeof(float) * s->group_counts[g]);
        p += sizeof(float) * s->group_counts[g];
    }
    s->t = h.t;
    return EDGE_OPT_OK;
}

/* ---- descriptor and entry ---------------------------------------------------- */

static const edge_opt_plugin plugin = {
    sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION,
    "zo-adam", "1.0.0", "ZO-Adam: Adam moments on the zeroth-order estimate g = d z (plain C)",
    0, /* flags */
    sizeof options / sizeof options[0], options,
    config_create, config_destroy, create, destroy, step,
    state_size, save_state, load_state,
    NULL, /* perturbation_scale: s = 1 */
    NULL, /* perturbation: the engine's z */
};

EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
    return edge_opt_negotiate(negotiation, &plugin);
}
