/* AVX2 q4gemm kernels: vpmaddubsw (u8 weights x s8 activations) + vpmaddwd, 8 columns per ymm. */
#include "q4gemm/kernels.h"

#ifndef QC_NO_X86
#include <immintrin.h>
#include <string.h>

/* Exactness of the 16-bit stage: vpmaddubsw adds two products u * q with u in [0, 15] and
 * |q| <= 127, so |pair| <= 3810, and at most 8 pairs (32 k, one chunk) are added in int16
 * before vpmaddwd widens them: |sum| <= 30480 < 2^15, never saturating. */

QC_INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* zu * qsum for columns [16p + 8h, 16p + 8h + 8) of block blk */
QC_INLINE __m256i zcorr(const qc_q4_b *b, int64_t p, int64_t blk, int h, int32_t qsum) {
    if (!b->zp) return _mm256_set1_epi32(qsum * (1 << qc_q4_zu_shift(b)));
    const __m256i zu = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64((const __m128i *)(b->zp + (p * b->nb + blk) * QC_Q4_NR + 8 * h)));
    return _mm256_mullo_epi32(zu, _mm256_set1_epi32(qsum));
}

QC_INLINE __m256 step8(__m256 y, __m256i acc, float xs, __m256 ws) {
    const __m256 s = _mm256_mul_ps(_mm256_set1_ps(xs), ws);
    return _mm256_add_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s));
}

/* Store the first nc of 16 columns (y0: 0..7, y1: 8..15) with the bias; no access past nc. */
static void store16(const qc_q4_args *g, int64_t i, int64_t p, __m256 y0, __m256 y1, int nc) {
    float t[16];
    _mm256_storeu_ps(t, y0);
    _mm256_storeu_ps(t + 8, y1);
    float *dst = g->y + i * g->ldy + p * QC_Q4_NR;
    if (g->bias) {
        const float *bias = g->bias + p * QC_Q4_NR;
        for (int c = 0; c < nc; c++) dst[c] = t[c] + bias[c];
    } else {
        for (int c = 0; c < nc; c++) dst[c] = t[c];
    }
}

#define QC_Q4_PF 4096 /* software prefetch distance in the weight stream, bytes */

static void gemv_avx2(const qc_q4_args *g, int64_t i, int64_t p, int nc) {
    const qc_q4_b *b = g->b;
    const int8_t *q = g->q + i * b->kp;
    const uint8_t *panel = b->data + p * b->kp * 8;
    const int32_t *qs = g->qsum + i * b->nb;
    const float xs = g->xs[i];
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const uint8_t *end = b->data + b->np * b->kp * 8;
    __m256 y0 = _mm256_setzero_ps(), y1 = y0;
    for (int64_t blk = 0; blk < b->nb; blk++) {
        int64_t k0, k1;
        qc_q4_block_range(b, blk, &k0, &k1);
        __m256i a0 = _mm256_setzero_si256(), a1 = a0;
        for (int64_t kc = k0; kc < k1; kc += QC_Q4_KC) {
            const uint8_t *ch = panel + kc * 8;
            if (ch + QC_Q4_PF + 256 <= end) { /* as in the AVX-512 GEMV */
                _mm_prefetch((const char *)(ch + QC_Q4_PF), _MM_HINT_T0);
                _mm_prefetch((const char *)(ch + QC_Q4_PF + 64), _MM_HINT_T0);
                _mm_prefetch((const char *)(ch + QC_Q4_PF + 128), _MM_HINT_T0);
                _mm_prefetch((const char *)(ch + QC_Q4_PF + 192), _MM_HINT_T0);
            }
            __m256i s0 = _mm256_setzero_si256(), s1 = s0;
            for (int r = 0; r < 4; r++) {
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)(ch + 64 * r));
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(ch + 64 * r + 32));
                const __m256i ql = bcast4(q + kc + 8 * r), qh = bcast4(q + kc + 8 * r + 4);
                s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(v0, m4), ql));
                s0 = _mm256_add_epi16(
                    s0, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), qh));
                s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(v1, m4), ql));
                s1 = _mm256_add_epi16(
                    s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4), qh));
            }
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(s0, ones));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(s1, ones));
        }
        const float *ws = b->scale + (p * b->nb + blk) * QC_Q4_NR;
        a0 = _mm256_sub_epi32(a0, zcorr(b, p, blk, 0, qs[blk]));
        a1 = _mm256_sub_epi32(a1, zcorr(b, p, blk, 1, qs[blk]));
        y0 = step8(y0, a0, xs, _mm256_loadu_ps(ws));
        y1 = step8(y1, a1, xs, _mm256_loadu_ps(ws + 8));
    }
    store16(g, i, p, y0, y1, nc);
}

