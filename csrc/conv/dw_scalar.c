/* Scalar reference kernels of the direct convolution (plain C, the layouts of dw.h). */
#include "conv/dw.h"

#include "gemm/kernels.h"

static void rows_scalar(const uint8_t *src, size_t lds, int sx, size_t sw, size_t n,
                        size_t nrows, int32_t xzp, int16_t *dst, size_t ldd) {
    for (size_t r = 0; r < nrows; r++, src += lds, dst += ldd) {
        for (size_t i = 0; i < n; i++) {
            const int32_t v = sx ? (int32_t)(int8_t)src[i * sw] : (int32_t)src[i * sw];
            dst[i] = (int16_t)(v - xzp);
        }
    }
}

static void rows2_scalar(const uint8_t *src, size_t lds, int sx, size_t n, size_t nrows,
                         int32_t xzp, int16_t *d0, int16_t *d1, size_t ldd) {
    for (size_t r = 0; r < nrows; r++, src += lds, d0 += ldd, d1 += ldd) {
        for (size_t j = 0; j < n; j++) {
            const int32_t v = sx ? (int32_t)(int8_t)src[j] : (int32_t)src[j];
            (j % 2 ? d1 : d0)[j / 2] = (int16_t)(v - xzp);
        }
    }
}

static void pairs_scalar(const int16_t *xs, size_t n, int32_t *xp) {
    for (size_t i = 0; i < n; i++)
        xp[i] = (int32_t)((uint32_t)(uint16_t)xs[i] | (uint32_t)(uint16_t)xs[i + 1] << 16);
}

/* One output: bias plus, per pair operation, lo16(x) * lo16(w) + hi16(x) * hi16(w), wrapping. */
static void tile_scalar(const qc_dw_tile *t) {
    for (size_t c = 0; c < t->nch; c++) {
        const int32_t *xp = t->xp + c / t->per_xp * t->xp_stride;
        const int32_t *wp = t->wp + c * t->nops;
        for (size_t r = 0; r < t->TH; r++) {
            for (size_t o = 0; o < t->TW; o++) {
                const size_t i = r * t->PWs + o;
                uint32_t acc = t->bias ? (uint32_t)t->bias[c] : 0;
                for (size_t j = 0; j < t->nops; j++) {
                    const int32_t x = xp[t->off[j] + i], w = wp[j];
                    acc += (uint32_t)((int32_t)(int16_t)x * (int32_t)(int16_t)w);
                    acc += (uint32_t)((int32_t)(int16_t)(x >> 16) * (int32_t)(int16_t)(w >> 16));
                }
                const size_t at = c * t->ldc + r * t->ldy + o;
                if (t->out32) {
                    ((int32_t *)t->y)[at] = (int32_t)acc;
                } else {
                    const int32_t q = qc_gemm_requant1_by(t->rq32, (int32_t)acc, t->scale[c],
                                                          t->y_zp, t->lo, t->hi);
                    ((uint8_t *)t->y)[at] = (uint8_t)q;
                }
            }
        }
    }
}

static void nhwc_scalar(const qc_dw_nhwc *b) {
    const size_t np = b->PH * b->PW;
    for (size_t p = 0; p < np; p++) {
        for (size_t c = 0; c < 16; c++) {
            const int32_t x0 = (b->sx ? (int32_t)(int8_t)b->xb[p * 16 + c] : b->xb[p * 16 + c]);
            const size_t q = (p + b->pd) * 16 + c;
            const int32_t x1 = (b->sx ? (int32_t)(int8_t)b->xb[q] : b->xb[q]);
            b->xp[p * 16 + c] = (int32_t)((uint32_t)(uint16_t)(x0 - b->xzp) |
                                          (uint32_t)(uint16_t)(x1 - b->xzp) << 16);
        }
    }
    for (size_t oy = 0; oy < b->OH; oy++) {
        for (size_t ox = 0; ox < b->OW; ox++) {
            const size_t base = oy * b->sh * b->PW + ox * b->sw, o = oy * b->OW + ox;
            for (size_t c = 0; c < 16; c++) {
                uint32_t acc = (uint32_t)b->bias[c];
                for (size_t j = 0; j < b->nops; j++) {
                    const int32_t x = b->xp[(base + b->poff[j]) * 16 + c], w = b->wp[j * 16 + c];
                    acc += (uint32_t)((int32_t)(int16_t)x * (int32_t)(int16_t)w);
                    acc += (uint32_t)((int32_t)(int16_t)(x >> 16) * (int32_t)(int16_t)(w >> 16));
                }
                if (b->out32) {
                    ((int32_t *)b->ob)[o * 16 + c] = (int32_t)acc;
                } else {
                    ((uint8_t *)b->ob)[o * 16 + c] = (uint8_t)qc_gemm_requant1_by(
                        b->rq32, (int32_t)acc, b->scale[c], b->y_zp, b->lo, b->hi);
                }
            }
        }
    }
}

const qc_dw_kernels qc_dw_kernels_scalar = {"conv_dw_pairs__scalar", rows_scalar, rows2_scalar, pairs_scalar,
                                            tile_scalar, nhwc_scalar, NULL, NULL};
