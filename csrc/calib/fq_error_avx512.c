/* AVX-512 fake-quantization squared error: 16 lanes (two 8-double halves), scalar tail. */
#include "calib/calib.h"

#include <immintrin.h>
#include <math.h>

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
        __m512d xlo = _mm512_cvtps_pd(_mm512_castps512_ps256(xv));
        __m512d xhi = _mm512_cvtps_pd(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xv), 1)));
        __m512d dlo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
        __m512d dhi = _mm512_cvtps_pd(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
        __m512d rlo = _mm512_sub_pd(xlo, dlo), rhi = _mm512_sub_pd(xhi, dhi);
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
