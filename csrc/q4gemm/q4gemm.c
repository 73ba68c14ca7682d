/* q4gemm driver: packing, per-row int8 activation quantization, GEMV/GEMM paths, threads. */
#include "q4gemm/kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gemm/dynquant.h"
#include "threads/pool.h"

static const qc_variant q4_variants[] = {
#ifndef QC_NO_X86
    {"q4gemm_8x16c32__avx512vnni", QC_ISA_AVX512VNNI, &qc_q4_kernels_avx512vnni},
    {"q4gemm_4x16c32__avx2", QC_ISA_AVX2, &qc_q4_kernels_avx2},
#endif
    {"q4gemm_4x16c32__scalar", QC_ISA_SCALAR, &qc_q4_kernels_scalar},
};

const qc_family qc_q4gemm_family = {"q4gemm", sizeof q4_variants / sizeof q4_variants[0],
                                    q4_variants};

const qc_q4_kernels *qc_q4_kernels_of(const qc_variant *v) {
    return (const qc_q4_kernels *)v->impl;
}

const qc_q4_kernels *qc_q4_select(void) {
    return qc_q4_kernels_of(qc_family_select(&qc_q4gemm_family));
}

const char *qc_q4_kernels_name(const qc_q4_kernels *k) { return k->name; }

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* a * b, or 0 when the product does not fit size_t (callers report that as too large) */
static size_t mul_size(size_t a, size_t b) {
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? 0 : r;
}

size_t qc_q4_data_size(int64_t n, int64_t k, int bits) {
    const int64_t np = (n + QC_Q4_NR - 1) / QC_Q4_NR, kp = round_up(QC_MAX(k, 1), QC_Q4_KC);
    return mul_size(mul_size((size_t)np, (size_t)kp), (size_t)bits * 2);
}

size_t qc_q4_param_count(int64_t n, int64_t k, int64_t bs) {
    const int64_t np = (n + QC_Q4_NR - 1) / QC_Q4_NR, nb = QC_MAX((k + bs - 1) / bs, 1);
    return mul_size(mul_size((size_t)np, (size_t)nb), QC_Q4_NR);
}

/* Both packings: w and zw as stored values u = w + off (off 8 for int4, 128 for int8, 0 for
 * the unsigned types; modulo 2^bits), the scales and zero points by panel, block and column. */
static void pack_bits(const int8_t *w, const float *ws, const int8_t *zw, int is_signed,
                      int64_t n, int64_t k, int64_t bs, int bits, uint8_t *data, float *sbuf,
                      uint8_t *zbuf, qc_q4_b *out) {
    const int64_t kp = round_up(QC_MAX(k, 1), QC_Q4_KC), np = (n + QC_Q4_NR - 1) / QC_Q4_NR;
    const int64_t nb = QC_MAX((k + bs - 1) / bs, 1);
    const int32_t off = is_signed ? (bits == 4 ? 8 : 128) : 0;
    memset(data, 0, qc_q4_data_size(n, k, bits));
    memset(sbuf, 0, qc_q4_param_count(n, k, bs) * sizeof(float));
    const int has_zp = zbuf != NULL;
    if (has_zp) memset(zbuf, 0, qc_q4_param_count(n, k, bs));
    for (int64_t j = 0; j < n; j++) {
        const int64_t p = j / QC_Q4_NR, c = j % QC_Q4_NR;
        uint8_t *panel = data + p * kp * bits * 2;
        const int8_t *row = w + j * k;
        for (int64_t kk = 0; kk < k; kk++) {
            const uint8_t u = (uint8_t)(row[kk] + off);
            if (bits == 8)
                panel[qc_q4_unpacked_byte(kk, (int)c)] = u;
            else
                panel[qc_q4_nibble_byte(kk, (int)c)] |=
                    (uint8_t)(qc_q4_nibble_high(kk) ? (u & 15) << 4 : u & 15);
        }
        for (int64_t b = 0; b < nb; b++) {
            sbuf[(p * nb + b) * QC_Q4_NR + c] = ws[j * nb + b];
            if (has_zp)
                zbuf[(p * nb + b) * QC_Q4_NR + c] = (uint8_t)((zw ? zw[j * nb + b] : 0) + off);
        }
    }
    out->k = k;
    out->n = n;
    out->kp = kp;
    out->bs = bs;
    out->nb = nb;
    out->np = np;
    out->bits = bits;
    out->data = data;
    out->scale = sbuf;
    out->zp = has_zp ? zbuf : NULL;
}

