/* Pieces shared by the AVX-512 VNNI gemm and NCHW conv kernels: the 16-lane requantization
 * and the vpdpbusd step (include only from files compiled with AVX-512 VNNI enabled). */
#ifndef QC_GEMM_EPILOGUE_AVX512_H
#define QC_GEMM_EPILOGUE_AVX512_H

#include <immintrin.h>
#include <string.h>

#include "gemm/kernels.h"

/* qc_gemm_requant1 of 16 int32 lanes v with their float32 scales s, as int32 in [lo, hi]:
 * the float32 shortcut proven in kernels.h when every lane of `valid` passes its tests, else
 * the float64 arithmetic (rint == roundscale to nearest-even). Lanes outside `valid` are
 * computed but never decide the path. */
QC_INLINE __m512i qc_requant16_avx512(__m512i v, __m512 s, int32_t y_zp, int32_t lo, int32_t hi,
                                      __mmask16 valid) {
    const __m512 f = _mm512_cvtepi32_ps(v);
    __m512 tf = _mm512_add_ps(_mm512_mul_ps(f, s), _mm512_set1_ps((float)y_zp));
    tf = _mm512_min_ps(_mm512_max_ps(tf, _mm512_set1_ps((float)lo)), _mm512_set1_ps((float)hi));
    const __m512 rf = _mm512_roundscale_ps(tf, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 far = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(tf, rf)),
                                             _mm512_set1_ps(0.5f - 0x1p-10f), _CMP_LT_OQ);
    const __mmask16 exact =
        _mm512_cmp_ps_mask(_mm512_abs_ps(f), _mm512_set1_ps(0x1p24f), _CMP_LT_OQ);
    if ((__mmask16)((far & exact) | ~valid) == (__mmask16)0xFFFF) return _mm512_cvtps_epi32(rf);
    const __m512d zp = _mm512_set1_pd((double)y_zp);
    const __m512d lod = _mm512_set1_pd((double)lo), hid = _mm512_set1_pd((double)hi);
    __m512d d0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(v));
    __m512d d1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(v, 1));
    d0 = _mm512_add_pd(_mm512_mul_pd(d0, _mm512_cvtps_pd(_mm512_castps512_ps256(s))), zp);
    d1 = _mm512_add_pd(
        _mm512_mul_pd(d1, _mm512_cvtps_pd(_mm256_castpd_ps(
                              _mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)))),
        zp);
    d0 = _mm512_roundscale_pd(d0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    d1 = _mm512_roundscale_pd(d1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    d0 = _mm512_min_pd(_mm512_max_pd(d0, lod), hid);
    d1 = _mm512_min_pd(_mm512_max_pd(d1, lod), hid);
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtpd_epi32(d0)),
                              _mm512_cvtpd_epi32(d1), 1);
}

/* ONNX Runtime's requantization of 16 lanes (qc_gemm_requant1_f32), as int32 in [lo, hi]: the
 * float32 product, clamped to the shifted bounds (vmaxps keeps its second operand, the bound,
 * for a NaN), rounded to nearest even, the zero point added. */
QC_INLINE __m512i qc_requant16_f32_avx512(__m512i v, __m512 s, int32_t y_zp, int32_t lo,
                                          int32_t hi) {
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
    p = _mm512_max_ps(p, _mm512_set1_ps((float)(lo - y_zp)));
    p = _mm512_min_ps(p, _mm512_set1_ps((float)(hi - y_zp)));
    return _mm512_add_epi32(_mm512_cvt_roundps_epi32(p, _MM_FROUND_TO_NEAREST_INT |
                                                            _MM_FROUND_NO_EXC),
                            _mm512_set1_epi32(y_zp));
}

