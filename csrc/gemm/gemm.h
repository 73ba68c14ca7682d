/* Internal int8 GEMM API (no Python): pack B once, then C = (A - za)(B - zb) for row blocks. */
#ifndef QC_GEMM_H
#define QC_GEMM_H

#include "qc_common.h"
#include "cpu/cpu.h"

/*
 * Numerics
 * --------
 * Every signedness combination runs through one u8 x s8 core. With
 *   a' = a + 128 when A is int8 (a ^ 0x80), a' = a when A is uint8      (a' in [0, 255])
 *   b' = b when B is int8,  b' = b - 128 when B is uint8 (b ^ 0x80)     (b' in [-128, 127])
 * and the zero points shifted the same way (za' = za + 128 or za, zb' = zb or zb - 128):
 *   C[i,j] = sum_k (a - za)(b - zb) = sum_k (a' - za')(b' - zb')
 *          = dot(a'_i, b'_j) - zb'_j * rowsum(a'_i) - za'_i * (colsum(b'_j) - K * zb'_j)
 * The dot product of K terms of at most 255 * 128 fits int32 for K <= 65536. The corrections
 * are computed in wrapping (two's complement) 32-bit arithmetic, so C is the true value
 * whenever it fits int32 and the true value modulo 2^32 otherwise (for K > 65536 the raw dot
 * also wraps, and the result is still the true value modulo 2^32: every step is a ring
 * operation mod 2^32). This matches ONNX Runtime's int32 wrap-around.
 *
 * Requantization epilogue (int8/uint8 output), per element, matching onnx's reference
 * QLinearMatMul/QLinearConv (which compute int32 * float32 in float64):
 *   v = (double)(int32)(C + bias[j]) * (double)scale[j] + (double)y_zp
 *   y = clamp(rint(v), lo, hi)     rint: ties to even; lo = qmin, or max(qmin, y_zp) with relu
 * or, with rq32, ONNX Runtime's (MLAS) float32 arithmetic:
 *   y = clamp(rint((float)(int32)(C + bias[j]) * scale[j]), lo - y_zp, hi - y_zp) + y_zp
 * Float epilogue (QC_GEMM_OUT_F32), in float32 with two roundings (no FMA):
 *   y = (float)(int32)(C + bias[j]) * scale[j] + fbias[j]
 * or, with per-row scales, three roundings: s = row_scale[i] * scale[j] (float32), then
 *   y = (float)(int32)(C + bias[j]) * s + fbias[j]
 *
 * Packed B layout
 * ---------------
 * K is padded to kp (multiple of QC_GEMM_KR = 4) with zeros (which contribute nothing).
 * Panel p holds columns [16p, 16p + w) with w = min(16, n - 16p) (only the last panel can be
 * narrower) as kp/4 groups of 4w bytes; in group g, column c's bytes b'[4g .. 4g+3][16p + c]
 * sit at offset 4c. A panel is contiguous (kp * w bytes), panel p starts at data + p * kp * 16.
 * A full group (64 bytes) is one zmm operand of vpdpbusd; a narrow last panel is read with
 * masked loads (AVX-512) or over-reads into the 64 bytes of slack after the data (AVX2 and
 * AVX-VNNI; the extra lanes are never stored). So the data is round_up(k, 4) * n bytes plus
 * 64, whatever n is. The layout is the same for every kernel variant (scalar, AVX2, AVX-VNNI, AVX-512 VNNI).
 */

#define QC_GEMM_KR 4
#define QC_GEMM_NR 16

typedef struct {
    int64_t k, n;     /* logical shape of B (K x N) */
    int64_t kp, np;   /* kp = round_up(k, 4); np = round_up(n, 16) (column sums, panels) */
    int b_signed;     /* 1: B was int8; 0: B was uint8 (data holds b - 128) */
    const int8_t *data;    /* qc_gemm_pack_b_size(k, n) bytes, layout above */
    const int32_t *colsum; /* np entries: sum over k of b' (0 in the padding) */
    int64_t abs_max;  /* the largest column sum of |b'|: |dot(a', b'_j)| <= 255 * abs_max */
} qc_gemm_b;