void qc_q4_pack(const int8_t *w, const float *ws, const int8_t *zw, int is_signed, int64_t n,
                int64_t k, int64_t bs, uint8_t *data, float *sbuf, uint8_t *zbuf, qc_q4_b *out) {
    pack_bits(w, ws, zw, is_signed, n, k, bs, 4, data, sbuf, zbuf, out);
}

void qc_q8b_pack(const int8_t *w, const float *ws, const int8_t *zw, int is_signed, int64_t n,
                 int64_t k, int64_t bs, uint8_t *data, float *sbuf, uint8_t *zbuf, qc_q4_b *out) {
    pack_bits(w, ws, zw, is_signed, n, k, bs, 8, data, sbuf, zbuf, out);
}

/* rne(x / xs) clamped to [-127, 127]: the 1.5 * 2^23 trick is exact for |v| < 2^22 in
 * round-to-nearest-even mode, and v is clamped to [-256, 256] first (+-inf included), which
 * changes nothing after the final clamp. */
QC_INLINE int8_t quantize1(float x, float xs) {
    const float magic = 12582912.0f;
    float v = x / xs;
    v = v < -256.0f ? -256.0f : v;
    v = v > 256.0f ? 256.0f : v;
    v = (v + magic) - magic;
    v = v < -127.0f ? -127.0f : v;
    v = v > 127.0f ? 127.0f : v;
    return (int8_t)v;
}

static float scale_of(float mn, float mx) {
    const float amax = fmaxf(fabsf(mn), fabsf(mx));
    const float s = amax / 127.0f;
    return s > 0.0f ? s : 1.0f;
}

void qc_q4_quantize_x(const float *x, ptrdiff_t ldx, int64_t m, int64_t k, int64_t kp,
                      int64_t bs, int per_row, int8_t *q, float *xs, int32_t *qsum) {
    const int64_t nb = QC_MAX((k + bs - 1) / bs, 1);
    float mn, mx;
    size_t nans, first;
    if (!per_row) {
        float lo = 0.0f, hi = 0.0f;
        for (int64_t i = 0; i < m; i++) {
            qc_dynq_minmax_f32(x + i * ldx, (size_t)k, &mn, &mx, &nans, &first);
            lo = mn < lo ? mn : lo;
            hi = mx > hi ? mx : hi;
        }
        const float s = scale_of(lo, hi);
        for (int64_t i = 0; i < m; i++) xs[i] = s;
    }
    for (int64_t i = 0; i < m; i++) {
        const float *xr = x + i * ldx;
        if (per_row) {
            qc_dynq_minmax_f32(xr, (size_t)k, &mn, &mx, &nans, &first);
            xs[i] = scale_of(mn, mx);
        }
        const float s = xs[i];
        int8_t *qr = q + i * kp;
        for (int64_t kk = 0; kk < k; kk++) qr[kk] = quantize1(xr[kk], s);
        memset(qr + k, 0, (size_t)(kp - k));
        for (int64_t b = 0; b < nb; b++) {
            int32_t sum = 0;
            for (int64_t kk = b * bs; kk < QC_MIN(k, (b + 1) * bs); kk++) sum += qr[kk];
            qsum[i * nb + b] = sum;
        }
    }
}

/* ---- threads: tasks are (row chunk, panel chunk) pairs ---- */

