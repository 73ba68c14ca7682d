/* GEMM driver: B packing, A block packing with row sums, cache blocking, threads, registry. */
#include "gemm/kernels.h"

#include <errno.h>
#include <float.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "threads/pool.h"

#ifndef QC_NO_X86
#include <emmintrin.h> /* SSE2: part of the x86-64 baseline */
#endif

static const qc_variant gemm_variants[] = {
#ifndef QC_NO_X86
#ifdef QC_AMX_EMULATE
    /* the AMX kernel on the tile model: only where the tests force QUANTC_ISA=amxemu */
    {"gemm_32x32c4__amx_emulated", QC_ISA_AMXEMU, &qc_gemm_kernels_amxemu},
#endif
    {"gemm_32x32c4__amx", QC_ISA_AMX, &qc_gemm_kernels_amx},
    {"gemm_8x32c4__avx512vnni", QC_ISA_AVX512VNNI, &qc_gemm_kernels_avx512vnni},
    {"gemm_4x16c4__avxvnni", QC_ISA_AVXVNNI, &qc_gemm_kernels_avxvnni}, /* untested: no AVX-VNNI here */
    {"gemm_4x16c4__avx2", QC_ISA_AVX2, &qc_gemm_kernels_avx2},
#endif
    {"gemm_4x16c4__scalar", QC_ISA_SCALAR, &qc_gemm_kernels_scalar},
};

const qc_family qc_gemm_family = {"gemm", sizeof gemm_variants / sizeof gemm_variants[0],
                                  gemm_variants};

const qc_gemm_kernels *qc_gemm_kernels_of(const qc_variant *v) {
    return (const qc_gemm_kernels *)v->impl;
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---- self-check of the AMX levels (first selection) ---- */

/* xorshift32: a fixed sequence, so every process checks the same inputs */
static uint32_t sc_next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* One GEMM of the check under kernels `kern`: C into c (m * n int32 or bytes). 0 or -1 (OOM). */
static int sc_run(const qc_gemm_kernels *kern, const qc_gemm_args *tmpl, void *c) {
    qc_gemm_args g = *tmpl;
    g.kernels = kern;
    g.c = c;
    const size_t ws = qc_gemm_workspace_size(g.b->k, g.b->n);
    void *buf = aligned_alloc(64, (ws + 63) / 64 * 64);
    if (!buf) return -1;
    qc_gemm_run(&g, buf);
    free(buf);
    return 0;
}

int qc_gemm_selfcheck(const qc_variant *v, int corrupt) {
    static const int shapes[][3] = {{1, 1, 1}, {17, 65, 33}, {33, 129, 47}, {32, 64, 32},
                                    {5, 300, 16}, {48, 7, 17}};
    enum { MAXM = 48, MAXK = 300, MAXN = 47 };
    const qc_gemm_kernels *kern = qc_gemm_kernels_of(v);
    struct bufs {
        int8_t a[MAXM * MAXK], b[MAXK * MAXN], bpack[MAXK * MAXN + 64];
        int32_t za[MAXM], zb[MAXN], bias[MAXN], colsum[64], want[MAXM * MAXN], got[MAXM * MAXN];
        float scale[MAXN];
    } *w = malloc(sizeof *w);
    if (!w) {
        qc_isa_disable(v->isa, "self-check could not allocate its buffers");
        return -1;
    }
    int8_t *a = w->a, *b = w->b, *bpack = w->bpack;
    int32_t *za = w->za, *zb = w->zb, *bias = w->bias, *colsum = w->colsum;
    int32_t *want = w->want, *got = w->got;
    float *scale = w->scale;
    uint32_t st = 0x9E3779B9u;
    char why[160] = "";
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && !why[0]; s++) {
        const int m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
        for (int combo = 0; combo < 8 && !why[0]; combo++) {
            const int as = combo & 1, bs = (combo >> 1) & 1, requant = combo >> 2;
            /* values: random, with every 5th the type's minimum or maximum */
            for (int i = 0; i < m * k; i++) {
                uint32_t r = sc_next(&st);
                a[i] = (int8_t)(i % 5 == 0 ? ((r & 1) ? 0x7f : 0x80) ^ (as ? 0 : 0x80) : r >> 24);
            }
            for (int i = 0; i < k * n; i++) {
                uint32_t r = sc_next(&st);
                b[i] = (int8_t)(i % 5 == 0 ? ((r & 1) ? 0x7f : 0x80) ^ (bs ? 0 : 0x80) : r >> 24);
            }
            for (int i = 0; i < m; i++)
                za[i] = i % 3 == 0 ? (as ? -128 : 255) : (as ? (int8_t)sc_next(&st)
                                                              : (uint8_t)sc_next(&st));
            for (int j = 0; j < n; j++) {
                zb[j] = j % 3 == 0 ? (bs ? 127 : 0) : (bs ? (int8_t)sc_next(&st)
                                                          : (uint8_t)sc_next(&st));
                /* every other shape: zb' = 0 throughout (the kernels' zero-point-free paths) */
                if (s & 1) zb[j] = bs ? 0 : 128;
                bias[j] = (int32_t)sc_next(&st) >> 12;
                scale[j] = (float)(sc_next(&st) % 1000 + 1) * 1e-5f;
            }
            qc_gemm_b B;
            qc_gemm_pack_b(b, bs, n, 1, k, n, bpack, colsum, &B);
            qc_gemm_args g;
            memset(&g, 0, sizeof g);
            g.a = a;
            g.lda = k;
            g.a_signed = as;
            g.m = m;
            g.a_zp = za;
            g.a_zp_per_row = (combo ^ (int)s) & 1;
            g.b = &B;
            g.b_zp = zb;
            g.b_zp_per_col = 1;
            g.n0 = 0;
            g.n1 = n;
            g.ldc = n;
            g.out = requant ? (bs ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8) : QC_GEMM_OUT_S32;
            g.bias = requant ? bias : NULL;
            g.scale = scale;
            g.scale_per_col = 1;
            g.y_zp = requant ? (bs ? -3 : 7) : 0;
            g.relu = combo == 5;
            g.rq32 = requant && (s & 1); /* both requantization arithmetics */
            memset(want, 0, sizeof w->want);
            memset(got, 0, sizeof w->got);
            if (sc_run(&qc_gemm_kernels_scalar, &g, want) < 0 || sc_run(kern, &g, got) < 0) {
                snprintf(why, sizeof why, "self-check could not allocate its workspace");
                break;
            }
            if (corrupt) ((uint8_t *)got)[0] ^= 1;
            const size_t bytes = (size_t)m * (size_t)n * (requant ? 1 : 4);
            if (memcmp(got, want, bytes) != 0)
                snprintf(why, sizeof why,
                         "self-check failed: %s differs from the scalar kernel (m=%d k=%d n=%d, "
                         "A %s, B %s, %s output)%s", v->name, m, k, n, as ? "int8" : "uint8",
                         bs ? "int8" : "uint8", requant ? "requantized" : "int32",
                         corrupt ? " [forced by the test hook]" : "");
        }
    }
    free(w);
    if (!why[0]) return 0;
    qc_isa_disable(v->isa, why);
    return -1;
}

