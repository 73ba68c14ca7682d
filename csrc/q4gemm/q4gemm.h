/* Internal 4-bit blocked-weight GEMM API (no Python): pack W once, then y = x W^T per block. */
#ifndef QC_Q4GEMM_H
#define QC_Q4GEMM_H

#include "qc_common.h"
#include "cpu/cpu.h"

/*
 * Numerics
 * --------
 * W is (N, K) 4-bit: row j (an output feature) is cut into nb = ceil(K / bs) blocks of bs
 * consecutive k (the last block is short when bs does not divide K). Every block has a float32
 * scale ws[j, b] and an integer zero point. The packed form stores u = w + 8 for int4
 * (w in [-8, 7], zero point zw in [-8, 7] stored as zu = zw + 8) and u = w for uint4 (zu = zw);
 * u and zu are in [0, 15] and w - zw = u - zu.
 *
 * Activations x (M, K) float32 are quantized symmetrically to int8, one scale per row
 * (or one for the whole call):  xs = amax / 127 (1 when amax is 0), amax the largest finite
 * |x|;  q = clamp(rne(x / xs), -127, 127) (true float32 division, ties to even, +-inf
 * saturate). Then, per row i, column j, block b (k over the block's real elements):
 *   acc[i, j, b] = sum_k q[i, k] * u[j, k] - zu[j, b] * sum_k q[i, k]     (int32, exact:
 *                  |u - zu| <= 15, so |acc| <= bs * 127 * 15 < 2^31 for bs <= 2^16)
 *   y[i, j] = 0;  for b = 0 .. nb - 1 in order:
 *       y = y + (float)acc[i, j, b] * (xs[i] * ws[j, b])     (float32, each op rounded, no FMA)
 *   y = y + bias[j]                                           (when there is a bias)
 * Every kernel variant (scalar, AVX2, AVX-512 VNNI) and both paths (GEMV: straight from the
 * nibbles; GEMM: from a panel unpacked to bytes) run exactly these operations in this order,
 * so the results are bit-identical for every variant and thread count.
 *
 * Packed layout
 * -------------
 * K is padded to kp = round_up(K, 32); the padding holds u = 0 and the activations there are 0,
 * so it adds nothing (the row sums cover the real elements only). Panel p holds columns
 * [16p, 16p + 16) (columns past N are zero, scale 0, never stored) as kp / 32 chunks of 256
 * bytes; chunk c of 32 k is 4 runs of 64 bytes, and byte 4 * col + q of run r holds
 *   low nibble:  u[16p + col][32c + 8r + q],     high nibble: u[16p + col][32c + 8r + 4 + q]
 * (q in 0..3). So a 64-byte run gives two vpdpbusd operands (the low nibbles: k group 8r..8r+3,
 * the high nibbles: 8r+4..8r+7, each 16 columns x 4 bytes) with one AND and one shift. A panel
 * is kp * 8 bytes, panel p starts at data + p * kp * 8. Scales: ws of panel p, block b, column
 * col at scale[(p * nb + b) * 16 + col]; zero points (uint4, or int4 with nonzero ones) the
 * same way as bytes zu, else NULL (every zu is 8). The unpacked form of a panel (GEMM path):
 * kp / 4 groups of 64 bytes, byte 4 * col + q of group g = u[16p + col][4g + q].
 *
 * 8-bit blocks (bits = 8: int8/uint8 weights with several blocks per row) use the same
 * formula with u = w + 128 for int8 (zu = zw + 128, 128 when none is stored) and u = w for
 * uint8, u and zu in [0, 255] (|acc| <= bs * 127 * 255 < 2^31 for bs <= 2^16). Their packed
 * panel is already in the unpacked layout (kp * 16 bytes, panel p at data + p * kp * 16), so
 * both paths run the GEMM tile on it in place.
 */

#define QC_Q4_NR 16 /* columns per panel */
#define QC_Q4_KC 32 /* k per 256-byte chunk; block sizes are multiples of it */

/* Where u[16p + c][kk] lives in panel p (the packed layout above): the byte, and whether it is
 * the high nibble; and its byte in the unpacked (and 8-bit) layout. */