typedef struct {
    const qc_q4_args *g;
    const qc_q4_kernels *kern;
    int gemm;
    int64_t rows_per_task, panels_per_task, ntp;
    atomic_int failed;
} q4_ctx;

static void q4_task(void *vctx, size_t task) {
    q4_ctx *t = (q4_ctx *)vctx;
    const qc_q4_args *g = t->g;
    const qc_q4_b *b = g->b;
    const int64_t ti = (int64_t)task / t->ntp, tp = (int64_t)task % t->ntp;
    const int64_t i0 = ti * t->rows_per_task, i1 = QC_MIN(g->m, i0 + t->rows_per_task);
    const int64_t p0 = tp * t->panels_per_task, p1 = QC_MIN(b->np, p0 + t->panels_per_task);
    if (i0 >= i1 || p0 >= p1) return;
    uint8_t *u = NULL;
    if (b->bits == 8) { /* the panels are in the unpacked layout already: tiles in place */
        for (int64_t p = p0; p < p1; p++) {
            const int nc = (int)QC_MIN((int64_t)QC_Q4_NR, b->n - p * QC_Q4_NR);
            const int mr = t->gemm ? t->kern->mr : 1;
            for (int64_t i = i0; i < i1; i += mr)
                t->kern->tile(g, b->data + p * b->kp * 16, i, (int)QC_MIN((int64_t)mr, i1 - i),
                              p, nc);
        }
        return;
    }
    if (t->gemm) {
        u = aligned_alloc(64, (size_t)b->kp * QC_Q4_NR);
        if (!u) {
            atomic_store(&t->failed, 1);
            return;
        }
    }
    for (int64_t p = p0; p < p1; p++) {
        const int nc = (int)QC_MIN((int64_t)QC_Q4_NR, b->n - p * QC_Q4_NR);
        if (t->gemm) {
            t->kern->unpack(b, p, u);
            for (int64_t i = i0; i < i1; i += t->kern->mr)
                t->kern->tile(g, u, i, (int)QC_MIN((int64_t)t->kern->mr, i1 - i), p, nc);
        } else {
            for (int64_t i = i0; i < i1; i++) t->kern->gemv(g, i, p, nc);
        }
    }
    free(u);
}

int qc_q4_gemm(const qc_q4_args *g, const qc_q4_kernels *kern, int path) {
    const qc_q4_b *b = g->b;
    if (g->m <= 0 || b->n <= 0) return 0;
    if (!kern) kern = qc_q4_select();
    const int gemm = path == 2 || (path == 0 && g->m >= QC_Q4_GEMM_MIN_ROWS);
    const int64_t threads = qc_get_num_threads();
    /* at least ~1 M multiply-adds per task so small calls stay on one thread */
    const double work = (double)g->m * (double)b->n * (double)b->kp;
    int64_t want = (int64_t)(work / (1024.0 * 1024.0));
    want = QC_MIN(want, 4 * threads);
    if (want < 1 || threads == 1) want = 1;
    /* panels first (each task streams its own weights once); rows only when there are too
     * few panels, in multiples of the tile rows */
    int64_t ntp = QC_MIN(want, b->np);
    const int64_t ppt = (b->np + ntp - 1) / ntp;
    ntp = (b->np + ppt - 1) / ppt;
    int64_t nti = QC_MAX((int64_t)1, want / ntp);
    nti = QC_MIN(nti, (g->m + kern->mr - 1) / kern->mr);
    const int64_t rpt = round_up((g->m + nti - 1) / nti, kern->mr);
    nti = (g->m + rpt - 1) / rpt;
    q4_ctx t = {.g = g, .kern = kern, .gemm = gemm, .rows_per_task = rpt,
                .panels_per_task = ppt, .ntp = ntp};
    atomic_init(&t.failed, 0);
    qc_parallel_for((size_t)(nti * ntp), q4_task, &t);
    return atomic_load(&t.failed) ? -1 : 0;
}
