/* AVX2 min/max: 8 lanes, NaNs detected with an unordered compare and located by the scalar loop. */
#include "calib/calib.h"

#include <immintrin.h>
#include <math.h>

void qc_minmax_f32__avx2(const float *x, size_t n, qc_minmax_result *r) {
    __m256 vmn = _mm256_set1_ps(INFINITY), vmx = _mm256_set1_ps(-INFINITY);
    size_t i = 0;
    int nan_seen = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            nan_seen = 1;
            break;
        }
        vmn = _mm256_min_ps(vmn, v);
        vmx = _mm256_max_ps(vmx, v);
    }
    if (nan_seen) {
        qc_minmax_f32__scalar(x, n, r);  /* rare error path: exact count and first index */
        return;
    }
    float a[8], b[8];
    _mm256_storeu_ps(a, vmn);
    _mm256_storeu_ps(b, vmx);
    qc_minmax_result acc = {INFINITY, -INFINITY, 0, 0}, part;
    for (int l = 0; l < 8; l++) {
        acc.mn = a[l] < acc.mn ? a[l] : acc.mn;
        acc.mx = b[l] > acc.mx ? b[l] : acc.mx;
    }
    qc_minmax_f32__scalar(x + i, n - i, &part);
    qc_minmax_merge(&acc, &part, i);
    r->mn = acc.mn + 0.0f;
    r->mx = acc.mx + 0.0f;
    r->nan_count = acc.nan_count;
    r->first_nan = acc.first_nan;
}
