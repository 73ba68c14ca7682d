/* The entry points of one ISA file's one-pass low-bit quantize kernel (quant.h,
 * quantize_ext_uniform/_vector), included by avx2.c and avx512.c after each has defined
 *   QC_INLINE int quantize_ext_p(x, q, n, s, inv, zp, cfg, vec, profile, bf16, out)
 * with profile, bf16 and out compile-time constants at every call below. */
#ifndef QC_QUANT_EXT_DISPATCH_H
#define QC_QUANT_EXT_DISPATCH_H

/* Every (input, output, profile) this kernel serves, each its own specialized loop: bytes
 * from bfloat16 in every profile; nibbles and packed 4-bit in onnx/tflite (torch has no 4-bit
 * quantize); float8 by division whatever the profile. */
#define QC_EXT(p, bf16, out) quantize_ext_p(x, q, n, s, inv, zp, cfg, vec, p, bf16, out)
#define QC_EXT_PROFILES(bf16, out)                                                         \
    switch ((int)cfg->profile) {                                                           \
    case QC_PROFILE_TORCH_FMA: return QC_EXT(QC_PROFILE_TORCH_FMA, bf16, out);             \
    case QC_PROFILE_TORCH_ADD: return QC_EXT(QC_PROFILE_TORCH_ADD, bf16, out);             \
    case QC_PROFILE_TORCH: return QC_EXT(QC_PROFILE_TORCH, bf16, out);                     \
    case QC_PROFILE_TFLITE: return QC_EXT(QC_PROFILE_TFLITE, bf16, out);                   \
    default: return QC_EXT(QC_PROFILE_ONNX, bf16, out);                                    \
    }
#define QC_EXT_INT4(bf16, out)                                                             \
    return cfg->profile == QC_PROFILE_TFLITE ? QC_EXT(QC_PROFILE_TFLITE, bf16, out)        \
                                             : QC_EXT(QC_PROFILE_ONNX, bf16, out)
#define QC_EXT_OUTS(bf16)                                                                  \
    switch ((int)cfg->out) {                                                               \
    case QC_OUT_NIBBLE: QC_EXT_INT4(bf16, QC_OUT_NIBBLE);                                  \
    case QC_OUT_PACKED4: QC_EXT_INT4(bf16, QC_OUT_PACKED4);                                \
    case QC_OUT_F8_E4M3FN: return QC_EXT(QC_PROFILE_ONNX, bf16, QC_OUT_F8_E4M3FN);         \
    case QC_OUT_F8_E4M3FNUZ: return QC_EXT(QC_PROFILE_ONNX, bf16, QC_OUT_F8_E4M3FNUZ);     \
    case QC_OUT_F8_E5M2: return QC_EXT(QC_PROFILE_ONNX, bf16, QC_OUT_F8_E5M2);             \
    case QC_OUT_F8_E5M2FNUZ: return QC_EXT(QC_PROFILE_ONNX, bf16, QC_OUT_F8_E5M2FNUZ);     \
    default: QC_EXT_PROFILES(bf16, QC_OUT_BYTES)                                           \
    }

QC_INLINE int quantize_ext_dispatch(const void *x, uint8_t *q, size_t n, const float *s,
                                    const float *inv, const float *zp, const qc_qcfg *cfg,
                                    int vec) {
    if (cfg->in == QC_IN_BF16) QC_EXT_OUTS(1)
    QC_EXT_OUTS(0)
}
#undef QC_EXT_OUTS
#undef QC_EXT_INT4
#undef QC_EXT_PROFILES
#undef QC_EXT

static int quantize_ext_uniform(const void *x, uint8_t *q, size_t n, float s, float inv,
                                float zp, const qc_qcfg *cfg) {
    return quantize_ext_dispatch(x, q, n, &s, &inv, &zp, cfg, 0);
}

static int quantize_ext_vector(const void *x, uint8_t *q, size_t n, const float *s,
                               const float *inv, const float *zp, const qc_qcfg *cfg) {
    return quantize_ext_dispatch(x, q, n, s, inv, zp, cfg, 1);
}

#endif