/* Width of panel p (16, or n % 16 for a narrow last panel). */
static inline int qc_gemm_panel_width(int64_t n, int64_t p) {
    return (int)(n - 16 * p < 16 ? n - 16 * p : 16);
}

/* Bytes of packed data for a K x N matrix, slack included (colsum needs round_up(n, 16)
 * int32 more). */
size_t qc_gemm_pack_b_size(int64_t k, int64_t n);

/* Pack B (K x N, element (k, n) at b + k * row_stride + n * col_stride, strides in bytes,
 * int8 if b_signed else uint8) into caller-provided `data` (qc_gemm_pack_b_size bytes) and
 * `colsum` (round_up(n, 16) int32), and fill `out` to describe them. A weight matrix
 * W (N x K) used as B = W^T is packed with row_stride = 1, col_stride = K. */
void qc_gemm_pack_b(const void *b, int b_signed, ptrdiff_t row_stride, ptrdiff_t col_stride,
                    int64_t k, int64_t n, int8_t *data, int32_t *colsum, qc_gemm_b *out);

typedef enum {
    QC_GEMM_OUT_S32 = 0, /* int32 C (with bias added when bias != NULL) */
    QC_GEMM_OUT_S8 = 1,  /* requantized int8 */
    QC_GEMM_OUT_U8 = 2,  /* requantized uint8 */
    QC_GEMM_OUT_F32 = 3, /* float32 y = (float)C * scale[j] + fbias[j] (dynamic quantization) */
} qc_gemm_out;

typedef struct qc_gemm_kernels qc_gemm_kernels; /* a variant's micro-kernels (internal) */

/* A call's per-column terms (index 0 = column n0; round_up(n1 - n0, 16) + 64 entries each,
 * zero past n1 - n0): zb', colsum(b') - K * zb', the bias minus a per-tensor za' times that
 * (wrapping), the scales and float biases, and over the columns whether every zb' is 0,
 * whether every scale suits the one-rounding epilogue (kernels.h, rq_fma) and the largest
 * |cterm|. qc_gemm_run makes them in its workspace unless the call gives them (cols). */
typedef struct {
    int32_t *zbp, *bcorr, *cterm;
    float *scale, *fbias;
    int zbp_zero, rq_fma;
    int64_t cmax;
    float smax;           /* the largest |scale| (0 when a scale is NaN: never used then) */
} qc_gemm_cols;

typedef struct {
    /* A: m rows of b->k elements; row i at (char *)a + i * lda (elements = bytes). With
     * a_nseg > 0 a row is a_nseg segments of b->k / a_nseg elements each (b->k a multiple of
     * 4 * a_nseg): segment s of row i starts at (char *)a + i * lda + a_seg[s]. A convolution
     * reads its patches this way straight from a padded NHWC image (rows may overlap).
     * With a_row, row i starts at (char *)a + a_row[i] instead (lda unused): a convolution's
     * output pixels, whose rows do not lie a constant stride apart across image rows. */
    const void *a;
    ptrdiff_t lda;
    const ptrdiff_t *a_row;
    const ptrdiff_t *a_seg;
    int a_nseg;
    int a_signed; /* 1: int8, 0: uint8 */
    int64_t m;
    const int32_t *a_zp; /* NULL: 0; else a_zp[0] (per tensor) or a_zp[i] (a_zp_per_row) */
    int a_zp_per_row;

    const qc_gemm_b *b;
    const int32_t *b_zp; /* NULL: 0; else b_zp[0] or b_zp[j] (b_zp_per_col), j global */
    int b_zp_per_col;

    int64_t n0, n1; /* columns [n0, n1) of C are computed; n0 % 16 == 0, n0 <= n1 <= b->n */

    /* C element (i, j) is written at c[i * ldc + j] (type per `out`), j global column. */
    void *c;
    ptrdiff_t ldc;

    qc_gemm_out out;
    const int32_t *bias;  /* NULL or bias[j] added (wrapping) to C before the epilogue */
    const float *scale;   /* requant/float only: scale[0] or scale[j] (scale_per_col) */
    int scale_per_col;
    int32_t y_zp;         /* requant only, in the output type's range */
    int relu;             /* requant only: clamp below at y_zp */
    int rq32;             /* requant only: ONNX Runtime's float32 arithmetic (kernels.h,
                           * qc_gemm_requant1_f32) instead of the float64 one above */

    const qc_gemm_kernels *kernels; /* NULL: the best usable variant (qc_gemm_select) */

    const float *fbias;   /* float output only: NULL or fbias[j] added after the scaling */
    const float *row_scale; /* float output only: NULL, or row i's scale is
                             * (float)(row_scale[i] * scale[j]) (per-token activations) */
    const qc_gemm_cols *cols; /* NULL, or the column terms of exactly this call's B, columns,
                               * zero points, bias, scales, a_signed and out
                               * (qc_gemm_cols_prepare), shared by calls that differ only in
                               * A, m and C */
} qc_gemm_args;

