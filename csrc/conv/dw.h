/* Direct (depthwise and small-group) convolution on bounded tiles: layouts and kernel family.
 *
 * conv.c cuts each output plane into tiles of at most QC_DW_TILE_OW columns and a bounded
 * number of rows, and for each tile packs the input region the tile reads:
 *
 * 1. Sub-planes. With the padded plane xpad (q - x_zp inside, 0 in the padding, as ONNX pads
 *    the zero-point-subtracted input), the tile's region is rows [oy0 * sh, ...) and columns
 *    [ox0 * sw, ...) of xpad; sub-plane (py, px) of the region holds region[r * sh + py]
 *    [c * sw + px] at [r][c] (PHs x PWs, int16, zeros past the region), at xs + (py * sw + px)
 *    * plane_stride. Tap (ky, kx) of output (oy, ox) (tile-relative) then reads sub-plane
 *    ((ky*dh) % sh, (kx*dw) % sw) at [oy + (ky*dh) / sh][ox + (kx*dw) / sw]: with outputs
 *    numbered flat, t = oy * PWs + ox, every tap reads xs at its own offset plus t, so one tap
 *    is one contiguous pass over t in [0, L), L = (TH - 1) * PWs + TW (the columns ox >= TW of
 *    each row are computed and dropped). A group with Cg input channels has Cg such sets.
 * 2. Pairs. xp[i] = (uint16)xs[i] | xs[i + 1] << 16: the int16 at i and the one after it in
 *    one 32-bit lane. Two taps whose offsets differ by one (kx and kx + sw/dw of one sub-plane
 *    row: (0,1) of a 3x3 stride 1, (0,2) of a stride 2) are one read of xp and one int16 pair
 *    multiply-add (vpmaddwd / vpdpwssd) with the weight pair (w0, w1); a tap with no partner
 *    is a pair with weight (w, 0). For a 3x3 kernel that is 6 pair operations per output, 16
 *    outputs per 512-bit vector.
 *
 * Numerics: x - x_zp and w - w_zp are in [-255, 255], so a pair's two products sum to at most
 * 2 * 255^2 < 2^31 exactly; the sum over pairs (and the bias) wraps modulo 2^32 like the
 * reference, so the order of additions does not matter. The requantized output is
 * qc_gemm_requant1(acc + bias, scale, y_zp, lo, hi) (float64, ties to even), which SIMD
 * kernels may shortcut in float32 where proven equal (see each kernel), or with rq32
 * qc_gemm_requant1_f32 (ONNX Runtime's float32 arithmetic). */
#ifndef QC_CONV_DW_H
#define QC_CONV_DW_H

#include "qc_common.h"
#include "cpu/cpu.h"

#define QC_DW_TILE_OW 256     /* output columns of a tile, at most */
#define QC_DW_TILE_ELEMS 8192 /* target size of one input channel's sub-plane set, elements */
/* Elements every kernel may read or write past [0, L) (rounding up to its vectors, 4 of 16
 * lanes at most): the buffers conv.c allocates carry this slack. */
#define QC_DW_SLACK_T 64

/* One kernel call: nch output channels of one tile. Output channel c reads the pair planes at
 * xp + (c / per_xp) * xp_stride, taps op j at offset off[j] of them with weight pair
 * wp[c * nops + j]. */
typedef struct {
    size_t nch, per_xp;
    const int32_t *xp;
    size_t xp_stride;
    size_t nops;
    const size_t *off;
    const int32_t *wp;
    size_t L, TH, TW, PWs;  /* flat outputs and the tile's rows, columns and flat pitch */
    const int32_t *bias;    /* per channel, or NULL */
    const float *scale;     /* per channel (requantized output) */
    int32_t y_zp, lo, hi;   /* requantization zero point and clamp bounds (relu in lo) */
    int out32;              /* 1: int32 accumulators out (ConvInteger), else bytes */
    int rq32;               /* requantize as ONNX Runtime (qc_gemm_requant1_f32) */
    void *y;                /* channel c's tile at y + c * ldc, row r at + r * ldy (elements) */
    size_t ldc, ldy;
    void *buf;              /* scratch: L + QC_DW_SLACK_T int32 */
    const uint16_t *masks;  /* qc_dw_masks of this L, PWs and TW (kernels may ignore them) */
} qc_dw_tile;