QC_INLINE size_t qc_q4_nibble_byte(int64_t kk, int c) {
    return (size_t)((kk / 32) * 256 + ((kk % 32) / 8) * 64 + 4 * c + kk % 4);
}
QC_INLINE int qc_q4_nibble_high(int64_t kk) { return kk % 8 >= 4; }
QC_INLINE size_t qc_q4_unpacked_byte(int64_t kk, int c) {
    return (size_t)((kk / 4) * 64 + 4 * c + kk % 4);
}

typedef struct {
    int64_t k, n;       /* logical W shape (N, K) */
    int64_t kp;         /* round_up(k, 32) */
    int64_t bs, nb;     /* block size (multiple of 32), blocks per row ceil(k / bs) */
    int64_t np;         /* panels: ceil(n / 16) */
    int bits;           /* 4, or 8 (bytes in the unpacked layout) */
    const uint8_t *data;  /* np * kp * bits * 2 bytes */
    const float *scale;   /* np * nb * 16 */
    const uint8_t *zp;    /* NULL (every zu = 8, or 128 for bits 8) or np * nb * 16 */
} qc_q4_b;

/* Sizes of the packed buffers for (n, k, bs); 0 when a size does not fit size_t. */
size_t qc_q4_data_size(int64_t n, int64_t k, int bits);
size_t qc_q4_param_count(int64_t n, int64_t k, int64_t bs);

/* Pack w (N x K values, one per int8 byte, row j at w + j * k: int4 values in [-8, 7] when
 * is_signed, else uint4 values in [0, 15]), ws (N x nb float32) and zw (N x nb int8 values of
 * w's kind, or NULL for all zero) into caller-provided buffers of the sizes above (zbuf may be
 * NULL when zw is NULL and is_signed). Fills `out`. */
void qc_q4_pack(const int8_t *w, const float *ws, const int8_t *zw, int is_signed, int64_t n,
                int64_t k, int64_t bs, uint8_t *data, float *sbuf, uint8_t *zbuf, qc_q4_b *out);

/* The same for 8-bit weights (bits = 8): w and zw hold int8 values when is_signed, else
 * uint8 values (read through the same pointers); zbuf may be NULL when zw is NULL and
 * is_signed. */
void qc_q8b_pack(const int8_t *w, const float *ws, const int8_t *zw, int is_signed, int64_t n,
                 int64_t k, int64_t bs, uint8_t *data, float *sbuf, uint8_t *zbuf, qc_q4_b *out);

/* Quantize m rows of x (row i at x + i * ldx, k float32 each, no NaN) to int8 with the
 * formula above into q (row i at q + i * kp, zero-padded to kp), xs (m scales) and qsum
 * (m * nb int32: sum of q over each block). per_row 0: one scale for all rows. */
void qc_q4_quantize_x(const float *x, ptrdiff_t ldx, int64_t m, int64_t k, int64_t kp,
                      int64_t bs, int per_row, int8_t *q, float *xs, int32_t *qsum);

typedef struct {
    const int8_t *q;      /* m rows of kp int8 (row i at q + i * kp) */
    const float *xs;      /* m row scales */
    const int32_t *qsum;  /* m * nb block sums */
    int64_t m;
    const qc_q4_b *b;
    float *y;             /* element (i, j) at y[i * ldy + j] */
    ptrdiff_t ldy;
    const float *bias;    /* NULL or n */
} qc_q4_args;

typedef struct qc_q4_kernels qc_q4_kernels;

extern const qc_family qc_q4gemm_family;
const qc_q4_kernels *qc_q4_kernels_of(const qc_variant *v);
const qc_q4_kernels *qc_q4_select(void);
const char *qc_q4_kernels_name(const qc_q4_kernels *k);

/* Rows at and above which the GEMM path (unpack a panel once, reuse it over row tiles) runs
 * instead of the GEMV path (every row straight from the nibbles). Same results either way. */
#define QC_Q4_GEMM_MIN_ROWS 16

/* Multi-threaded y = the formula above for all m rows and n columns with `kern` (NULL: the
 * best usable). path: 0 automatic, 1 GEMV, 2 GEMM (tests). Returns 0, or -1 when out of
 * memory. Never reads or writes outside the buffers described. Call without the GIL. */
int qc_q4_gemm(const qc_q4_args *args, const qc_q4_kernels *kern, int path);

#endif