/* qc_requant16_f32_avx512 for a caller that narrows with saturation and applies lo itself:
 * with p = fl32(fl32(v) * s), rint(p) + y_zp as int32 where |p| <= L = 2^22 - 512, and a
 * value of p's sign beyond the int16 range elsewhere, so a saturating narrowing to the output
 * type gives clamp(rint(p) + y_zp, qmin, qmax). zpbits = 0x4B400000 - y_zp.
 *   - vrangeps 0x02 keeps the smaller magnitude of p and L with p's sign (imm8[1:0] = 10b: the
 *     smaller magnitude; imm8[3:2] = 00b: the sign of the first operand): |q| <= L.
 *   - q + 1.5 * 2^23 lies in [2^23 + 512, 2^24 - 512], where float32 steps by 1, so the add
 *     rounds q to an integer once, ties to even (1.5 * 2^23 is even), and its bits minus
 *     0x4B400000 (those of 1.5 * 2^23) are rint(q) exactly (bits grow by 1 per step there).
 *   - |p| <= L: q = p. |p| > L: rint(p) and rint(q) = +-L share the sign and both plus y_zp
 *     (|y_zp| <= 255) are beyond int16, so the narrowing saturates both the same way.
 * No NaN: v is an integer and s a finite multiplier (an infinite product becomes +-L). Five
 * operations per 16 lanes instead of the exact version's six and its clamps. */
QC_INLINE __m512i qc_requant16_f32_sat_avx512(__m512i v, __m512 s, __m512i zpbits) {
    const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
    const __m512 q = _mm512_range_ps(p, _mm512_set1_ps(4193792.0f), 0x02);
    return _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(q, _mm512_set1_ps(12582912.0f))),
                            zpbits);
}

/* qc_requant16_f32_sat_avx512 of four vectors with one multiplier vector. */
QC_INLINE void qc_requant64_f32_sat_avx512(__m512 s, int32_t y_zp, __m512i *a0, __m512i *a1,
                                           __m512i *a2, __m512i *a3) {
    const __m512i zb = _mm512_set1_epi32(0x4B400000 - y_zp);
    *a0 = qc_requant16_f32_sat_avx512(*a0, s, zb);
    *a1 = qc_requant16_f32_sat_avx512(*a1, s, zb);
    *a2 = qc_requant16_f32_sat_avx512(*a2, s, zb);
    *a3 = qc_requant16_f32_sat_avx512(*a3, s, zb);
}

/* qc_requant16_f32_sat_avx512 where the caller knows |v * s| + 256 < 2^22 for every lane (the
 * bound of qc_rint16_magic_avx512's callers): then |p| <= 2^22 - 256 already (rounding is
 * monotone), and the add needs no limiting. Four operations per 16 lanes. */
QC_INLINE __m512i qc_requant16_f32_magic_avx512(__m512i v, __m512 s, __m512i zpbits) {
    const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
    return _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(p, _mm512_set1_ps(12582912.0f))),
                            zpbits);
}

/* The requantization a tile asks for, 16 lanes as int32 in [lo, hi] (qc_requant16_avx512
 * decides its path on the lanes of `valid` only). */
QC_INLINE __m512i qc_requant16_t_avx512(const qc_gemm_tile *t, __m512i v, __m512 s,
                                        __mmask16 valid) {
    return t->rq32 ? qc_requant16_f32_avx512(v, s, t->y_zp, t->lo, t->hi)
                   : qc_requant16_avx512(v, s, t->y_zp, t->lo, t->hi, valid);
}

/* bits(r) - bits(M) of qc_requant16_fma_avx512 (below) before its narrowing: an int32 >= lo
 * that the output type's saturation turns into y. zpm = y_zp + M, lom = lo + M (floats). Also
 * for narrowing two rows at a time with the saturating packs (packs_epi32, then packus_epi16 or
 * packs_epi16: the same clamps, as the value is >= lo >= 0 for uint8). */
