/* Small-group convolution on channel quads (conv.c's gconv path): the grouped convolutions
 * with Cg a multiple of 4 and few outputs per group that the direct path would otherwise run
 * (ResNeXt's g32 3x3 at 128 and 256 channels: Cg 4 and 8, 4 and 8 outputs per group).
 *
 * Layout. For one image and group, the input is copied once into cq = Cg / 4 quad planes:
 * plane q holds, for every pixel of the padded input (Hp x Wp, the x_zp' border included),
 * the dword (x'[4q], x'[4q + 1], x'[4q + 2], x'[4q + 3]) of its channels, x' = x (uint8) or
 * x ^ 0x80 (int8, x + 128), so one vpdpbusd lane multiplies 4 channels of one pixel by the
 * 4 weights of one output channel at one tap. With stride 1 and outputs numbered flat,
 * t = oy * Wp + ox, tap (ky, kx) of output t reads pixel t + ky * dh * Wp + kx * dw: one
 * contiguous run of every plane per tap, 16 outputs per vector with the weight dword
 * broadcast, and no im2col. The columns ox >= OW of each row are computed and dropped.
 *
 * Numerics: as the GEMM (gemm.h) with zb' = 0 (int8 weights with zero point 0):
 *   C[m, t] = sum_k x'[k, t] w[m, k] - x_zp' * sum_k w[m, k] + bias[m]   (wrapping int32)
 * where the padding holds x_zp' (so x' - x_zp' = 0 there, as ONNX pads x - x_zp with 0); the
 * last two terms are cterm[m]. The requantized output is qc_gemm_requant1(C, scale[m], y_zp,
 * lo, hi), or with rq32 qc_gemm_requant1_f32 (ONNX Runtime's float32 arithmetic). */
#ifndef QC_CONV_GCONV_H
#define QC_CONV_GCONV_H

#include "qc_common.h"
#include "cpu/cpu.h"
#include "gemm/gemm.h"

/* Outputs every kernel may compute past L (its vectors of 16, 4 at a time): the planes carry
 * this slack (holding x_zp'). */
#define QC_GCONV_SLACK 64

typedef struct {
    const uint8_t *x4;    /* quad plane q at x4 + q * plane * 4 (dwords, see above) */
    size_t plane;         /* dwords per plane: at least max(off) + round_up(L, 64) */
    size_t cq;            /* quads per tap: Cg / 4 */
    size_t ntaps;         /* kh * kw */
    const size_t *off;    /* per tap (ky, kx): ky * dh * Wp + kx * dw */
    const int8_t *w;      /* output channel m's K = ntaps * 4 * cq bytes at w + m * K, tap j's
                           * quad q at + (j * cq + q) * 4 */
    size_t nch;           /* output channels */
    const int32_t *cterm; /* per channel: bias - x_zp' * sum_k w (wrapping) */
    const float *scale;   /* per channel (requantized output) */
    int32_t y_zp, lo, hi; /* requantization zero point and clamp bounds (relu in lo; hi is
                           * the type's largest value) */
    qc_gemm_out out;      /* S32 (ConvInteger), S8 or U8 */
    int fma;              /* 1: every |C| < 2^24 (proven by the driver) and every scale 0
                           * or finite with |s| >= 2^-20: SIMD kernels may use the
                           * one-rounding epilogue without testing |C| */
    int rq32;             /* requantize as ONNX Runtime (qc_gemm_requant1_f32) */
    size_t L;             /* flat outputs [0, L): t = oy * Wp + ox */
    size_t Wp, OH, OW;
    void *y;              /* output (oy, ox) of channel m at y + m * ldy + oy * OW + ox
                           * (output elements); the columns ox >= OW are not stored */
    size_t ldy;
} qc_gconv_tile;

typedef struct {
    const char *name;
    void (*run)(const qc_gconv_tile *t);
    /* n pixels of 4 channel rows into n dwords at dst: dst[4j + i] = rows[i][j] ^ flip */
    void (*quads)(const uint8_t *const rows[4], uint8_t flip, size_t n, uint8_t *dst);
} qc_gconv_kernels;

extern const qc_gconv_kernels qc_gconv_kernels_scalar;
extern const qc_gconv_kernels qc_gconv_kernels_avx512vnni;

/* The conv_gconv family: the AVX-512 VNNI kernel, and the scalar kernel it is tested against.
 * conv.c takes this path only with the AVX-512 VNNI kernel (elsewhere the direct path's
 * int16 pair kernels are the faster ones), unless tests force it (qc_gconv_force). */
extern const qc_family qc_gconv_family;
static inline const qc_gconv_kernels *qc_gconv_select(void) {
    return (const qc_gconv_kernels *)qc_family_select(&qc_gconv_family)->impl;
}

#endif
