/*
 * HiZOO: zeroth-order steps preconditioned by a diagonal Hessian estimate
 * ("Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed Zeroth-Order
 * Optimizer", Zhao et al., 2024; formulas as METHODS.md states them).
 *
 *   Sigma = 1 at start (one float per parameter); s = Sigma^-1/2 is the perturbation
 *   scale this plugin gives the engine (perturbation_scale): the engine measures
 *   L+ = L(theta + eps s.z), L- = L(theta - eps s.z) and, because this plugin sets
 *   EDGE_OPT_PLUGIN_NEEDS_UNPERTURBED_LOSS, L0 = L(theta). Then, per step:
 *     g      = (1/n) sum_j d_j s.z_j             d_j = (L+_j - L-_j) / (2 eps)
 *     theta <- theta - eta (g + lambda theta)
 *     Sigma <- (1 - alpha) Sigma + alpha (1/n) sum_j |L+_j + L-_j - 2 L0| / (2 eps^2) Sigma.z_j^2
 *     Sigma is kept in [min_hessian, 1e20]; s <- Sigma^-1/2
 *   g uses the s the engine perturbed with (Sigma before this step's update), as the
 *   ABI's definition of g says; a dense estimate from the engine replaces g, and Sigma
 *   is still updated from the directions' losses.
 *
 * Option block = b > 1 (ADAHESSIAN's spatial averaging, Yao et al., AAAI 2021): the
 * step's curvature term (1/n) sum_j w_j Sigma.z_j^2 is averaged over consecutive
 * blocks of b values of a group (the last block of a group may be shorter) before it
 * enters the moving average, so that the single-probe noise of each value's estimate
 * is divided by about b, at the price of one curvature per block.
 *
 * Defaults: alpha = 1e-8 (the paper's setting with lr 1e-6; alpha does not scale with
 * the learning rate), min_hessian = 1e-4 so that no value is perturbed by more than
 * 100 eps, weight_decay = 0. Needs the two-sided estimator (losses_minus finite).
 * Plain C11, against edge_optimizer.h alone.
 */

#include "edge_optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { CHUNK = 4096 };
#define SIGMA_MAX 1e20f

typedef struct hizoo_config {
    const edge_opt_host *host;
    double alpha, min_hessian, weight_decay;
    int64_t block;
    char message[160];
} hizoo_config;

typedef struct hizoo_instance {
    const edge_opt_host *host;
    float alpha, min_hessian, weight_decay;
    uint64_t block;         /* values per block of the curvature average (1: none) */
    uint32_t group_count;
    uint64_t *group_counts; /* (group_count) */
    float **sigma;          /* (group_count) -> (group_counts[g]) diagonal Hessian estimate */
    float **scale;          /* (group_count) -> (group_counts[g]) Sigma^-1/2 */
    float *est, *z, *h;     /* (CHUNK) scratch: g, z_j, sum_j w_j z_j^2 */
    uint64_t steps;
    char message[200];
} hizoo_instance;

typedef struct hizoo_state_header {
    char magic[4];           /* "HZOO" */
    uint32_t format_version; /* 1 */
    uint64_t total_count;
    uint64_t steps;
} hizoo_state_header;

/* ---- options ---------------------------------------------------------------- */

static edge_opt_status reject(hizoo_config *c, const char **message, const char *name, double value, const char *range) {
    snprintf(c->message, sizeof c->message, "%s must be in %s, got %g", name, range, value);
    *message = c->message;
    return EDGE_OPT_ERROR_INVALID_ARGUMENT;
}

