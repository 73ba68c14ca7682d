/* NCHW int8 convolution driver (ConvInteger / QLinearConv): prepared weights and the run call. */
#ifndef QC_CONV_CONV_H
#define QC_CONV_CONV_H

#include "qc_common.h"
#include "conv/qops.h"

/* Weights prepared once (the object behind qc.pack_conv_weight).
 *   wt:  M x K bytes (int8 or uint8 as given), K = kh * kw * Cg in (ky, kx, c) order: row m is
 *        output channel m's patch in the layout of an NHWC input patch; group g's GEMM B is
 *        rows [g * Ng, (g + 1) * Ng) transposed (K x Ng), packed into gemm[g].
 *   wzp: M int32 weight zero points (all equal when given per tensor).
 *   wdw: for the direct path (depthwise, small groups) M x K int16 taps w - w_zp in w's own
 *        (c, ky, kx) order; NULL otherwise.
 *   dwp: the direct path's weight pairs (dw.h) for tap steps 1 and 2 (conv.c, dw_pair_taps):
 *        M x dwp_n[s - 1] int32, made once here instead of at every run; dwl: the same in
 *        the NHWC block layout (dw.h, qc_dw_nhwc.wp: per block of 16 channels, n x 16, lane =
 *        channel, 0 past M) when the convolution is depthwise (Cg == 1, M == G), else NULL.
 *   dw3q, dw3sum: for a depthwise 3x3 (Cg == 1, M == G) whose w - w_zp all fit int8: per
 *        channel the 3 kernel rows as byte quads (w'[ky][0], w'[ky][1], w'[ky][2], 0) and the
 *        sum of the 9 w' (dw.h, qc_dw3); NULL otherwise.
 *   gemm: B packed for the GEMM kernels, one per group (NULL when the GEMM is not used).
 *   nchw: the same weights packed for the NCHW conv GEMM (nchw.h), nchw_group bytes per
 *         group, with wsum: M row sums of w'; both NULL unless the weights are pointwise
 *         (1x1) and use the GEMM (or tests force that path, see qc_nchw_may_use). */
typedef struct {
    size_t M, Cg, kh, kw, G, K;
    int w_signed;        /* the weights are int8 (else uint8) */
    int wzp_per_channel; /* w_zero_point was given per output channel */
    int8_t *wt;
    int32_t *wzp;
    int16_t *wdw;
    int32_t *dwp[2], *dwl[2];
    size_t dwp_n[2];
    int32_t *dw3q, *dw3sum;
    void **gemm;         /* qc_gemm_b * per group */
    int8_t *nchw;
    size_t nchw_group;
    int32_t *wsum;
} qc_conv_weights;

/* Returns NULL when out of memory. w is (M, Cg, kh, kw) C-contiguous int8 (w_signed) or uint8;
 * wzp holds M zero points as given. */
qc_conv_weights *qc_conv_weights_create(const void *w, int w_signed, const int32_t *wzp,
                                        int wzp_per_channel, size_t M, size_t Cg, size_t kh,
                                        size_t kw, size_t G);
void qc_conv_weights_free(qc_conv_weights *cw);

typedef struct {
    size_t N, C, H, W, OH, OW;
    int sh, sw, dh, dw, pt, pl, pb, pr;
    int x_signed;          /* x is int8 (else uint8) */
    int32_t xzp;           /* x's zero point as given */
    const qc_conv_weights *w;
    /* output: int32 accumulators (ConvInteger) or requantized int8/uint8 (QLinearConv) */
    int out_int32;
    int y_signed;
    const float *mult;     /* M multipliers float32(float32(x_scale * w_scale[m]) / y_scale) */
    const int32_t *bias;   /* M int32 or NULL */
    int32_t y_zp;
    int relu;              /* clamp below at y_zp */
    int rq32;              /* requantize as ONNX Runtime (float32: gemm/kernels.h,
                            * qc_gemm_requant1_f32) instead of the float64 reference */
    /* layouts: x is (N, H, W, C) and y (N, OH, OW, M) instead of NCHW (a model's tensors
     * between convolutions: the GEMM path then reads and writes them in place, without its
     * transposes; the other paths transpose to and from NCHW copies) */
    int x_nhwc, y_nhwc;
} qc_conv_args;

/* y is (N, M, OH, OW) int32 or int8/uint8 (or NHWC: qc_conv_args). Returns 0, or -1 when
 * out of memory. */
int qc_conv_run(const qc_conv_args *a, const void *x, void *y);

/* The path qc_conv_run takes for a (shape fields set; the layouts ignored): the direct
 * per-plane kernels, the NCHW GEMM (weights on rows) or the NHWC GEMM (patches read in place
 * from a padded NHWC copy, im2col, or the pixels themselves for 1x1). A model keeps the
 * activations between NHWC-GEMM convolutions NHWC. */
enum { QC_CONV_ROUTE_DIRECT, QC_CONV_ROUTE_NCHW, QC_CONV_ROUTE_GEMM };
int qc_conv_route(const qc_conv_args *a);

/* n images of rows x cols elements of esize bytes (1 or 4) at src, each transposed into
 * cols x rows at dst (NCHW <-> NHWC: rows C and cols H * W, or the reverse); threads over
 * the images. */
void qc_conv_layout(const void *src, void *dst, size_t n, size_t rows, size_t cols,
                    size_t esize);

/* Tests: the direct path in tiles of at most `rows` output rows and 3 * rows columns, never
 * the NHWC variant (0: tiles from the scratch budget). Returns the previous setting. */
size_t qc_dw_tile_force(size_t rows);

/* Tests: the GEMM path's indirect rows (run_ctx.ix in conv.c: patches read where they lie in
 * a padded NHWC copy of x instead of im2col's copies, dense or grouped) for every convolution
 * they suit (>= 0: always where they suit), or never (< 0, then im2col). Returns the previous
 * setting. */
int qc_conv_ix_force(int force);
/* Tests: > 0 runs every suited direct-route convolution (grouped, Cg a multiple of 4,
 * stride 1, int8 weights with zero point 0) on the quad path (gconv.h) with the selected
 * kernel, < 0 never, 0 with the AVX-512 VNNI kernel only. Returns the previous setting. */
int qc_conv_gconv_force(int force);

/* Which path qc_conv_run takes for these weights: "depthwise" or "gemm". */
const char *qc_conv_path(const qc_conv_weights *w);

#endif