static void unpack_avx2(const qc_q4_b *b, int64_t p, uint8_t *dst) {
    const uint8_t *panel = b->data + p * b->kp * 8;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t r = 0; r < b->kp / 8; r++) {
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(panel + 64 * r + 32 * h));
            _mm256_storeu_si256((__m256i *)(dst + 128 * r + 32 * h), _mm256_and_si256(v, m4));
            _mm256_storeu_si256((__m256i *)(dst + 128 * r + 64 + 32 * h),
                                _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        }
    }
}

/* GEMM tile: up to 4 rows x 16 columns from the unpacked panel (8 groups of 4 k per int16
 * flush, as in the GEMV). */
static void tile_avx2(const qc_q4_args *g, const uint8_t *u, int64_t i0, int mr, int64_t p,
                      int nc) {
    const qc_q4_b *b = g->b;
    const int64_t kp = b->kp;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0F);
    __m256 y[4][2];
    for (int r = 0; r < 4; r++) y[r][0] = y[r][1] = _mm256_setzero_ps();
    for (int64_t blk = 0; blk < b->nb; blk++) {
        int64_t k0, k1;
        qc_q4_block_range(b, blk, &k0, &k1);
        __m256i a[4][2];
        for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm256_setzero_si256();
        for (int64_t kc = k0; kc < k1; kc += QC_Q4_KC) {
            __m256i s[4][2];
            for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm256_setzero_si256();
            if (b->bits == 8) {
                /* u in [0, 255] would saturate vpmaddubsw: u = 16 uh + ul with both nibbles in
                 * [0, 15], dot(q, u) = 16 dot(q, uh) + dot(q, ul), each half as above */
                __m256i h[4][2];
                for (int r = 0; r < 4; r++) h[r][0] = h[r][1] = _mm256_setzero_si256();
                for (int64_t gi = kc / 4; gi < kc / 4 + 8; gi++) {
                    const __m256i b0 = _mm256_loadu_si256((const __m256i *)(u + 64 * gi));
                    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(u + 64 * gi + 32));
                    const __m256i l0 = _mm256_and_si256(b0, m4), l1 = _mm256_and_si256(b1, m4);
                    const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(b0, 4), m4);
                    const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4);
                    for (int r = 0; r < mr; r++) {
                        const __m256i qv = bcast4(g->q + (i0 + r) * kp + 4 * gi);
                        s[r][0] = _mm256_add_epi16(s[r][0], _mm256_maddubs_epi16(l0, qv));
                        s[r][1] = _mm256_add_epi16(s[r][1], _mm256_maddubs_epi16(l1, qv));
                        h[r][0] = _mm256_add_epi16(h[r][0], _mm256_maddubs_epi16(h0, qv));
                        h[r][1] = _mm256_add_epi16(h[r][1], _mm256_maddubs_epi16(h1, qv));
                    }
                }
                for (int r = 0; r < mr; r++) {
                    for (int x = 0; x < 2; x++) {
                        const __m256i lo = _mm256_madd_epi16(s[r][x], ones);
                        const __m256i hi = _mm256_slli_epi32(_mm256_madd_epi16(h[r][x], ones), 4);
                        a[r][x] = _mm256_add_epi32(a[r][x], _mm256_add_epi32(lo, hi));
                    }
                }
                continue;
            }
            for (int64_t gi = kc / 4; gi < kc / 4 + 8; gi++) {
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)(u + 64 * gi));
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(u + 64 * gi + 32));
                for (int r = 0; r < mr; r++) {
                    const __m256i qv = bcast4(g->q + (i0 + r) * kp + 4 * gi);
                    s[r][0] = _mm256_add_epi16(s[r][0], _mm256_maddubs_epi16(b0, qv));
                    s[r][1] = _mm256_add_epi16(s[r][1], _mm256_maddubs_epi16(b1, qv));
                }
            }
            for (int r = 0; r < mr; r++) {
                a[r][0] = _mm256_add_epi32(a[r][0], _mm256_madd_epi16(s[r][0], ones));
                a[r][1] = _mm256_add_epi32(a[r][1], _mm256_madd_epi16(s[r][1], ones));
            }
        }
        const float *ws = b->scale + (p * b->nb + blk) * QC_Q4_NR;
        const __m256 w0 = _mm256_loadu_ps(ws), w1 = _mm256_loadu_ps(ws + 8);
        for (int r = 0; r < mr; r++) {
            const int32_t qs = g->qsum[(i0 + r) * b->nb + blk];
            const float xs = g->xs[i0 + r];
            y[r][0] = step8(y[r][0], _mm256_sub_epi32(a[r][0], zcorr(b, p, blk, 0, qs)), xs, w0);
            y[r][1] = step8(y[r][1], _mm256_sub_epi32(a[r][1], zcorr(b, p, blk, 1, qs)), xs, w1);
        }
    }
    for (int r = 0; r < mr; r++) store16(g, i0 + r, p, y[r][0], y[r][1], nc);
}

const qc_q4_kernels qc_q4_kernels_avx2 = {"q4gemm_4x16c32__avx2", 4, gemv_avx2, unpack_avx2,
                                          tile_avx2};
#endif
