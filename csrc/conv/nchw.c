/* The NCHW conv GEMM: registry, path choice, weight packing and pixel-panel interleaving. */
#include "conv/nchw.h"

#include <string.h>

#ifndef QC_NO_X86
#include <emmintrin.h> /* SSE2: part of the x86-64 baseline */
#endif

static const qc_variant nchw_variants[] = {
#ifndef QC_NO_X86
    {"conv_nchw_8x48c4__avx512vnni", QC_ISA_AVX512VNNI, &qc_nchw_kernels_avx512vnni},
#endif
    {"conv_nchw_8x48c4__scalar", QC_ISA_SCALAR, &qc_nchw_kernels_scalar},
};

const qc_family qc_nchw_family = {"conv_nchw", sizeof nchw_variants / sizeof nchw_variants[0],
                                  nchw_variants};

static int nchw_forced; /* tests only: see qc_nchw_use */

int qc_nchw_force(int force) {
    const int prev = nchw_forced;
    nchw_forced = force;
    return prev;
}

int qc_nchw_may_use(int suited) { return suited || nchw_forced > 0; }

int qc_nchw_use(int suited) {
    if (nchw_forced) return nchw_forced > 0;
    return suited && qc_family_select(&qc_nchw_family)->isa == QC_ISA_AVX512VNNI;
}

size_t qc_nchw_pack_w_size(size_t Ng, size_t K) {
    const size_t tiles = (Ng + QC_NCHW_MR - 1) / QC_NCHW_MR, kp = qc_nchw_kp(K);
    return tiles * QC_NCHW_MR * kp;
}

void qc_nchw_pack_w(const void *w, int w_signed, size_t Ng, size_t K, int8_t *dst,
                    int32_t *wsum) {
    const uint8_t flip = w_signed ? 0 : 0x80; /* uint8 w -> w - 128 as int8 */
    const size_t kp = qc_nchw_kp(K), tile_bytes = QC_NCHW_MR * kp;
    memset(dst, 0, qc_nchw_pack_w_size(Ng, K));
    for (size_t m = 0; m < Ng; m++) {
        const uint8_t *src = (const uint8_t *)w + m * K;
        int8_t *tile = dst + m / QC_NCHW_MR * tile_bytes + m % QC_NCHW_MR * 4;
        uint32_t sum = 0;
        for (size_t k = 0; k < K; k++) {
            const int8_t v = (int8_t)(uint8_t)(src[k] ^ flip);
            tile[k / 4 * 4 * QC_NCHW_MR + k % 4] = v;
            sum += (uint32_t)(int32_t)v;
        }
        wsum[m] = (int32_t)sum;
    }
}

void qc_nchw_interleave4(const uint8_t *const rows[4], uint8_t flip, size_t np, uint8_t *quad) {
#ifndef QC_NO_X86
    const __m128i zero = _mm_setzero_si128(), fl = _mm_set1_epi8((char)flip);
    for (size_t j = 0; j < np; j += 16) {
        __m128i r[4];
        for (int q = 0; q < 4; q++) {
            r[q] = rows[q] ? _mm_xor_si128(_mm_loadu_si128((const __m128i *)(rows[q] + j)), fl)
                           : zero;
        }
        const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpackhi_epi8(r[0], r[1]);
        const __m128i t2 = _mm_unpacklo_epi8(r[2], r[3]), t3 = _mm_unpackhi_epi8(r[2], r[3]);
        __m128i *dst = (__m128i *)(quad + 4 * j);
        _mm_storeu_si128(dst + 0, _mm_unpacklo_epi16(t0, t2));
        _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(t0, t2));
        _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(t1, t3));
        _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(t1, t3));
    }
#else
    for (size_t j = 0; j < np; j++)
        for (int q = 0; q < 4; q++) quad[4 * j + q] = rows[q] ? (uint8_t)(rows[q][j] ^ flip) : 0;
#endif
}
