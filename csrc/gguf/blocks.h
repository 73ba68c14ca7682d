/* llama.cpp's Q8_0 and Q4_0 weight blocks (32 values, a float16 scale): reference quantizers. */
#ifndef QC_GGUF_BLOCKS_H
#define QC_GGUF_BLOCKS_H

#include "qc_common.h"

#define QC_GGUF_QK 32
#define QC_GGUF_Q8_0_BYTES 34 /* uint16 d (float16 bits, little-endian), int8 qs[32] */
#define QC_GGUF_Q4_0_BYTES 18 /* uint16 d, uint8 qs[16]: value i in the low nibble of qs[i],
                               * value i + 16 in the high nibble (i < 16) */

/* Each is ggml's quantize_row_*_ref, float32 arithmetic with no FMA, for nblocks blocks of
 * x (32 finite floats each) into nblocks * bytes-per-block bytes of y:
 *   Q8_0: amax = max |x|, d = amax / 127, id = d ? 1 / d : 0,
 *         q = roundf(x * id) (ties away from zero), stored d = float16(d) (ties to even).
 *   Q4_0: m = the x of largest |x| (the first one on ties), d = m / -8, id = d ? 1 / d : 0,
 *         q = min(15, (uint8)trunc(x * id + 8.5f)), stored d = float16(d).
 * The scale used to quantize is the float32 d, not its float16 rounding (as ggml). */
void qc_gguf_quantize_q8_0(const float *x, int64_t nblocks, uint8_t *y);
void qc_gguf_quantize_q4_0(const float *x, int64_t nblocks, uint8_t *y);

#endif
