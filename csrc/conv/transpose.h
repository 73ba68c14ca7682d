/* Blocked matrix transposes for the conv driver's NCHW <-> NHWC moves (bytes and int32). */
#ifndef QC_CONV_TRANSPOSE_H
#define QC_CONV_TRANSPOSE_H

#include "qc_common.h"

/* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (strides in elements). The byte
 * transposes read within [src, src + (rows - 1) * lds + cols) (bytes between the rows too)
 * and write only the destination's elements. */
void qc_transpose_u8(const uint8_t *src, size_t rows, size_t cols, size_t lds, uint8_t *dst,
                     size_t ldd);
/* qc_transpose_u8 with column c's destination at dst + (c + c / wrap * skip) * ldd: an NCHW
 * plane of rows `wrap` pixels wide into NHWC rows that lie `skip` pixels apart (a padded
 * image). wrap > 0. */
void qc_transpose_u8_wrap(const uint8_t *src, size_t rows, size_t cols, size_t lds, uint8_t *dst,
                          size_t ldd, size_t wrap, size_t skip);
void qc_transpose_u32(const uint32_t *src, size_t rows, size_t cols, size_t lds, uint32_t *dst,
                      size_t ldd);

#endif