static pthread_mutex_t g_select_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_checked[QC_ISA_COUNT]; /* 1: that level passed its self-check */

/* (a level whose self-check the fork interrupted is checked again in the child) */
static void select_after_fork_child(void) { pthread_mutex_init(&g_select_lock, NULL); }

static void select_init_once(void) { pthread_atfork(NULL, NULL, select_after_fork_child); }

void qc_gemm_select_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, select_init_once);
}

void qc_gemm_select_hold(double seconds) {
    pthread_mutex_lock(&g_select_lock);
    if (seconds > 0) {
        struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    pthread_mutex_unlock(&g_select_lock);
}

int qc_gemm_select_busy(void) {
    if (pthread_mutex_trylock(&g_select_lock) != 0) return 1;
    pthread_mutex_unlock(&g_select_lock);
    return 0;
}

const qc_gemm_kernels *qc_gemm_select(void) {
    for (;;) {
        const qc_variant *v = qc_family_select(&qc_gemm_family);
        if (v->isa < QC_ISA_AMX || atomic_load(&g_checked[v->isa])) return qc_gemm_kernels_of(v);
        pthread_mutex_lock(&g_select_lock);
        int ok = atomic_load(&g_checked[v->isa]) || qc_gemm_selfcheck(v, 0) == 0;
        if (ok) atomic_store(&g_checked[v->isa], 1);
        pthread_mutex_unlock(&g_select_lock);
        if (ok) return qc_gemm_kernels_of(v);
        /* disabled: choose again */
    }
}

#ifndef QC_NO_X86
/* Full panel (16 columns), rows of B contiguous: four rows of 16 bytes are interleaved into one
 * 64-byte group with two rounds of unpacks (bytes, then 16-bit pairs). Column sums run in int16
 * lanes, flushed to int32 every 64 groups (256 rows: |sum| <= 256 * 128 fits int16). Returns
 * the number of rows done (a multiple of 4); the caller finishes the rest. */
static int64_t pack_panel_rows_sse2(const char *base, ptrdiff_t row_stride, int64_t k,
                                    uint8_t flip, int8_t *panel, uint32_t *sum) {
    const __m128i fl = _mm_set1_epi8((char)flip);
    __m128i s32[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(),
                      _mm_setzero_si128()};
    int64_t kk = 0;
    while (kk + 4 <= k) {
        __m128i lo16 = _mm_setzero_si128(), hi16 = _mm_setzero_si128();
        for (int it = 0; it < 64 && kk + 4 <= k; it++, kk += 4) {
            __m128i r[4];
            for (int q = 0; q < 4; q++) {
                r[q] = _mm_xor_si128(
                    _mm_loadu_si128((const __m128i *)(base + (kk + q) * row_stride)), fl);
                lo16 = _mm_add_epi16(lo16, _mm_srai_epi16(_mm_unpacklo_epi8(r[q], r[q]), 8));
                hi16 = _mm_add_epi16(hi16, _mm_srai_epi16(_mm_unpackhi_epi8(r[q], r[q]), 8));
            }
            const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpackhi_epi8(r[0], r[1]);
            const __m128i t2 = _mm_unpacklo_epi8(r[2], r[3]), t3 = _mm_unpackhi_epi8(r[2], r[3]);
            __m128i *dst = (__m128i *)(panel + (kk / 4) * 64);
            _mm_storeu_si128(dst + 0, _mm_unpacklo_epi16(t0, t2));
            _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(t0, t2));
            _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(t1, t3));
            _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(t1, t3));
        }
        s32[0] = _mm_add_epi32(s32[0], _mm_srai_epi32(_mm_unpacklo_epi16(lo16, lo16), 16));
        s32[1] = _mm_add_epi32(s32[1], _mm_srai_epi32(_mm_unpackhi_epi16(lo16, lo16), 16));
        s32[2] = _mm_add_epi32(s32[2], _mm_srai_epi32(_mm_unpacklo_epi16(hi16, hi16), 16));
        s32[3] = _mm_add_epi32(s32[3], _mm_srai_epi32(_mm_unpackhi_epi16(hi16, hi16), 16));
    }
    uint32_t tmp[16];
    for (int i = 0; i < 4; i++) _mm_storeu_si128((__m128i *)(tmp + 4 * i), s32[i]);
    for (int c = 0; c < 16; c++) sum[c] += tmp[c];
    return kk;
}
#endif

