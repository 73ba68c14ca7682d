/* AVX-512 VNNI q4gemm kernels: vpdpbusd (u8 weights x s8 activations), 16 columns per zmm. */
#include "q4gemm/kernels.h"

#ifndef QC_NO_X86
#include <immintrin.h>
#include <string.h>

QC_INLINE __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* zu * qsum for the 16 columns of panel p, block blk */
QC_INLINE __m512i zcorr(const qc_q4_b *b, int64_t p, int64_t blk, int32_t qsum) {
    if (!b->zp) return _mm512_set1_epi32(qsum * (1 << qc_q4_zu_shift(b)));
    const __m512i zu = _mm512_cvtepu8_epi32(
        _mm_loadu_si128((const __m128i *)(b->zp + (p * b->nb + blk) * QC_Q4_NR)));
    return _mm512_mullo_epi32(zu, _mm512_set1_epi32(qsum));
}

/* y + (float)acc * (xs * ws), lane by lane as qc_q4_step */
QC_INLINE __m512 step16(__m512 y, __m512i acc, float xs, __m512 ws) {
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(xs), ws);
    return _mm512_add_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s));
}

QC_INLINE void store16(const qc_q4_args *g, int64_t i, int64_t p, __m512 y, __mmask16 m) {
    if (g->bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, g->bias + p * QC_Q4_NR));
    _mm512_mask_storeu_ps(g->y + i * g->ldy + p * QC_Q4_NR, m, y);
}

#ifndef QC_Q4_PF
#define QC_Q4_PF 4096
#endif

/* GEMV: each 64-byte run gives the low-nibble operand (v & 0x0F: k group 8r..8r+3) and the
 * high-nibble one left in place (v & 0xF0 = 16 u: k group 8r+4..8r+7), so no shift per run;
 * the high sums are exactly 16 times the wanted ones (|16 u q| sums stay far inside int32)
 * and one arithmetic shift per block divides them back exactly. Four accumulators keep the
 * vpdpbusd chains short; all are added per block (exact int32 arithmetic). */
static void gemv_avx512vnni(const qc_q4_args *g, int64_t i, int64_t p, int nc) {
    const qc_q4_b *b = g->b;
    const int8_t *q = g->q + i * b->kp;
    const uint8_t *panel = b->data + p * b->kp * 8;
    const int32_t *qs = g->qsum + i * b->nb;
    const float xs = g->xs[i];
    const __m512i lo4 = _mm512_set1_epi8(0x0F), hi4 = _mm512_set1_epi8((char)0xF0);
    /* software prefetch QC_Q4_PF bytes ahead in the weight stream (never past its end: the
     * packed data of all panels is one buffer, the next panel follows this one) */
    const uint8_t *end = b->data + b->np * b->kp * 8;
    __m512 y = _mm512_setzero_ps();
    for (int64_t blk = 0; blk < b->nb; blk++) {
        int64_t k0, k1;
        qc_q4_block_range(b, blk, &k0, &k1);
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t kc = k0; kc < k1; kc += QC_Q4_KC) {
            const uint8_t *ch = panel + kc * 8;
            if (QC_Q4_PF && ch + QC_Q4_PF + 256 <= end) {
                _mm_prefetch((const char *)(ch + QC_Q4_PF), _MM_HINT_T0);
                _mm_prefetch((const char *)(ch + QC_Q4_PF + 64), _MM_HINT_T0);
                _mm_prefetch((const char *)(ch + QC_Q4_PF + 128), _MM_HINT_T0);
                _mm_prefetch((const char *)(ch + QC_Q4_PF + 192), _MM_HINT_T0);
            }
            const __m512i v0 = _mm512_loadu_si512(ch), v1 = _mm512_loadu_si512(ch + 64);
            const __m512i v2 = _mm512_loadu_si512(ch + 128), v3 = _mm512_loadu_si512(ch + 192);
            a0 = _mm512_dpbusd_epi32(a0, _mm512_and_si512(v0, lo4), bcast4(q + kc));
            a1 = _mm512_dpbusd_epi32(a1, _mm512_and_si512(v0, hi4), bcast4(q + kc + 4));
            a2 = _mm512_dpbusd_epi32(a2, _mm512_and_si512(v1, lo4), bcast4(q + kc + 8));
            a3 = _mm512_dpbusd_epi32(a3, _mm512_and_si512(v1, hi4), bcast4(q + kc + 12));
            a0 = _mm512_dpbusd_epi32(a0, _mm512_and_si512(v2, lo4), bcast4(q + kc + 16));
            a1 = _mm512_dpbusd_epi32(a1, _mm512_and_si512(v2, hi4), bcast4(q + kc + 20));
            a2 = _mm512_dpbusd_epi32(a2, _mm512_and_si512(v3, lo4), bcast4(q + kc + 24));
            a3 = _mm512_dpbusd_epi32(a3, _mm512_and_si512(v3, hi4), bcast4(q + kc + 28));
        }
        __m512i acc = _mm512_add_epi32(
            _mm512_add_epi32(a0, a2), _mm512_srai_epi32(_mm512_add_epi32(a1, a3), 4));
        acc = _mm512_sub_epi32(acc, zcorr(b, p, blk, qs[blk]));
        y = step16(y, acc, xs, _mm512_loadu_ps(b->scale + (p * b->nb + blk) * QC_Q4_NR));
    }
    store16(g, i, p, y, (__mmask16)((1u << nc) - 1));
}

