/* AVX2 micro-kernel: exact u8 x s8 via int16 widening and vpmaddwd, up to 4 rows x 16 columns. */
#include "gemm/kernels.h"

#ifndef QC_NO_X86
#include <immintrin.h>
#include <string.h>

#include "gemm/epilogue_avx2.h"

/* Why not vpmaddubsw: it adds two u8*s8 products into a saturating int16 (255*127*2 > 32767),
 * so it is not exact. Instead both operands are widened to int16 and vpmaddwd adds pairs
 * into int32 exactly (|pair| <= 2 * 255 * 128). A row's 4 bytes a'[4g..4g+3] are broadcast
 * as int16 ([a0 a1 a2 a3] x 4, from A packed as uint16); 16 packed bytes of B (4 columns x 4 k)
 * sign-extended to int16 line up with them, so vpmaddwd leaves two partial sums per column
 * (k0+k1 and k2+k3) in adjacent int32 lanes, added together once after the k loop. */

QC_INLINE int64_t load8(const uint16_t *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* acc += vpmaddwd(a, b), in place: with plain intrinsics GCC 12 copies the accumulators
 * through spare registers (and the stack) every iteration. */
#define QC_MADD_ACC(acc, a, b)                                                        \
    do {                                                                              \
        __m256i tmp_;                                                                 \
        __asm__("vpmaddwd %3, %2, %1\n\tvpaddd %1, %0, %0"                             \
                : "+x"(acc), "=&x"(tmp_)                                              \
                : "x"(a), "x"(b));                                                    \
    } while (0)

/* MR rows x 8 columns (half h of the panel). A arrives widened to uint16 (the driver packs it
 * so for this kernel), so a row's [a0 a1 a2 a3] is one vpbroadcastq. Accumulators are named
 * variables: an array of __m256i makes GCC copy and spill them every iteration. */
#define QC_AVX2_STEP(r)                                                               \
    if (MR > r) {                                                                     \
        const __m256i av = _mm256_set1_epi64x(load8(t->a16 + r * kp + 4 * g));        \
        QC_MADD_ACC(c##r##0, av, b0);                                                 \
        QC_MADD_ACC(c##r##1, av, b1);                                                 \
    }
/* hadd: [c0 c1 c4 c5 | c2 c3 c6 c7] -> permute the 64-bit pairs to columns 0..7 */
#define QC_AVX2_STORE(r)                                                              \
    if (MR > r) {                                                                     \
        __m256i s = _mm256_hadd_epi32(c##r##0, c##r##1);                              \
        s = _mm256_permute4x64_epi64(s, _MM_SHUFFLE(3, 1, 2, 0));                     \
        qc_gemm_store8_avx2(t, r, 8 * h, s, nvalid);                                  \
    }

QC_INLINE void half_tile(const qc_gemm_tile *t, const int MR, int h, int nvalid) {
    const int64_t kp = t->kp, groups = kp / 4;
    const int8_t *b = t->b + 32 * h;
    const int64_t gs = 4 * t->pw0; /* narrow last panel: over-reads land in the slack */
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int64_t g = 0; g < groups; g++) {
        const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + gs * g)));
        const __m256i b1 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + gs * g + 16)));
        QC_AVX2_STEP(0) QC_AVX2_STEP(1) QC_AVX2_STEP(2) QC_AVX2_STEP(3)
    }
    QC_AVX2_STORE(0) QC_AVX2_STORE(1) QC_AVX2_STORE(2) QC_AVX2_STORE(3)
}

QC_INLINE void tile_m(const qc_gemm_tile *t, const int MR, int nc) {
    half_tile(t, MR, 0, nc < 8 ? nc : 8);
    if (nc > 8) half_tile(t, MR, 1, nc - 8);
}

static void tile_avx2(const qc_gemm_tile *t, int mr, int nc) {
    switch (mr) {
    case 1: tile_m(t, 1, nc); break;
    case 2: tile_m(t, 2, nc); break;
    case 3: tile_m(t, 3, nc); break;
    default: tile_m(t, 4, nc); break;
    }
}

const qc_gemm_kernels qc_gemm_kernels_avx2 = {"gemm_4x16c4__avx2", 4, 16, 1, 0, tile_avx2};
#endif
