/*
 * M-FAC: the inverse of an empirical Fisher built from a sliding window of the last
 * m gradient estimates, applied matrix-free in O(d m) per step ("M-FAC: Efficient
 * Matrix-Free Approximations of Second-Order Information", Frantar, Kurtic and
 * Alistarh, NeurIPS 2021). Here the window holds zeroth-order estimates:
 *
 *   g_t    = (1/n) sum_j d_j z_j  (all groups, back to back: d values)
 *   W      = the last k <= m estimates, g_t included, as rows (k, d)
 *   F      = lambda I + (1/k) W^T W
 *   u      = lambda F^-1 g_t = g_t - W^T (k lambda I + W W^T)^-1 W g_t   (Woodbury)
 *   theta <- theta - eta (u + wd theta)
 *
 * The Gram matrix K = W W^T (k, k) is kept up to date with one dot product per
 * window row when an estimate enters (O(d m)); the k x k system is solved by
 * Cholesky in double (O(m^3), m is small). lambda is relative to the window:
 * k lambda = damp * mean_i |w_i|^2, so damp = 1 halves the step along a typical
 * window vector and directions outside the window's span pass unchanged (lambda F^-1
 * is the identity there, so the learning rate means what it means for ZO-SGD).
 *
 * What to expect: every estimate in the window is the true gradient plus a large,
 * nearly orthogonal noise term (z is random), so the one direction the window's
 * rows share is the signal: the Fisher's largest eigenvalue lies along it, and its
 * inverse damps the signal more than any single noise direction. Plugins/README.md
 * has the measurement.
 *
 * Memory: the window, m * d floats, and K (m^2 doubles), all through mem_alloc; the
 * state saves both. Options: window (m, default 8), damp (default 1), weight_decay.
 * Plain C11, against edge_optimizer.h alone.
 */

#include "edge_optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct mfac_config {
    const edge_opt_host *host;
    int64_t window;
    double damp, weight_decay;
    char message[200];
} mfac_config;

typedef struct mfac_instance {
    const edge_opt_host *host;
    uint64_t m;             /* window size */
    float damp, weight_decay;
    uint32_t group_count;
    uint64_t *group_counts; /* (group_count) */
    uint64_t d;             /* sum of the counts */
    float *window;          /* (m, d) the last estimates, row (t mod m) the newest */
    double *gram;           /* (m, m) K = W W^T */
    double *chol, *c;       /* (m, m), (m) scratch of the solve */
    uint64_t filled, next, steps;
    char message[200];
} mfac_instance;

typedef struct mfac_state_header {
    char magic[4];           /* "MFAC" */
    uint32_t format_version; /* 1 */
    uint64_t m, d, filled, next, steps;
} mfac_state_header;

/* ---- options ---------------------------------------------------------------- */

