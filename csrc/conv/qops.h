/* Quantized operator kernels (pooling, add, mul, concat): params and kernel tables (depthwise
 * convolution: conv/dw.h). */
#ifndef QC_CONV_QOPS_H
#define QC_CONV_QOPS_H

#include "qc_common.h"
#include "cpu/cpu.h"
#include "gemm/requant.h"

/* ---- Requantization, the ground truth for one element ----
 *
 * Float32 requantization (pooling, add, concat):
 *     y = clamp(rne(v) + yzp, lo, hi)      v a float32 computed by the op (see each op)
 * computed as: v clamped to [lo - yzp, hi - yzp] (integers, so clamping before rounding gives
 * the same as after), then rounded to nearest even with the 1.5 * 2^23 trick (exact for
 * |v| < 2^22, which the clamp guarantees), then converted and yzp added (the params' lo/hi
 * hold the shifted bounds qmin - yzp, qmax - yzp). NaN cannot occur:
 * multipliers are checked finite and accumulators are integers.
 *
 * Float64 requantization (QLinearConv), bit for bit as onnx's reference evaluator:
 *     y = clamp(rne(double(acc) * double(mult) + yzp), lo, hi)
 * with mult = float32(float32(x_scale * w_scale) / y_scale); the product and the sum are float64
 * (NumPy promotes int32 * float32 to float64), rounded with the 1.5 * 2^52 trick after clamping. */
#define QC_RNE_F64_MAGIC 6755399441055744.0   /* 1.5 * 2^52 */

/* (qc_requant_f32 is in gemm/requant.h: the GEMM's onnxruntime epilogue shares it) */

/* lo/hi here are the output bounds themselves (qmin or max(qmin, yzp) for relu, qmax). */
QC_INLINE int32_t qc_requant_f64(int32_t acc, double mult, double yzp, double lo, double hi) {
    double v = (double)acc * mult + yzp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = (v + QC_RNE_F64_MAGIC) - QC_RNE_F64_MAGIC;
    return (int32_t)v;
}

/* Geometry of a 2-D window over one H x W plane (pooling). The padded
 * extent is (pt + H + pb) x (pl + W + pr); OH/OW are computed by the caller. */
typedef struct {
    size_t H, W, OH, OW;
    int kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
} qc_win2d;

/* Average pooling: y = requant_f32(float(acc) * float32(m / float(cnt))) where acc = sum over
 * the window's real cells of (q - xzp), cnt = the number of cells counted (kh*kw with
 * count_include_pad, else the real cells) and m = float32(x_scale / y_scale). Global average
 * pooling is the same with one window of H*W cells. */
typedef struct {
    int32_t xzp, yzp;
    float m;
    float lo, hi;             /* qmin - yzp, qmax - yzp */
    int count_include_pad;
} qc_avgpool_params;

/* qlinear_add: y = requant_f32(float32(float(a - azp) * ma) + float32(float(b - bzp) * mb)),
 * ma = float32(a_scale / y_scale), mb = float32(b_scale / y_scale), no fused multiply-add.
 * With ort, ONNX Runtime's arithmetic (MLAS's AVX2 QLinearAdd kernel, the one x86-64 CPUs with
 * AVX2 run): the zero points folded into one float32 constant
 *     fixed = float32(yzp - fma(ma, azp, float32(mb * bzp)))   (as MLAS's build contracts it)
 * and two fused multiply-adds on the raw values,
 *     y = clamp(rint(fma(float(a), ma, fma(float(b), mb, fixed))), lo + yzp, hi + yzp). */
typedef struct {
    int32_t azp, bzp, yzp;
    float ma, mb, lo, hi;
    int stream;               /* hint: output too large to stay in cache, store past it */
    int ort;
    float fixed;              /* ort only */
} qc_add_params;

