/* Blocked transposes: 16x16 byte tiles with SSE2 unpacks (baseline x86-64), scalar edges. */
#include "conv/transpose.h"

#ifndef QC_NO_X86
#include <emmintrin.h>

/* 16x16 bytes: four rounds of unpack lo/hi at widths 8, 16, 32, 64 bits. */
static void tile16_u8(const uint8_t *src, size_t lds, uint8_t *dst, size_t ldd) {
    __m128i r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * lds));
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            r[4 * i + 2 * j] = _mm_unpacklo_epi16(t[4 * i + j], t[4 * i + j + 2]);
            r[4 * i + 2 * j + 1] = _mm_unpackhi_epi16(t[4 * i + j], t[4 * i + j + 2]);
        }
    }
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 4; j++) {
            t[8 * i + 2 * j] = _mm_unpacklo_epi32(r[8 * i + j], r[8 * i + j + 4]);
            t[8 * i + 2 * j + 1] = _mm_unpackhi_epi32(r[8 * i + j], r[8 * i + j + 4]);
        }
    }
    for (int j = 0; j < 8; j++) {
        r[2 * j] = _mm_unpacklo_epi64(t[j], t[j + 8]);
        r[2 * j + 1] = _mm_unpackhi_epi64(t[j], t[j + 8]);
    }
    for (int i = 0; i < 16; i++) _mm_storeu_si128((__m128i *)(dst + i * ldd), r[i]);
}
#endif

void qc_transpose_u8(const uint8_t *src, size_t rows, size_t cols, size_t lds, uint8_t *dst,
                     size_t ldd) {
    size_t r0 = 0;
#ifndef QC_NO_X86
    for (; r0 + 16 <= rows; r0 += 16) {
        size_t c0 = 0;
        for (; c0 + 16 <= cols; c0 += 16) tile16_u8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
        for (size_t c = c0; c < cols; c++)
            for (size_t r = r0; r < r0 + 16; r++) dst[c * ldd + r] = src[r * lds + c];
    }
#endif
    for (size_t c0 = 0; c0 < cols; c0 += 16) {
        size_t c1 = QC_MIN(cols, c0 + 16);
        for (size_t r = r0; r < rows; r++)
            for (size_t c = c0; c < c1; c++) dst[c * ldd + r] = src[r * lds + c];
    }
}

void qc_transpose_u32(const uint32_t *src, size_t rows, size_t cols, size_t lds, uint32_t *dst,
                      size_t ldd) {
    for (size_t r0 = 0; r0 < rows; r0 += 8) {
        size_t r1 = QC_MIN(rows, r0 + 8);
        for (size_t c0 = 0; c0 < cols; c0 += 8) {
            size_t c1 = QC_MIN(cols, c0 + 8);
            for (size_t c = c0; c < c1; c++)
                for (size_t r = r0; r < r1; r++) dst[c * ldd + r] = src[r * lds + c];
        }
    }
}