static edge_opt_status set_window(void *config, int64_t value, const char **message) {
    mfac_config *c = (mfac_config *)config;
    if (value < 1 || value > 1024) {
        snprintf(c->message, sizeof c->message, "window must be in [1, 1024], got %lld", (long long)value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->window = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_damp(void *config, double value, const char **message) {
    mfac_config *c = (mfac_config *)config;
    if (!(value > 0 && value <= 1e6)) {
        snprintf(c->message, sizeof c->message, "damp must be in (0, 1e6], got %g", value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->damp = value;
    return EDGE_OPT_OK;
}

static edge_opt_status set_weight_decay(void *config, double value, const char **message) {
    mfac_config *c = (mfac_config *)config;
    if (!(value >= 0 && value < 1)) {
        snprintf(c->message, sizeof c->message, "weight_decay must be in [0, 1), got %g", value);
        *message = c->message;
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    c->weight_decay = value;
    return EDGE_OPT_OK;
}

static const edge_opt_option window_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "window",
    "estimates m in the sliding window (memory: m floats per trained value)",
    EDGE_OPT_TYPE_INT64, 0, EDGE_OPT_SETTER(set_window), 8, 0.0, NULL, 0, 0,
};
static const edge_opt_option damp_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "damp",
    "dampening, relative: k * lambda = damp * mean squared norm of the window's estimates",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_damp), 0, 1.0, NULL, 0, 0,
};
static const edge_opt_option weight_decay_option = {
    sizeof(edge_opt_option), EDGE_OPT_OPTION_VERSION, "weight_decay",
    "weight decay: theta -= eta * (u + wd * theta) (0 = none)",
    EDGE_OPT_TYPE_DOUBLE, 0, EDGE_OPT_SETTER(set_weight_decay), 0, 0.0, NULL, 0, 0,
};
static const edge_opt_option *const options[] = {&window_option, &damp_option, &weight_decay_option};

/* ---- config ----------------------------------------------------------------- */

static void *config_create(const edge_opt_host *host) {
    mfac_config *c = (mfac_config *)host->mem_alloc(host, sizeof(mfac_config));
    if (c == NULL) return NULL;
    c->host = host;
    c->window = 8;
    c->damp = 1.0;
    c->weight_decay = 0.0;
    return c;
}

static void config_destroy(void *config) {
    mfac_config *c = (mfac_config *)config;
    if (c != NULL) c->host->mem_free(c->host, c);
}

/* ---- instance --------------------------------------------------------------- */

static void destroy(void *instance) {
    mfac_instance *s = (mfac_instance *)instance;
    if (s == NULL) return;
    const edge_opt_host *host = s->host;
    host->mem_free(host, s->group_counts);
    host->mem_free(host, s->window);
    host->mem_free(host, s->gram);
    host->mem_free(host, s->chol);
    host->mem_free(host, s->c);
    host->mem_free(host, s);
}

static edge_opt_status create(const edge_opt_host *host, void *config, const edge_opt_create_info *info,
                              void **instance, const char **message) {
    mfac_config *c = (mfac_config *)config;
    if (info == NULL || info->struct_size < EDGE_OPT_CREATE_INFO_SIZE_V1 || info->group_count == 0) {
        *message = "create needs at least one group";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    mfac_instance *s = (mfac_instance *)host->mem_alloc(host, sizeof(mfac_instance));
    if (s == NULL) {
        *message = "out of memory for the instance";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    s->host = host;
    s->m = (uint64_t)c->window;
    s->damp = (float)c->damp;
    s->weight_decay = (float)c->weight_decay;
    s->group_count = info->group_count;
    s->group_counts = (uint64_t *)host->mem_alloc(host, sizeof(uint64_t) * info->group_count);
    if (s->group_counts == NULL) goto out_of_memory;
    for (uint32_t g = 0; g < info->group_count; g++) {
        s->group_counts[g] = info->group_counts[g];
        s->d += info->group_counts[g];
    }
    s->window = (float *)host->mem_alloc(host, sizeof(float) * s->m * s->d);
    s->gram = (double *)host->mem_alloc(host, sizeof(double) * s->m * s->m);
    s->chol = (double *)host->mem_alloc(host, sizeof(double) * s->m * s->m);
    s->c = (double *)host->mem_alloc(host, sizeof(double) * s->m);
    if (!s->window || !s->gram || !s->chol || !s->c) goto out_of_memory;
    *instance = s;
    return EDGE_OPT_OK;

out_of_memory:
    destroy(s);
    snprintf(c->message, sizeof c->message, "out of memory for a window of %lld estimates (that many floats per value)",
             (long long)c->window);
    *message = c->message;
    return EDGE_OPT_ERROR_OUT_OF_MEMORY;
}

/* The window's row i in the ring buffer's order: 0 the oldest. */
static float *row(mfac_instance *s, uint64_t slot) { return s->window + slot * s->d; }

/* Solves (A) x = b for the k x k symmetric positive definite A by Cholesky (double). */
static int cholesky_solve(double *a, uint64_t k, double *x) {
    for (uint64_t i = 0; i < k; i++) {
        for (uint64_t j = 0; j <= i; j++) {
            double sum = a[i * k + j];
            for (uint64_t q = 0; q < j; q++) sum -= a[i * k + q] * a[j * k + q];
            if (i == j) {
                if (!(sum > 0)) return 0;
                a[i * k + i] = sqrt(sum);
            } else {
                a[i * k + j] = sum / a[j * k + j];
            }
        }
    }
    for (uint64_t i = 0; i < k; i++) { /* L y = b */
        double sum = x[i];
        for (uint64_t q = 0; q < i; q++) sum -= a[i * k + q] * x[q];
        x[i] = sum / a[i * k + i];
    }
    for (uint64_t i = k; i-- > 0;) { /* L^T x = y */
        double sum = x[i];
        for (uint64_t q = i + 1; q < k; q++) sum -= a[q * k + i] * x[q];
        x[i] = sum / a[i * k + i];
    }
    return 1;
}

static edge_opt_status step(void *instance, const edge_opt_step_args *a, const char **message) {
    mfac_instance *s = (mfac_instance *)instance;
    edge_opt_status status = edge_opt_check_step(a, s->group_count, s->group_counts, message);
    if (status != EDGE_OPT_OK) return status;
    const uint64_t m = s->m, d = s->d;
    const uint64_t slot = s->next;
    float *newest = row(s, slot);

    /* The estimate into the window's next slot; its Gram row. Kept aside until the
     * solve succeeds so that a failure leaves the state as it was. */
    float *saved = s->host->mem_alloc(s->host, sizeof(float) * d);
    if (saved == NULL) {
        *message = "out of memory for a copy of the window's oldest estimate";
        return EDGE_OPT_ERROR_OUT_OF_MEMORY;
    }
    memcpy(saved, newest, sizeof(float) * d);
    uint64_t offset = 0;
    for (uint32_t g = 0; g < a->group_count; g++) {
        edge_opt_estimate(s->host, a, g, 0, s->group_counts[g], NULL, newest + offset);
        offset += s->group_counts[g];
    }
    const uint64_t filled = s->filled < m ? s->filled + 1 : m;
    double *dots = s->c; /* K[slot][i] for every filled slot */
    for (uint64_t i = 0; i < filled; i++) {
        const float *w = row(s, i);
        double sum = 0;
        for (uint64_t q = 0; q < d; q++) sum += (double)newest[q] * (double)w[q];
        dots[i] = sum;
    }
    /* M = delta I + K (k x k over the filled slots), delta = damp * mean |w|^2. */
    double trace = 0;
    for (uint64_t i = 0; i < filled; i++) trace += i == slot ? dots[slot] : s->gram[i * m + i];
    const double delta = (double)s->damp * trace / (double)filled;
    for (uint64_t i = 0; i < filled; i++) {
        for (uint64_t j = 0; j < filled; j++) {
            double k;
            if (i == slot) k = dots[j];
            else if (j == slot) k = dots[i];
            else k = s->gram[i * m + j];
            s->chol[i * filled + j] = k + (i == j ? delta : 0);
        }
    }
    /* b = W g = K[:, slot]; c = M^-1 b; u = g - W^T c. */
    double b[1024];
    for (uint64_t i = 0; i < filled; i++) b[i] = dots[i];
    if (trace > 0 && !cholesky_solve(s->chol, filled, b)) {
        memcpy(newest, saved, sizeof(float) * d);
        s->host->mem_free(s->host, saved);
        *message = "the window's Gram matrix is not positive definite (a non-finite estimate?)";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    /* Commit: the Gram row and column, then the update. */
    for (uint64_t i = 0; i < filled; i++) s->gram[slot * m + i] = s->gram[i * m + slot] = dots[i];
    offset = 0;
    for (uint32_t g = 0; g < a->group_count; g++) {
        float *theta = a->values[g];
        for (uint64_t q = 0; q < s->group_counts[g]; q++) {
            double u = (double)newest[offset + q];
            if (trace > 0) {
                for (uint64_t i = 0; i < filled; i++) u -= b[i] * (double)row(s, i)[offset + q];
            }
            theta[q] -= a->learning_rate * ((float)u + s->weight_decay * theta[q]);
        }
        offset += s->group_counts[g];
    }
    s->host->mem_free(s->host, saved);
    s->filled = filled;
    s->next = (slot + 1) % m;
    s->steps += 1;
    return EDGE_OPT_OK;
}

/* ---- state ------------------------------------------------------------------ */

static uint64_t state_size(void *instance) {
    const mfac_instance *s = (const mfac_instance *)instance;
    return sizeof(mfac_state_header) + sizeof(float) * s->m * s->d + sizeof(double) * s->m * s->m;
}

static edge_opt_status save_state(void *instance, void *bytes, uint64_t size, const char **message) {
    mfac_instance *s = (mfac_instance *)instance;
    if (size != state_size(s)) {
        *message = "save_state: wrong buffer size";
        return EDGE_OPT_ERROR_INVALID_ARGUMENT;
    }
    mfac_state_header h;
    memcpy(h.magic, "MFAC", 4);
    h.format_version = 1;
    h.m = s->m;
    h.d = s->d;
    h.filled = s->filled;
    h.next = s->next;
    h.steps = s->steps;
    unsigned char *p = (unsigned char *)bytes;
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, s->window, sizeof(float) * s->m * s->d);
    memcpy(p + sizeof h + sizeof(float) * s->m * s->d, s->gram, sizeof(double) * s->m * s->m);
    return EDGE_OPT_OK;
}

static edge_opt_status load_state(void *instance, const void *bytes, uint64_t size, const char **message) {
    mfac_instance *s = (mfac_instance *)instance;
    mfac_state_header h;
    if (size != state_size(s)) {
        *message = "not an mfac state for this window and these groups (wrong size)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    memcpy(&h, bytes, sizeof h);
    if (memcmp(h.magic, "MFAC", 4) != 0 || h.format_version != 1 || h.m != s->m || h.d != s->d || h.filled > s->m ||
        h.next >= s->m) {
        *message = "not an mfac state for this window and these groups (bad magic, version, sizes or positions)";
        return EDGE_OPT_ERROR_BAD_STATE;
    }
    const unsigned char *p = (const unsigned char *)bytes + sizeof h;
    for (uint64_t i = 0; i < s->m * s->d; i++) {
        float x;
        memcpy(&x, p + sizeof(float) * i, sizeof x);
        if (!edge_opt_is_finite(x)) {
            *message = "the saved window holds a non-finite estimate";
            return EDGE_OPT_ERROR_BAD_STATE;
        }
    }
    memcpy(s->window, p, sizeof(float) * s->m * s->d);
    memcpy(s->gram, p + sizeof(float) * s->m * s->d, sizeof(double) * s->m * s->m);
    s->filled = h.filled;
    s->next = h.next;
    s->steps = h.steps;
    return EDGE_OPT_OK;
}

/* ---- descriptor and entry ---------------------------------------------------- */

static const edge_opt_plugin plugin = {
    sizeof(edge_opt_plugin), EDGE_OPT_PLUGIN_VERSION,
    "mfac", "1.0.0", "M-FAC: inverse empirical Fisher of a sliding window of estimates, matrix-free, O(d m) per step",
    0,
    sizeof options / sizeof options[0], options,
    config_create, config_destroy, create, destroy, step,
    state_size, save_state, load_state,
    NULL, NULL,
};

EDGE_OPT_EXPORT edge_opt_status edge_optimizer_entry(edge_opt_negotiation *negotiation) {
    return edge_opt_negotiate(negotiation, &plugin);
}