/* Bytes of qc_gemm_cols arrays for ncols columns, and the terms of call g made in mem. */
size_t qc_gemm_cols_size(int64_t ncols);
void qc_gemm_cols_prepare(const qc_gemm_args *g, void *mem, qc_gemm_cols *cols);

/* The gemm family (variants best first, scalar last) and the chosen variant's kernels. */
extern const qc_family qc_gemm_family;
const qc_gemm_kernels *qc_gemm_kernels_of(const qc_variant *v);
/* The best usable variant's kernels. The first time an AMX level (amx, amxemu) would be
 * chosen, it must pass qc_gemm_selfcheck first; on failure the level is disabled for the
 * process (cpu_info() gives the reason) and the next variant is chosen. */
const qc_gemm_kernels *qc_gemm_select(void);
/* Once, at module load: a fork() while another thread holds qc_gemm_select's lock (an AMX
 * self-check running) leaves the child a fresh lock instead of one that nobody will release. */
void qc_gemm_select_init(void);
/* Test hook: hold qc_gemm_select's lock for `seconds` (0: take and release it at once), as a
 * self-check running in this thread would; the fork handler's test forks meanwhile. */
void qc_gemm_select_hold(double seconds);
/* Test hook: is that lock held now (by any thread)? */
int qc_gemm_select_busy(void);

/* Run the self-check (small GEMMs: tile remainders, every signedness, extreme values and zero
 * points, int32 and requantized output in both arithmetics) of variant v against the scalar kernel. corrupt: a
 * test hook that changes one result of v before the comparison (a forced mismatch). On a
 * mismatch disables v's level and returns -1; 0 when equal. */
int qc_gemm_selfcheck(const qc_variant *v, int corrupt);

/* Scratch bytes qc_gemm_run needs for a B of k rows and a column range of ncols. */
size_t qc_gemm_workspace_size(int64_t k, int64_t ncols);

/* Single-threaded: computes rows [0, m) x columns [n0, n1). `workspace` has
 * qc_gemm_workspace_size(b->k, n1 - n0) bytes, 64-byte aligned. Never reads past A or B,
 * never writes outside C's rows/columns. */
void qc_gemm_run(const qc_gemm_args *args, void *workspace);

/* Multi-threaded over rows and columns with qc_parallel_for (results identical for every
 * thread count). Allocates its scratch; returns 0, or -1 when out of memory. Call without
 * the GIL. */
int qc_gemm_parallel(const qc_gemm_args *args);

/* Convenience wrappers: int32 output, and requantized int8/uint8 output. */
static inline int qc_gemm_s32(qc_gemm_args *args) {
    args->out = QC_GEMM_OUT_S32;
    return qc_gemm_parallel(args);
}
static inline int qc_gemm_requant(qc_gemm_args *args, int out_signed) {
    args->out = out_signed ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8;
    return qc_gemm_parallel(args);
}

#endif
