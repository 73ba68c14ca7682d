/* The 8-column AVX2 epilogue shared by the AVX2 and AVX-VNNI gemm kernels (include only from
 * files compiled with AVX2 enabled). */
#ifndef QC_GEMM_EPILOGUE_AVX2_H
#define QC_GEMM_EPILOGUE_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "gemm/kernels.h"

/* Epilogue for 8 columns of one row (bit-identical to qc_gemm_fix1 / qc_gemm_requant1). */
QC_INLINE void qc_gemm_store8_avx2(const qc_gemm_tile *t, int r, int x0, __m256i acc,
                                     int nvalid) {
    const __m256i zbp = _mm256_loadu_si256((const __m256i *)(t->zbp + x0));
    const __m256i bcorr = _mm256_loadu_si256((const __m256i *)(t->bcorr + x0));
    const __m256i cterm = _mm256_loadu_si256((const __m256i *)(t->cterm + x0));
    __m256i v = _mm256_add_epi32(acc, cterm);
    v = _mm256_sub_epi32(v, _mm256_mullo_epi32(zbp, _mm256_set1_epi32(t->rsum[r])));
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
        const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), s),
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
    const __m128i w = _mm_packs_epi32(_mm256_cvtpd_epi32(d0), _mm256_cvtpd_epi32(d1));
    const __m128i bytes = t->out == QC_GEMM_OUT_S8 ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
    uint8_t tmp[16];
    _mm_storeu_si128((__m128i *)tmp, bytes);
    memcpy((uint8_t *)t->c + r * t->ldc + x0, tmp, (size_t)nvalid);
}

#endif