size_t qc_gemm_pack_b_size(int64_t k, int64_t n) {
    return (size_t)round_up(k, QC_GEMM_KR) * (size_t)n + 64;
}

void qc_gemm_pack_b(const void *b, int b_signed, ptrdiff_t row_stride, ptrdiff_t col_stride,
                    int64_t k, int64_t n, int8_t *data, int32_t *colsum, qc_gemm_b *out) {
    const int64_t kp = round_up(k, QC_GEMM_KR), np = round_up(n, QC_GEMM_NR);
    const char *base = (const char *)b;
    const uint8_t flip = b_signed ? 0 : 0x80; /* uint8 b -> b - 128 as int8 */
    int64_t abs_max = 0;
    memset(data, 0, qc_gemm_pack_b_size(k, n));
    for (int64_t p = 0; p < np / QC_GEMM_NR; p++) {
        int8_t *panel = data + p * kp * QC_GEMM_NR;
        const int64_t j0 = p * QC_GEMM_NR;
        const int ncols = qc_gemm_panel_width(n, p);
        const int64_t gs = 4 * ncols; /* group stride: 64, or narrower for a last panel */
        uint32_t sum[QC_GEMM_NR] = {0};
        if (col_stride == 1) {
            /* rows of B are contiguous: copy 16 bytes of each row into its k slot */
            int64_t kk = 0;
#ifndef QC_NO_X86
            if (ncols == QC_GEMM_NR)
                kk = pack_panel_rows_sse2(base + j0, row_stride, k, flip, panel, sum);
#endif
            for (; kk < k; kk++) {
                const uint8_t *src = (const uint8_t *)(base + kk * row_stride + j0);
                int8_t *dst = panel + (kk / 4) * gs + (kk % 4);
                for (int c = 0; c < ncols; c++) {
                    const int8_t v = (int8_t)(uint8_t)(src[c] ^ flip);
                    dst[c * 4] = v;
                    sum[c] += (uint32_t)(int32_t)v;
                }
            }
        } else if (row_stride == 1) {
            /* columns of B are contiguous (B = W^T): 4 bytes of k at a time per column */
            for (int c = 0; c < ncols; c++) {
                const uint8_t *src = (const uint8_t *)(base + (j0 + c) * col_stride);
                int64_t kk = 0;
                for (; kk + 4 <= k; kk += 4) {
                    int8_t *dst = panel + (kk / 4) * gs + c * 4;
                    for (int q = 0; q < 4; q++) {
                        const int8_t v = (int8_t)(uint8_t)(src[kk + q] ^ flip);
                        dst[q] = v;
                        sum[c] += (uint32_t)(int32_t)v;
                    }
                }
                for (; kk < k; kk++) {
                    const int8_t v = (int8_t)(uint8_t)(src[kk] ^ flip);
                    panel[(kk / 4) * gs + c * 4 + (kk % 4)] = v;
                    sum[c] += (uint32_t)(int32_t)v;
                }
            }
        } else {
            /* any other strides: one element at a time */
            for (int c = 0; c < ncols; c++) {
                const char *src = base + (j0 + c) * col_stride;
                for (int64_t kk = 0; kk < k; kk++) {
                    const uint8_t raw = *(const uint8_t *)(src + kk * row_stride);
                    const int8_t v = (int8_t)(uint8_t)(raw ^ flip);
                    panel[(kk / 4) * gs + c * 4 + (kk % 4)] = v;
                    sum[c] += (uint32_t)(int32_t)v;
                }
            }
        }
        for (int c = 0; c < QC_GEMM_NR; c++) colsum[j0 + c] = (int32_t)sum[c];
        /* column sums of |b'| from the packed panel (column c's bytes at 4c .. 4c + 3 of
         * each group; zero padding adds nothing) */
        int64_t asum[QC_GEMM_NR] = {0};
        for (int64_t g = 0; g < kp / 4; g++)
            for (int64_t i = 0; i < gs; i++) {
                const int v = panel[g * gs + i];
                asum[i / 4] += v < 0 ? -v : v;
            }
        for (int c = 0; c < ncols; c++) abs_max = QC_MAX(abs_max, asum[c]);
    }
    out->k = k;
    out->n = n;
    out->kp = kp;
    out->np = np;
    out->b_signed = b_signed;
    out->data = data;
    out->colsum = colsum;
    out->abs_max = abs_max;
}

