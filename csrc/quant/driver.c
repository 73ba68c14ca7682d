/* The element-wise driver: the variant registry, granularity walks and thread splitting. */
#include "quant/quant.h"

#include <string.h>

#include "threads/pool.h"

#ifndef QC_NO_X86
#define QC_X86_VARIANTS(fam)                                                   \
    {fam "__avx512", QC_ISA_AVX512, &qc_quant_kernels__avx512},                \
    {fam "__avx2", QC_ISA_AVX2, &qc_quant_kernels__avx2},
#else
#define QC_X86_VARIANTS(fam)
#endif

#define QC_DEFINE_FAMILY(ident, fam)                                           \
    static const qc_variant ident##_variants[] = {                             \
        QC_X86_VARIANTS(fam){fam "__scalar", QC_ISA_SCALAR, &qc_quant_kernels__scalar}}; \
    const qc_family qc_family_##ident = {                                      \
        fam, sizeof ident##_variants / sizeof ident##_variants[0], ident##_variants};

QC_DEFINE_FAMILY(quantize, "quantize")
QC_DEFINE_FAMILY(dequantize, "dequantize")
QC_DEFINE_FAMILY(fake_quantize, "fake_quantize")
QC_DEFINE_FAMILY(minmax, "minmax")

size_t qc_layout_nparams(const qc_layout *L) {
    if (L->per_tensor) return 1;
    if (L->block == 0) return L->C;
    return L->outer * ((L->C + L->block - 1) / L->block) * L->inner;
}

size_t qc_quant_ntasks(size_t n) { return qc_split_count(n, QC_QUANT_GRAIN); }

/* A run of `len` contiguous elements starting at flat index e: uniform (one parameter p) or
 * vector (parameters p, p+1, ... one per element). */
typedef void (*run_fn)(void *ctx, size_t e, size_t len, size_t p, int vector);

/* Walk the flat range [lo, hi) of the (outer, C, inner) view as runs.
 * per-axis, inner > 1:  uniform runs over i with parameter c
 * per-axis, inner == 1: vector runs over c (parameters c...)
 * blocked,  inner > 1:  vector runs over i with parameters (o, c / B, i...)
 * blocked,  inner == 1: uniform runs over the part of a block of B in this row */
static void walk(const qc_layout *L, size_t lo, size_t hi, run_fn fn, void *ctx) {
    if (L->per_tensor) {
        if (hi > lo) fn(ctx, lo, hi - lo, 0, 0);
        return;
    }
    const size_t C = L->C, inner = L->inner, B = L->block, CI = C * inner;
    const size_t nb = B ? (C + B - 1) / B : C;
    while (lo < hi) {
        size_t o = lo / CI, r = lo % CI, c = r / inner, i = r % inner, len;
        if (inner > 1) {
            len = QC_MIN(inner - i, hi - lo);
            if (B == 0) fn(ctx, lo, len, c, 0);
            else fn(ctx, lo, len, (o * nb + c / B) * inner + i, 1);
        } else if (B == 0) {
            len = QC_MIN(C - c, hi - lo);
            fn(ctx, lo, len, c, 1);
        } else {
            len = QC_MIN(QC_MIN((c / B + 1) * B, C) - c, hi - lo);
            fn(ctx, lo, len, o * nb + c / B, 0);
        }
        lo += len;
    }
}

/* Task t of ntasks covers [chunk_start(t), chunk_start(t + 1)): near-equal chunks starting at
 * multiples of 64 elements (no two threads write one cache line). Each element is computed
 * independently, so the output does not depend on the split. */
static size_t chunk_start(size_t n, size_t ntasks, size_t t) {
    return t >= ntasks ? n : (n / ntasks * t) & ~(size_t)63;
}

typedef struct {
    const qc_layout *L;
    size_t n, ntasks;
    run_fn run;
    void *op;
} split_ctx;

static void split_task(void *vctx, size_t t) {
    const split_ctx *c = vctx;
    walk(c->L, chunk_start(c->n, c->ntasks, t), chunk_start(c->n, c->ntasks, t + 1), c->run,
         c->op);
}

static void run_split(const qc_layout *L, run_fn run, void *op) {
    size_t n = qc_layout_size(L);
    if (n == 0) return;
    split_ctx c = {L, n, qc_quant_ntasks(n), run, op};
    if (c.ntasks <= 1) walk(L, 0, n, run, op);
    else qc_parallel_for(c.ntasks, split_task, &c);
}

/* ---- quantize ---- */

typedef struct {
    const qc_quant_kernels *k;
    const float *x, *s, *inv, *zp;
    void *out;
    uint8_t *mask;
    const qc_qcfg *cfg;
    int nan;
} op_ctx;

static void set_nan(op_ctx *c) { __atomic_store_n(&c->nan, 1, __ATOMIC_RELAXED); }

static void quantize_run(void *vctx, size_t e, size_t len, size_t p, int vector) {
    op_ctx *c = vctx;
    uint8_t *q = (uint8_t *)c->out + e;
    int nan = vector ? c->k->quantize_vector(c->x + e, q, len, c->s + p, c->inv + p, c->zp + p,
                                             c->cfg)
                     : c->k->quantize_uniform(c->x + e, q, len, c->s[p], c->inv[p], c->zp[p],
                                              c->cfg);
    if (nan) set_nan(c);
}

