/* Quantized operator kernels built for AVX2: qops_impl.h plus a hand-written depthwise conv. */
#include <immintrin.h>

#include "conv/qops.h"

#define QC_QOPS_NAME(name) qc_qops_##name##__avx2
static void dwconv_avx2(const int16_t *xs, const qc_dw_geom *d, const int16_t *wk,
                        const qc_win2d *g, const qc_dw_params *p, int32_t *acc, int32_t *y32,
                        void *y, int sy);
#define QC_QOPS_DWCONV dwconv_avx2
#include "conv/qops_impl.h"

#define QC_DW_MAX_PAIRS 32

/* As the AVX-512 kernel (see qops_avx512.c) on 256-bit vectors: unpacklo holds t = 0..3 and
 * 8..11, unpackhi t = 4..7 and 12..15; two lane permutes restore the order. */
static void dwconv_avx2(const int16_t *xs, const qc_dw_geom *d, const int16_t *wk,
                        const qc_win2d *g, const qc_dw_params *p, int32_t *acc, int32_t *y32,
                        void *y, int sy) {
    const int taps = g->kh * g->kw;
    const int pairs = (taps + 1) / 2;
    if (pairs > QC_DW_MAX_PAIRS) {
        QC_QOPS_NAME(dwconv_generic)(xs, d, wk, g, p, acc, y32, y, sy);
        return;
    }
    const int16_t *src0[QC_DW_MAX_PAIRS], *src1[QC_DW_MAX_PAIRS];
    int32_t wpair[QC_DW_MAX_PAIRS];
    for (int k = 0; k < pairs; k++) {
        int t0 = 2 * k, t1 = 2 * k + 1 < taps ? 2 * k + 1 : 2 * k;
        src0[k] = xs + d->tap_off[t0];
        src1[k] = xs + d->tap_off[t1];
        uint16_t w0 = (uint16_t)wk[t0], w1 = 2 * k + 1 < taps ? (uint16_t)wk[t1] : 0;
        wpair[k] = (int32_t)((uint32_t)w0 | ((uint32_t)w1 << 16));
    }
    const size_t L = (g->OH - 1) * d->PWs + g->OW;
    /* reads and writes up to 15 elements past L stay inside the QC_DW_SLACK scratch */
    for (size_t t = 0; t < L; t += 16) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int k = 0; k < pairs; k++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(src0[k] + t));
            const __m256i b = _mm256_loadu_si256((const __m256i *)(src1[k] + t));
            const __m256i w = _mm256_set1_epi32(wpair[k]);
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), w));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), w));
        }
        _mm256_storeu_si256((__m256i *)(acc + t), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(acc + t + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    QC_QOPS_NAME(dw_store)(acc, g, d, p, y32, y, sy);
}

QC_QOPS_TABLE(qc_qops__avx2)
