/* AVX-512 VNNI kernel of the NCHW conv GEMM: a weight tile of up to 8 output channels times
 * a block of pixels per call. Full tiles run software-pipelined 32-pixel sub-tiles (per quad of
 * K, two 64-byte pixel vectors and one 32-bit weight broadcast per row feed 16 vpdpbusd, while
 * the previous sub-tile is requantized); partial tiles and the block's last pixels run
 * register tiles of up to 8 x 48 (24 accumulators). Each accumulator's epilogue writes 16
 * pixels of one output plane. */
#include "conv/nchw.h"

#ifndef QC_NO_X86
#include "gemm/epilogue_avx512.h"

/* vrangeps imm8: the operand of larger magnitude (bits 1:0 = 11), sign cleared (bits 3:2 = 10) */
#define QC_RANGE_ABSMAX 0x0B

/* The float32 shortcut for 16 lanes: rint(u) with u = fl32(f * s + y_zp) (one rounding, FMA),
 * clamped to [lo, hi] in float32 unless the call is lean; *worst and *fworst keep the lane-wise
 * largest |u - rint(u)| and |f| over the `valid` lanes, which the caller tests. Proof that it
 * equals qc_gemm_requant1 (float64 d = fl64(x) with x = v * s + y_zp, then rint and clamp)
 * when |v| < 2^24 (so f = v) and |u - rint(u)| < 1/2 - 2^-15:
 *   - |u| < 256: u and x are within half an ulp of [128, 256), |u - x| <= 2^-17, and
 *     |d - x| <= 2^-45; so x and d lie strictly inside the unit interval around k = rint(u)
 *     (at least 2^-15 - 2^-17 - 2^-45 from its ends) and rint(d) = k.
 *   - u >= 256 (rounding is monotone and 256 is a float): x > 256 - 2^-16, so d > 255.5 and
 *     both sides clamp to hi (<= 255); u <= -256 likewise clamps both to lo (>= -128).
 * Clamping after rint equals clamping before (rint is monotone, lo and hi are integers); the
 * float32 clamp of a non-lean call only keeps the conversion in range. vreduceps gives
 * u - rint(u) exactly in one step. A lane fails the test about once in 2^14. */
QC_INLINE __m512i round16(const qc_nchw_tile *t, __m512i v, __m512 s, __mmask16 valid,
                          __m512 *worst, __m512 *fworst) {
    const __m512 f = _mm512_cvtepi32_ps(v);
    __m512 u = _mm512_fmadd_ps(f, s, _mm512_set1_ps(t->fzp));
    if (!t->lean)
        u = _mm512_min_ps(_mm512_max_ps(u, _mm512_set1_ps(t->flo)), _mm512_set1_ps(t->fhi));
    __m512 frac = _mm512_reduce_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (valid != (__mmask16)0xFFFF) frac = _mm512_maskz_mov_ps(valid, frac);
    *worst = _mm512_range_ps(*worst, frac, QC_RANGE_ABSMAX);
    if (!t->small) {
        *fworst = _mm512_range_ps(*fworst, valid != (__mmask16)0xFFFF ?
                                  _mm512_maskz_mov_ps(valid, f) : f, QC_RANGE_ABSMAX);
    }
    return _mm512_cvt_roundps_epi32(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Narrow int32 results to bytes in order, saturating to the output type (hi is the type's
 * maximum), and raise them to lo (relu). narrow16to8 takes them packed to 16 bits in pairs,
 * packs_epi32(q0, q1) and packs_epi32(q2, q3); the packs work per 128-bit lane, so dword
 * 4i + j of its result holds lanes 4i .. 4i + 3 of q_j, and the permutation puts them in
 * order (q0's 16 lanes first). */
QC_INLINE __m512i narrow16to8(const qc_nchw_tile *t, __m512i w01, __m512i w23) {
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i b;
    if (t->out == QC_GEMM_OUT_U8) {
        b = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(w01, w23));
        if (t->lo > 0) b = _mm512_max_epu8(b, _mm512_set1_epi8((char)t->lo));
    } else {
        b = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(w01, w23));
        if (t->lo > -128) b = _mm512_max_epi8(b, _mm512_set1_epi8((char)t->lo));
    }
    return b;
}

/* Store the first npix (<= 48) of up to 48 results (q0, q1, q2: pixels 0-15, 16-31, 32-47). */
QC_INLINE void store48(const qc_nchw_tile *t, char *dst, int npix, __m512i q0, __m512i q1,
                       __m512i q2) {
    const __m512i b = narrow16to8(t, _mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q2));
    _mm512_mask_storeu_epi8(dst, ((__mmask64)1 << npix) - 1, b);
}