/* The output lanes of the flat vectors of 16: bit l of masks[v] is set when t = 16v + l is an
 * output (t = r * PWs + o, r < TH, o < TW; L = (TH - 1) * PWs + TW); nvec = round_up(L, 64)
 * / 16 masks. Filled row by row, a word at a time. */
static inline void qc_dw_masks(size_t TH, size_t PWs, size_t TW, uint16_t *masks) {
    const size_t L = (TH - 1) * PWs + TW, nvec = (L + 63) / 64 * 4;
    for (size_t v = 0; v < nvec; v++) masks[v] = 0;
    for (size_t r = 0; r < TH; r++) {
        size_t b = r * PWs;
        const size_t e = b + TW;
        while (b < e) {
            const size_t v = b / 16, lo = b % 16, hi = QC_MIN((size_t)16, lo + (e - b));
            masks[v] |= (uint16_t)((0xFFFFu >> (16 - (hi - lo))) << lo);
            b += hi - lo;
        }
    }
}

/* Small depthwise planes, channels across the lanes: 16 channels (one image, groups of one
 * input and one output channel) at once. The driver builds xb, the block's padded input plane
 * in NHWC: PH x PW pixels of 16 bytes (x as given, x_zp in the padding and in channels past
 * nch), plus pd more pixels of x_zp. The kernel forms the pair plane xp[p][c] = (x[p][c] - x_zp,
 * x[p + pd][c] - x_zp) (int16 pairs in 32-bit lanes) and then, for each output pixel
 * (oy, ox), acc[c] = bias[c] + sum_j pair(xp[oy * sh * PW + ox * sw + poff[j]][c], wp[j][c]),
 * requantized (qc_gemm_requant1 with scale[c]) into ob: OH * OW pixels of 16 bytes (or int32).
 * Numerics are the per-plane kernel's: the same pairs, wrapping sums, the same epilogue. */
typedef struct {
    const uint8_t *xb;
    size_t PH, PW, pd;
    int sx;
    int32_t xzp;
    size_t OH, OW, sh, sw;
    size_t nops;
    const size_t *poff;     /* nops pixel offsets */
    const int32_t *wp;      /* nops x 16 weight pairs, lane = channel (0 past nch) */
    const int32_t *bias;    /* 16 (0 past nch) */
    const float *scale;     /* 16 (requantized output) */
    int32_t y_zp, lo, hi;
    int out32, lean;        /* lean: every lane's |acc| < 2^24 and scale in [0, 64) */
    int rq32;               /* requantize as ONNX Runtime (qc_gemm_requant1_f32) */
    void *ob;
    int32_t *xp;            /* scratch: (PH * PW) x 16 int32 */
} qc_dw_nhwc;

#define QC_DW_NHWC_MAX_PIX 4096 /* padded pixels of a plane the NHWC kernel takes, at most */

