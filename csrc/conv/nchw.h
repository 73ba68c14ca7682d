/* The NCHW GEMM of convolution: output channels on rows, pixels on columns.
 *
 * For image n and group g, Y_g = W_g (Ng x K) times X_g (K x P), where X_g is the NCHW
 * im2col matrix: row k = (c, ky, kx) in the weights' own (Cg, kh, kw) order, column p = output
 * pixel, so a block of columns is a run of one output row's pixels and Y_g's rows are the
 * output planes themselves. Nothing is transposed on the way in or out (the NHWC path in
 * conv.c transposes the input and every output block).
 *
 * Numerics are gemm.h's with the roles of the operands swapped: the pixels are the unsigned
 * operand of vpdpbusd (x' = x, or x ^ 0x80 for int8 x, in [0, 255]) and the weights the signed
 * one (w' = w, or w ^ 0x80 = w - 128 for uint8 w), zero points shifted the same way. Then
 *   C[m, p] = sum_k (x' - zx')(w' - zw'_m)
 *           = dot(w'_m, x'_p) - zw'_m * xsum[p] + rterm[m]
 *   rterm[m] = bias[m] - zx' * wsum[m] + K * zx' * zw'_m     (wsum[m] = sum_k w'[m, k])
 * in wrapping 32-bit arithmetic, and the requantization epilogue is gemm.h's with one scale
 * per row.
 *
 * Packed layouts
 * --------------
 * K is padded to kp = round_up(K, 4) with zeros on both sides.
 * Weights: per group, row tiles of QC_NCHW_MR rows (the last zero-padded); a tile is kp / 4
 *   quads, quad q holding row r's bytes w'[r][4q .. 4q + 3] at offset 4 * (q * MR + r): one
 *   32-bit broadcast per row and quad.
 * Pixels: a panel of np pixels (a multiple of 16, zero beyond the real ones) is kp / 4 quads
 *   of 4 * np bytes; pixel j's bytes x'[4q .. 4q + 3][j] sit at offset 4 * j of quad q, so 16
 *   pixels of a quad are one 64-byte vpdpbusd operand. */
#ifndef QC_CONV_NCHW_H
#define QC_CONV_NCHW_H

#include "qc_common.h"
#include "cpu/cpu.h"
#include "gemm/gemm.h"

#define QC_NCHW_MR 8   /* rows of a weight tile (the most a kernel call takes) */
#define QC_NCHW_NR 48  /* the most pixels a register tile of the AVX-512 kernel holds */

/* K padded to whole quads (kp in the layouts above). */
static inline size_t qc_nchw_kp(size_t K) { return (K + 3) & ~(size_t)3; }

/* One kernel call: rows [0, mr) of a weight tile times pixels [0, npix) of a panel (any
 * npix: the kernel walks the panel in register tiles). */
typedef struct {
    int64_t kp;
    const int8_t *w;       /* the weight tile */
    const uint8_t *x;      /* pixel 0 of the call within the panel */
    ptrdiff_t xq;          /* bytes per quad of the panel (4 * its np) */
    const int32_t *rterm;  /* per row */
    const int32_t *zwp;    /* per row: zw' */
    const int32_t *xsum;   /* per pixel from 0 (readable to a multiple of 16), or NULL when
                            * every zw' of the call is 0 */
    const float *scale;    /* per row (requantized output) */
    void *y;               /* element (r, j) at y + r * ldy + j, in output elements */
    ptrdiff_t ldy;
    qc_gemm_out out;       /* QC_GEMM_OUT_S32, _S8 or _U8 */
    int32_t y_zp, lo, hi;  /* requantization: zero point and clamp bounds (relu in lo) */
    float fzp, flo, fhi;   /* the same as float32, for SIMD kernels */
    int small;             /* 1: every C of the call is known to satisfy |C| < 2^24 */
    int lean;              /* 1: small, and every scale of the call is in [0, 64), so
                            * |C * scale + y_zp| < 2^31 and float32 -> int32 never overflows */
    int exact;             /* 1: lean, and every scale is 0 or in [2^-22, 64) with
                            * max |C| * scale + 256 < 2^22: the one-rounding epilogue needs no
                            * test (qc_rint16_magic_avx512) */
    int rq32;              /* requantize as ONNX Runtime (qc_gemm_requant1_f32); the flags
                            * above then only bound C and C * scale (exact: the epilogue
                            * qc_requant16_f32_magic_avx512, else qc_requant16_f32_sat) */
} qc_nchw_tile;

typedef struct {
    const char *name;
    void (*tile)(const qc_nchw_tile *t, int mr, int npix);
} qc_nchw_kernels;

extern const qc_nchw_kernels qc_nchw_kernels_scalar;
extern const qc_nchw_kernels qc_nchw_kernels_avx512vnni;

/* The conv_nchw family: the AVX-512 VNNI kernel, and the scalar kernel it is tested against
 * (see qc_nchw_use). */
extern const qc_family qc_nchw_family;

/* Whether a GEMM-path convolution runs this path: one conv.c finds suited (pointwise, or an
 * ungrouped kh x kw kernel over few input channels) when the AVX-512 VNNI kernel is usable.
 * Elsewhere the NHWC path is faster: its im2col copies whole channel runs, where the NCHW rows
 * of a kh x kw kernel gather single bytes (stride 2), and without VNNI the gemm family's
 * kernels are the better ones. `force` (tests) > 0 takes this path for every GEMM-path
 * convolution with whatever kernel is selected, < 0 never. */
int qc_nchw_use(int suited);
/* Whether weights of this shape may ever run this path (so are worth packing for it): suited
 * ones (pointwise, or ungrouped with at most QC_NCHW_SMALL_CG input channels), or any while
 * tests force the path. */
int qc_nchw_may_use(int suited);
#define QC_NCHW_SMALL_CG 16
int qc_nchw_force(int force); /* returns the previous setting */
static inline const qc_nchw_kernels *qc_nchw_select(void) {
    return (const qc_nchw_kernels *)qc_family_select(&qc_nchw_family)->impl;
}

/* Bytes of one group's packed weights for Ng rows and K columns. */
size_t qc_nchw_pack_w_size(size_t Ng, size_t K);

/* Pack one group's weights (Ng rows of K bytes, row m at w + m * K, int8 if w_signed else
 * uint8) into dst (qc_nchw_pack_w_size bytes) and their row sums wsum[m] = sum_k w'[m, k]. */
void qc_nchw_pack_w(const void *w, int w_signed, size_t Ng, size_t K, int8_t *dst,
                    int32_t *wsum);

/* Interleave 4 rows of np bytes (np a multiple of 16) into one quad of a pixel panel, each
 * byte XORed with flip (0x80 turns int8 x into x'); a NULL row (K's padding) gives zeros. */
void qc_nchw_interleave4(const uint8_t *const rows[4], uint8_t flip, size_t np, uint8_t *quad);

#endif
