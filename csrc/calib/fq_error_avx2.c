/* AVX2 fake-quantization squared error: 16 lanes as two 8-float halves, four 4-double sums. */
#include "calib/calib.h"

#include <immintrin.h>
#include <math.h>

double qc_fq_sq_error__avx2(const float *x, size_t n, float scale, float zp, float qmin,
                            float qmax) {
    const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zp);
    const __m256 vlo = _mm256_set1_ps(qmin), vhi = _mm256_set1_ps(qmax);
    __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                    _mm256_setzero_pd()};
    size_t i = 0;
    for (; i + QC_STATS_LANES <= n; i += QC_STATS_LANES) {
        for (int h = 0; h < 2; h++) {
            __m256 xv = _mm256_loadu_ps(x + i + 8 * h);
            /* rne(x / scale): true division, then round to nearest even (as nearbyintf) */
            __m256 q = _mm256_round_ps(_mm256_div_ps(xv, vs),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm256_add_ps(q, vz);
            q = _mm256_min_ps(_mm256_max_ps(q, vlo), vhi);
            __m256 d = _mm256_mul_ps(_mm256_sub_ps(q, vz), vs);
            for (int p = 0; p < 2; p++) {
                __m128 xs = p ? _mm256_extractf128_ps(xv, 1) : _mm256_castps256_ps128(xv);
                __m128 ds = p ? _mm256_extractf128_ps(d, 1) : _mm256_castps256_ps128(d);
                __m256d r = _mm256_sub_pd(_mm256_cvtps_pd(xs), _mm256_cvtps_pd(ds));
                a[2 * h + p] = _mm256_add_pd(a[2 * h + p], _mm256_mul_pd(r, r));
            }
        }
    }
    double lanes[QC_STATS_LANES];
    for (int k = 0; k < 4; k++) _mm256_storeu_pd(lanes + 4 * k, a[k]);
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
