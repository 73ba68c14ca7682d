/* AVX-VNNI micro-kernel (VEX vpdpbusd on ymm), up to 4 rows x 16 columns per tile. */
#include "gemm/kernels.h"

#ifndef QC_NO_X86
#include <immintrin.h>
#include <string.h>

#include "gemm/epilogue_avx2.h"

/* For CPUs with AVX-VNNI but no AVX-512 (Alder Lake and later client cores). The development
 * machine has no AVX-VNNI, so this file never runs there; its logic was checked by building
 * it with QC_GEMM_AVXVNNI_AS_EVEX (the same instruction in its AVX512-VL encoding) and running
 * the gemm tests against it.
 *
 * Layout use: a 64-byte group of a panel is two ymm of B, columns 0-7 and 8-15, each int32
 * lane holding one column's 4 bytes of k, so vpdpbusd against a row's broadcast 4 bytes
 * accumulates column-ordered sums directly. A narrow last panel (group stride 4w < 64) is
 * over-read into the packed data's 64 bytes of slack; those lanes are never stored. */

#ifdef QC_GEMM_AVXVNNI_AS_EVEX
#define QC_VPDPBUSD_Y "vpdpbusd"
#define QC_DPBUSD_Y(acc, a, b) __asm__(QC_VPDPBUSD_Y " %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#else
#define QC_VPDPBUSD_Y "%{vex%} vpdpbusd" /* %{ %}: literal braces in GCC asm */
#define QC_DPBUSD_Y(acc, a, b) __asm__(QC_VPDPBUSD_Y " %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b))
#endif

QC_INLINE int32_t load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

#define QC_VNNI_STEP(r)                                                               \
    if (MR > r) {                                                                     \
        const __m256i av = _mm256_set1_epi32(load4(t->a + r * kp + 4 * g));           \
        QC_DPBUSD_Y(c##r##0, av, b0);                                                 \
        if (TWO) QC_DPBUSD_Y(c##r##1, av, b1);                                        \
    }
#define QC_VNNI_STORE(r)                                                              \
    if (MR > r) {                                                                     \
        qc_gemm_store8_avx2(t, r, 0, c##r##0, nc < 8 ? nc : 8);                       \
        if (TWO) qc_gemm_store8_avx2(t, r, 8, c##r##1, nc - 8);                       \
    }

/* MR rows x 8 (TWO == 0) or 16 (TWO == 1) columns; MR and TWO are constants per call site. */
QC_INLINE void tile_m(const qc_gemm_tile *t, const int MR, const int TWO, int nc) {
    const int64_t kp = t->kp, groups = kp / 4, gs = 4 * t->pw0;
    const int8_t *b = t->b;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int64_t g = 0; g < groups; g++) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + gs * g));
        const __m256i b1 =
            TWO ? _mm256_loadu_si256((const __m256i *)(b + gs * g + 32)) : _mm256_setzero_si256();
        QC_VNNI_STEP(0) QC_VNNI_STEP(1) QC_VNNI_STEP(2) QC_VNNI_STEP(3)
    }
    QC_VNNI_STORE(0) QC_VNNI_STORE(1) QC_VNNI_STORE(2) QC_VNNI_STORE(3)
}

#define QC_VNNI_CASES(TWO)                      \
    switch (mr) {                               \
    case 1: tile_m(t, 1, TWO, nc); break;       \
    case 2: tile_m(t, 2, TWO, nc); break;       \
    case 3: tile_m(t, 3, TWO, nc); break;       \
    default: tile_m(t, 4, TWO, nc); break;      \
    }

static void tile_avxvnni(const qc_gemm_tile *t, int mr, int nc) {
    if (nc > 8) {
        QC_VNNI_CASES(1)
    } else {
        QC_VNNI_CASES(0)
    }
}

const qc_gemm_kernels qc_gemm_kernels_avxvnni = {"gemm_4x16c4__avxvnni", 4, 16, 0, 0, tile_avxvnni};
#endif
