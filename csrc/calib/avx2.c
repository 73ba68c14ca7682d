/* AVX2 calib kernels: 16 lanes per step as two 8-float halves, four 4-double sums, scalar tails. */
#include "calib/error_stats_impl.h"

#include <immintrin.h>
#include <math.h>

/* Floats 4p..4p+3 of v (p = 0 or 1) widened (exactly) to double. */
QC_INLINE __m256d widen_pd(__m256 v, int p) {
    return _mm256_cvtps_pd(p ? _mm256_extractf128_ps(v, 1) : _mm256_castps256_ps128(v));
}

void qc_error_stats__avx2(const float *x, const void *q, int is_signed, size_t n, float scale,
                          int32_t zp, qc_error_stats *acc) {
    const float half = qc_stats_half_step(scale);
    const __m256 vs = _mm256_set1_ps(scale), vh = _mm256_set1_ps(half);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i vzp = _mm256_set1_epi32(zp);
    __m256d s[4], e2[4];
    __m256i c[4];
    __m256 vmx[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int k = 0; k < 4; k++) {
        s[k] = _mm256_setzero_pd();
        e2[k] = _mm256_setzero_pd();
        c[k] = _mm256_setzero_si256();
    }
    size_t i = 0;
    for (; i + QC_STATS_LANES <= n; i += QC_STATS_LANES) {
        for (int h = 0; h < 2; h++) {
            __m128i qb = _mm_loadl_epi64((const __m128i *)((const char *)q + i + 8 * h));
            __m256i qi = is_signed ? _mm256_cvtepi8_epi32(qb) : _mm256_cvtepu8_epi32(qb);
            __m256 d = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(qi, vzp)), vs);
            __m256 xv = _mm256_loadu_ps(x + i + 8 * h);
            __m256 e = _mm256_andnot_ps(sign, _mm256_sub_ps(xv, d));
            vmx[h] = _mm256_max_ps(e, vmx[h]); /* e > mx ? e : mx, as the scalar loop */
            __m256i gt = _mm256_castps_si256(_mm256_cmp_ps(e, vh, _CMP_GT_OQ));
            for (int p = 0; p < 2; p++) {
                __m128i gs = p ? _mm256_extracti128_si256(gt, 1) : _mm256_castsi256_si128(gt);
                __m256d xd = widen_pd(xv, p), r = _mm256_sub_pd(xd, widen_pd(d, p));
                int k = 2 * h + p;
                s[k] = _mm256_add_pd(s[k], _mm256_mul_pd(xd, xd));
                e2[k] = _mm256_add_pd(e2[k], _mm256_mul_pd(r, r));
                c[k] = _mm256_sub_epi64(c[k], _mm256_cvtepi32_epi64(gs)); /* -(-1) per hit */
            }
        }
    }
    qc_stats_lanes a;
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_pd(a.sig + 4 * k, s[k]);
        _mm256_storeu_pd(a.err + 4 * k, e2[k]);
        _mm256_storeu_si256((__m256i *)(a.cl + 4 * k), c[k]);
    }
    _mm256_storeu_ps(a.mx, vmx[0]);
    _mm256_storeu_ps(a.mx + 8, vmx[1]);
    /* i is a multiple of 16, so the tail starts again at lane 0 */
    qc_stats_lanes_add(&a, x + i, (const char *)q + i, is_signed, n - i, scale, zp, half);
    qc_stats_lanes_reduce(&a, acc);
}

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
                __m256d r = _mm256_sub_pd(widen_pd(xv, p), widen_pd(d, p));
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
