/*
 * PolarGrad / Muon-style steps on zeroth-order estimates: each matrix group's
 * estimate, reshaped to its logical shape (ABI 1.1: edge_opt_create_info's
 * group_ranks and group_dims), is replaced by its polar factor scaled by its nuclear
 * norm ("PolarGrad: A Class of Matrix-Gradient Optimizers from a Unifying
 * Preconditioning Perspective", Lau, Long and Su, 2025; Muon, Jordan et al., 2024, is
 * the same polar factor without the scaling):
 *
 *   G      = (1/n) sum_j d_j z_j, reshaped to (rows, cols)        (the ABI's g)
 *   U      = polar(G) = G (G^T G)^-1/2                             (Newton-Schulz)
 *   theta <- theta - eta (||G||_* U + lambda theta),  ||G||_* = tr(U^T G)
 *
 * Newton-Schulz (the cubic iteration, which converges for singular values in
 * (0, sqrt 3)): X_0 = G / ||G||_F, X_{k+1} = 1.5 X_k - 0.5 X_k (X_k^T X_k), on the
 * orientation whose Gram matrix is the smaller (cols <= rows). A group of rank 1 (a
 * new token's embedding, a norm vector) is a 1 x n matrix: its polar factor is
 * G / |G| and ||G||_* = |G|, so its step is plain ZO-SGD.
 *
 * What to expect: z is a Gaussian matrix, so with few directions G is mostly noise
 * and its singular values are spread like a random matrix's; the polar factor makes
 * them all equal, which flattens the signal's (the true gradient's) share along its
 * leading singular directions instead of boosting it. The nuclear-norm scaling keeps
 * the step's size comparable. Plugins/README.md has the measurement.
 *
 * Options: ns_steps (Newton-Schulz iterations, default 12), weight_decay. Needs
 * ABI 1.1's shapes: created from a 1.0 create_info it refuses, naming the field.
 * Plain C11, against edge_optimizer.h alone.
 */

#include "edge_optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct polar_config {
    const edge_opt_host *host;
    int64_t ns_steps;
    double weight_decay;
    char message[200];
} polar_config;

typedef struct polar_instance {
    const edge_opt_host *host;
    int64_t ns_steps;
    float weight_decay;
    uint32_t group_count;
    uint64_t *group_counts; /* (group_count) */
    uint64_t *rows, *cols;  /* (group_count) the matrix view: rows * cols = count */
    float *g, *x, *t;       /* (largest group) estimate, iterate, product */
    float *gram;            /* (largest cols^2) X^T X */
    uint64_t steps;
    char message[200];
} polar_instance;

typedef struct polar_state {
    char magic[4];           /* "PLGR" */
    uint32_t format_version; /* 1 */
    uint64_t steps;
} polar_state;

/* ---- options ---------------------------------------------------------------- */