/* qlinear_mul, per element (a, b, y int8 or uint8; lo, hi the output's bounds):
 *     reference: v = float32(float32(float(a - azp) * sa) * float32(float(b - bzp) * sb)) / sy
 *                y = clamp(rne(v) + yzp, lo, hi)       (DequantizeLinear -> Mul -> QuantizeLinear)
 *     ort:       v = float32(float(float((a - azp) * (b - bzp)) * ratio) + float(yzp)),
 *                ratio = float32(float32(sa * sb) / sy), no fused multiply-add (MLAS's x86-64
 *                QLinearMul, built for SSE2); y = clamp(rne(v), lo, hi), except that a v outside
 *                [-2^31, 2^31) (or NaN, from an infinite ratio) gives lo, as its cvtps2dq
 *                ("integer indefinite") and saturating packs do.
 * The caller checks 255 * sa and 255 * sb finite, so the reference's v is never NaN. */
typedef struct {
    int32_t azp, bzp, yzp;
    float sa, sb, sy, ratio;
    float lo, hi;             /* the output type's bounds (zero point included) */
    int ort;
} qc_mul_params;

/* The 64-step add loops of the ort arithmetic round to int32 before clamping: multipliers up
 * to 2^20 keep |fma(a, ma, fma(b, mb, fixed))| below 2^30 (|fixed| <= 255 + 2 * 255 * 2^20). */
#define QC_ADD_ORT_MAX_MULT 1048576.0f

/* concat requantization of one input: y = requant_f32(float(q - zp) * m), m = s / y_scale. */
typedef struct {
    int32_t zp, yzp;
    float m, lo, hi;
    int stream;               /* hint: as qc_add_params.stream */
} qc_rq_params;

/* Outputs of add / concat at least this large are written with non-temporal stores where a
 * kernel supports them (results are the same; only the cache traffic differs). */
#define QC_STREAM_BYTES ((size_t)8 << 20)

/* Element types: activations are int8 or uint8; `s` in a name means signed (int8), `u` uint8. */
typedef struct {
    /* max pooling over a plane; ws: OH * (pl + W + pr) + 64 elements of scratch */
    void (*maxpool_s8)(const int8_t *x, int8_t *y, const qc_win2d *g, int8_t *ws);
    void (*maxpool_u8)(const uint8_t *x, uint8_t *y, const qc_win2d *g, uint8_t *ws);
    /* average pooling over a plane; ws: (OH + 1) * (pl + W + pr) + 3 * OW + 192 int32 of
     * scratch */
    void (*avgpool_s8)(const int8_t *x, int8_t *y, const qc_win2d *g,
                       const qc_avgpool_params *p, int32_t *ws);
    void (*avgpool_u8)(const uint8_t *x, uint8_t *y, const qc_win2d *g,
                       const qc_avgpool_params *p, int32_t *ws);
    /* elementwise add of n elements; a, b, y each int8 (sa/sb/sy = 1) or uint8 */
    void (*add)(const void *a, int sa, const void *b, int sb, void *y, int sy, size_t n,
                const qc_add_params *p);
    /* elementwise multiply of n elements; a, b, y each int8 (sa/sb/sy = 1) or uint8 */
    void (*mul)(const void *a, int sa, const void *b, int sb, void *y, int sy, size_t n,
                const qc_mul_params *p);
    /* table lookup of n bytes: y[i] = table[x[i]] (x's bytes read as uint8; the element-wise
     * ops of a model run as a table of their 256 input codes) */
    void (*lut8)(const uint8_t *x, uint8_t *y, size_t n, const uint8_t *table);
    /* requantizing copy of n elements (concat): x int8 (sx = 1) or uint8, y likewise */
    void (*requant)(const void *x, int sx, void *y, int sy, size_t n, const qc_rq_params *p);
    /* global pooling: sums[i] = the sum of plane i's n elements (x: nplanes planes of n bytes,
     * int8 when sx = 1, else uint8), exact for n <= 2^23 (|sum| <= 255 * 2^23 < 2^31) */
    void (*plane_sums)(const void *x, int sx, size_t nplanes, size_t n, int32_t *sums);
} qc_qops_impl;

extern const qc_qops_impl qc_qops__scalar;
extern const qc_qops_impl qc_qops__avx2;
extern const qc_qops_impl qc_qops__avx512;
extern const qc_family qc_qops_family;

#endif
