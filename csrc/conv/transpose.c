/* Blocked transposes: 16x16 byte and 4x4 int32 tiles with SSE2 unpacks (baseline x86-64). */
#include "conv/transpose.h"

#include <string.h>

#ifndef QC_NO_X86
#include <emmintrin.h>

/* 16x16 bytes in registers: four rounds of unpack lo/hi at widths 8, 16, 32, 64 bits. */
static inline void t16_u8(__m128i r[16]) {
    __m128i t[16];
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
}

static void tile16_u8(const uint8_t *src, size_t lds, uint8_t *dst, size_t ldd) {
    __m128i r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * lds));
    t16_u8(r);
    for (int i = 0; i < 16; i++) _mm_storeu_si128((__m128i *)(dst + i * ldd), r[i]);
}

/* The first n (< 16) bytes at p into a register (zeros above), and back: fixed-size pieces
 * of 8, 4, 2 and 1 bytes, never touching a byte past p + n. */
static inline __m128i load_part(const uint8_t *p, size_t n) {
    _Alignas(16) uint8_t b[16] = {0};
    size_t o = 0;
    if (n & 8) memcpy(b + o, p + o, 8), o += 8;
    if (n & 4) memcpy(b + o, p + o, 4), o += 4;
    if (n & 2) memcpy(b + o, p + o, 2), o += 2;
    if (n & 1) b[o] = p[o];
    return _mm_load_si128((const __m128i *)(void *)b);
}

static inline void store_part(uint8_t *p, __m128i v, size_t n) {
    _Alignas(16) uint8_t b[16];
    _mm_store_si128((__m128i *)(void *)b, v);
    size_t o = 0;
    if (n & 8) memcpy(p + o, b + o, 8), o += 8;
    if (n & 4) memcpy(p + o, b + o, 4), o += 4;
    if (n & 2) memcpy(p + o, b + o, 2), o += 2;
    if (n & 1) p[o] = b[o];
}

/* Rows i < nr of an nr x nc tile (nr, nc <= 16) into r[i], zeros elsewhere. A short row is
 * loaded whole (16 bytes) where that ends by `end`, the end of the source's last row: the bytes
 * past nc only reach the transposed rows j >= nc, which no caller stores. load_part takes the
 * rest: its 16-byte load of bytes just stored one piece at a time waits for the stores to
 * retire (no store forwarding), which made the 9-pixel planes of a 1x1 convolution spend a
 * third of their time here. */
static inline void load_tile(const uint8_t *src, size_t lds, size_t nr, size_t nc,
                             const uint8_t *end, __m128i r[16]) {
    for (size_t i = 0; i < 16; i++) {
        const uint8_t *p = src + i * lds;
        r[i] = i >= nr                      ? _mm_setzero_si128()
               : nc == 16 || end - p >= 16 ? _mm_loadu_si128((const __m128i *)(const void *)p)
                                           : load_part(p, nc);
    }
}

/* An edge tile of nr x nc bytes (nr, nc <= 16, not both 16): short planes (a 14-pixel row)
 * still take the unpacks instead of a byte loop. */
static void tile16_u8_part(const uint8_t *src, size_t lds, size_t nr, size_t nc,
                           const uint8_t *end, uint8_t *dst, size_t ldd) {
    __m128i r[16];
    load_tile(src, lds, nr, nc, end, r);
    t16_u8(r);
    for (size_t j = 0; j < nc; j++) {
        if (nr == 16) _mm_storeu_si128((__m128i *)(void *)(dst + j * ldd), r[j]);
        else store_part(dst + j * ldd, r[j], nr);
    }
}
#endif

void qc_transpose_u8(const uint8_t *src, size_t rows, size_t cols, size_t lds, uint8_t *dst,
                     size_t ldd) {
#ifndef QC_NO_X86
    if (!rows || !cols) return;
    const uint8_t *end = src + (rows - 1) * lds + cols;
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
        const size_t nr = QC_MIN((size_t)16, rows - r0);
        for (size_t c0 = 0; c0 < cols; c0 += 16) {
            const size_t nc = QC_MIN((size_t)16, cols - c0);
            if (nr == 16 && nc == 16)
                tile16_u8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
            else
                tile16_u8_part(src + r0 * lds + c0, lds, nr, nc, end, dst + c0 * ldd + r0, ldd);
        }
    }
#else
    for (size_t c0 = 0; c0 < cols; c0 += 16) {
        size_t c1 = QC_MIN(cols, c0 + 16);
        for (size_t r = 0; r < rows; r++)
            for (size_t c = c0; c < c1; c++) dst[c * ldd + r] = src[r * lds + c];
    }
#endif
}

/* The destination after p in qc_transpose_u8_wrap: the next pixel, past `skip` of them at the
 * end of a row of `wrap` (x: p's column within its row). */
static inline uint8_t *wrap_next(uint8_t *p, size_t ldd, size_t *x, size_t wrap, size_t skip) {
    p += ldd;
    if (++*x == wrap) {
        *x = 0;
        p += skip * ldd;
    }
    return p;
}