/* C = acc + rterm - zw' * xsum (wrapping) for pixel vector j. */
QC_INLINE __m512i exact16(const qc_nchw_tile *t, int r, int j, __m512i acc) {
    __m512i v = _mm512_add_epi32(acc, _mm512_set1_epi32(t->rterm[r]));
    if (t->xsum) {
        const __m512i xs = _mm512_loadu_si512(t->xsum + 16 * j);
        v = _mm512_sub_epi32(v, _mm512_mullo_epi32(xs, _mm512_set1_epi32(t->zwp[r])));
    }
    return v;
}

/* Row r's epilogue for NP pixel vectors (pixels 16j .. 16j + 15 in vector j, mj the real
 * ones): the exact C, then the int32 store or the requantization, with one exactness branch
 * per row. Named variables, not arrays: GCC keeps arrays of vectors in memory. */
QC_INLINE void store_row(const qc_nchw_tile *t, int r, const int NP, __m512i a0, __m512i a1,
                         __m512i a2, int npix, __mmask16 m0, __mmask16 m1, __mmask16 m2) {
    const __m512i v0 = exact16(t, r, 0, a0);
    const __m512i v1 = NP > 1 ? exact16(t, r, 1, a1) : v0;
    const __m512i v2 = NP > 2 ? exact16(t, r, 2, a2) : v1;
    char *dst = (char *)t->y + r * t->ldy * (t->out == QC_GEMM_OUT_S32 ? 4 : 1);
    if (t->out == QC_GEMM_OUT_S32) {
        _mm512_mask_storeu_epi32(dst, m0, v0);
        if (NP > 1) _mm512_mask_storeu_epi32(dst + 64, m1, v1);
        if (NP > 2) _mm512_mask_storeu_epi32(dst + 128, m2, v2);
        return;
    }
    const __m512 s = _mm512_set1_ps(t->scale[r]);
    if (t->rq32) { /* store48's narrowing saturates and raises to lo */
        const __m512i zb = _mm512_set1_epi32(0x4B400000 - t->y_zp);
        const __m512i q0 = qc_requant16_f32_sat_avx512(v0, s, zb);
        const __m512i q1 = NP > 1 ? qc_requant16_f32_sat_avx512(v1, s, zb) : q0;
        const __m512i q2 = NP > 2 ? qc_requant16_f32_sat_avx512(v2, s, zb) : q1;
        store48(t, dst, npix, q0, q1, q2);
        return;
    }
    /* the largest |u - rint(u)| and |f| of the row's valid lanes decide its path at once */
    __m512 worst = _mm512_setzero_ps(), fworst = _mm512_setzero_ps();
    __m512i q0 = round16(t, v0, s, m0, &worst, &fworst);
    __m512i q1 = NP > 1 ? round16(t, v1, s, m1, &worst, &fworst) : q0;
    __m512i q2 = NP > 2 ? round16(t, v2, s, m2, &worst, &fworst) : q1;
    __mmask16 bad = _mm512_cmp_ps_mask(worst, _mm512_set1_ps(0.5f - 0x1p-15f), _CMP_NLT_UQ);
    if (!t->small)
        bad |= _mm512_cmp_ps_mask(fworst, _mm512_set1_ps(0x1p24f), _CMP_NLT_UQ);
    if (QC_UNLIKELY(bad)) {
        q0 = qc_requant16_avx512(v0, s, t->y_zp, t->lo, t->hi, m0);
        if (NP > 1) q1 = qc_requant16_avx512(v1, s, t->y_zp, t->lo, t->hi, m1);
        if (NP > 2) q2 = qc_requant16_avx512(v2, s, t->y_zp, t->lo, t->hi, m2);
    }
    store48(t, dst, npix, q0, q1, q2);
}

/* MR rows x NP pixel vectors; both compile-time constants at each call site, so the guards
 * vanish. Accumulators are named variables (an array of __m512i makes GCC spill them). Here
 * the intrinsic compiles to clean vpdpbusd chains while gemm's QC_DPBUSD asm does not: GCC 12
 * copies each accumulator in and out of a scratch register around the asm in this loop. */
#define QC_NACC(r) \
    __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0;
#define QC_RTERM(r)                               \
    if (MR > r) {                                 \
        c##r##0 = _mm512_set1_epi32(t->rterm[r]); \
        c##r##1 = _mm512_set1_epi32(t->rterm[r]); \
    }