/* Rows of A packed per block: enough to reuse each B block from L2 several times while the
 * A block stays in L2 (at most ~1 MiB) and never fewer than the kernel's rows. */
static int64_t block_rows(const qc_gemm_kernels *kern, int64_t kp) {
    if (kp < QC_GEMM_KR) kp = QC_GEMM_KR;
    int64_t mc = ((int64_t)1 << 20) / kp;
    if (mc > 96) mc = 96;
    mc = mc / kern->mr * kern->mr;
    return mc < kern->mr ? kern->mr : mc;
}

/* Columns per B block: kp * nc bytes ~ 384 KiB so the block stays in L2. */
static int64_t block_cols(const qc_gemm_kernels *kern, int64_t kp) {
    if (kp < QC_GEMM_KR) kp = QC_GEMM_KR;
    int64_t nc = ((int64_t)384 << 10) / kp;
    nc = nc / kern->nr * kern->nr;
    return nc < kern->nr ? kern->nr : nc;
}

#define QC_GEMM_MC_MAX 96

size_t qc_gemm_workspace_size(int64_t k, int64_t ncols) {
    const int64_t kp = round_up(k, QC_GEMM_KR);
    const int64_t ncp = round_up(ncols, QC_GEMM_NR) + 64; /* slack: full-vector loads */
    int64_t mc = ((int64_t)1 << 20) / QC_MAX(kp, QC_GEMM_KR);
    if (mc > QC_GEMM_MC_MAX) mc = QC_GEMM_MC_MAX;
    if (mc < 32) mc = 32; /* >= any kernel's mr */
    return (size_t)round_up(2 * mc * kp, 64) + (size_t)(2 * mc + 5 * ncp) * 4 + 64;
}

/* Rows per A block for a call of m rows: no more than the call needs (so a GEMV's scratch
 * is small), and the exact scratch that qc_gemm_run then uses (<= qc_gemm_workspace_size). */
static int64_t call_rows(const qc_gemm_kernels *kern, int64_t kp, int64_t m) {
    return QC_MIN(block_rows(kern, kp), round_up(QC_MAX(m, 1), kern->mr));
}

