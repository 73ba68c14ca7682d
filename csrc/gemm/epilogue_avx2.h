/* The 8-column AVX2 epilogue shared by the AVX2 and AVX-VNNI gemm kernels (include only from
 * files compiled with AVX2 enabled). */
#ifndef QC_GEMM_EPILOGUE_AVX2_H
#define QC_GEMM_EPILOGUE_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "gemm/kernels.h"

/* The float64 requantization of 8 lanes (qc_gemm_requant1), as 8 int16 in [lo, hi]. */
QC_INLINE __m128i requant8_f64(const qc_gemm_tile *t, __m256i v, __m256 s) {
    const __m256d zp = _mm256_set1_pd((double)t->y_zp);
    const __m256d lo = _mm256_set1_pd((double)t->lo), hi = _mm256_set1_pd((double)t->hi);
    __m256d d0 = _mm256_cvtepi32_pd(_mm256_castsi256_si128(v));
    __m256d d1 = _mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1));
    d0 = _mm256_add_pd(_mm256_mul_pd(d0, _mm256_cvtps_pd(_mm256_castps256_ps128(s))), zp);
    d1 = _mm256_add_pd(_mm256_mul_pd(d1, _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1))), zp);
    d0 = _mm256_round_pd(d0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    d1 = _mm256_round_pd(d1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    d0 = _mm256_min_pd(_mm256_max_pd(d0, lo), hi);
    d1 = _mm256_min_pd(_mm256_max_pd(d1, lo), hi);
    return _mm_packs_epi32(_mm256_cvtpd_epi32(d0), _mm256_cvtpd_epi32(d1));
}

/* ONNX Runtime's requantization of 8 lanes (qc_gemm_requant1_f32), as int32 in [lo, hi]:
 * the float32 product, clamped to the shifted bounds (maxps keeps its second operand for a
 * NaN), rounded to nearest even, the zero point added. */
QC_INLINE __m256i qc_requant8_f32_epi32_avx2(__m256i v, __m256 s, int32_t y_zp, int32_t lo,
                                             int32_t hi) {
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
    p = _mm256_max_ps(p, _mm256_set1_ps((float)(lo - y_zp)));
    p = _mm256_min_ps(p, _mm256_set1_ps((float)(hi - y_zp)));
    p = _mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_add_epi32(_mm256_cvttps_epi32(p), _mm256_set1_epi32(y_zp));
}

/* The same as 8 int16. */
QC_INLINE __m128i qc_requant8_f32_avx2(__m256i v, __m256 s, int32_t y_zp, int32_t lo,
                                       int32_t hi) {
    const __m256i q = qc_requant8_f32_epi32_avx2(v, s, y_zp, lo, hi);
    return _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
}

/* The float64 requantization of 8 lanes (qc_gemm_requant1) as 8 int16, through the float32
 * shortcut where every valid lane passes the tests proven in kernels.h. */
QC_INLINE __m128i requant8_ref(const qc_gemm_tile *t, __m256i v, __m256 s, int nvalid) {
    const __m256 f = _mm256_cvtepi32_ps(v);
    __m256 tf = _mm256_add_ps(_mm256_mul_ps(f, s), _mm256_set1_ps((float)t->y_zp));
    tf = _mm256_min_ps(_mm256_max_ps(tf, _mm256_set1_ps((float)t->lo)),
                       _mm256_set1_ps((float)t->hi));
    const __m256 rf = _mm256_round_ps(tf, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 far = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(tf, rf), absm),
                                     _mm256_set1_ps(0.5f - 0x1p-10f), _CMP_LT_OQ);
    const __m256 exact =
        _mm256_cmp_ps(_mm256_and_ps(f, absm), _mm256_set1_ps(0x1p24f), _CMP_LT_OQ);
    if (((_mm256_movemask_ps(_mm256_and_ps(far, exact)) | (0xFF << nvalid)) & 0xFF) == 0xFF) {
        const __m256i q = _mm256_cvtps_epi32(rf);
        return _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    }
    return requant8_f64(t, v, s);
}

/* Epilogue for 8 columns of one row (bit-identical to qc_gemm_fix1 / qc_gemm_requant1). */
QC_INLINE void qc_gemm_store8_avx2(const qc_gemm_tile *t, int r, int x0, __m256i acc,
                                     int nvalid) {
    const __m256i zbp = _mm256_loadu_si256((const __m256i *)(t->zbp + x0));
    const __m256i bcorr = _mm256_loadu_si256((const __m256i *)(t->bcorr + x0));
    const __m256i cterm = _mm256_loadu_si256((const __m256i *)(t->cterm + x0));
    __m256i v = _mm256_add_epi32(acc, cterm);
    if (!t->zbp_zero)
        v = _mm256_sub_epi32(v, _mm256_mullo_epi32(zbp, _mm256_set1_epi32(t->rsum[r])));
    if (!t->zap_zero)
        v = _mm256_sub_epi32(v, _mm256_mullo_epi32(bcorr, _mm256_set1_epi32(t->zap[r])));
    if (t->out == QC_GEMM_OUT_S32) {
        int32_t *dst = (int32_t *)t->c + r * t->ldc + x0;
        if (nvalid == 8) {
            _mm256_storeu_si256((__m256i *)dst, v);
        } else {
            int32_t tmp[8];
            _mm256_storeu_si256((__m256i *)tmp, v);
            memcpy(dst, tmp, (size_t)nvalid * 4);
        }
        return;
    }
    const __m256 s = _mm256_loadu_ps(t->scale + x0);
    if (t->out == QC_GEMM_OUT_F32) {
        const __m256 sr = t->rscale ? _mm256_mul_ps(_mm256_set1_ps(t->rscale[r]), s) : s;
        const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), sr),
                                       _mm256_loadu_ps(t->fbias + x0));
        float *dst = (float *)t->c + r * t->ldc + x0;
        if (nvalid == 8) {
            _mm256_storeu_ps(dst, y);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, y);
            memcpy(dst, tmp, (size_t)nvalid * 4);
        }
        return;
    }
    const __m128i w = t->rq32 ? qc_requant8_f32_avx2(v, s, t->y_zp, t->lo, t->hi)
                              : requant8_ref(t, v, s, nvalid);
    const __m128i bytes = t->out == QC_GEMM_OUT_S8 ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
    uint8_t tmp[16];
    _mm_storeu_si128((__m128i *)tmp, bytes);
    memcpy((uint8_t *)t->c + r * t->ldc + x0, tmp, (size_t)nvalid);
}

#endif