#ifndef QC_NO_X86
/* An edge tile (nr, nc <= 16, not both 16) of qc_transpose_u8_wrap, its columns from p on;
 * returns the next column's destination. A function of its own: its r[j] at a variable j
 * lives in memory, the whole tiles' unrolled loop keeps its 16 registers. */
static uint8_t *wrap_part(const uint8_t *src, size_t lds, size_t nr, size_t nc,
                          const uint8_t *end, uint8_t *p, size_t ldd, size_t *x, size_t wrap,
                          size_t skip) {
    __m128i r[16];
    load_tile(src, lds, nr, nc, end, r);
    t16_u8(r);
    for (size_t j = 0; j < nc; j++) {
        if (nr == 16) _mm_storeu_si128((__m128i *)(void *)p, r[j]);
        else store_part(p, r[j], nr);
        p = wrap_next(p, ldd, x, wrap, skip);
    }
    return p;
}
#endif

void qc_transpose_u8_wrap(const uint8_t *src, size_t rows, size_t cols, size_t lds, uint8_t *dst,
                          size_t ldd, size_t wrap, size_t skip) {
    /* bands of 16 source rows, each swept along its columns (16 streams, as qc_transpose_u8);
     * each column's destination stepped store by store, without a division per column (an
     * array of a tile's 16 destinations was spilled to the stack) */
    if (!rows || !cols) return;
#ifndef QC_NO_X86
    const uint8_t *end = src + (rows - 1) * lds + cols;
#endif
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
        const size_t nr = QC_MIN((size_t)16, rows - r0);
        uint8_t *p = dst + r0; /* column c0's destination */
        size_t x = 0;
        for (size_t c0 = 0; c0 < cols; c0 += 16) {
            const size_t nc = QC_MIN((size_t)16, cols - c0);
            const uint8_t *s = src + r0 * lds + c0;
#ifndef QC_NO_X86
            if (nr == 16 && nc == 16) { /* whole tiles: unrolled, r stays in registers */
                __m128i r[16];
                load_tile(s, lds, 16, 16, end, r);
                t16_u8(r);
                for (int j = 0; j < 16; j++) {
                    _mm_storeu_si128((__m128i *)(void *)p, r[j]);
                    p = wrap_next(p, ldd, &x, wrap, skip);
                }
            } else {
                size_t xe = x; /* x itself stays in a register for the whole tiles */
                p = wrap_part(s, lds, nr, nc, end, p, ldd, &xe, wrap, skip);
                x = xe;
            }
#else
            for (size_t j = 0; j < nc; j++) {
                for (size_t i = 0; i < nr; i++) p[i] = s[i * lds + j];
                p = wrap_next(p, ldd, &x, wrap, skip);
            }
#endif
        }
    }
}

#ifndef QC_NO_X86
/* 4x4 int32: unpack lo/hi at 32 then 64 bits. */
static void tile4_u32(const uint32_t *src, size_t lds, uint32_t *dst, size_t ldd) {
    __m128i r0 = _mm_loadu_si128((const __m128i *)src);
    __m128i r1 = _mm_loadu_si128((const __m128i *)(src + lds));
    __m128i r2 = _mm_loadu_si128((const __m128i *)(src + 2 * lds));
    __m128i r3 = _mm_loadu_si128((const __m128i *)(src + 3 * lds));
    __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpackhi_epi32(r0, r1);
    __m128i t2 = _mm_unpacklo_epi32(r2, r3), t3 = _mm_unpackhi_epi32(r2, r3);
    _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi64(t0, t2));
    _mm_storeu_si128((__m128i *)(dst + ldd), _mm_unpackhi_epi64(t0, t2));
    _mm_storeu_si128((__m128i *)(dst + 2 * ldd), _mm_unpacklo_epi64(t1, t3));
    _mm_storeu_si128((__m128i *)(dst + 3 * ldd), _mm_unpackhi_epi64(t1, t3));
}
#endif

void qc_transpose_u32(const uint32_t *src, size_t rows, size_t cols, size_t lds, uint32_t *dst,
                      size_t ldd) {
    size_t c0 = 0;
#ifndef QC_NO_X86
    /* column strips of 4 (destination rows written 16 bytes at a time) */
    for (; c0 + 4 <= cols; c0 += 4) {
        size_t r = 0;
        for (; r + 4 <= rows; r += 4) tile4_u32(src + r * lds + c0, lds, dst + c0 * ldd + r, ldd);
        for (; r < rows; r++)
            for (size_t c = c0; c < c0 + 4; c++) dst[c * ldd + r] = src[r * lds + c];
    }
#endif
    for (size_t r0 = 0; r0 < rows && c0 < cols; r0 += 8) {
        size_t r1 = QC_MIN(rows, r0 + 8);
        for (size_t c = c0; c < cols; c++)
            for (size_t r = r0; r < r1; r++) dst[c * ldd + r] = src[r * lds + c];
    }
}
