/* The element-wise driver: the variant registry, granularity walks and thread splitting. */
#include "quant/quant.h"

#include <stdlib.h>
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
    /* ceil(C / B) without C + B - 1, which wraps for a block near SIZE_MAX */
    return L->outer * (L->C / L->block + (L->C % L->block != 0)) * L->inner;
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
    const size_t nb = B ? C / B + (C % B != 0) : C;
    if (lo >= hi) return;
    /* divide once, then step (o, c, i) along with lo */
    size_t o = lo / CI, r = lo % CI, c = r / inner, i = r % inner, len;
    while (lo < hi) {
        if (inner > 1) {
            len = QC_MIN(inner - i, hi - lo);
            if (B == 0) fn(ctx, lo, len, c, 0);
            else fn(ctx, lo, len, (o * nb + c / B) * inner + i, 1);
            i += len;
            if (i == inner) {
                i = 0;
                c++;
            }
        } else {
            if (B == 0) {
                len = QC_MIN(C - c, hi - lo);
                fn(ctx, lo, len, c, 1);
            } else {
                len = QC_MIN(QC_MIN((c / B + 1) * B, C) - c, hi - lo);
                fn(ctx, lo, len, o * nb + c / B, 0);
            }
            c += len;
        }
        if (c == C) {
            c = 0;
            o++;
        }
        lo += len;
    }
}

/* The typical run length of a layout (short per-axis runs use the periodic buffers below). */
static size_t run_length(const qc_layout *L) {
    if (L->per_tensor) return qc_layout_size(L);
    if (L->inner > 1) return L->inner;
    return L->block ? QC_MIN(L->block, L->C) : L->C;
}

/* Task t of ntasks covers [chunk_start(t), chunk_start(t + 1)): near-equal chunks starting at
 * multiples of 64 elements (no two threads write one cache line). Each element is computed
 * independently, so the output does not depend on the split. */
static size_t chunk_start(size_t n, size_t ntasks, size_t t) {
    return t >= ntasks ? n : (n / ntasks * t) & ~(size_t)63;
}

/* ---- quantize, fake-quantize, dequantize ---- */

typedef enum { OP_QUANTIZE, OP_FAKE, OP_DEQUANTIZE, OP_QUANTIZE_EXT } op_kind;

typedef struct {
    const qc_quant_kernels *k;
    op_kind kind;
    const float *x;      /* quantize, fake */
    const uint8_t *qin;  /* dequantize */
    int is_signed;
    void *out;
    uint8_t *mask;
    const float *s, *inv, *zpf; /* inv, zpf: quantize and fake */
    const int32_t *zpi;         /* dequantize */
    const qc_qcfg *cfg;
    int nan;
    const void *xv; /* quantize_ext: float32 or bfloat16 */
} op_ctx;

static void set_nan(op_ctx *c) { __atomic_store_n(&c->nan, 1, __ATOMIC_RELAXED); }

/* Element i of the extended quantize input as float32 (bfloat16: its bits << 16, exact). */
static float ext_load(const op_ctx *c, size_t i) {
    if (c->cfg->in == QC_IN_BF16) return qc_float_of((uint32_t)((const uint16_t *)c->xv)[i] << 16);
    return ((const float *)c->xv)[i];
}

/* The extended quantize of elements [e, e + len) with parameters s[j], ... (vec) or s[0].
 * Packed 4-bit output: the kernels take whole bytes (an even count from an even element), so
 * an odd first element fills the high nibble of a byte whose low nibble this thread wrote
 * just before (chunks start at multiples of 64 elements), and an odd last element writes its
 * byte with a zero high nibble (the next run, or nothing: the padding of a short last byte). */
static int quantize_ext(op_ctx *c, size_t e, size_t len, const float *s, const float *inv,
                        const float *zp, int vec) {
    const qc_qcfg *cfg = c->cfg;
    const size_t isz = cfg->in == QC_IN_BF16 ? 2 : 4;
    uint8_t *q = c->out;
    if (cfg->out != QC_OUT_PACKED4) {
        const char *x = (const char *)c->xv + e * isz;
        return vec ? c->k->quantize_ext_vector(x, q + e, len, s, inv, zp, cfg)
                   : c->k->quantize_ext_uniform(x, q + e, len, s[0], inv[0], zp[0], cfg);
    }
    int nan = 0;
    if ((e & 1) && len) {
        float v = ext_load(c, e);
        uint8_t b = 0;
        if (v != v) nan = 1;
        else b = qc_quantize_ext_one(v, s[0], inv[0], zp[0], cfg);
        q[e / 2] = (uint8_t)((q[e / 2] & 0x0Fu) | (b << 4));
        e++;
        len--;
        if (vec) {
            s++;
            inv++;
            zp++;
        }
    }
    size_t m = len & ~(size_t)1;
    if (m) {
        const char *x = (const char *)c->xv + e * isz;
        nan |= vec ? c->k->quantize_ext_vector(x, q + e / 2, m, s, inv, zp, cfg)
                   : c->k->quantize_ext_uniform(x, q + e / 2, m, s[0], inv[0], zp[0], cfg);
    }
    if (len & 1) {
        size_t j = vec ? m : 0;
        float v = ext_load(c, e + m);
        uint8_t b = 0;
        if (v != v) nan = 1;
        else b = qc_quantize_ext_one(v, s[j], inv[j], zp[j], cfg);
        q[(e + m) / 2] = b;
    }
    return nan;
}

