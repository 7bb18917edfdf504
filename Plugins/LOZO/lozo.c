/*
 * LOZO / SubZero-style low-rank perturbations, through ABI 1.1's perturbation hook
 * ("Enhancing Zeroth-order Fine-tuning for Language Models with Low-rank
 * Structures", Chen et al., 2024; SubZero, Yu et al., 2024, perturbs in a random
 * low-rank subspace the same way). For a matrix group of shape (rows, cols) and
 * direction j of step t the plugin chooses
 *
 *   p_j = U_j V^T / sqrt(r)      U_j (rows, r) = z(seed_j),  V (cols, r) = z(v_seed)
 *
 * instead of the engine's z: the engine measures L(theta +- eps p_j) and hands the
 * seeds back, and the step regenerates U_j and V to form
 *
 *   g = (1/n) sum_j d_j p_j = ((1/n) sum_j d_j U_j) V^T / sqrt(r)
 *   theta <- theta - eta (g + lambda theta)
 *
 * V is shared by every direction and kept for `period` steps (LOZO's lazy sampling
 * of V), then resampled: v_seed is mixed with the last step's first seed, so it
 * follows the run's seed and is saved in the state (16 bytes). The division by
 * sqrt(r) gives every entry of p unit variance, as z has, so epsilon and the
 * learning rate mean what they mean for ZO-SGD. Nothing of a direction is stored:
 * U_j is regenerated from its seed with host->perturbation_fill, V from v_seed.
 * With row_shared the directions are p_j = u_j 1^T, u_j (rows) = z(seed_j): every
 * value of a row moves by one factor, a space of `rows` dimensions per matrix (for
 * QZO, each output row's block scales scaled together), and V plays no part.
 * Groups of rank 1 (a new token's embedding) get the engine's own z and a ZO-SGD
 * step. Needs ABI 1.1's shapes (refused from a 1.0 create_info, naming the field).
 * A dense estimate from the engine (never given to a plugin with the hook by this
 * host) is used as ZO-SGD would.
 * Plain C11, against edge_optimizer.h alone.
 */

#include "edge_optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct lozo_config {
    const edge_opt_host *host;
    int64_t rank, period;
    double weight_decay;
    bool row_shared;
    char message[200];
} lozo_config;

typedef struct lozo_instance {
    const edge_opt_host *host;
    uint64_t rank, period; /* rank 1 when row_shared */
    float weight_decay;
    bool row_shared;
    uint32_t group_count;
    uint64_t *group_counts; /* (group_count) */
    uint64_t *rows, *cols;  /* (group_count); rows = 0 for a vector group */
    float *u, *v, *acc;     /* (largest rows * r), (largest cols * r), (largest rows * r) */
    uint64_t v_seed, steps;
    char message[200];
} lozo_instance;

typedef struct lozo_state {
    char magic[4];           /* "LOZO" */
    uint32_t format_version; /* 1 */
    uint64_t v_seed;
    uint64_t steps;
} lozo_state;

#define LOZO_INITIAL_V_SEED 0x4C4F5A4F56534545ull

/* splitmix64's finalizer: the next V seed from the old one and a seed of the run. */
static uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* ---- options ---------------------------------------------------------------- */