int qc_quantize_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, uint8_t *q,
                    const float *s, const float *inv, const float *zpf, const qc_qcfg *cfg) {
    op_ctx c = {k, x, s, inv, zpf, q, NULL, cfg, 0};
    run_split(L, quantize_run, &c);
    return c.nan;
}

static void fake_run(void *vctx, size_t e, size_t len, size_t p, int vector) {
    op_ctx *c = vctx;
    float *y = (float *)c->out + e;
    uint8_t *m = c->mask ? c->mask + e : NULL;
    int nan = vector ? c->k->fake_vector(c->x + e, y, m, len, c->s + p, c->inv + p, c->zp + p,
                                         c->cfg)
                     : c->k->fake_uniform(c->x + e, y, m, len, c->s[p], c->inv[p], c->zp[p],
                                          c->cfg);
    if (nan) set_nan(c);
}

int qc_fake_quantize_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, float *y,
                         uint8_t *mask, const float *s, const float *inv, const float *zpf,
                         const qc_qcfg *cfg) {
    op_ctx c = {k, x, s, inv, zpf, y, mask, cfg, 0};
    run_split(L, fake_run, &c);
    return c.nan;
}

/* ---- dequantize ---- */

typedef struct {
    const qc_quant_kernels *k;
    const uint8_t *q;
    int is_signed;
    float *y;
    const float *s;
    const int32_t *zp;
} deq_ctx;

static void dequantize_run(void *vctx, size_t e, size_t len, size_t p, int vector) {
    deq_ctx *c = vctx;
    if (vector) c->k->dequantize_vector(c->q + e, c->y + e, len, c->is_signed, c->s + p, c->zp + p);
    else c->k->dequantize_uniform(c->q + e, c->y + e, len, c->is_signed, c->s[p], c->zp[p]);
}

void qc_dequantize_run(const qc_quant_kernels *k, const qc_layout *L, const uint8_t *q,
                       int is_signed, float *y, const float *s, const int32_t *zp) {
    deq_ctx c = {k, q, is_signed, y, s, zp};
    run_split(L, dequantize_run, &c);
}

/* ---- min/max: task t folds into its own accumulators (task 0: mn/mx, others: scratch),
 * then the partial results are folded in task order. min/max are exact, so the result does
 * not depend on the split (up to the sign of zero, normalized at the end). ---- */

typedef struct {
    const qc_quant_kernels *k;
    const qc_layout *L;
    const float *x;
    float *mn, *mx, *scratch;
    size_t n, ntasks, np;
    int nan;
} mm_ctx;

typedef struct {
    mm_ctx *c;
    float *mn, *mx;
} mm_task;

static void minmax_one(void *vctx, size_t e, size_t len, size_t p, int vector) {
    mm_task *t = vctx;
    const qc_quant_kernels *k = t->c->k;
    int nan = vector ? k->minmax_vector(t->c->x + e, len, t->mn + p, t->mx + p)
                     : k->minmax_uniform(t->c->x + e, len, t->mn + p, t->mx + p);
    if (nan) __atomic_store_n(&t->c->nan, 1, __ATOMIC_RELAXED);
}

static void fill(float *a, size_t n, float v) {
    for (size_t i = 0; i < n; i++) a[i] = v;
}

static void minmax_task(void *vctx, size_t t) {
    mm_ctx *c = vctx;
    mm_task task = {c, c->mn, c->mx};
    if (t > 0) {
        task.mn = c->scratch + 2 * (t - 1) * c->np;
        task.mx = task.mn + c->np;
        fill(task.mn, c->np, INFINITY);
        fill(task.mx, c->np, -INFINITY);
    }
    walk(c->L, chunk_start(c->n, c->ntasks, t), chunk_start(c->n, c->ntasks, t + 1), minmax_one,
         &task);
}

int qc_minmax_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, float *mn,
                  float *mx, float *scratch, size_t ntasks) {
    size_t n = qc_layout_size(L), np = qc_layout_nparams(L);
    fill(mn, np, INFINITY);
    fill(mx, np, -INFINITY);
    mm_ctx c = {k, L, x, mn, mx, scratch, n, ntasks ? ntasks : 1, np, 0};
    if (n > 0) {
        if (c.ntasks <= 1) minmax_task(&c, 0);
        else qc_parallel_for(c.ntasks, minmax_task, &c);
    }
    for (size_t t = 1; t < c.ntasks; t++) {
        const float *pmn = scratch + 2 * (t - 1) * np, *pmx = pmn + np;
        for (size_t i = 0; i < np; i++) {
            mn[i] = pmn[i] < mn[i] ? pmn[i] : mn[i];
            mx[i] = pmx[i] > mx[i] ? pmx[i] : mx[i];
        }
    }
    for (size_t i = 0; i < np; i++) {
        if (mn[i] == 0.0f) mn[i] = 0.0f; /* -0.0 -> +0.0: which zero survives depends on order */
        if (mx[i] == 0.0f) mx[i] = 0.0f;
    }
    return c.nan;
}