static size_t call_workspace_size(const qc_gemm_kernels *kern, int64_t k, int64_t m,
                                  int64_t ncols) {
    const int64_t kp = round_up(k, QC_GEMM_KR), mc = call_rows(kern, kp, m);
    const int64_t ncp = round_up(ncols, QC_GEMM_NR) + 64;
    return (size_t)round_up(2 * mc * kp, 64) + (size_t)(2 * mc + 5 * ncp) * 4 + 64;
}

/* The bytes of row i of A in K order, segment by segment (one segment without a_seg). */
static inline const uint8_t *a_seg_src(const qc_gemm_args *g, int64_t i, int s) {
    return (const uint8_t *)g->a + (g->a_row ? g->a_row[i] : i * g->lda) +
           (g->a_nseg > 0 ? g->a_seg[s] : 0);
}

/* Copy rows [i0, i0 + mc) of A as a' (u8, or uint16 when a16), zero-padded to kp, with their
 * row sums (0 when no_sums: every zb' of the call is 0, so no kernel uses them) and za'.
 * dst NULL: the caller reads A in place (a plain copy with kp == k and lda == kp would copy
 * it unchanged); only the row terms are filled. */
static void pack_a(const qc_gemm_args *g, int64_t i0, int64_t mc, int64_t kp, int a16,
                   int no_sums, void *dst, int32_t *rsum, int32_t *zap) {
    const int64_t k = g->b->k;
    const int nseg = g->a_nseg > 0 ? g->a_nseg : 1;
    const int64_t sl = k / nseg; /* elements per segment */
    const uint8_t flip = g->a_signed ? 0x80 : 0;
    const int32_t zoff = g->a_signed ? 128 : 0;
    for (int64_t r = 0; r < mc; r++) {
        uint32_t sum = 0;
        for (int s = 0; s < nseg && dst; s++) {
            const uint8_t *src = a_seg_src(g, i0 + r, s);
            if (!a16 && !flip && no_sums) { /* a' = a, nothing to sum: a plain copy */
                memcpy((uint8_t *)dst + r * kp + s * sl, src, (size_t)sl);
            } else if (a16) {
                uint16_t *d = (uint16_t *)dst + r * kp + s * sl;
                for (int64_t kk = 0; kk < sl; kk++) {
                    uint8_t v = (uint8_t)(src[kk] ^ flip);
                    d[kk] = v;
                    sum += v;
                }
            } else {
                uint8_t *d = (uint8_t *)dst + r * kp + s * sl;
                for (int64_t kk = 0; kk < sl; kk++) {
                    uint8_t v = (uint8_t)(src[kk] ^ flip);
                    d[kk] = v;
                    sum += v;
                }
            }
        }
        if (dst && a16) {
            for (int64_t kk = k; kk < kp; kk++) ((uint16_t *)dst)[r * kp + kk] = 0;
        } else if (dst) {
            memset((uint8_t *)dst + r * kp + k, 0, (size_t)(kp - k));
        }
        rsum[r] = no_sums ? 0 : (int32_t)sum;
        int32_t za = g->a_zp ? g->a_zp[g->a_zp_per_row ? i0 + r : 0] : 0;
        /* a per-tensor za' is folded into cterm by qc_gemm_run */
        zap[r] = g->a_zp_per_row ? za + zoff : 0;
    }
}

size_t qc_gemm_cols_size(int64_t ncols) {
    return (size_t)(round_up(ncols, QC_GEMM_NR) + 64) * 5 * 4;
}