static void unpack_avx512vnni(const qc_q4_b *b, int64_t p, uint8_t *dst) {
    const uint8_t *panel = b->data + p * b->kp * 8;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t r = 0; r < b->kp / 8; r++) {
        const __m512i v = _mm512_loadu_si512(panel + 64 * r);
        _mm512_storeu_si512(dst + 128 * r, _mm512_and_si512(v, m4));
        _mm512_storeu_si512(dst + 128 * r + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
    }
}

/* GEMM tile: MR rows x 16 columns from the unpacked panel; MR is a constant at each call. */
#define QC_Q4_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define QC_Q4_DECL(r) __m512 y##r = _mm512_setzero_ps(); __m512i c##r;
#define QC_Q4_ZERO(r) c##r = _mm512_setzero_si512();
#define QC_Q4_DOT(r) \
    if (MR > r) c##r = _mm512_dpbusd_epi32(c##r, bv, bcast4(q + r * kp + 4 * gi));
#define QC_Q4_EPI(r)                                                                 \
    if (MR > r) {                                                                    \
        c##r = _mm512_sub_epi32(c##r, zcorr(b, p, blk, g->qsum[(i0 + r) * b->nb + blk])); \
        y##r = step16(y##r, c##r, g->xs[i0 + r], ws);                                \
    }
#define QC_Q4_STORE(r) \
    if (MR > r) store16(g, i0 + r, p, y##r, m);

QC_INLINE void tile_mr(const qc_q4_args *g, const uint8_t *u, int64_t i0, const int MR,
                       int64_t p, int nc) {
    const qc_q4_b *b = g->b;
    const int64_t kp = b->kp;
    const int8_t *q = g->q + i0 * kp;
    QC_Q4_ROWS(QC_Q4_DECL)
    for (int64_t blk = 0; blk < b->nb; blk++) {
        int64_t k0, k1;
        qc_q4_block_range(b, blk, &k0, &k1);
        QC_Q4_ROWS(QC_Q4_ZERO)
        for (int64_t gi = k0 / 4; gi < k1 / 4; gi++) {
            const __m512i bv = _mm512_loadu_si512(u + 64 * gi);
            QC_Q4_ROWS(QC_Q4_DOT)
        }
        const __m512 ws = _mm512_loadu_ps(b->scale + (p * b->nb + blk) * QC_Q4_NR);
        QC_Q4_ROWS(QC_Q4_EPI)
    }
    const __mmask16 m = (__mmask16)((1u << nc) - 1);
    QC_Q4_ROWS(QC_Q4_STORE)
}

static void tile_avx512vnni(const qc_q4_args *g, const uint8_t *u, int64_t i0, int mr,
                            int64_t p, int nc) {
    switch (mr) {
    case 1: tile_mr(g, u, i0, 1, p, nc); break;
    case 2: tile_mr(g, u, i0, 2, p, nc); break;
    case 3: tile_mr(g, u, i0, 3, p, nc); break;
    case 4: tile_mr(g, u, i0, 4, p, nc); break;
    case 5: tile_mr(g, u, i0, 5, p, nc); break;
    case 6: tile_mr(g, u, i0, 6, p, nc); break;
    case 7: tile_mr(g, u, i0, 7, p, nc); break;
    default: tile_mr(g, u, i0, 8, p, nc); break;
    }
}

const qc_q4_kernels qc_q4_kernels_avx512vnni = {"q4gemm_8x16c32__avx512vnni", 8,
                                                gemv_avx512vnni, unpack_avx512vnni,
                                                tile_avx512vnni};
#endif
