/* AVX-512 VNNI micro-kernel: vpdpbusd, up to 8 rows x 32 columns (two 16x4 panels) per tile. */
#include "gemm/kernels.h"

#ifndef QC_NO_X86
#include "gemm/epilogue_avx512.h"

/* MR rows x NP panels; MR and NP are compile-time constants at each call site below, so the
 * `if (MR > r)` guards vanish. Accumulators are named variables (an array of __m512i makes GCC
 * shuffle and spill them). For MR <= 2 the k loop alternates two accumulator sets (even/odd
 * groups) so the vpdpbusd dependency chains overlap (GEMV is otherwise latency bound); the
 * sets are added at the end (exact: wrapping int32 addition is associative). */
#define QC_ACC_DECL(r) __m512i c##r##0 = ct0, c##r##1 = ct1;
#define QC_ACC_STEP(r)                                                        \
    if (MR > r) {                                                             \
        const __m512i av = _mm512_set1_epi32(qc_load4(a + r * lda + 4 * g));     \
        QC_DPBUSD(c##r##0, av, bv0);                                          \
        if (NP == 2) QC_DPBUSD(c##r##1, av, bv1);                             \
    }
#define QC_ACC_STORE(r)                                                       \
    if (MR > r) {                                                             \
        qc_gemm_store_row16_from(t, r, 0, c##r##0, m0, 1);                    \
        if (NP == 2) qc_gemm_store_row16_from(t, r, 1, c##r##1, m1, 1);       \
    }

/* The k loop over sg groups of A rows at a (stride lda) and the panels at b0, b1 (locals of
 * the block it is used in), into the accumulators of tile_mxn (below). */
#define QC_KLOOP                                                                         \
    int64_t g = 0;                                                                       \
    if (MR == 1) {                                                                       \
        for (; g + 2 <= sg; g += 2) {                                                    \
            const __m512i av0 = _mm512_set1_epi32(qc_load4(a + 4 * g));                  \
            const __m512i av1 = _mm512_set1_epi32(qc_load4(a + 4 * g + 4));              \
            QC_DPBUSD(c00, av0, _mm512_maskz_loadu_epi8(k0, b0 + s0 * g));               \
            QC_DPBUSD(e0, av1, _mm512_maskz_loadu_epi8(k0, b0 + s0 * g + s0));           \
            if (NP == 2) {                                                               \
                QC_DPBUSD(c01, av0, _mm512_maskz_loadu_epi8(k1, b1 + s1 * g));           \
                QC_DPBUSD(e1, av1, _mm512_maskz_loadu_epi8(k1, b1 + s1 * g + s1));       \
            }                                                                            \
        }                                                                                \
    } else if (MR == 2) {                                                                \
        for (; g + 2 <= sg; g += 2) {                                                    \
            const __m512i x0 = _mm512_maskz_loadu_epi8(k0, b0 + s0 * g);                 \
            const __m512i y0 = _mm512_maskz_loadu_epi8(k0, b0 + s0 * g + s0);            \
            const __m512i x1 = NP == 2 ? _mm512_maskz_loadu_epi8(k1, b1 + s1 * g)        \
                                       : _mm512_setzero_si512();                         \
            const __m512i y1 = NP == 2 ? _mm512_maskz_loadu_epi8(k1, b1 + s1 * g + s1)   \
                                       : _mm512_setzero_si512();                         \
            const __m512i a00 = _mm512_set1_epi32(qc_load4(a + 4 * g));                  \
            const __m512i a01 = _mm512_set1_epi32(qc_load4(a + 4 * g + 4));              \
            const __m512i a10 = _mm512_set1_epi32(qc_load4(a + lda + 4 * g));            \
            const __m512i a11 = _mm512_set1_epi32(qc_load4(a + lda + 4 * g + 4));        \
            QC_DPBUSD(c00, a00, x0);                                                     \
            QC_DPBUSD(e0, a01, y0);                                                      \
            QC_DPBUSD(c10, a10, x0);                                                     \
            QC_DPBUSD(f0, a11, y0);                                                      \
            if (NP == 2) {                                                               \
                QC_DPBUSD(c01, a00, x1);                                                 \
                QC_DPBUSD(e1, a01, y1);                                                  \
                QC_DPBUSD(c11, a10, x1);                                                 \
                QC_DPBUSD(f1, a11, y1);                                                  \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
    for (; g < sg; g++) {                                                                \
        const __m512i bv0 = _mm512_maskz_loadu_epi8(k0, b0 + s0 * g);                    \
        const __m512i bv1 =                                                              \
            NP == 2 ? _mm512_maskz_loadu_epi8(k1, b1 + s1 * g) : _mm512_setzero_si512(); \
        QC_ACC_STEP(0) QC_ACC_STEP(1) QC_ACC_STEP(2) QC_ACC_STEP(3)                      \
        QC_ACC_STEP(4) QC_ACC_STEP(5) QC_ACC_STEP(6) QC_ACC_STEP(7)                      \
    }

/* A row is t->nseg segments of t->seg_groups groups (one segment for a plain GEMM; three for
 * a 3x3 convolution read from its NHWC image): the k loops run per segment, with a and the B
 * panels advanced to the segment's start, into the same accumulators. */
QC_INLINE void tile_mxn(const qc_gemm_tile *t, const int MR, const int NP, int nc) {
    const int64_t kp = t->kp, sg = t->seg_groups;
    const ptrdiff_t lda = t->lda;
    /* group strides and load masks: 64 bytes, or 4 * width for a narrow last panel */
    const int64_t s0 = 4 * t->pw0, s1 = 4 * t->pw1;
    const __mmask64 k0 = t->pw0 == 16 ? ~(__mmask64)0 : (((__mmask64)1 << s0) - 1);
    const __mmask64 k1 = t->pw1 == 16 ? ~(__mmask64)0 : (((__mmask64)1 << s1) - 1);
    /* the accumulators start at the column terms (bias - za' * bcorr), which the epilogue
     * would otherwise add: the same wrapping sum */
    const __m512i ct0 = _mm512_loadu_si512(t->cterm);
    const __m512i ct1 = NP == 2 ? _mm512_loadu_si512(t->cterm + 16) : _mm512_setzero_si512();
    QC_ACC_DECL(0) QC_ACC_DECL(1) QC_ACC_DECL(2) QC_ACC_DECL(3)
    QC_ACC_DECL(4) QC_ACC_DECL(5) QC_ACC_DECL(6) QC_ACC_DECL(7)
    /* MR <= 2: a second accumulator set for odd groups (added at the end) */
    __m512i e0 = _mm512_setzero_si512(), e1 = e0, f0 = e0, f1 = e0;
    if (t->nseg == 1) { /* a plain GEMM: the one k loop, nothing per segment */
        const uint8_t *a = t->a;
        const int8_t *b0 = t->b, *b1 = t->b + kp * QC_GEMM_NR;
        QC_KLOOP
    } else {
        for (int s = 0; s < t->nseg; s++) {
            const uint8_t *a = t->a + t->seg[s];
            const int8_t *b0 = t->b + s0 * sg * s, *b1 = t->b + kp * QC_GEMM_NR + s1 * sg * s;
            QC_KLOOP
        }
    }
    if (MR <= 2) {
        c00 = _mm512_add_epi32(c00, e0);
        c01 = _mm512_add_epi32(c01, e1);
        c10 = _mm512_add_epi32(c10, f0);
        c11 = _mm512_add_epi32(c11, f1);
    }
    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? (__mmask16)0xFFFF
                         : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1)
                                   : (__mmask16)0;
    QC_ACC_STORE(0) QC_ACC_STORE(1) QC_ACC_STORE(2) QC_ACC_STORE(3)
    QC_ACC_STORE(4) QC_ACC_STORE(5) QC_ACC_STORE(6) QC_ACC_STORE(7)
}

#define QC_TILE_CASES(NP)                      \
    switch (mr) {                              \
    case 1: tile_mxn(t, 1, NP, nc); break;     \
    case 2: tile_mxn(t, 2, NP, nc); break;     \
    case 3: tile_mxn(t, 3, NP, nc); break;     \
    case 4: tile_mxn(t, 4, NP, nc); break;     \
    case 5: tile_mxn(t, 5, NP, nc); break;     \
    case 6: tile_mxn(t, 6, NP, nc); break;     \
    case 7: tile_mxn(t, 7, NP, nc); break;     \
    default: tile_mxn(t, 8, NP, nc); break;    \
    }

static void tile_avx512vnni(const qc_gemm_tile *t, int mr, int nc) {
    if (nc > 16) {
        QC_TILE_CASES(2)
    } else {
        QC_TILE_CASES(1)
    }
}

const qc_gemm_kernels qc_gemm_kernels_avx512vnni = {"gemm_8x32c4__avx512vnni", 8, 32, 0, 1, tile_avx512vnni};
#endif