void qc_gemm_cols_prepare(const qc_gemm_args *g, void *mem, qc_gemm_cols *cols) {
    const qc_gemm_b *B = g->b;
    const int64_t ncols = g->n1 - g->n0, ncp = round_up(ncols, QC_GEMM_NR) + 64;
    cols->zbp = (int32_t *)mem;
    cols->bcorr = cols->zbp + ncp;
    cols->cterm = cols->bcorr + ncp;
    cols->scale = (float *)(cols->cterm + ncp);
    cols->fbias = cols->scale + ncp;
    /* Per-column terms for this column range (index 0 = column n0), zero in the slack. A
     * per-tensor za' multiplies bcorr the same way in every row: cterm takes -za' * bcorr
     * once here (wrapping, so C is unchanged mod 2^32) and zap[r] is 0. */
    const int32_t boff = B->b_signed ? 0 : -128;
    const uint32_t za_fold = g->a_zp_per_row ? 0u
                             : (uint32_t)((g->a_zp ? g->a_zp[0] : 0) + (g->a_signed ? 128 : 0));
    /* with them, over the call's columns: whether every zb' is 0, whether every scale suits
     * the FMA epilogue (kernels.h, rq_fma), and the largest |cterm| */
    const int requant = g->out == QC_GEMM_OUT_S8 || g->out == QC_GEMM_OUT_U8;
    int32_t *zbp = cols->zbp, *bcorr = cols->bcorr, *cterm = cols->cterm;
    float *scale = cols->scale, *fbias = cols->fbias;
    /* one simple loop per array (they vectorize) */
    const int64_t n0 = g->n0;
    if (g->b_zp && g->b_zp_per_col) {
        for (int64_t x = 0; x < ncols; x++) zbp[x] = g->b_zp[n0 + x] + boff;
    } else {
        const int32_t zb = (g->b_zp ? g->b_zp[0] : 0) + boff;
        for (int64_t x = 0; x < ncols; x++) zbp[x] = zb;
    }
    const uint32_t kk = (uint32_t)B->k;
    for (int64_t x = 0; x < ncols; x++)
        bcorr[x] = (int32_t)((uint32_t)B->colsum[n0 + x] - kk * (uint32_t)zbp[x]);
    if (g->bias) {
        for (int64_t x = 0; x < ncols; x++)
            cterm[x] = (int32_t)((uint32_t)g->bias[n0 + x] - za_fold * (uint32_t)bcorr[x]);
    } else {
        for (int64_t x = 0; x < ncols; x++) cterm[x] = (int32_t)(0u - za_fold * (uint32_t)bcorr[x]);
    }
    if (g->out == QC_GEMM_OUT_S32) {
        for (int64_t x = 0; x < ncols; x++) scale[x] = 0.0f;
    } else if (g->scale_per_col) {
        memcpy(scale, g->scale + n0, (size_t)ncols * sizeof(float));
    } else {
        for (int64_t x = 0; x < ncols; x++) scale[x] = g->scale[0];
    }
    if (g->fbias) memcpy(fbias, g->fbias + n0, (size_t)ncols * sizeof(float));
    else memset(fbias, 0, (size_t)ncols * sizeof(float));
    const size_t slack = (size_t)(ncp - ncols);
    memset(zbp + ncols, 0, slack * sizeof(int32_t));
    memset(bcorr + ncols, 0, slack * sizeof(int32_t));
    memset(cterm + ncols, 0, slack * sizeof(int32_t));
    memset(scale + ncols, 0, slack * sizeof(float));
    memset(fbias + ncols, 0, slack * sizeof(float));
    uint32_t zor = 0, cmaxu = 0;
    int not_fma = 0;
    float smax = 0.0f;
    for (int64_t x = 0; x < ncols; x++) {
        zor |= (uint32_t)zbp[x];
        const uint32_t c = (uint32_t)cterm[x], m = cterm[x] < 0 ? 0u - c : c; /* |cterm| */
        cmaxu = m > cmaxu ? m : cmaxu;
        const float s = fabsf(scale[x]); /* false comparisons for NaN: not FMA-safe */
        not_fma |= !(s == 0.0f || (s >= 0x1p-20f && s <= FLT_MAX));
        smax = s > smax ? s : smax;
    }
    cols->smax = not_fma ? 0.0f : smax;
    cols->zbp_zero = zor == 0;
    cols->rq_fma = requant && !not_fma && !g->rq32;
    cols->cmax = cmaxu;
}