static edge_opt_status set_rank(void *config, int64_t value, const char **message) {
    lozo_config *c = (lozo_config *)config;
    if (value < 1 || value > 256) {
        snprintf(c->message, sizeof c->message, "rank must be in [1, 256], got %lld", (long long)value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->rank = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_period(void *config, int64_t value, const char **message) {
    lozo_config *c = (lozo_config *)config;
    if (value < 1) {
        snprintf(c->message, sizeof c->message, "period must be >= 1 step, got %lld", (long long)value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->period = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_weight_decay(void *config, double value, const char **message) {
    lozo_config *c = (lozo_config *)config;
    if (!(value >= 0 && value < 1)) {
        snprintf(c->message, sizeof c->message, "weight_decay must be in [0, 1), got %g", value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->weight_decay = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_row_shared(void *config, bool value, const char **message) {
    (void)message;
    ((lozo_config *)config)->row_shared = value;
    return EDGE_OPT_OK;
}

static const edge_opt_option rank_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "rank",
    "rank r of each matrix group's perturbation U V^T (1 to 256)",
    EDGE_OPT_TYPE_INT64, 0, EDGE_OPT_SETTER(set_rank), 2, 0.0, NULL, 0, 0,
};
static const edge_opt_option period_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "period",
    "steps between resamplings of V (LOZO's nu)",
    EDGE_OPT_TYPE_INT64, 0, EDGE_OPT_SETTER(set_period), 50, 0.0, NULL, 0, 0,
};
static const edge_opt_option weight_decay_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "weight_decay",
    "weight decay lambda: theta -= eta * (g + lambda * theta) (0 = none)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_weight_decay), 0, 0.0, NULL, 0, 0,
};
static const edge_opt_option row_shared_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "row_shared",
    "one factor per matrix row: p = u 1^T instead of U V^T (rank and period then unused)",
    EDGE_OPT_TYPE_BOOL, 0, EDGE_OPT_SETTER(set_row_shared), 0, 0.0, NULL, 0, 0,
};
static const edge_opt_option *const options[] = {&rank_option, &period_option, &weight_decay_option, &row_shared_option};

/* ---- config ----------------------------------------------------------------- */

static void *config_create(const edge_opt_host *host) {
    lozo_config *c = (lozo_config *)host->mem_alloc(host, sizeof(lozo_config));
    if (c == NULL) return NULL;
    c->host = host;
    c->rank = 2;
    c->period = 50;
    c->weight_decay = 0.0;
    c->row_shared = false;
    return c;
}

static void config_destroy(void *config) {
    lozo_config *c = (lozo_config *)config;
    if (c != NULL) c->host->mem_free(c->host, c);
}

/* ---- instance --------------------------------------------------------------- */

static void destroy(void *instance) {
    lozo_instance *s = (lozo_instance *)instance;
    if (s == NULL) return;
    const edge_opt_host *host = s->host;
    host->mem_free(host, s->group_counts);
    host->mem_free(host, s->rows);
    host->mem_free(host, s->cols);
    host->mem_free(host, s->u);
    host->mem_free(host, s->v);
    host->mem_free(host, s->acc);
    host->mem_free(host, s);
}

static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                              void **instance, const char **message) {
    lozo_config *c = (lozo_config *)config;
    if (info == NULL || info->struct_size < EDGE_OPT_CREATE_INFO_SIZE_V1 || info->group_count == 0) {
        *message = "create needs at least one group";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    if (!EDGE_OPT_HAS_FIELD(info, edge_opt_create_info, group_dims) || info->group_ranks == NULL || info->group_dims == NULL) {
        *message = "lozo needs the groups' shapes (edge_opt_create_info.group_ranks and group_dims, ABI 1.1); "
                   "this host wrote a 1.0 create_info";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    lozo_instance *s = (lozo_instance *)host->mem_alloc(host, sizeof(lozo_instance));
    if (s == NULL) {
        *message = "out of memory for the instance";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->host = host;
    s->row_shared = c->row_shared;
    s->rank = c->row_shared ? 1 : (uint64_t)c->rank;
    s->period = (uint64_t)c->period;
    s->weight_decay = (float)c->weight_decay;
    s->group_count = info->group_count;
    s->v_seed = LOZO_INITIAL_V_SEED;
    s->group_counts = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    s->rows = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    s->cols = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    if (!s->group_counts || !s->rows || !s->cols) goto out_of_memory;
    uint64_t max_rows = 1, max_cols = 1;
    for (uint32_t g = 0; g < info->group_count; g++) {
        const uint32_t rank = info->group_ranks[g];
        const uint64_t *dims = info->group_dims + (uint64_t)g * EDGE_OPT_MAX_RANK;
        if (rank < 1 || rank > EDGE_OPT_MAX_RANK) {
            snprintf(c->message, sizeof c->message, "group %u: edge_opt_create_info.group_ranks is %u (1 to 4)", g, rank);
            destroy(s);
            *message = c->message;
            return EDGE_OPT_ERROR_INVALID_ARGUMENT;
        }
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
        /* Low rank only where it is low: a matrix with both sides above r. */
        const int matrix = rank >= 2 && rows > s->rank && cols > s->rank;
        s->rows[g] = matrix ? rows : 0;
        s->cols[g] = matrix ? cols : 0;
        if (matrix && rows > max_rows) max_rows = rows;
        if (matrix && cols > max_cols) max_cols = cols;
    }
    s->u = (float *)host->mem_alloc(host, sizeof(float) * max_rows * s->rank);
    s->acc = (float *)host->mem_alloc(host, sizeof(float) * max_rows * s->rank);
    s->v = (float *)host->mem_alloc(host, sizeof(float) * max_cols * s->rank);
    if (!s->u || !s->v || !s->acc) goto out_of_memory;
    *instance = s;
    return EDGE_OPT_OK;

out_of_memory:
    destroy(s);
    *message = "out of memory for the low-rank factors";
    return EDGE_OPT_ERROR_OUT_OF_MEMORY;
}

/* ---- the perturbation hook --------------------------------------------------- */

/* out (rows, cols) = A V^T / sqrt(r), A (rows, r), V (cols, r) row-major. */
static void low_rank_product(const float *a, const float *v, uint64_t rows, uint64_t cols, uint64_t r, float scale,
                             float *out) {
    for (uint64_t i = 0; i < rows; i++) {
        for (uint64_t k = 0; k < cols; k++) {
            float sum = 0;
            for (uint64_t q = 0; q < r; q++) sum += a[i * r + q] * v[k * r + q];
            out[i * cols + k] = scale * sum;
        }
    }
}

static edge_opt_status perturbation(void *instance, const edge_opt_perturbation_args *args, float *out,
                                    const char **message) {
    lozo_instance *s = (lozo_instance *)instance;
    if (args == NULL || args->struct_size < EDGE_OPT_PERTURBATION_ARGS_SIZE_V1 || args->group >= s->group_count ||
        args->count != s->group_counts[args->group]) {
        *message = "perturbation: bad arguments (group or count differ from the groups at create)";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    const uint32_t g = args->group;
    if (s->rows[g] == 0) {
        s->host->perturbation_fill(s->host, args->seed, g, 0, args->count, out);
        return EDGE_OPT_OK;
    }
    const uint64_t rows = s->rows[g], cols = s->cols[g], r = s->rank;
    s->host->perturbation_fill(s->host, args->seed, g, 0, rows * r, s->u);
    if (s->row_shared) {
        for (uint64_t i = 0; i < rows; i++) {
            for (uint64_t k = 0; k < cols; k++) out[i * cols + k] = s->u[i];
        }
        return EDGE_OPT_OK;
    }
    s->host->perturbation_fill(s->host, s->v_seed, g, 0, cols * r, s->v);
    low_rank_product(s->u, s->v, rows, cols, r, 1.0f / sqrtf((float)r), out);
    return EDGE_OPT_OK;
}

/* ---- a step ------------------------------------------------------------------ */

static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
    lozo_instance *s = (lozo_instance *)instance;
    edge_opt_status status = edge_opt_check_step(a, s->group_count, s->group_counts, message);
    if (status != EDGE_OPT_OK) return status;
    const float eta = a->learning_rate;
    const float n = (float)(a->direction_count > 0 ? a->direction_count : 1);
    const uint64_t r = s->rank;

    for (uint32_t g = 0; g < a->group_count; g++) {
        float *theta = a->values[g];
        const uint64_t count = s->group_counts[g];
        if (s->rows[g] == 0 || a->dense != NULL) {
            /* z directions (or the engine's estimate): ZO-SGD, the estimate added in place. */
            for (uint64_t i = 0; i < count; i++) theta[i] -= eta * s->weight_decay * theta[i];
            if (a->dense != NULL) {
                for (uint64_t i = 0; i < count; i++) theta[i] -= eta * a->dense[g][i];
            } else {
                for (uint32_t j = 0; j < a->direction_count; j++) {
                    s->host->perturbation_add(s->host, a->seeds[j], g, 0, count, -eta * a->derivatives[j] / n, NULL, theta);
                }
            }
            continue;
        }
        /* acc = (1/n) sum_j d_j U_j, then theta -= eta (acc V^T / sqrt r + lambda theta). */
        const uint64_t rows = s->rows[g], cols = s->cols[g];
        memset(s->acc, 0, sizeof(float) * rows * r);
        for (uint32_t j = 0; j < a->direction_count; j++) {
            s->host->perturbation_add(s->host, a->seeds[j], g, 0, rows * r, a->derivatives[j] / n, NULL, s->acc);
        }
        if (s->row_shared) {
            /* theta -= eta (acc 1^T + lambda theta) */
            for (uint64_t i = 0; i < rows; i++) {
                for (uint64_t k = 0; k < cols; k++) {
                    const uint64_t idx = i * cols + k;
                    theta[idx] -= eta * (s->acc[i] + s->weight_decay * theta[idx]);
                }
            }
            continue;
        }
        s->host->perturbation_fill(s->host, s->v_seed, g, 0, cols * r, s->v);
        const float scale = 1.0f / sqrtf((float)r);
        for (uint64_t i = 0; i < rows; i++) {
            for (uint64_t k = 0; k < cols; k++) {
                float sum = 0;
                for (uint64_t q = 0; q < r; q++) sum += s->acc[i * r + q] * s->v[k * r + q];
                const uint64_t idx = i * cols + k;
                theta[idx] -= eta * (scale * sum + s->weight_decay * theta[idx]);
            }
        }
    }
    s->steps += 1;
    if (s->steps % s->period == 0 && a->direction_count > 0) s->v_seed = mix(s->v_seed ^ a->seeds[0]);
    return EDGE_OPT_OK;
}

/* ---- state ------------------------------------------------------------------ */

static uint64_t state_size(void *instance) {
    (void)instance;
    return sizeof(lozo_state);
}

static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
    lozo_instance *s = (lozo_instance *)instance;
    if (size != sizeof(lozo_state)) {
        *message = "save_state: wrong buffer size";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    lozo_state h;
    memcpy(h.magic, "LOZO", 4);
    h.format_version = 1;
    h.v_seed = s->v_seed;
    h.steps = s->steps;
    memcpy(bytes, &h, sizeof h);
    return EDGE_OPT_OK;
}

static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
    lozo_instance *s = (lozo_instance *)instance;
    lozo_state h;
    if (size != sizeof(lozo_state)) {
        *message = "not a lozo state (wrong size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    memcpy(&h, bytes, sizeof h);
    if (memcmp(h.magic, "LOZO", 4) != 0 || h.format_version != 1) {
        *message = "not a lozo state (bad magic or format version)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    s->v_seed = h.v_seed;
    s->steps = h.steps;
    return EDGE_OPT_OK;
}

/* ---- descriptor and entry ---------------------------------------------------- */

static const edge_opt_plugin plugin = {
    sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION,
    "lozo", "1.0.0", "LOZO: low-rank U V^T perturbations per matrix group (perturbation hook), V kept for `period` steps",
    0,
    sizeof options / sizeof options[0], options,
    config_create, config_destroy, create, destroy, step,
    state_size, save_state, load_state,
    NULL, perturbation,
};

EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
    return edge_opt_negotiate(negotiation, &plugin);
}
