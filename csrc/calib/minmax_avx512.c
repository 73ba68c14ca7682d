/* AVX-512 min/max: 16 lanes plus a masked tail, NaNs located by the scalar loop. */
#include "calib/calib.h"

#include <immintrin.h>
#include <math.h>

void qc_minmax_f32__avx512(const float *x, size_t n, qc_minmax_result *r) {
    __m512 vmn = _mm512_set1_ps(INFINITY), vmx = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 16) {
        size_t left = n - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        if (_mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q)) {
            qc_minmax_f32__scalar(x, n, r);  /* rare error path: exact count and first index */
            return;
        }
        vmn = _mm512_mask_min_ps(vmn, m, vmn, v);
        vmx = _mm512_mask_max_ps(vmx, m, vmx, v);
    }
    r->mn = _mm512_reduce_min_ps(vmn) + 0.0f;
    r->mx = _mm512_reduce_max_ps(vmx) + 0.0f;
    r->nan_count = 0;
    r->first_nan = 0;
}
