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

/* Bytes raised to lo (relu) when `raise` (int8 when sgn, else uint8). */
QC_INLINE __m512i qc_lo8(__m512i b, int raise, int sgn, __m512i lo8) {
    if (!raise) return b;
    return sgn ? _mm512_max_epi8(b, lo8) : _mm512_max_epu8(b, lo8);
}

/* The byte stores of a tile on the one-rounding path (tile_mxn), or with ONNX Runtime's
 * float32 requantization (t->rq32: qc_requant16_f32_sat_avx512, then lo on the bytes): rows
 * r < MR of columns
 * [0, nc) from the accumulators c<r>0 (columns 0-15) and c<r>1 (16-31, NP == 2). After
 * packs_epi32 of two vectors and a pack of two such to bytes, 128-bit lane l holds dwords
 * (a_l, b_l, c_l, d_l) of the four vectors' columns 4l..4l+3; the permutation gathers each
 * vector's four dwords: rows (r, r + 1) as 32-byte halves with NP == 2, rows r..r + 3 as
 * 16-byte quarters with NP == 1. Rows past MR repeat the last row and are not stored. */
QC_INLINE void qc_tile_store_packed(const qc_gemm_tile *t, const int MR, const int NP, int nc,
                                    __m512i c00, __m512i c01, __m512i c10, __m512i c11,
                                    __m512i c20, __m512i c21, __m512i c30, __m512i c31,
                                    __m512i c40, __m512i c41, __m512i c50, __m512i c51,
                                    __m512i c60, __m512i c61, __m512i c70, __m512i c71) {
    const __m512 s0 = _mm512_loadu_ps(t->scale);
    const __m512 s1 = NP == 2 ? _mm512_loadu_ps(t->scale + 16) : s0;
    const __m512 zpm = _mm512_set1_ps((float)(t->y_zp + 12582912));
    const __m512 lom = _mm512_set1_ps((float)(t->lo + 12582912));
    const int rq32 = t->rq32, bound = t->rq32_bound;
    const __m512i zpbits = _mm512_set1_epi32(0x4B400000 - t->y_zp);
    /* rq32: the saturating packs clamp to the type, then bytes rise to lo (relu) */
    const int lo_above = t->lo > (t->out == QC_GEMM_OUT_S8 ? -128 : 0);
    const __m512i lo8 = _mm512_set1_epi8((char)t->lo);
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    char *c = (char *)t->c;
    const ptrdiff_t ldc = t->ldc;
    const int sgn = t->out == QC_GEMM_OUT_S8;
    /* nc < 32 (NP == 2) or < 16 (NP == 1): the stores masked to the valid columns */
    const __mmask32 k32 = nc >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << nc) - 1);
    const __mmask16 k16 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
#define QC_Y(r, p)                                                                       \
    (rq32 ? (bound ? qc_requant16_f32_magic_avx512(c##r##p, s##p, zpbits)                \
                   : qc_requant16_f32_sat_avx512(c##r##p, s##p, zpbits))                 \
          : qc_requant16_fma32_avx512(c##r##p, s##p, zpm, lom))
#define QC_BYTES(wa, wb) qc_lo8(                                                              \
    _mm512_permutexvar_epi32(perm, sgn ? _mm512_packs_epi16(wa, wb) : _mm512_packus_epi16(wa, wb)), \
    rq32 && lo_above, sgn, lo8)
#define QC_ST32(r, v)                                                          \
    if (nc >= 32) _mm256_storeu_si256((__m256i *)(void *)(c + r * ldc), v);   \
    else _mm256_mask_storeu_epi8(c + r * ldc, k32, v);
#define QC_ST16(r, v)                                                          \
    if (nc >= 16) _mm_storeu_si128((__m128i *)(void *)(c + r * ldc), v);      \
    else _mm_mask_storeu_epi8(c + r * ldc, k16, v);
#define QC_PAIR(ra, rb)                                                              \
    if (MR > ra) {                                                                   \
        const __m512i wa = _mm512_packs_epi32(QC_Y(ra, 0), QC_Y(ra, 1));             \
        const __m512i wb = MR > rb ? _mm512_packs_epi32(QC_Y(rb, 0), QC_Y(rb, 1)) : wa; \
        const __m512i q = QC_BYTES(wa, wb);                                          \
        QC_ST32(ra, _mm512_castsi512_si256(q))                                       \
        if (MR > rb) {                                                               \
            QC_ST32(rb, _mm512_extracti64x4_epi64(q, 1))                             \
        }                                                                            \
    }
#define QC_QUAD(r0, r1, r2, r3)                                                      \
    if (MR > r0) {                                                                   \
        const __m512i y0 = QC_Y(r0, 0), y1 = MR > r1 ? QC_Y(r1, 0) : y0;             \
        const __m512i y2 = MR > r2 ? QC_Y(r2, 0) : y1, y3 = MR > r3 ? QC_Y(r3, 0) : y2; \
        const __m512i q = QC_BYTES(_mm512_packs_epi32(y0, y1), _mm512_packs_epi32(y2, y3)); \
        QC_ST16(r0, _mm512_castsi512_si128(q))                                       \
        if (MR > r1) {                                                               \
            QC_ST16(r1, _mm512_extracti32x4_epi32(q, 1))                             \
        }                                                                            \
        if (MR > r2) {                                                               \
            QC_ST16(r2, _mm512_extracti32x4_epi32(q, 2))                             \
        }                                                                            \
        if (MR > r3) {                                                               \
            QC_ST16(r3, _mm512_extracti32x4_epi32(q, 3))                             \
        }                                                                            \
    }
    if (NP == 2) {
        QC_PAIR(0, 1) QC_PAIR(2, 3) QC_PAIR(4, 5) QC_PAIR(6, 7)
    } else {
        QC_QUAD(0, 1, 2, 3) QC_QUAD(4, 5, 6, 7)
    }
#undef QC_QUAD
#undef QC_PAIR
#undef QC_ST16
#undef QC_ST32
#undef QC_BYTES
#undef QC_Y
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
    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? (__mmask16)0xFFFF
                         : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1)
                                   : (__mmask16)0;
    /* The common case: bytes out by the one-rounding FMA, the accumulators C itself (no
     * zero-point products left) with |C| < 2^24, proven for the call (t->small) or tested
     * here across the tile. The call's fields are read once (a store through a char pointer
     * makes the compiler read them again, row after row), and rows are narrowed together
     * with the saturating packs and one dword permutation: two rows of 32 columns, or four
     * of 16, per 64 bytes. */
    if ((t->rq_fma || t->rq32) && t->zbp_zero && t->zap_zero &&
        (t->out == QC_GEMM_OUT_U8 || t->out == QC_GEMM_OUT_S8)) {
        __mmask16 big = 0;
        if (!t->small && !t->rq32) {
#define QC_BIG(r)                                                   \
    if (MR > r) {                                                   \
        big |= qc_beyond24_avx512(c##r##0, m0);                     \
        if (NP == 2) big |= qc_beyond24_avx512(c##r##1, m1);        \
    }
            QC_BIG(0) QC_BIG(1) QC_BIG(2) QC_BIG(3) QC_BIG(4) QC_BIG(5) QC_BIG(6) QC_BIG(7)
#undef QC_BIG
        }
        if (!big) {
            qc_tile_store_packed(t, MR, NP, nc, c00, c01, c10, c11, c20, c21, c30, c31, c40,
                                 c41, c50, c51, c60, c61, c70, c71);
            return;
        }
    }
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