void qc_gemm_run(const qc_gemm_args *g, void *workspace) {
    const qc_gemm_kernels *kern = g->kernels ? g->kernels : qc_gemm_select();
    const qc_gemm_b *B = g->b;
    const int64_t kp = B->kp, ncols = g->n1 - g->n0;
    if (g->m <= 0 || ncols <= 0) return;
    const int64_t mc_max = call_rows(kern, kp, g->m);
    const int64_t nc_blk = block_cols(kern, kp);

    uint8_t *abuf = (uint8_t *)workspace;
    int32_t *rsum = (int32_t *)(abuf + round_up(2 * mc_max * kp, 64));
    int32_t *zap = rsum + mc_max;

    /* the column terms: given (a convolution's tasks share them), or made here */
    qc_gemm_cols own;
    const qc_gemm_cols *cols = g->cols;
    if (!cols) {
        qc_gemm_cols_prepare(g, zap + mc_max, &own);
        cols = &own;
    }
    const int32_t *zbp = cols->zbp, *bcorr = cols->bcorr, *cterm = cols->cterm;
    const float *scale = cols->scale, *fbias = cols->fbias;
    const int zbp_zero = cols->zbp_zero, rq_fma = cols->rq_fma;
    const int64_t cmax = cols->cmax;

    qc_gemm_tile t;
    t.kp = kp;
    t.out = g->out;
    t.y_zp = g->y_zp;
    t.lo = g->out == QC_GEMM_OUT_S8 ? -128 : 0;
    t.hi = g->out == QC_GEMM_OUT_S8 ? 127 : 255;
    if (g->relu && g->y_zp > t.lo) t.lo = g->y_zp;
    t.ldc = g->ldc;
    t.zap_zero = !g->a_zp_per_row;
    t.zbp_zero = zbp_zero;
    t.rq_fma = rq_fma;
    t.rq32 = g->rq32 && (g->out == QC_GEMM_OUT_S8 || g->out == QC_GEMM_OUT_U8);
    /* C = dot + cterm when no zero-point products remain, |dot| <= 255 * max_j sum |b'_j|
     * (at most kp * 255 * 128; int8 weights of a trained layer are usually far below it) */
    t.small = t.zbp_zero && t.zap_zero && 255 * B->abs_max + cmax < ((int64_t)1 << 24);
    /* |C * scale| + 256 < 2^22 for every element (|C| <= 255 * abs_max + cmax when small) */
    t.rq32_bound = t.rq32 && t.small && cols->smax > 0.0f &&
                   (double)cols->smax * (double)(255 * B->abs_max + cmax) + 256.0 < 0x1p22;
    const size_t esize = g->out == QC_GEMM_OUT_S32 || g->out == QC_GEMM_OUT_F32 ? 4 : 1;

    /* a' = a with nothing to sum: the tiles read A itself when its rows are exactly kp bytes
     * apart, or, for a kernel that takes a row stride and segments, whenever kp == k */
    static const ptrdiff_t seg0 = 0;
    const int a_inplace = !kern->a16 && !g->a_signed && t.zbp_zero && kp == B->k &&
                          (kern->a_seg ||
                           (g->lda == (ptrdiff_t)kp && g->a_nseg <= 0 && !g->a_row));
    const int nseg = a_inplace && g->a_nseg > 0 ? g->a_nseg : 1;
    t.lda = a_inplace ? g->lda : (ptrdiff_t)kp;
    t.seg = a_inplace && g->a_nseg > 0 ? g->a_seg : &seg0;
    t.nseg = nseg;
    t.seg_groups = kp / 4 / nseg;
    for (int64_t i0 = 0; i0 < g->m; i0 += mc_max) {
        const int64_t mc = QC_MIN(mc_max, g->m - i0);
        pack_a(g, i0, mc, kp, kern->a16, t.zbp_zero, a_inplace ? NULL : abuf, rsum, zap);
        /* rows in place at a_row: the tiles take a and the rows' offsets */
        const int arow = a_inplace && g->a_row;
        const uint8_t *ablk = !a_inplace ? abuf
                              : arow     ? (const uint8_t *)g->a
                                         : (const uint8_t *)g->a + i0 * g->lda;
        for (int64_t jc = 0; jc < ncols; jc += nc_blk) {
            const int64_t jc_end = QC_MIN(ncols, jc + nc_blk);
            for (int64_t ir = 0; ir < mc; ir += kern->mr) {
                const int mr = (int)QC_MIN((int64_t)kern->mr, mc - ir);
                for (int64_t jr = jc; jr < jc_end; jr += kern->nr) {
                    const int nc = (int)QC_MIN((int64_t)kern->nr, jc_end - jr);
                    const int64_t j = g->n0 + jr;
                    t.a = arow ? ablk : ablk + ir * t.lda;
                    t.arow = arow ? g->a_row + i0 + ir : NULL;
                    t.a16 = (const uint16_t *)abuf + ir * kp;
                    t.rsum = rsum + ir;
                    t.zap = zap + ir;
                    t.b = B->data + (j / QC_GEMM_NR) * kp * QC_GEMM_NR;
                    t.pw0 = qc_gemm_panel_width(B->n, j / QC_GEMM_NR);
                    t.pw1 = j + QC_GEMM_NR < B->n ? qc_gemm_panel_width(B->n, j / QC_GEMM_NR + 1)
                                                  : 0;
                    t.zbp = zbp + jr;
                    t.bcorr = bcorr + jr;
                    t.cterm = cterm + jr;
                    t.scale = scale + jr;
                    t.fbias = fbias + jr;
                    t.rscale = g->row_scale ? g->row_scale + i0 + ir : NULL;
                    t.c = (char *)g->c + ((i0 + ir) * g->ldc + j) * (ptrdiff_t)esize;
                    kern->tile(&t, mr, nc);
                }
            }
        }
    }
}