static edge_opt_status set_ns_steps(void *config, int64_t value, const char **message) {
    polar_config *c = (polar_config *)config;
    if (value < 1 || value > 100) {
        snprintf(c->message, sizeof c->message, "ns_steps must be in [1, 100], got %lld", (long long)value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->ns_steps = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_weight_decay(void *config, double value, const char **message) {
    polar_config *c = (polar_config *)config;
    if (!(value >= 0 && value < 1)) {
        snprintf(c->message, sizeof c->message, "weight_decay must be in [0, 1), got %g", value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->weight_decay = value;
    return EDGE_OPT_OK;
}

static const edge_opt_option ns_steps_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "ns_steps",
    "Newton-Schulz iterations for the polar factor (1 to 100)",
    EDGE_OPT_TYPE_INT64, 0, EDGE_OPT_SETTER(set_ns_steps), 12, 0.0, NULL, 0, 0,
};
static const edge_opt_option weight_decay_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "weight_decay",
    "weight decay lambda: theta -= eta * (||G||_* U + lambda * theta) (0 = none)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_weight_decay), 0, 0.0, NULL, 0, 0,
};
static const edge_opt_option *const options[] = {&ns_steps_option, &weight_decay_option};

/* ---- config ----------------------------------------------------------------- */

static void *config_create(const edge_opt_host *host) {
    polar_config *c = (polar_config *)host->mem_alloc(host, sizeof(polar_config));
    if (c == NULL) return NULL;
    c->host = host;
    c->ns_steps = 12;
    c->weight_decay = 0.0;
    return c;
}

static void config_destroy(void *config) {
    polar_config *c = (polar_config *)config;
    if (c != NULL) c->host->mem_free(c->host, c);
}

/* ---- instance --------------------------------------------------------------- */

static void destroy(void *instance) {
    polar_instance *s = (polar_instance *)instance;
    if (s == NULL) return;
    const edge_opt_host *host = s->host;
    host->mem_free(host, s->group_counts);
    host->mem_free(host, s->rows);
    host->mem_free(host, s->cols);
    host->mem_free(host, s->g);
    host->mem_free(host, s->x);
    host->mem_free(host, s->t);
    host->mem_free(host, s->gram);
    host->mem_free(host, s);
}

static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                              void **instance, const char **message) {
    polar_config *c = (polar_config *)config;
    if (info == NULL || info->struct_size < EDGE_OPT_CREATE_INFO_SIZE_V1 || info->group_count == 0) {
        *message = "create needs at least one group";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    if (!EDGE_OPT_HAS_FIELD(info, edge_opt_create_info, group_dims) || info->group_ranks == NULL || info->group_dims == NULL) {
        *message = "polargrad needs the groups' shapes (edge_opt_create_info.group_ranks and group_dims, ABI 1.1); "
                   "this host wrote a 1.0 create_info";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    polar_instance *s = (polar_instance *)host->mem_alloc(host, sizeof(polar_instance));
    if (s == NULL) {
        *message = "out of memory for the instance";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->host = host;
    s->ns_steps = c->ns_steps;
    s->weight_decay = (float)c->weight_decay;
    s->group_count = info->group_count;
    s->group_counts = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    s->rows = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    s->cols = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    if (!s->group_counts || !s->rows || !s->cols) goto out_of_memory;
    uint64_t largest = 1, largest_gram = 1;
    for (uint32_t g = 0; g < info->group_count; g++) {
        const uint32_t rank = info->group_ranks[g];
        const uint64_t *dims = info->group_dims + (uint64_t)g * EDGE_OPT_MAX_RANK;
        if (rank < 1 || rank > EDGE_OPT_MAX_RANK) {
            snprintf(c->message, sizeof c->message, "group %u: edge_opt_create_info.group_ranks is %u (1 to 4)", g, rank);
            destroy(s);
            *message = c->message;
            return EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }
        /* (rows, cols): every dim but the last, then the last. */
        uint64_t rows = 1;
        for (uint32_t k = 0; k + 1 < rank; k++) rows *= dims[k];
        const uint64_t cols = dims[rank - 1];
        if (rows * cols != info->group_counts[g]) {
            snprintf(c->message, sizeof c->message, "group %u: edge_opt_create_info.group_dims multiply to %llu, not its %llu values",
                     g, (unsigned long long)(rows * cols), (unsigned long long)info->group_counts[g]);
            destroy(s);
            *message = c->message;
            return EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }
        s->group_counts[g] = info->group_counts[g];
        s->rows[g] = rows;
        s->cols[g] = cols;
        if (info->group_counts[g] > largest) largest = info->group_counts[g];
        const uint64_t small = rows < cols ? rows : cols;
        if (small * small > largest_gram) largest_gram = small * small;
    }
    s->g = (float *)host->mem_alloc(host, sizeof(float) * largest);
    s->x = (float *)host->mem_alloc(host, sizeof(float) * largest);
    s->t = (float *)host->mem_alloc(host, sizeof(float) * largest);
    s->gram = (float *)host->mem_alloc(host, sizeof(float) * largest_gram);
    if (!s->g || !s->x || !s->t || !s->gram) goto out_of_memory;
    *instance = s;
    return EDGE_OPT_OK;

out_of_memory:
    destroy(s);
    *message = "out of memory for the polar factor's buffers (3 floats per value of the largest group)";
    return EDGE_OPT_ERROR_OUT_OF_MEMORY;
}

/* X (r x c, row-major, c <= r) <- the polar factor of X, in place; t and gram are
 * scratch of r*c and c*c floats. */
static void newton_schulz(float *x, float *t, float *gram, uint64_t r, uint64_t c, int64_t steps) {
    for (int64_t it = 0; it < steps; it++) {
        /* gram = X^T X (c x c), accumulated in double. */
        for (uint64_t a = 0; a < c; a++) {
            for (uint64_t b = a; b < c; b++) {
                double sum = 0;
                for (uint64_t i = 0; i < r; i++) sum += (double)x[i * c + a] * (double)x[i * c + b];
                gram[a * c + b] = gram[b * c + a] = (float)sum;
            }
        }
        /* t = 1.5 X - 0.5 X gram */
        for (uint64_t i = 0; i < r; i++) {
            for (uint64_t b = 0; b < c; b++) {
                double sum = 0;
                for (uint64_t a = 0; a < c; a++) sum += (double)x[i * c + a] * (double)gram[a * c + b];
                t[i * c + b] = (float)(1.5 * (double)x[i * c + b] - 0.5 * sum);
            }
        }
        memcpy(x, t, sizeof(float) * r * c);
    }
}

static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
    polar_instance *s = (polar_instance *)instance;
    edge_opt_status status = edge_opt_check_step(a, s->group_count, s->group_counts, message);
    if (status != EDGE_OPT_OK) return status;
    const float eta = a->learning_rate;

    for (uint32_t g = 0; g < a->group_count; g++) {
        float *theta = a->values[g];
        const uint64_t count = s->group_counts[g], rows = s->rows[g], cols = s->cols[g];
        edge_opt_estimate(s->host, a, g, 0, count, NULL, s->g);
        double fro2 = 0;
        for (uint64_t i = 0; i < count; i++) fro2 += (double)s->g[i] * (double)s->g[i];
        const uint64_t small = rows < cols ? rows : cols;
        if (small >= 2 && fro2 > 0) {
            /* X in the orientation (r x c) with c <= r. */
            const int transposed = cols > rows;
            const uint64_t r = transposed ? cols : rows, c = transposed ? rows : cols;
            const float inv = (float)(1.0 / sqrt(fro2));
            for (uint64_t i = 0; i < rows; i++) {
                for (uint64_t k = 0; k < cols; k++) {
                    const float v = s->g[i * cols + k] * inv;
                    if (transposed) s->x[k * c + i] = v; else s->x[i * c + k] = v;
                }
            }
            newton_schulz(s->x, s->t, s->gram, r, c, s->ns_steps);
            /* ||G||_* = tr(U^T G), then theta -= eta (||G||_* U + lambda theta). */
            double nuclear = 0;
            for (uint64_t i = 0; i < rows; i++) {
                for (uint64_t k = 0; k < cols; k++) {
                    const float u = transposed ? s->x[k * c + i] : s->x[i * c + k];
                    nuclear += (double)u * (double)s->g[i * cols + k];
                }
            }
            const float scale = (float)nuclear;
            for (uint64_t i = 0; i < rows; i++) {
                for (uint64_t k = 0; k < cols; k++) {
                    const float u = transposed ? s->x[k * c + i] : s->x[i * c + k];
                    const uint64_t idx = i * cols + k;
                    theta[idx] -= eta * (scale * u + s->weight_decay * theta[idx]);
                }
            }
        } else {
            /* A vector (or a zero estimate): ||G||_* polar(G) = G. */
            for (uint64_t i = 0; i < count; i++) theta[i] -= eta * (s->g[i] + s->weight_decay * theta[i]);
        }
    }
    s->steps += 1;
    return EDGE_OPT_OK;
}

/* ---- state ------------------------------------------------------------------ */

static uint64_t state_size(void *instance) {
    (void)instance;
    return sizeof(polar_state);
}

static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
    polar_instance *s = (polar_instance *)instance;
    if (size != sizeof(polar_state)) {
        *message = "save_state: wrong buffer size";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    polar_state h;
    memcpy(h.magic, "PLGR", 4);
    h.format_version = 1;
    h.steps = s->steps;
    memcpy(bytes, &h, sizeof h);
    return EDGE_OPT_OK;
}

static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
    polar_instance *s = (polar_instance *)instance;
    polar_state h;
    if (size != sizeof(polar_state)) {
        *message = "not a polargrad state (wrong size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    memcpy(&h, bytes, sizeof h);
    if (memcmp(h.magic, "PLGR", 4) != 0 || h.format_version != 1) {
        *message = "not a polargrad state (bad magic or format version)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    s->steps = h.steps;
    return EDGE_OPT_OK;
}

/* ---- descriptor and entry ---------------------------------------------------- */

static const edge_opt_plugin plugin = {
    sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION,
    "polargrad", "1.0.0", "PolarGrad: nuclear-norm-scaled polar factor (Newton-Schulz) of each matrix group's estimate",
    0,
    sizeof options / sizeof options[0], options,
    config_create, config_destroy, create, destroy, step,
    state_size, save_state, load_state,
    NULL, NULL,
};

EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
    return edge_opt_negotiate(negotiation, &plugin);
}