static edge_opt_status set_alpha(void *config, double value, const char **message) {
    hizoo_config *c = (hizoo_config *)config;
    if (!(value >= 0 && value <= 1)) return reject(c, message, "alpha", value, "[0, 1]");
    c->alpha = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_min_hessian(void *config, double value, const char **message) {
    hizoo_config *c = (hizoo_config *)config;
    if (!(value > 0 && value <= 1)) return reject(c, message, "min_hessian", value, "(0, 1]");
    c->min_hessian = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_weight_decay(void *config, double value, const char **message) {
    hizoo_config *c = (hizoo_config *)config;
    if (!(value >= 0 && value < 1)) return reject(c, message, "weight_decay", value, "[0, 1)");
    c->weight_decay = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_block(void *config, int64_t value, const char **message) {
    hizoo_config *c = (hizoo_config *)config;
    if (value < 1 || value > CHUNK) {
        snprintf(c->message, sizeof c->message, "block must be in [1, %d], got %lld", CHUNK, (long long)value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->block = value;
    return EDGE_OPT_OK;
}

static const edge_opt_option alpha_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "alpha",
    "rate of the Hessian estimate's moving average (independent of the learning rate)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_alpha), 0, 1e-8, NULL, 0, 0,
};
static const edge_opt_option min_hessian_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "min_hessian",
    "lower bound of the Hessian estimate; the perturbation scale is at most min_hessian^-1/2",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_min_hessian), 0, 1e-4, NULL, 0, 0,
};
static const edge_opt_option weight_decay_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "weight_decay",
    "weight decay lambda: theta -= eta * (g + lambda * theta) (0 = none)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_weight_decay), 0, 0.0, NULL, 0, 0,
};

static const edge_opt_option block_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "block",
    "average the curvature over blocks of this many consecutive values (ADAHESSIAN; 1 = per value)",
    EDGE_OPT_TYPE_INT64, 0, EDGE_OPT_SETTER(set_block), 1, 0.0, NULL, 0, 0,
};

static const edge_opt_option *const options[] = {&alpha_option, &min_hessian_option, &weight_decay_option, &block_option};

/* ---- config ----------------------------------------------------------------- */

static void *config_create(const edge_opt_host *host) {
    hizoo_config *c = (hizoo_config *)host->mem_alloc(host, sizeof(hizoo_config));
    if (c == NULL) return NULL;
    c->host = host;
    c->alpha = 1e-8;
    c->min_hessian = 1e-4;
    c->weight_decay = 0.0;
    c->block = 1;
    return c;
}

static void config_destroy(void *config) {
    hizoo_config *c = (hizoo_config *)config;
    if (c != NULL) c->host->mem_free(c->host, c);
}

/* ---- instance --------------------------------------------------------------- */

static void destroy(void *instance) {
    hizoo_instance *s = (hizoo_instance *)instance;
    if (s == NULL) return;
    const edge_opt_host *host = s->host;
    for (uint32_t g = 0; g < s->group_count; g++) {
        if (s->sigma != NULL) host->mem_free(host, s->sigma[g]);
        if (s->scale != NULL) host->mem_free(host, s->scale[g]);
    }
    host->mem_free(host, s->sigma);
    host->mem_free(host, s->scale);
    host->mem_free(host, s->est);
    host->mem_free(host, s->z);
    host->mem_free(host, s->h);
    host->mem_free(host, s->group_counts);
    host->mem_free(host, s);
}

