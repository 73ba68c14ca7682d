/* AVX-512 calib kernels: 16 lanes per step (doubles in two 8-lane halves), scalar tails. */
#include "calib/error_stats_impl.h"

#include <immintrin.h>
#include <math.h>

/* The 16 floats of v widened (exactly) to double: lanes 0-7 in w[0], lanes 8-15 in w[1]. */
QC_INLINE void widen_pd(__m512 v, __m512d w[2]) {
    w[0] = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    w[1] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

void qc_error_stats__avx512(const float *x, const void *q, int is_signed, size_t n, float scale,
                            int32_t zp, qc_error_stats *acc) {
    const float half = qc_stats_half_step(scale);
    const __m512 vs = _mm512_set1_ps(scale), vh = _mm512_set1_ps(half);
    const __m512i vzp = _mm512_set1_epi32(zp), one = _mm512_set1_epi64(1);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, e0 = s0, e1 = s0;
    __m512i c0 = _mm512_setzero_si512(), c1 = c0;
    __m512 vmx = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + QC_STATS_LANES <= n; i += QC_STATS_LANES) {
        __m128i qb = _mm_loadu_si128((const __m128i *)((const char *)q + i));
        __m512i qi = is_signed ? _mm512_cvtepi8_epi32(qb) : _mm512_cvtepu8_epi32(qb);
        __m512 d = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(qi, vzp)), vs);
        __m512 xv = _mm512_loadu_ps(x + i);
        __m512 e = _mm512_abs_ps(_mm512_sub_ps(xv, d));
        __m512d xw[2], dw[2];
        widen_pd(xv, xw);
        widen_pd(d, dw);
        __m512d rlo = _mm512_sub_pd(xw[0], dw[0]), rhi = _mm512_sub_pd(xw[1], dw[1]);
        s0 = _mm512_add_pd(s0, _mm512_mul_pd(xw[0], xw[0]));
        s1 = _mm512_add_pd(s1, _mm512_mul_pd(xw[1], xw[1]));
        e0 = _mm512_add_pd(e0, _mm512_mul_pd(rlo, rlo));
        e1 = _mm512_add_pd(e1, _mm512_mul_pd(rhi, rhi));
        vmx = _mm512_max_ps(e, vmx); /* e > mx ? e : mx, as the scalar loop */
        __mmask16 m = _mm512_cmp_ps_mask(e, vh, _CMP_GT_OQ);
        c0 = _mm512_mask_add_epi64(c0, (__mmask8)(m & 0xFF), c0, one);
        c1 = _mm512_mask_add_epi64(c1, (__mmask8)(m >> 8), c1, one);
    }
    qc_stats_lanes a;
    _mm512_storeu_pd(a.sig, s0);
    _mm512_storeu_pd(a.sig + 8, s1);
    _mm512_storeu_pd(a.err, e0);
    _mm512_storeu_pd(a.err + 8, e1);
    _mm512_storeu_ps(a.mx, vmx);
    _mm512_storeu_si512((void *)a.cl, c0);
    _mm512_storeu_si512((void *)(a.cl + 8), c1);
    /* i is a multiple of 16, so the tail starts again at lane 0 */
    qc_stats_lanes_add(&a, x + i, (const char *)q + i, is_signed, n - i, scale, zp, half);
    qc_stats_lanes_reduce(&a, acc);
}

double qc_fq_sq_error__avx512(const float *x, size_t n, float scale, float zp, float qmin,
                              float qmax) {
    const __m512 vs = _mm512_set1_ps(scale), vz = _mm512_set1_ps(zp);
    const __m512 vlo = _mm512_set1_ps(qmin), vhi = _mm512_set1_ps(qmax);
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    size_t i = 0;
    for (; i + QC_STATS_LANES <= n; i += QC_STATS_LANES) {
        __m512 xv = _mm512_loadu_ps(x + i);
        /* rne(x / scale): true division, then round to nearest even (as nearbyintf) */
        __m512 q = _mm512_roundscale_ps(_mm512_div_ps(xv, vs),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_add_ps(q, vz);
        q = _mm512_min_ps(_mm512_max_ps(q, vlo), vhi);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(q, vz), vs);
        __m512d xw[2], dw[2];
        widen_pd(xv, xw);
        widen_pd(d, dw);
        __m512d rlo = _mm512_sub_pd(xw[0], dw[0]), rhi = _mm512_sub_pd(xw[1], dw[1]);
        a0 = _mm512_add_pd(a0, _mm512_mul_pd(rlo, rlo));
        a1 = _mm512_add_pd(a1, _mm512_mul_pd(rhi, rhi));
    }
    double lanes[QC_STATS_LANES];
    _mm512_storeu_pd(lanes, a0);
    _mm512_storeu_pd(lanes + 8, a1);
    for (size_t l = 0; i < n; i++, l++) { /* i is a multiple of 16: the tail restarts at lane 0 */
        float q = nearbyintf(x[i] / scale) + zp;
        q = QC_MIN(QC_MAX(q, qmin), qmax);
        double d = (double)x[i] - (double)((q - zp) * scale);
        lanes[l] += d * d;
    }
    double err = 0.0;
    for (int l = 0; l < QC_STATS_LANES; l++) err += lanes[l];
    return err;
}