static void op_vector(op_ctx *c, size_t e, size_t len, const float *s, const float *inv,
                      const float *zpf, const int32_t *zpi) {
    int nan = 0;
    switch (c->kind) {
    case OP_QUANTIZE:
        nan = c->k->quantize_vector(c->x + e, (uint8_t *)c->out + e, len, s, inv, zpf, c->cfg);
        break;
    case OP_FAKE:
        nan = c->k->fake_vector(c->x + e, (float *)c->out + e, c->mask ? c->mask + e : NULL, len,
                                s, inv, zpf, c->cfg);
        break;
    case OP_DEQUANTIZE:
        c->k->dequantize_vector(c->qin + e, (float *)c->out + e, len, c->is_signed, s, zpi);
        break;
    case OP_QUANTIZE_EXT: nan = quantize_ext(c, e, len, s, inv, zpf, 1); break;
    }
    if (nan) set_nan(c);
}

static void op_run(void *vctx, size_t e, size_t len, size_t p, int vector) {
    op_ctx *c = vctx;
    int nan = 0;
    if (vector) {
        op_vector(c, e, len, c->s + p, c->inv ? c->inv + p : NULL, c->zpf ? c->zpf + p : NULL,
                  c->zpi ? c->zpi + p : NULL);
        return;
    }
    switch (c->kind) {
    case OP_QUANTIZE:
        nan = c->k->quantize_uniform(c->x + e, (uint8_t *)c->out + e, len, c->s[p], c->inv[p],
                                     c->zpf[p], c->cfg);
        break;
    case OP_FAKE:
        nan = c->k->fake_uniform(c->x + e, (float *)c->out + e, c->mask ? c->mask + e : NULL, len,
                                 c->s[p], c->inv[p], c->zpf[p], c->cfg);
        break;
    case OP_DEQUANTIZE:
        c->k->dequantize_uniform(c->qin + e, (float *)c->out + e, len, c->is_signed, c->s[p],
                                 c->zpi[p]);
        break;
    case OP_QUANTIZE_EXT: nan = quantize_ext(c, e, len, c->s + p, c->inv + p, c->zpf + p, 0); break;
    }
    if (nan) set_nan(c);
}

/* Per-axis parameters repeat with period P = C * inner over the flat index: element e uses
 * parameter ((e % P) / inner). When runs are short (few channels on the last axis, or a short
 * inner extent), the parameters are expanded once into per-element buffers of T elements
 * (a multiple of P) and the tensor is walked as long vector runs: element e reads buffer
 * entry e % T. Every kernel computes an element identically in its uniform and vector
 * forms, so this changes speed only. */
#define QC_PERIODIC_MAX 4096 /* largest period expanded */
#define QC_PERIODIC_MIN 2048 /* expanded buffers hold at least this many elements */

typedef struct {
    size_t T; /* 0: not used */
    float *s, *inv, *zpf;
    int32_t *zpi;
} periodic;

static int periodic_init(periodic *pd, const qc_layout *L, const op_ctx *c) {
    pd->T = 0;
    if (L->per_tensor || L->block || run_length(L) >= 256) return 0;
    size_t P = L->C * L->inner;
    if (P == 0 || P > QC_PERIODIC_MAX) return 0;
    size_t T = P * ((QC_PERIODIC_MIN + P - 1) / P);
    float *buf = malloc(T * (3 * sizeof(float) + sizeof(int32_t)));
    if (!buf) return 0; /* fall back to the walk */
    pd->s = buf;
    pd->inv = buf + T;
    pd->zpf = buf + 2 * T;
    pd->zpi = (int32_t *)(buf + 3 * T);
    for (size_t j = 0; j < T; j++) {
        size_t q = (j % P) / L->inner;
        pd->s[j] = c->s[q];
        pd->inv[j] = c->inv ? c->inv[q] : 0.0f;
        pd->zpf[j] = c->zpf ? c->zpf[q] : 0.0f;
        pd->zpi[j] = c->zpi ? c->zpi[q] : 0;
    }
    pd->T = T;
    return 1;
}

