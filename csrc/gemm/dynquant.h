/* Dynamic (per-call) activation quantization for Linear: float32 -> uint8, per tensor. */
#ifndef QC_DYNQUANT_H
#define QC_DYNQUANT_H

#include "qc_common.h"

/* One pass over x[0..n): min and max of the finite values, the NaN count and first NaN index
 * (first_nan = n when there is none). Empty or all-infinite input gives min = max = 0. */
void qc_dynq_minmax_f32(const float *x, size_t n, float *min, float *max, size_t *nan_count,
                        size_t *first_nan);

/* ONNX DynamicQuantizeLinear parameters from a range (widened to include 0):
 *   scale = (max(max, 0) - min(min, 0)) / 255,  zp = clamp(rne(0 - min / scale), 0, 255)
 * in float32; a zero range gives scale 1, zp 0 (every value quantizes to 0 exactly). */
void qc_dynq_params_u8(float min, float max, float *scale, int32_t *zp);

/* q = clamp(rne(x / scale) + zp, 0, 255) (true division, ties to even, +-inf saturate). */
void qc_dynq_quantize_u8(const float *x, size_t n, float scale, int32_t zp, uint8_t *q);

#endif