/* Depthwise 3x3, stride 1 or 2, dilation 1, byte output, by vpdpbusd (u8 x s8, 4 products
 * per 32-bit lane): one padded input plane of bytes per channel and the taps of one kernel row
 * in one quad, (w[ky][0], w[ky][1], w[ky][2], 0), so an output is 3 dot products of 4 bytes.
 *
 * Layout (qc_dw3_geom). The padded region of a band of OH x OW outputs (input row iy0 + r,
 * column ix0 + c at [r][c]; x_zp where that is outside the plane) is copied as bytes in the u8
 * domain (int8 x as x + 128, x_zp + 128 with it). Outputs are numbered flat, u = oy * Q + ox
 * (the columns ox >= OW of each row are computed and dropped), and output u's quad of kernel
 * row ky is 4 bytes at one address:
 *   stride 1: rows at pitch P = OW + 2; the quad at in + ky * P + u (Q = P).
 *   stride 2: P = 2 * OW + 2, the even region rows (E, OH + 1 of them) and the odd ones
 *             (O, OH) in two planes at pitch P; row ky's quad at E + 2u, O + 2u, E + P + 2u
 *             (Q = P / 2).
 * A 64-byte load at in + u0 + k (k = 0..3, stride 1) or E + 2 * u0 + 2k (k = 0, 1; +64 for the
 * next 32 outputs, stride 2) holds the quads of 16 outputs 4 (2) apart in its 32-bit lanes:
 * 64 outputs are 12 loads and 12 vpdpbusd, no shuffles, and the 4 result vectors go back into
 * output order with the int32 -> byte packs and one vpshufb (stride 2: and one vpermq).
 *
 * In place (dw3f): stride 1 with one pixel of padding all round (OH = H, OW = W) on whole
 * planes of at most QC_DW3F_MAX_HW pixels reads x and writes y where they lie: outputs are
 * numbered u = oy * W + ox (the NCHW plane itself), row ky's quad of output u is the 4 bytes
 * at x + u + (ky - 1) * W - 1, and the bytes of it outside the plane (the rows above and below,
 * the column left of ox = 0 and right of ox = W - 1, the unused fourth) are x_zp: a masked
 * load with x_zp under the mask, the masks (`masks`, made once per call by qc_dw3f_masks)
 * being the same for every channel. No copies in or out, where a 7x7 plane spent about 40% of
 * its time.
 *
 * Numerics: bias + sum w' * (x - x_zp) = (bias - x_zp * sum w') + sum w' * x modulo 2^32, so
 * the kernel adds x as it is (padding reads x_zp) onto bias - x_zp * sum w', wrapping like the
 * reference. Needs every w' = w - w_zp in [-128, 127] (the weights carry dw3q only then).
 * Requantization as the per-plane kernel (qc_gemm_requant1, float32 shortcut where proven). */
typedef struct {
    const uint8_t *x;       /* channel 0's input plane, H x W bytes; channels xcs apart */
    size_t H, W, xcs;
    int sx;                 /* x is int8 */
    int32_t xzp;            /* x's zero point as given */
    ptrdiff_t iy0, ix0;     /* input row and column of the padded region's [0][0] */
    size_t OH, OW, s;       /* the band's output rows and columns, the stride (1 or 2) */
    size_t nch;
    const int32_t *wq;      /* 3 weight quads per channel (qc_conv_weights.dw3q) */
    const int32_t *wsum;    /* sum of w' per channel */
    const int32_t *bias;    /* per channel, or NULL */
    const float *scale;     /* per channel */
    int32_t y_zp, lo, hi;
    int rq32;               /* requantize as ONNX Runtime (qc_gemm_requant1_f32) */
    uint8_t *y;             /* channel c's band at y + c * ycs, output row r at + r * ldy */
    size_t ycs, ldy;
    uint8_t *buf;           /* scratch: qc_dw3_geom's bytes, 64-byte aligned */
    const uint64_t *masks;  /* in place (dw3f): qc_dw3f_masks' */
} qc_dw3;

/* Pixels of a plane the in-place kernel takes, at most: past that the padded copies' aligned
 * loads win (1 thread, this EPYC, batch 8, in place / copies: 960 @7 100 / 147 us, 384 @6 41 /
 * 57, 192 @12 48 / 52, 576 @14 183 / 193, 144 @24 101 / 105, 192 @28 188 / 178) */
#define QC_DW3F_MAX_HW 576

/* The in-place kernel's byte masks: per step of 64 outputs (u0 = 64 * step) and per k = 0..3,
 * ky = 0..2 (index 12 * step + 4 * ky + k), bit 4i + j set where byte j of lane i of the load
 * at x + u0 + k + (ky - 1) * W - 1 lies in the plane: output u = u0 + 4i + k < H * W, input
 * row oy + ky - 1 and column ox + j - 1 inside it, j < 3. m holds 12 * ceil(H * W / 64). */
