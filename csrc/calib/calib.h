/* Calibration kernels: |x| histograms, MSE-optimal clipping search, quantization error stats. */
#ifndef QC_CALIB_H
#define QC_CALIB_H

#include "qc_common.h"

/* Lanes of the order-fixed float sums below (see qc_error_stats). */
#define QC_STATS_LANES 16

/* Histogram of |x|: bin i counts values with floor(|x| * inv_width) == i (computed in double),
 * values at or above the last edge land in the last bin. counts[bins] is added to, not reset.
 * x must hold no NaN. */
void qc_abs_histogram_f32(const float *x, size_t n, double inv_width, size_t bins,
                          int64_t *counts);

/* Squared error of fake-quantizing x[0..n) with (scale, zp) onto [qmin, qmax]:
 * sum over i of (x - (clamp(rne(x / scale) + zp, qmin, qmax) - zp) * scale)^2, the quantized
 * value in float32 and the difference squared and summed in double over QC_STATS_LANES lanes
 * (element i to lane i % 16), lanes added in order: every variant gives the same bits. */
typedef double (*qc_fq_sq_error_fn)(const float *x, size_t n, float scale, float zp, float qmin,
                                    float qmax);
double qc_fq_sq_error__scalar(const float *x, size_t n, float scale, float zp, float qmin,
                              float qmax);
double qc_fq_sq_error__avx2(const float *x, size_t n, float scale, float zp, float qmin,
                            float qmax);
double qc_fq_sq_error__avx512(const float *x, size_t n, float scale, float zp, float qmin,
                              float qmax);

/* MSE-optimal clipping search for one group of n values whose range is [mn, mx] (mn <= 0 <= mx).
 * Candidate k clips the range to [mn * fractions[k], mx * fractions[k]] and derives float32
 * qparams from it:
 *   symmetric:  a = max(-lo, hi), scale = 2a / (qmax - qmin), zp = floor((qmin + qmax + 1) / 2)
 *   asymmetric: scale = (hi - lo) / (qmax - qmin), zp = clamp(rne(qmin - lo / scale), qmin, qmax)
 * and measures its squared error with `err` (a zero scale: the error of quantizing to 0).
 * Returns the k with the smallest error (the first one on ties); errors[k] receives each sum
 * when errors is not NULL. */
size_t qc_mse_clip_search_f32(qc_fq_sq_error_fn err, const float *x, size_t n, float mn,
                              float mx, int qmin, int qmax, int symmetric,
                              const float *fractions, size_t k, double *errors);

/* Squared error of quantizing the centres of an |x| histogram with symmetric threshold t onto
 * levels 0..levels (value c -> min(rne(c / s), levels) * s with s = t / levels), weighted by
 * the counts, for every candidate threshold t = (i + 1) * width, i in [0, bins). */
void qc_hist_mse_f64(const int64_t *counts, size_t bins, double width, int levels,
                     double *errors);


/* Error of a quantized group against its float original, one pass: the dequantized value is
 * d = (float)(q - zp) * scale (float32, as quantc.dequantize); accumulates sum x^2 and
 * sum (x - d)^2 in double, the largest |x - d| and the count of clamped values (those whose
 * |x - d| exceeds half a step, scale * (0.5 + 2^-11)). q is int8 (is_signed) or uint8.
 * The sums run over QC_STATS_LANES lanes (element i of a group goes to lane i % 16), reduced
 * in lane order at the end: the SIMD variants keep one vector lane per lane and give the
 * scalar kernel's bits exactly. */

typedef struct {
    double signal, error;
    float max_abs;
    int64_t clipped;
} qc_error_stats;

typedef void (*qc_error_stats_fn)(const float *x, const void *q, int is_signed, size_t n,
                                  float scale, int32_t zp, qc_error_stats *acc);
void qc_error_stats__scalar(const float *x, const void *q, int is_signed, size_t n, float scale,
                            int32_t zp, qc_error_stats *acc);
void qc_error_stats__avx2(const float *x, const void *q, int is_signed, size_t n, float scale,
                          int32_t zp, qc_error_stats *acc);
void qc_error_stats__avx512(const float *x, const void *q, int is_signed, size_t n, float scale,
                            int32_t zp, qc_error_stats *acc);


/* One variant's table of kernels. */
typedef struct {
    qc_error_stats_fn error_stats;
    qc_fq_sq_error_fn fq_sq_error;
} qc_calib_kernels;

#endif