/* ---- threads: tasks are (row block, column chunk) pairs; each packs its own A rows ---- */

typedef struct {
    const qc_gemm_args *g;
    int64_t rows_per_task, cols_per_task, ntasks_n;
    atomic_int failed;
} par_ctx;

static void par_task(void *vctx, size_t task) {
    par_ctx *p = (par_ctx *)vctx;
    qc_gemm_args sub = *p->g;
    const int64_t ti = (int64_t)task / p->ntasks_n, tj = (int64_t)task % p->ntasks_n;
    const int64_t i0 = ti * p->rows_per_task;
    sub.m = QC_MIN(p->rows_per_task, p->g->m - i0);
    sub.n0 = p->g->n0 + tj * p->cols_per_task;
    sub.n1 = QC_MIN(p->g->n1, sub.n0 + p->cols_per_task);
    sub.cols = NULL; /* given for the whole call's columns: each task makes its own */
    if (sub.m <= 0 || sub.n1 <= sub.n0) return;
    const size_t esize = p->g->out == QC_GEMM_OUT_S32 || p->g->out == QC_GEMM_OUT_F32 ? 4 : 1;
    if (p->g->a_row) sub.a_row = p->g->a_row + i0;
    else sub.a = (const char *)p->g->a + i0 * p->g->lda;
    if (p->g->a_zp && p->g->a_zp_per_row) sub.a_zp = p->g->a_zp + i0;
    if (p->g->row_scale) sub.row_scale = p->g->row_scale + i0;
    sub.c = (char *)p->g->c + i0 * p->g->ldc * (ptrdiff_t)esize;
    size_t ws = call_workspace_size(sub.kernels, sub.b->k, sub.m, sub.n1 - sub.n0);
    void *buf = aligned_alloc(64, (ws + 63) / 64 * 64);
    if (!buf) {
        atomic_store(&p->failed, 1);
        return;
    }
    qc_gemm_run(&sub, buf);
    free(buf);
}

int qc_gemm_parallel(const qc_gemm_args *g) {
    const int64_t ncols = g->n1 - g->n0;
    if (g->m <= 0 || ncols <= 0) return 0;
    qc_gemm_args a = *g;
    if (!a.kernels) a.kernels = qc_gemm_select();
    const int64_t kp = a.b->kp;
    const int64_t threads = qc_get_num_threads();
    /* Work per task at least ~2 M multiply-adds, so small problems stay on one thread; but
     * a task per 512 KiB of B at least: a few rows against a large B (a classifier's GEMV
     * at batch 1, its B evicted by the layers before) wait on memory, which two cores fetch
     * faster than one (MobileNetV2's 1280 -> 1000 at batch 1 in the model: 44 us on 1
     * thread, 31 us on 2, where the second thread had gained nothing). */
    const double work = (double)a.m * (double)ncols * (double)kp;
    int64_t want = (int64_t)QC_MAX(work / (2.0 * 1024 * 1024),
                                   (double)ncols * (double)kp / (512.0 * 1024));
    if (want > 4 * threads) want = 4 * threads;
    if (want < 1) want = 1;
    if (threads == 1) want = 1;

    /* About `want` equal tasks (a multiple of the thread count, so dynamic scheduling balances
     * them): split the rows while each task keeps >= 32 of them (B is streamed once per task,
     * and 32 rows reuse each B group 32 times), then the columns in multiples of 32. */
    int64_t mt = QC_MIN(want, QC_MAX((int64_t)1, a.m / 32));
    int64_t rows = round_up((a.m + mt - 1) / mt, a.kernels->mr);
    mt = (a.m + rows - 1) / rows;
    int64_t nt = QC_MAX((int64_t)1, want / mt);
    nt = QC_MIN(nt, (ncols + 31) / 32);
    int64_t cols = nt == 1 ? ncols : round_up((ncols + nt - 1) / nt, 32);
    nt = (ncols + cols - 1) / cols;
    par_ctx p = {.g = &a, .rows_per_task = rows, .cols_per_task = cols, .ntasks_n = nt};
    atomic_init(&p.failed, 0);
    qc_parallel_for((size_t)(mt * nt), par_task, &p);
    return atomic_load(&p.failed) ? -1 : 0;
}