static inline void qc_dw3f_masks(size_t H, size_t W, uint64_t *m) {
    const size_t HW = H * W;
    for (size_t i = 0; i < 12 * ((HW + 63) / 64); i++) m[i] = 0;
    for (size_t u = 0, oy = 0, ox = 0; u < HW; u++) {
        const size_t r = u % 64, lane = r / 4, k = r % 4;
        const uint64_t q = (uint64_t)2 | (ox > 0 ? 1u : 0u) | (ox + 1 < W ? 4u : 0u);
        for (size_t ky = 0; ky < 3; ky++)
            if (oy + ky >= 1 && oy + ky <= H) m[12 * (u / 64) + 4 * ky + k] |= q << (4 * lane);
        if (++ox == W) ox = 0, oy++;
    }
}

typedef struct {
    size_t P, Q, L;         /* input pitch, flat output pitch, flat outputs */
    size_t o_plane;         /* stride 2: offset of the odd-row plane */
    size_t in_bytes;        /* the input planes with their read slack */
    size_t in_stride;       /* in_bytes rounded up to 64 */
    size_t out_bytes;       /* the flat outputs, L rounded up to 64, and 64 bytes of read slack */
    size_t bytes;           /* total scratch: two input and two output buffers */
} qc_dw3_layout;

/* The scratch of one band: two sets of input planes, then two flat outputs (a channel's
 * planes are filled, and its outputs copied out, while another channel computes: no load
 * waits on the stores just before it). Reads reach a few bytes past the planes' last row;
 * the 128 bytes after each plane cover them (the bounds in dw_avx512vnni.c). */
static inline void qc_dw3_geom(size_t OH, size_t OW, size_t s, qc_dw3_layout *g) {
    if (s == 1) {
        g->P = OW + 2, g->Q = g->P;
        g->o_plane = 0;
        g->in_bytes = (OH + 2) * g->P + 128;
    } else {
        g->P = 2 * OW + 2, g->Q = OW + 1;
        g->o_plane = ((OH + 1) * g->P + 128 + 63) & ~(size_t)63;
        g->in_bytes = g->o_plane + OH * g->P + 128;
    }
    g->L = (OH - 1) * g->Q + OW;
    g->in_stride = (g->in_bytes + 63) & ~(size_t)63;
    g->out_bytes = ((g->L + 63) & ~(size_t)63) + 64;
    g->bytes = 2 * g->in_stride + 2 * g->out_bytes;
}

typedef struct {
    const char *name;
    /* nrows rows (src and dst row r at + r * lds, + r * ldd) of n bytes src[0], src[sw], ...
     * (int8 when sx) minus xzp into dst[0 .. n) */
    void (*rows)(const uint8_t *src, size_t lds, int sx, size_t sw, size_t n, size_t nrows,
                 int32_t xzp, int16_t *dst, size_t ldd);
    /* stride 2: nrows rows of n bytes, byte j minus xzp to d0[j / 2] (j even) or d1[j / 2]
     * (j odd): both column phases of a row in one pass */
    void (*rows2)(const uint8_t *src, size_t lds, int sx, size_t n, size_t nrows, int32_t xzp,
                  int16_t *d0, int16_t *d1, size_t ldd);
    /* xp[i] = (uint16)xs[i] | xs[i + 1] << 16 for i < n (reads xs[0 .. n]) */
    void (*pairs)(const int16_t *xs, size_t n, int32_t *xp);
    void (*tile)(const qc_dw_tile *t);
    void (*nhwc)(const qc_dw_nhwc *b);
    void (*dw3)(const qc_dw3 *d); /* NULL where the ISA has no vpdpbusd */
    void (*dw3f)(const qc_dw3 *d); /* in place (see qc_dw3); NULL with dw3 */
} qc_dw_kernels;

extern const qc_dw_kernels qc_dw_kernels_scalar;
extern const qc_dw_kernels qc_dw_kernels_avx2;
extern const qc_dw_kernels qc_dw_kernels_avx512;
extern const qc_dw_kernels qc_dw_kernels_avx512vnni;
extern const qc_family qc_dw_family;

static inline const qc_dw_kernels *qc_dw_select(void) {
    return (const qc_dw_kernels *)qc_family_select(&qc_dw_family)->impl;
}

#endif
