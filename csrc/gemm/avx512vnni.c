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
        const __m512i av = _mm512_set1_epi32(qc_load4(a + o##r + 4 * g));       \
        QC_DPBUSD(c##r##0, av, bv0);                                          \
        if (NP == 2) QC_DPBUSD(c##r##1, av, bv1);                             \
    }
#define QC_ACC_STORE(r)                                                       \
    if (MR > r) {                                                             \
        qc_gemm_store_row16_from(t, r, 0, c##r##0, m0, 1);                    \
        if (NP == 2) qc_gemm_store_row16_from(t, r, 1, c##r##1, m1, 1);       \
    }

/* The k loop over sg groups of A rows at a + o0 .. a + o7 (row offsets) and the panels at b0,
 * b1 (locals of the block it is used in), into the accumulators of tile_mxn (below). */
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
            const __m512i a10 = _mm512_set1_epi32(qc_load4(a + o1 + 4 * g));             \
            const __m512i a11 = _mm512_set1_epi32(qc_load4(a + o1 + 4 * g + 4));         \
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
    /* row r at base + o<r>: r * lda, or the driver's row offsets (read for rows < MR only) */
    const ptrdiff_t *ro = t->arow, lda = t->lda;
    const uint8_t *base = ro ? t->a + ro[0] : t->a;
#define QC_ROW_OFF(r) const ptrdiff_t o##r = MR > r ? (ro ? ro[r] - ro[0] : r * lda) : 0;
    QC_ROW_OFF(0) QC_ROW_OFF(1) QC_ROW_OFF(2) QC_ROW_OFF(3)
    QC_ROW_OFF(4) QC_ROW_OFF(5) QC_ROW_OFF(6) QC_ROW_OFF(7)
#undef QC_ROW_OFF
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
        const uint8_t *a = base;
        const int8_t *b0 = t->b, *b1 = t->b + kp * QC_GEMM_NR;
        QC_KLOOP
    } else {
        for (int s = 0; s < t->nseg; s++) {
            const uint8_t *a = base + t->seg[s];
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
    /* The common case: a full 32-column tile requantized to bytes by the one-rounding FMA
     * with |C| < 2^24 proven for the call (t->small), two rows narrowed at a time by the
     * saturating packs and stored whole, the call's fields read once (the stores through a
     * char pointer would make the compiler read them again row after row). */
    if (NP == 2 && nc == 32 && t->small && t->rq_fma &&
        (t->out == QC_GEMM_OUT_U8 || t->out == QC_GEMM_OUT_S8)) {
        const __m512 s0 = _mm512_loadu_ps(t->scale), s1 = _mm512_loadu_ps(t->scale + 16);
        const __m512 zpm = _mm512_set1_ps((float)(t->y_zp + 12582912));
        const __m512 lom = _mm512_set1_ps((float)(t->lo + 12582912));
        /* after packs_epi32 and a pack to bytes, lane l's dwords hold columns 4l..4l+3 of
         * row a (cols 0-15, 16-31), then of row b: gather each row's 8 dwords */
        const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7,
                                               11, 15);
        char *c = (char *)t->c;
        const ptrdiff_t ldc = t->ldc;
        const int sgn = t->out == QC_GEMM_OUT_S8;
#define QC_ROW_PACK(r)                                                                 \
    _mm512_packs_epi32(qc_requant16_fma32_avx512(c##r##0, s0, zpm, lom),               \
                       qc_requant16_fma32_avx512(c##r##1, s1, zpm, lom))
#define QC_PAIR_STORE(ra, rb)                                                          \
    if (MR > ra) {                                                                     \
        const __m512i wa = QC_ROW_PACK(ra), wb = MR > rb ? QC_ROW_PACK(rb) : wa;        \
        const __m512i q = _mm512_permutexvar_epi32(                                    \
            perm, sgn ? _mm512_packs_epi16(wa, wb) : _mm512_packus_epi16(wa, wb));     \
        _mm256_storeu_si256((__m256i *)(void *)(c + ra * ldc), _mm512_castsi512_si256(q)); \
        if (MR > rb)                                                                   \
            _mm256_storeu_si256((__m256i *)(void *)(c + rb * ldc),                     \
                                _mm512_extracti64x4_epi64(q, 1));                      \
    }
        QC_PAIR_STORE(0, 1) QC_PAIR_STORE(2, 3) QC_PAIR_STORE(4, 5) QC_PAIR_STORE(6, 7)
#undef QC_PAIR_STORE
#undef QC_ROW_PACK
        return;
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
