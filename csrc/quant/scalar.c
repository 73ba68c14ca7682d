/* Portable scalar quantize / fake-quantize / dequantize / min-max kernels: the ground truth. */
#include "quant/quant.h"

QC_INLINE int quantize_p(const float *x, uint8_t *q, size_t n, const float *s, const float *inv,
                         const float *zp, const qc_qcfg *cfg, int vec) {
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = vec ? i : 0;
        if (x[i] != x[i]) {
            nan = 1;
            q[i] = 0;
            continue;
        }
        float v = qc_quantize_one(x[i], s[j], inv[j], zp[j], cfg);
        q[i] = (uint8_t)(int32_t)v; /* the low byte: the int8 or uint8 pattern */
    }
    return nan;
}

static int quantize_uniform(const float *x, uint8_t *q, size_t n, float s, float inv, float zp,
                            const qc_qcfg *cfg) {
    return quantize_p(x, q, n, &s, &inv, &zp, cfg, 0);
}

static int quantize_vector(const float *x, uint8_t *q, size_t n, const float *s,
                           const float *inv, const float *zp, const qc_qcfg *cfg) {
    return quantize_p(x, q, n, s, inv, zp, cfg, 1);
}

QC_INLINE int fake_p(const float *x, float *y, uint8_t *mask, size_t n, const float *s,
                     const float *inv, const float *zp, const qc_qcfg *cfg, int vec) {
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = vec ? i : 0;
        if (x[i] != x[i]) {
            nan = 1;
            y[i] = 0.0f;
            if (mask) mask[i] = 0;
            continue;
        }
        float t = qc_rounded_one(x[i], s[j], inv[j], zp[j], cfg->profile);
        if (mask) mask[i] = (uint8_t)(t >= cfg->qmin && t <= cfg->qmax);
        /* c - zp is exact (both small integers), so this is (float)(q - zp) * s. */
        y[i] = (qc_clamp_one(t, cfg->qmin, cfg->qmax) - zp[j]) * s[j];
    }
    return nan;
}

static int fake_uniform(const float *x, float *y, uint8_t *mask, size_t n, float s, float inv,
                        float zp, const qc_qcfg *cfg) {
    return fake_p(x, y, mask, n, &s, &inv, &zp, cfg, 0);
}

static int fake_vector(const float *x, float *y, uint8_t *mask, size_t n, const float *s,
                       const float *inv, const float *zp, const qc_qcfg *cfg) {
    return fake_p(x, y, mask, n, s, inv, zp, cfg, 1);
}

static void dequantize_uniform(const uint8_t *q, float *y, size_t n, int is_signed, float s,
                               int32_t zp) {
    if (is_signed) {
        const int8_t *qs = (const int8_t *)q;
        for (size_t i = 0; i < n; i++) y[i] = (float)((int32_t)qs[i] - zp) * s;
    } else {
        for (size_t i = 0; i < n; i++) y[i] = (float)((int32_t)q[i] - zp) * s;
    }
}

static void dequantize_vector(const uint8_t *q, float *y, size_t n, int is_signed,
                              const float *s, const int32_t *zp) {
    if (is_signed) {
        const int8_t *qs = (const int8_t *)q;
        for (size_t i = 0; i < n; i++) y[i] = (float)((int32_t)qs[i] - zp[i]) * s[i];
    } else {
        for (size_t i = 0; i < n; i++) y[i] = (float)((int32_t)q[i] - zp[i]) * s[i];
    }
}

static int minmax_uniform(const float *x, size_t n, float *mn, float *mx) {
    int nan = 0;
    float lo = *mn, hi = *mx;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (v != v) {
            nan = 1;
            continue;
        }
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
    return nan;
}

static int minmax_vector(const float *x, size_t n, float *mn, float *mx) {
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (v != v) {
            nan = 1;
            continue;
        }
        mn[i] = v < mn[i] ? v : mn[i];
        mx[i] = v > mx[i] ? v : mx[i];
    }
    return nan;
}

/* ---- extended quantize: bfloat16 input (bits << 16, exact), nibble/packed/float8 output ---- */

QC_INLINE int quantize_ext_p(const void *xv, uint8_t *q, size_t n, const float *s,
                             const float *inv, const float *zp, const qc_qcfg *cfg, int vec) {
    const float *xf = (const float *)xv;
    const uint16_t *xb = (const uint16_t *)xv;
    const int bf16 = cfg->in == QC_IN_BF16, packed = cfg->out == QC_OUT_PACKED4;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = vec ? i : 0;
        float x = bf16 ? qc_float_of((uint32_t)xb[i] << 16) : xf[i];
        uint8_t b = 0;
        if (x != x) nan = 1;
        else b = qc_quantize_ext_one(x, s[j], inv[j], zp[j], cfg);
        if (!packed) q[i] = b;
        else if (i & 1) q[i / 2] = (uint8_t)(q[i / 2] | (b << 4));
        else q[i / 2] = b;
    }
    return nan;
}

static int quantize_ext_uniform(const void *x, uint8_t *q, size_t n, float s, float inv,
                                float zp, const qc_qcfg *cfg) {
    return quantize_ext_p(x, q, n, &s, &inv, &zp, cfg, 0);
}

static int quantize_ext_vector(const void *x, uint8_t *q, size_t n, const float *s,
                               const float *inv, const float *zp, const qc_qcfg *cfg) {
    return quantize_ext_p(x, q, n, s, inv, zp, cfg, 1);
}

const qc_quant_kernels qc_quant_kernels__scalar = {
    quantize_uniform,   quantize_vector,   fake_uniform,   fake_vector,
    dequantize_uniform, dequantize_vector, minmax_uniform, minmax_vector,
    quantize_ext_uniform, quantize_ext_vector,
};