QC_INLINE __m512i qc_requant16_fma32_avx512(__m512i v, __m512 s, __m512 zpm, __m512 lom) {
    const __m512 r = _mm512_fmadd_round_ps(_mm512_cvtepi32_ps(v), s, zpm,
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_sub_epi32(_mm512_castps_si512(_mm512_max_ps(r, lom)),
                            _mm512_set1_epi32(0x4B400000));
}

/* The requantization of 16 lanes in one rounding, narrowed to the output's bytes, for a call
 * whose tile has rq_fma (every multiplier s is 0 or finite with |s| >= 2^-20) and whose hi is
 * the type's largest value (127 for int8, 255 for uint8; ReLU raises only lo); valid when
 * every lane has |v| < 2^24 (the caller tests that and otherwise takes qc_requant16_avx512).
 * With M = 1.5 * 2^23:
 *   r = max(fma(f, s, y_zp + M), lo + M),   y = sat(bits(r) - bits(M))
 * where sat is the int8 or uint8 saturating narrowing. Proof that y equals qc_gemm_requant1,
 * Y = clamp(rint(d), lo, hi) with d = fl64(fl64(v * s) + y_zp), writing x = v * s + y_zp
 * (exact):
 *   - f = v (|v| < 2^24), and fl64(v * s) = v * s (24 x 24 significant bits). y_zp + M and
 *     lo + M are integers in [2^23, 2^24): exact floats. The FMA rounds f * s + y_zp + M =
 *     x + M exactly once. r >= lo + M > 2^23 is positive, and positive floats order like
 *     their bits, so bits(r) - bits(M) grows with r; below 2^24 (float32 steps by 1 there) it
 *     is r - M exactly.
 *   - |x| < 2^10: x is a multiple of s's last bit 2^(e - 23), e >= -20 (s = 0: x = y_zp), so
 *     it has at most 53 significant bits and d = x. x + M lies in [2^23, 2^24): the FMA gives
 *     M + rint(x), ties to even since M is even, the max makes it M + max(rint(x), lo) < 2^24,
 *     and the narrowing then takes min(., hi). So y = clamp(rint(x), lo, hi) = Y.
 *   - x >= 2^10: d >= 2^10 (fl64 is monotone, 2^10 a double), Y = hi; r is at least
 *     fl32(M + 2^10) = M + 2^10 (an infinite product included), so bits(r) - bits(M) >= 2^10
 *     > hi and y = hi.
 *   - x <= -2^10: d <= -2^10, Y = lo; the FMA gives at most M - 2^10 < lo + M, so r = lo + M
 *     and y = lo. No NaN: f and s are finite.
 * Six operations per 16 lanes where the general shortcut takes about sixteen. */
QC_INLINE __m128i qc_requant16_fma_avx512(__m512i v, __m512 s, int32_t y_zp, int32_t lo,
                                          int out_signed) {
    const __m512i q = qc_requant16_fma32_avx512(v, s, _mm512_set1_ps((float)(y_zp + 12582912)),
                                                _mm512_set1_ps((float)(lo + 12582912)));
    return out_signed ? _mm512_cvtsepi32_epi8(q) : _mm512_cvtusepi32_epi8(q);
}

/* rint(v * s + y_zp) in one rounding, as int32, for lanes whose |v| < 2^24 with s = 0 or
 * s >= 2^-22 and |v * s| + 256 < 2^22 (c = y_zp + 1.5 * 2^23): the exact sum lies in
 * [2^23, 2^24), where float32 steps by 1, and rounds once to nearest even (1.5 * 2^23 is
 * even); its bits minus those of 1.5 * 2^23 are the integer. It equals qc_gemm_requant1
 * before the clamp wherever the clamp keeps it: the float64 x = v * s + y_zp is exact for
 * |x| < 2^8 (a multiple of 2^-45 below 2^8), and beyond that both clamp to the same bound. The
 * caller clamps (the saturating packs do, for bounds at the type's ends). */
QC_INLINE __m512i qc_rint16_magic_avx512(__m512i v, __m512 s, __m512 c) {
    const __m512 u = _mm512_fmadd_round_ps(_mm512_cvtepi32_ps(v), s, c,
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_sub_epi32(_mm512_castps_si512(u), _mm512_set1_epi32(0x4B400000));
}

/* Lanes of `valid` with |v| >= 2^24 (v + 2^24 outside [0, 2^25) as unsigned). */
QC_INLINE __mmask16 qc_beyond24_avx512(__m512i v, __mmask16 valid) {
    return _mm512_mask_cmpge_epu32_mask(valid, _mm512_add_epi32(v, _mm512_set1_epi32(1 << 24)),
                                        _mm512_set1_epi32(1 << 25));
}

/* acc += dot4(u8 a, s8 b) per int32 lane. Inline asm rather than _mm512_dpbusd_epi32: GCC 12
 * copies every accumulator through a spare register (and spills) around the intrinsic,
 * halving the kernel's speed; "+v" keeps each accumulator in place. */
#define QC_DPBUSD(acc, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

QC_INLINE int32_t qc_load4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Epilogue for one row of one panel: exact int32 C (wrapping), then int32 store, the float
 * output or the requantization of kernels.h, masked to the valid columns. Bit-identical to
 * qc_gemm_fix1 / qc_gemm_requant1. acc_has_cterm: the accumulator started at the panel's
 * cterm (the VNNI kernel) instead of 0 (AMX, qc_gemm_store_row16), so it is not added again. */
QC_INLINE void qc_gemm_store_row16_from(const qc_gemm_tile *t, int r, int p, __m512i acc,
                                        __mmask16 mask, const int acc_has_cterm) {
    const __m512i zbp = _mm512_loadu_si512(t->zbp + 16 * p);
    const __m512i bcorr = _mm512_loadu_si512(t->bcorr + 16 * p);
    const __m512i cterm = _mm512_loadu_si512(t->cterm + 16 * p);
    __m512i v = acc_has_cterm ? acc : _mm512_add_epi32(acc, cterm);
    if (!t->zbp_zero)
        v = _mm512_sub_epi32(v, _mm512_mullo_epi32(zbp, _mm512_set1_epi32(t->rsum[r])));
    if (!t->zap_zero)
        v = _mm512_sub_epi32(v, _mm512_mullo_epi32(bcorr, _mm512_set1_epi32(t->zap[r])));
    if (t->out == QC_GEMM_OUT_S32) {
        _mm512_mask_storeu_epi32((int32_t *)t->c + r * t->ldc + 16 * p, mask, v);
        return;
    }
    const __m512 s = _mm512_loadu_ps(t->scale + 16 * p);
    if (t->out == QC_GEMM_OUT_F32) {
        const __m512 sr = t->rscale ? _mm512_mul_ps(_mm512_set1_ps(t->rscale[r]), s) : s;
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), sr),
                                       _mm512_loadu_ps(t->fbias + 16 * p));
        _mm512_mask_storeu_ps((float *)t->c + r * t->ldc + 16 * p, mask, y);
        return;
    }
    /* t->hi is the type's largest value (ReLU raises only lo) */
    const __m128i q = t->rq_fma && (t->small || !qc_beyond24_avx512(v, mask))
                          ? qc_requant16_fma_avx512(v, s, t->y_zp, t->lo,
                                                    t->out == QC_GEMM_OUT_S8)
                          : _mm512_cvtepi32_epi8(qc_requant16_t_avx512(t, v, s, mask));
    char *dst = (char *)t->c + r * t->ldc + 16 * p;
    if (mask == (__mmask16)0xFFFF) _mm_storeu_si128((__m128i *)(void *)dst, q);
    else _mm_mask_storeu_epi8(dst, mask, q);
}

/* The same for an accumulator that started at zero. */
QC_INLINE void qc_gemm_store_row16(const qc_gemm_tile *t, int r, int p, __m512i acc,
                                   __mmask16 mask) {
    qc_gemm_store_row16_from(t, r, p, acc, mask, 0);
}

#endif