#define QC_NSTEP(r)                                                                   \
    if (MR > r) {                                                                     \
        const __m512i wv = _mm512_set1_epi32(qc_load4(w + 4 * (q * QC_NCHW_MR + r))); \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, x0, wv);                               \
        if (NP > 1) c##r##1 = _mm512_dpbusd_epi32(c##r##1, x1, wv);                   \
        if (NP > 2) c##r##2 = _mm512_dpbusd_epi32(c##r##2, x2, wv);                   \
    }
#define QC_NPARK(r)                                                \
    if (MR > r) {                                                  \
        _mm512_store_si512(park + 3 * r, c##r##0);                 \
        if (NP > 1) _mm512_store_si512(park + 3 * r + 1, c##r##1); \
        if (NP > 2) _mm512_store_si512(park + 3 * r + 2, c##r##2); \
    }

QC_INLINE __mmask16 lanes(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

QC_INLINE void tile_mxn(const qc_nchw_tile *t, const int MR, const int NP, int npix) {
    const int64_t quads = t->kp / 4;
    const int8_t *w = t->w;
    const uint8_t *x = t->x;
    QC_NACC(0) QC_NACC(1) QC_NACC(2) QC_NACC(3) QC_NACC(4) QC_NACC(5) QC_NACC(6) QC_NACC(7)
    for (int64_t q = 0; q < quads; q++, x += t->xq) {
        const __m512i x0 = _mm512_loadu_si512(x);
        const __m512i x1 = NP > 1 ? _mm512_loadu_si512(x + 64) : _mm512_setzero_si512();
        const __m512i x2 = NP > 2 ? _mm512_loadu_si512(x + 128) : _mm512_setzero_si512();
        QC_NSTEP(0) QC_NSTEP(1) QC_NSTEP(2) QC_NSTEP(3)
        QC_NSTEP(4) QC_NSTEP(5) QC_NSTEP(6) QC_NSTEP(7)
    }
    /* Park the accumulators, then run the epilogue from memory: with all of them live
     * through the epilogue's temporaries GCC spills them anyway, and places the spill stores
     * inside the k loop (one per accumulator per step). */
    __m512i park[3 * QC_NCHW_MR] __attribute__((aligned(64)));
    QC_NPARK(0) QC_NPARK(1) QC_NPARK(2) QC_NPARK(3)
    QC_NPARK(4) QC_NPARK(5) QC_NPARK(6) QC_NPARK(7)
    __asm__ volatile("" : : "r"(park) : "memory");
    const __mmask16 m0 = lanes(npix), m1 = lanes(npix - 16), m2 = lanes(npix - 32);
    for (int r = 0; r < MR; r++) {
        const __m512i z = _mm512_setzero_si512();
        store_row(t, r, NP, _mm512_load_si512(park + 3 * r),
                  NP > 1 ? _mm512_load_si512(park + 3 * r + 1) : z,
                  NP > 2 ? _mm512_load_si512(park + 3 * r + 2) : z, npix, m0, m1, m2);
    }
}

/* One out-of-line function per shape: inlined into a single dispatcher, the 24 shapes share
 * one register allocation and GCC 12 spills the accumulators of the big ones to the stack. */
#define QC_NSHAPE(MR, NP)                                                                  \
    static __attribute__((noinline)) void tile_##MR##x##NP(const qc_nchw_tile *t, int npix) { \
        tile_mxn(t, MR, NP, npix);                                                         \
    }
#define QC_NSHAPES(MR) QC_NSHAPE(MR, 1) QC_NSHAPE(MR, 2) QC_NSHAPE(MR, 3)
QC_NSHAPES(1) QC_NSHAPES(2) QC_NSHAPES(3) QC_NSHAPES(4)
QC_NSHAPES(5) QC_NSHAPES(6) QC_NSHAPES(7) QC_NSHAPES(8)

#define QC_NROW(MR) {tile_##MR##x1, tile_##MR##x2, tile_##MR##x3}
static void (*const tiles[QC_NCHW_MR][3])(const qc_nchw_tile *, int) = {
    QC_NROW(1), QC_NROW(2), QC_NROW(3), QC_NROW(4),
    QC_NROW(5), QC_NROW(6), QC_NROW(7), QC_NROW(8),
};

/* Row r's 32 results, packed to 16 bits in pairs (packs_epi32 of two vectors), narrowed and
 * stored. */
QC_INLINE void store_row32(const qc_nchw_tile *t, int r, __m512i w) {
    _mm256_storeu_si256((__m256i *)((char *)t->y + r * t->ldy),
                        _mm512_castsi512_si256(narrow16to8(t, w, w)));
}

/* store_row for the common case the driver calls lean (|C| < 2^24, multipliers below 64),
 * without pixel sums (every zw' 0) and with a requantized output, on two full vectors whose
 * accumulators started at rterm (so they hold C): round16's steps with nothing to clamp or
 * mask, one vrangeps for the row's exactness test, and narrow16to8 for its 32 results. */
QC_INLINE void store_row_fast(const qc_nchw_tile *t, int r, __m512i v0, __m512i v1) {
    const __m512 s = _mm512_set1_ps(t->scale[r]), zp = _mm512_set1_ps(t->fzp);
    if (t->rq32) { /* ONNX Runtime's requantization, no test; narrow16to8 clamps */
        const __m512i zb = _mm512_set1_epi32(0x4B400000 - t->y_zp);
        store_row32(t, r, _mm512_packs_epi32(qc_requant16_f32_sat_avx512(v0, s, zb),
                                             qc_requant16_f32_sat_avx512(v1, s, zb)));
        return;
    }
    const __m512 u0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v0), s, zp);
    const __m512 u1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v1), s, zp);
    const __m512 worst =
        _mm512_range_ps(_mm512_reduce_ps(u0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                        _mm512_reduce_ps(u1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                        QC_RANGE_ABSMAX);
    __m512i q0 = _mm512_cvt_roundps_epi32(u0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512i q1 = _mm512_cvt_roundps_epi32(u1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (QC_UNLIKELY(_mm512_cmp_ps_mask(worst, _mm512_set1_ps(0.5f - 0x1p-15f), _CMP_NLT_UQ))) {
        q0 = qc_requant16_avx512(v0, s, t->y_zp, t->lo, t->hi, 0xFFFF);
        q1 = qc_requant16_avx512(v1, s, t->y_zp, t->lo, t->hi, 0xFFFF);
    }
    store_row32(t, r, _mm512_packs_epi32(q0, q1));
}

/* store_row_fast for a call the driver calls exact: one rounding per vector and no test
 * (qc_rint16_magic_avx512; the packs and narrow16to8 clamp); with rq32 the float32 product and
 * one add under the same bound (qc_requant16_f32_magic_avx512). */
QC_INLINE void store_row_exact(const qc_nchw_tile *t, int r, __m512i v0, __m512i v1) {
    const __m512 s = _mm512_set1_ps(t->scale[r]);
    if (t->rq32) {
        const __m512i zb = _mm512_set1_epi32(0x4B400000 - t->y_zp);
        store_row32(t, r, _mm512_packs_epi32(qc_requant16_f32_magic_avx512(v0, s, zb),
                                             qc_requant16_f32_magic_avx512(v1, s, zb)));
        return;
    }
    const __m512 c = _mm512_set1_ps((float)(t->y_zp + 12582912)); /* y_zp + 1.5 * 2^23 */
    store_row32(t, r, _mm512_packs_epi32(qc_rint16_magic_avx512(v0, s, c),
                                         qc_rint16_magic_avx512(v1, s, c)));
}

/* Sub-tiles of PIPE_NP * 16 pixels of a full weight tile, software-pipelined: the k loop of
 * sub-tile j also runs the epilogue of sub-tile j - 1 (parked in memory), its rows spread over
 * the quads, so the requantization overlaps the vpdpbusd chains instead of following them (for
 * small K the epilogue costs as much as the dot products). Two vectors per row leave the
 * epilogue enough registers beside the 16 accumulators. */
#define PIPE_NP 2
QC_INLINE void run_8xpipe(const qc_nchw_tile *t, int nsub, const int FAST) {
    const int NP = PIPE_NP, MR = QC_NCHW_MR, sub = 16 * PIPE_NP;
    const int64_t quads = t->kp / 4;
    const int per = (int)((MR + quads - 1) / QC_MAX(quads, 1)); /* epilogue rows per quad */
    const size_t esize = t->out == QC_GEMM_OUT_S32 ? 4 : 1;
    const __mmask16 full = 0xFFFF;
    __m512i park[3 * QC_NCHW_MR] __attribute__((aligned(64)));
    qc_nchw_tile tp = *t; /* sub-tile j - 1, for its epilogue */
    for (int j = 0; j <= nsub; j++) {
        int row = MR; /* rows of sub-tile j - 1 still to store */
        if (j > 0) {
            row = 0;
            tp.y = (char *)t->y + (size_t)(j - 1) * sub * esize;
            tp.xsum = t->xsum ? t->xsum + (j - 1) * sub : NULL;
        }
#define QC_PIPE_ROW()                                                                       \
    do {                                                                                    \
        if (FAST == 2) {                                                                    \
            store_row_exact(&tp, row, _mm512_load_si512(park + 3 * row),                    \
                            _mm512_load_si512(park + 3 * row + 1));                         \
        } else if (FAST) {                                                                  \
            store_row_fast(&tp, row, _mm512_load_si512(park + 3 * row),                     \
                           _mm512_load_si512(park + 3 * row + 1));                          \
        } else {                                                                            \
            store_row(&tp, row, NP, _mm512_load_si512(park + 3 * row),                      \
                      _mm512_load_si512(park + 3 * row + 1), _mm512_setzero_si512(), sub,   \
                      full, full, 0);                                                       \
        }                                                                                   \
        row++;                                                                              \
    } while (0)
        if (j < nsub) {
            const int8_t *w = t->w;
            const uint8_t *x = t->x + (size_t)4 * sub * j;
            QC_NACC(0) QC_NACC(1) QC_NACC(2) QC_NACC(3) QC_NACC(4) QC_NACC(5) QC_NACC(6) QC_NACC(7)
            if (FAST) { /* start at rterm: the accumulators end as the exact C */
                QC_RTERM(0) QC_RTERM(1) QC_RTERM(2) QC_RTERM(3)
                QC_RTERM(4) QC_RTERM(5) QC_RTERM(6) QC_RTERM(7)
            }
            for (int64_t q = 0; q < quads; q++, x += t->xq) {
                const __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 64);
                const __m512i x2 = _mm512_setzero_si512();
                QC_NSTEP(0) QC_NSTEP(1) QC_NSTEP(2) QC_NSTEP(3)
                QC_NSTEP(4) QC_NSTEP(5) QC_NSTEP(6) QC_NSTEP(7)
                for (int e = 0; e < per && row < MR; e++) QC_PIPE_ROW();
            }
            while (row < MR) QC_PIPE_ROW();
            QC_NPARK(0) QC_NPARK(1) QC_NPARK(2) QC_NPARK(3)
            QC_NPARK(4) QC_NPARK(5) QC_NPARK(6) QC_NPARK(7)
            __asm__ volatile("" : : "r"(park) : "memory");
        } else {
            while (row < MR) QC_PIPE_ROW();
        }
#undef QC_PIPE_ROW
    }
}

static __attribute__((noinline)) void run_8xpipe_fast(const qc_nchw_tile *t, int nsub) {
    run_8xpipe(t, nsub, 1);
}
static __attribute__((noinline)) void run_8xpipe_exact(const qc_nchw_tile *t, int nsub) {
    run_8xpipe(t, nsub, 2);
}
static __attribute__((noinline)) void run_8xpipe_any(const qc_nchw_tile *t, int nsub) {
    run_8xpipe(t, nsub, 0);
}

/* Any npix: full weight tiles run the pipelined sub-tiles, the rest (and the last pixels)
 * one call of tile_mxn per 48 pixels. */
static void tile_avx512vnni(const qc_nchw_tile *t, int mr, int npix) {
    const size_t esize = t->out == QC_GEMM_OUT_S32 ? 4 : 1;
    int j0 = 0;
    if (mr == QC_NCHW_MR && npix >= 16 * PIPE_NP) {
        j0 = npix / (16 * PIPE_NP) * (16 * PIPE_NP);
        if (t->exact && !t->xsum && t->out != QC_GEMM_OUT_S32)
            run_8xpipe_exact(t, npix / (16 * PIPE_NP));
        else if ((t->lean || t->rq32) && !t->xsum && t->out != QC_GEMM_OUT_S32)
            run_8xpipe_fast(t, npix / (16 * PIPE_NP));
        else
            run_8xpipe_any(t, npix / (16 * PIPE_NP));
    }
    qc_nchw_tile tt = *t;
    for (; j0 < npix; j0 += QC_NCHW_NR) {
        const int n = QC_MIN(QC_NCHW_NR, npix - j0);
        tt.x = t->x + 4 * (size_t)j0;
        tt.xsum = t->xsum ? t->xsum + j0 : NULL;
        tt.y = (char *)t->y + (size_t)j0 * esize;
        tiles[mr - 1][(n - 1) / 16](&tt, n);
    }
}

const qc_nchw_kernels qc_nchw_kernels_avx512vnni = {"conv_nchw_8x48c4__avx512vnni",
                                                    tile_avx512vnni};
#endif