static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                              void **instance, const char **message) {
    hizoo_config *c = (hizoo_config *)config;
    if (info == NULL || info->struct_size < EDGE_OPT_CREATE_INFO_SIZE_V1 || info->group_count == 0) {
        *message = "create needs at least one group";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    hizoo_instance *s = (hizoo_instance *)host->mem_alloc(host, sizeof(hizoo_instance));
    if (s == NULL) {
        *message = "out of memory for the instance";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->host = host;
    s->alpha = (float)c->alpha;
    s->min_hessian = (float)c->min_hessian;
    s->weight_decay = (float)c->weight_decay;
    s->block = (uint64_t)c->block;
    s->group_count = info->group_count;
    s->group_counts = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    s->sigma = (float **)host->mem_alloc(host, sizeof(float *) * info->group_count);
    s->scale = (float **)host->mem_alloc(host, sizeof(float *) * info->group_count);
    s->est = (float *)host->mem_alloc(host, sizeof(float) * CHUNK);
    s->z = (float *)host->mem_alloc(host, sizeof(float) * CHUNK);
    s->h = (float *)host->mem_alloc(host, sizeof(float) * CHUNK);
    if (!s->group_counts || !s->sigma || !s->scale || !s->est || !s->z || !s->h) goto out_of_memory;
    for (uint32_t g = 0; g < info->group_count; g++) {
        uint64_t n = info->group_counts[g];
        s->group_counts[g] = n;
        s->sigma[g] = (float *)host->mem_alloc(host, sizeof(float) * n);
        s->scale[g] = (float *)host->mem_alloc(host, sizeof(float) * n);
        if (s->sigma[g] == NULL || s->scale[g] == NULL) goto out_of_memory;
        for (uint64_t i = 0; i < n; i++) {
            s->sigma[g][i] = 1.0f;
            s->scale[g][i] = 1.0f;
        }
    }
    *instance = s;
    return EDGE_OPT_OK;

out_of_memory:
    destroy(s);
    snprintf(c->message, sizeof c->message, "out of memory for the Hessian estimate of %u groups (2 floats per value)",
             info->group_count);
    *message = c->message;
    return EDGE_OPT_ERROR_OUT_OF_MEMORY;
}

static edge_opt_status fail(hizoo_instance *s, const char **message) {
    *message = s->message;
    return EDGE_OPT_ERROR_INVALID_ARGUMENT;
}

/* Checks everything a step reads; nothing is written before this passes. */
static edge_opt_status check_step(hizoo_instance *s, const edge_opt_step_args *a, const char **message) {
    if (a == NULL || a->struct_size < EDGE_OPT_STEP_ARGS_SIZE_V1) {
        *message = "step arguments missing or too small";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    if (!isfinite(a->learning_rate) || !isfinite(a->epsilon) || !(a->epsilon > 0)) {
        snprintf(s->message, sizeof s->message, "learning rate %g or epsilon %g is not finite (epsilon must be > 0)",
                 a->learning_rate, a->epsilon);
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
    if (a->direction_count > 0 && (!a->has_unperturbed_loss || !isfinite(a->unperturbed_loss))) {
        snprintf(s->message, sizeof s->message, "needs a finite unperturbed loss L0 (got %s%g)",
                 a->has_unperturbed_loss ? "" : "none, ", a->unperturbed_loss);
        return fail(s, message);
    }
    for (uint32_t j = 0; j < a->direction_count; j++) {
        if (!isfinite(a->derivatives[j]) || !isfinite(a->losses_plus[j])) {
            snprintf(s->message, sizeof s->message, "direction %u: derivative %g, loss+ %g (must be finite)", j,
                     a->derivatives[j], a->losses_plus[j]);
            return fail(s, message);
        }
        if (!isfinite(a->losses_minus[j])) {
            snprintf(s->message, sizeof s->message,
                     "direction %u: loss- is %g; HiZOO needs the two-sided estimator (L+ and L-)", j, a->losses_minus[j]);
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

/* w_j = |L+_j + L-_j - 2 L0| / (2 eps^2), in double: the second difference is small
 * against the losses themselves. */
static float second_difference_weight(const edge_opt_step_args *a, uint32_t j) {
    const double second = (double)a->losses_plus[j] + (double)a->losses_minus[j] - 2.0 * (double)a->unperturbed_loss;
    return (float)(fabs(second) / (2.0 * (double)a->epsilon * (double)a->epsilon));
}

static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
    hizoo_instance *s = (hizoo_instance *)instance;
    edge_opt_status status = check_step(s, a, message);
    if (status != EDGE_OPT_OK) return status;

    const float eta = a->learning_rate;
    const uint32_t directions = a->direction_count;
    const float n = (float)(directions > 0 ? directions : 1);
    const float alpha = s->alpha;
    /* Chunks hold whole blocks. */
    const uint64_t chunk = (CHUNK / s->block) * s->block;

    for (uint32_t g = 0; g < a->group_count; g++) {
        float *theta = a->values[g], *sigma = s->sigma[g], *scale = s->scale[g];
        const uint64_t count = s->group_counts[g];
        for (uint64_t start = 0; start < count; start += chunk) {
            const uint64_t len = count - start < chunk ? count - start : chunk;
            /* g with the scale the engine perturbed with, and sum_j w_j z_j^2. */
            edge_opt_estimate(s->host, a, g, start, len, scale + start, s->est);
            const float *est = s->est;
            memset(s->h, 0, sizeof(float) * len);
            for (uint32_t j = 0; j < directions; j++) {
                const float w = second_difference_weight(a, j);
                s->host->perturbation_fill(s->host, a->seeds[j], g, start, len, s->z);
                for (uint64_t k = 0; k < len; k++) s->h[k] += w * (s->z[k] * s->z[k]);
            }
            /* ADAHESSIAN's spatial average over blocks of `block` values. */
            if (s->block > 1) {
                for (uint64_t b0 = 0; b0 < len; b0 += s->block) {
                    const uint64_t b1 = b0 + s->block < len ? b0 + s->block : len;
                    float sum = 0;
                    for (uint64_t k = b0; k < b1; k++) sum += s->h[k];
                    const float mean = sum / (float)(b1 - b0);
                    for (uint64_t k = b0; k < b1; k++) s->h[k] = mean;
                }
            }
            /* The update, then the Hessian estimate and the scale for the next step. */
            for (uint64_t k = 0; k < len; k++) {
                const uint64_t i = start + k;
                theta[i] -= eta * (est[k] + s->weight_decay * theta[i]);
                if (directions > 0) {
                    float next = (1 - alpha) * sigma[i] + alpha * (s->h[k] / n) * sigma[i];
                    if (!(next >= s->min_hessian)) next = s->min_hessian; /* also catches NaN */
                    if (next > SIGMA_MAX) next = SIGMA_MAX;
                    sigma[i] = next;
                    scale[i] = 1.0f / sqrtf(next);
                }
            }
        }
    }
    s->steps += 1;
    return EDGE_OPT_OK;
}

/* ---- perturbation scale ------------------------------------------------------ */

static const float *perturbation_scale(void *instance, uint32_t group) {
    hizoo_instance *s = (hizoo_instance *)instance;
    return group < s->group_count ? s->scale[group] : NULL;
}

/* ---- state ------------------------------------------------------------------ */

static uint64_t total_count(const hizoo_instance *s) {
    uint64_t total = 0;
    for (uint32_t g = 0; g < s->group_count; g++) total += s->group_counts[g];
    return total;
}

static uint64_t state_size(void *instance) {
    return sizeof(hizoo_state_header) + sizeof(float) * total_count((const hizoo_instance *)instance);
}

static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
    hizoo_instance *s = (hizoo_instance *)instance;
    if (size != state_size(s)) {
        *message = "save_state: wrong buffer size";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    hizoo_state_header h;
    memcpy(h.magic, "HZOO", 4);
    h.format_version = 1;
    h.total_count = total_count(s);
    h.steps = s->steps;
    unsigned char *p = (unsigned char *)bytes;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    for (uint32_t g = 0; g < s->group_count; g++) {
        memcpy(p, s->sigma[g], sizeof(float) * s->group_counts[g]);
        p += sizeof(float) * s->group_counts[g];
    }
    return EDGE_OPT_OK;
}

static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
    hizoo_instance *s = (hizoo_instance *)instance;
    hizoo_state_header h;
    if (size != state_size(s)) {
        *message = "not a hizoo state for these groups (wrong size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    memcpy(&h, bytes, sizeof h);
    if (memcmp(h.magic, "HZOO", 4) != 0 || h.format_version != 1 || h.total_count != total_count(s)) {
        *message = "not a hizoo state for these groups (bad magic, format version or size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    /* Every value must be a Hessian estimate this plugin could have made. */
    const unsigned char *p = (const unsigned char *)bytes + sizeof h;
    for (uint64_t i = 0; i < h.total_count; i++) {
        float x;
        memcpy(&x, p + sizeof(float) * i, sizeof x);
        if (!(x >= s->min_hessian && x <= SIGMA_MAX)) {
            snprintf(s->message, sizeof s->message, "saved Hessian estimate %g at value %llu is outside [min_hessian, 1e20]",
                     x, (unsigned long long)i);
            *message = s->message;
            return EDGE_OPT_ERROR_BAD_STATE;
        }
    }
    for (uint32_t g = 0; g < s->group_count; g++) {
        memcpy(s->sigma[g], p, sizeof(float) * s->group_counts[g]);
        p += sizeof(float) * s->group_counts[g];
        for (uint64_t i = 0; i < s->group_counts[g]; i++) s->scale[g][i] = 1.0f / sqrtf(s->sigma[g][i]);
    }
    s->steps = h.steps;
    return EDGE_OPT_OK;
}

/* ---- descriptor and entry ---------------------------------------------------- */

static const edge_opt_plugin plugin = {
    sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION,
    "hizoo", "1.1.0", "HiZOO: zeroth-order steps preconditioned by a diagonal Hessian estimate (plain C)",
    EDGE_OPT_PLUGIN_NEEDS_UNPERTURBED_LOSS,
    sizeof options / sizeof options[0], options,
    config_create, config_destroy, create, destroy, step,
    state_size, save_state, load_state,
    perturbation_scale,
    NULL, /* perturbation: the engine's z */
};

EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
    return edge_opt_negotiate(negotiation, &plugin);
}