typedef struct {
    const qc_layout *L;
    size_t n, ntasks;
    const periodic *pd;
    op_ctx *op;
} split_ctx;

static void op_range(const split_ctx *sc, size_t lo, size_t hi) {
    const periodic *pd = sc->pd;
    if (!pd->T) {
        walk(sc->L, lo, hi, op_run, sc->op);
        return;
    }
    while (lo < hi) {
        size_t j = lo % pd->T, len = QC_MIN(pd->T - j, hi - lo);
        op_vector(sc->op, lo, len, pd->s + j, pd->inv + j, pd->zpf + j, pd->zpi + j);
        lo += len;
    }
}

static void split_task(void *vctx, size_t t) {
    const split_ctx *sc = vctx;
    op_range(sc, chunk_start(sc->n, sc->ntasks, t), chunk_start(sc->n, sc->ntasks, t + 1));
}

static int run_op(const qc_layout *L, op_ctx *op) {
    size_t n = qc_layout_size(L);
    if (n == 0) return 0;
    periodic pd;
    periodic_init(&pd, L, op);
    split_ctx sc = {L, n, qc_quant_ntasks(n), &pd, op};
    if (sc.ntasks <= 1) op_range(&sc, 0, n);
    else qc_parallel_for(sc.ntasks, split_task, &sc);
    if (pd.T) free(pd.s);
    return op->nan;
}

int qc_quantize_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, uint8_t *q,
                    const float *s, const float *inv, const float *zpf, const qc_qcfg *cfg) {
    op_ctx c = {k, OP_QUANTIZE, x, NULL, 0, q, NULL, s, inv, zpf, NULL, cfg, 0, NULL};
    return run_op(L, &c);
}

int qc_quantize_ext_run(const qc_quant_kernels *k, const qc_layout *L, const void *x, uint8_t *q,
                        const float *s, const float *inv, const float *zpf, const qc_qcfg *cfg) {
    op_ctx c = {k, OP_QUANTIZE_EXT, NULL, NULL, 0, q, NULL, s, inv, zpf, NULL, cfg, 0, x};
    return run_op(L, &c);
}

int qc_fake_quantize_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, float *y,
                         uint8_t *mask, const float *s, const float *inv, const float *zpf,
                         const qc_qcfg *cfg) {
    op_ctx c = {k, OP_FAKE, x, NULL, 0, y, mask, s, inv, zpf, NULL, cfg, 0, NULL};
    return run_op(L, &c);
}

void qc_dequantize_run(const qc_quant_kernels *k, const qc_layout *L, const uint8_t *q,
                       int is_signed, float *y, const float *s, const int32_t *zp) {
    op_ctx c = {k, OP_DEQUANTIZE, NULL, q, is_signed, y, NULL, s, NULL, NULL, zp, NULL, 0, NULL};
    run_op(L, &c);
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

/* Short per-axis runs: fold x into per-element accumulators of T = k * P entries (element e
 * into entry e % T, as the periodic buffers above), then fold those into the P / inner
 * parameters. min/max are exact, so the grouping does not change the result. Returns 0 when
 * the layout does not qualify (or memory is short): the caller walks instead. */
static int minmax_periodic(mm_ctx *c, mm_task *task, size_t lo, size_t hi) {
    const qc_layout *L = c->L;
    if (L->per_tensor || L->block || run_length(L) >= 256) return 0;
    size_t P = L->C * L->inner;
    if (P == 0 || P > QC_PERIODIC_MAX) return 0;
    size_t T = P * ((QC_PERIODIC_MIN + P - 1) / P);
    float *amn = malloc(2 * T * sizeof(float));
    if (!amn) return 0;
    float *amx = amn + T;
    fill(amn, T, INFINITY);
    fill(amx, T, -INFINITY);
    int nan = 0;
    while (lo < hi) {
        size_t j = lo % T, len = QC_MIN(T - j, hi - lo);
        nan |= c->k->minmax_vector(c->x + lo, len, amn + j, amx + j);
        lo += len;
    }
    for (size_t j = 0; j < T; j++) {
        size_t q = (j % P) / L->inner;
        task->mn[q] = amn[j] < task->mn[q] ? amn[j] : task->mn[q];
        task->mx[q] = amx[j] > task->mx[q] ? amx[j] : task->mx[q];
    }
    free(amn);
    if (nan) __atomic_store_n(&c->nan, 1, __ATOMIC_RELAXED);
    return 1;
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
    size_t lo = chunk_start(c->n, c->ntasks, t), hi = chunk_start(c->n, c->ntasks, t + 1);
    if (!minmax_periodic(c, &task, lo, hi)) walk(c->L, lo, hi, minmax_one, &task);
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
