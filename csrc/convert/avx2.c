/* AVX2 + F16C conversion kernels; each one equals the scalar kernel bit for bit. */
#include <immintrin.h>

#include "convert/convert.h"

#define QC_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define QC_FLOOR (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define QC_CEIL (_MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC)
#define QC_TRUNC (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)

/* Lanes [0, r) set, for masked loads/stores of the last r < 8 floats (never past the end). */
QC_INLINE __m256i tail_mask8(size_t r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- round: roundps does half_even/floor/ceil/trunc exactly; the two other modes follow the
 * scalar formulas in convert.h operation for operation ---- */

QC_INLINE __m256 op_half_even(__m256 v) { return _mm256_round_ps(v, QC_RNE); }
QC_INLINE __m256 op_floor(__m256 v) { return _mm256_round_ps(v, QC_FLOOR); }
QC_INLINE __m256 op_ceil(__m256 v) { return _mm256_round_ps(v, QC_CEIL); }
QC_INLINE __m256 op_trunc(__m256 v) { return _mm256_round_ps(v, QC_TRUNC); }
QC_INLINE __m256 op_half_away(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, v);
    __m256 t = _mm256_round_ps(a, QC_TRUNC);
    __m256 ge = _mm256_cmp_ps(_mm256_sub_ps(a, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 r = _mm256_add_ps(t, _mm256_and_ps(ge, _mm256_set1_ps(1.0f)));
    return _mm256_or_ps(r, _mm256_and_ps(sign, v)); /* r has a clear sign bit: copysign */
}
QC_INLINE __m256 op_half_up(__m256 v) {
    __m256 t = _mm256_round_ps(v, QC_FLOOR);
    __m256 ge = _mm256_cmp_ps(_mm256_sub_ps(v, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_add_ps(t, _mm256_and_ps(ge, _mm256_set1_ps(1.0f)));
}

#define QC_DEF_ROUND(name)                                                             \
    static void round_##name##__avx2(const float *x, float *y, size_t n) {             \
        size_t i = 0;                                                                  \
        for (; i + 32 <= n; i += 32) {                                                 \
            __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);         \
            __m256 c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);   \
            _mm256_storeu_ps(y + i, op_##name(a));                                     \
            _mm256_storeu_ps(y + i + 8, op_##name(b));                                 \
            _mm256_storeu_ps(y + i + 16, op_##name(c));                                \
            _mm256_storeu_ps(y + i + 24, op_##name(d));                                \
        }                                                                              \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, op_##name(_mm256_loadu_ps(x + i))); \
        if (i < n) {                                                                   \
            __m256i m = tail_mask8(n - i);                                             \
            _mm256_maskstore_ps(y + i, m, op_##name(_mm256_maskload_ps(x + i, m)));    \
        }                                                                              \
    }
QC_DEF_ROUND(half_even)
QC_DEF_ROUND(half_away)
QC_DEF_ROUND(half_up)
QC_DEF_ROUND(floor)
QC_DEF_ROUND(ceil)
QC_DEF_ROUND(trunc)
#undef QC_DEF_ROUND

const qc_round_kernels qc_round_kernels__avx2 = {{
    [QC_ROUND_HALF_EVEN] = round_half_even__avx2,
    [QC_ROUND_HALF_AWAY] = round_half_away__avx2,
    [QC_ROUND_HALF_UP] = round_half_up__avx2,
    [QC_ROUND_FLOOR] = round_floor__avx2,
    [QC_ROUND_CEIL] = round_ceil__avx2,
    [QC_ROUND_TRUNC] = round_trunc__avx2,
}};

/* ---- clamp ---- */

/* maxps(lo, x) returns x when x is NaN (its second operand), like qc_clamp_f32. */
QC_INLINE __m256 clamp_ps(__m256 v, __m256 lo, __m256 hi) {
    return _mm256_min_ps(hi, _mm256_max_ps(lo, v));
}

static void clamp_f32__avx2(const float *x, float *y, size_t n, float lo, float hi) {
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        __m256 c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
        _mm256_storeu_ps(y + i, clamp_ps(a, vlo, vhi));
        _mm256_storeu_ps(y + i + 8, clamp_ps(b, vlo, vhi));
        _mm256_storeu_ps(y + i + 16, clamp_ps(c, vlo, vhi));
        _mm256_storeu_ps(y + i + 24, clamp_ps(d, vlo, vhi));
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, clamp_ps(_mm256_loadu_ps(x + i), vlo, vhi));
    if (i < n) {
        __m256i m = tail_mask8(n - i);
        _mm256_maskstore_ps(y + i, m, clamp_ps(_mm256_maskload_ps(x + i, m), vlo, vhi));
    }
}

/* 64-bit min/max from compares (AVX2 has none); unsigned via the flipped sign bit. */
QC_INLINE __m256i max_epi64(__m256i a, __m256i b) {
    return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(b, a));
}
QC_INLINE __m256i min_epi64(__m256i a, __m256i b) {
    return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b));
}
QC_INLINE __m256i max_epu64(__m256i a, __m256i b) {
    const __m256i s = _mm256_set1_epi64x(INT64_MIN);
    return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(_mm256_xor_si256(b, s), _mm256_xor_si256(a, s)));
}
QC_INLINE __m256i min_epu64(__m256i a, __m256i b) {
    const __m256i s = _mm256_set1_epi64x(INT64_MIN);
    return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(_mm256_xor_si256(a, s), _mm256_xor_si256(b, s)));
}
#define QC_SET1_8(v) _mm256_set1_epi8((char)(v))
#define QC_SET1_16(v) _mm256_set1_epi16((short)(v))
#define QC_SET1_32(v) _mm256_set1_epi32((int)(v))
#define QC_SET1_64(v) _mm256_set1_epi64x((long long)(v))

/* Whole vectors here; the last partial vector goes to the scalar kernel (integers: exact). */
#define QC_DEF_CLAMP_INT(ID, sfx, T, SET1, MAXF, MINF)                                  \
    static void clamp_##sfx##__avx2(const void *xv, void *yv, size_t n, int64_t lo64,  \
                                    int64_t hi64) {                                    \
        const T *x = (const T *)xv;                                                    \
        T *y = (T *)yv;                                                                \
        const __m256i vlo = SET1((T)lo64), vhi = SET1((T)hi64);                        \
        const size_t step = 32 / sizeof(T);                                            \
        size_t i = 0;                                                                  \
        for (; i + step <= n; i += step) {                                             \
            __m256i v = _mm256_loadu_si256((const __m256i *)(x + i));                  \
            _mm256_storeu_si256((__m256i *)(y + i), MINF(MAXF(v, vlo), vhi));          \
        }                                                                              \
        if (i < n) qc_clamp_kernels__scalar.i[QC_INT_##ID](x + i, y + i, n - i, lo64, hi64); \
    }
QC_DEF_CLAMP_INT(S8, s8, int8_t, QC_SET1_8, _mm256_max_epi8, _mm256_min_epi8)
QC_DEF_CLAMP_INT(U8, u8, uint8_t, QC_SET1_8, _mm256_max_epu8, _mm256_min_epu8)
QC_DEF_CLAMP_INT(S16, s16, int16_t, QC_SET1_16, _mm256_max_epi16, _mm256_min_epi16)
QC_DEF_CLAMP_INT(U16, u16, uint16_t, QC_SET1_16, _mm256_max_epu16, _mm256_min_epu16)
QC_DEF_CLAMP_INT(S32, s32, int32_t, QC_SET1_32, _mm256_max_epi32, _mm256_min_epi32)
QC_DEF_CLAMP_INT(U32, u32, uint32_t, QC_SET1_32, _mm256_max_epu32, _mm256_min_epu32)
QC_DEF_CLAMP_INT(S64, s64, int64_t, QC_SET1_64, max_epi64, min_epi64)
QC_DEF_CLAMP_INT(U64, u64, uint64_t, QC_SET1_64, max_epu64, min_epu64)
#undef QC_DEF_CLAMP_INT

const qc_clamp_kernels qc_clamp_kernels__avx2 = {
    .f32 = clamp_f32__avx2,
    .i = {
#define QC_CLAMP_ENTRY(ID, sfx, T, sgn, mn, mx) [QC_INT_##ID] = clamp_##sfx##__avx2,
        QC_INT_TYPES(QC_CLAMP_ENTRY)
#undef QC_CLAMP_ENTRY
    },
};

/* ---- saturate_cast: the narrowing casts quantized code uses, with pack instructions ----
 * packs_* saturate signed -> signed, packus_* signed -> unsigned; both work within 128-bit
 * lanes, so a permute restores element order. Unsigned sources are first limited with an
 * unsigned min so the signed view the pack sees is non-negative. Other pairs: scalar. */

/* Two vectors of 32-bit lanes -> one vector of 16 16-bit lanes, in order. */
#define QC_FIX16(v) _mm256_permute4x64_epi64((v), 0xD8)

/* One step converts 32 bytes of output: OUT_PER_STEP elements from a few source vectors. */
#define QC_DEF_CAST2(SID, ssfx, ST, DID, dsfx, DT, ...)                                    \
    static void cast_##ssfx##_##dsfx##__avx2(const void *xv, void *yv, size_t n) {         \
        const ST *x = (const ST *)xv;                                                      \
        DT *y = (DT *)yv;                                                                  \
        const size_t step = 32 / sizeof(DT);                                               \
        size_t i = 0;                                                                      \
        for (; i + step <= n; i += step) {                                                 \
            const __m256i *p = (const __m256i *)(x + i);                                   \
            __m256i out;                                                                   \
            __VA_ARGS__                                                                    \
            _mm256_storeu_si256((__m256i *)(y + i), out);                                  \
        }                                                                                  \
        if (i < n) qc_saturate_kernels__scalar.cast[QC_INT_##SID][QC_INT_##DID](x + i, y + i, n - i); \
    }

#define LD(k) _mm256_loadu_si256(p + (k))
static const int32_t qc_perm_8x32[8] = {0, 4, 1, 5, 2, 6, 3, 7};
#define QC_FIX8(v) _mm256_permutevar8x32_epi32((v), _mm256_loadu_si256((const __m256i *)qc_perm_8x32))

QC_DEF_CAST2(S16, s16, int16_t, S8, s8, int8_t, { out = QC_FIX16(_mm256_packs_epi16(LD(0), LD(1))); })
QC_DEF_CAST2(S16, s16, int16_t, U8, u8, uint8_t, { out = QC_FIX16(_mm256_packus_epi16(LD(0), LD(1))); })
QC_DEF_CAST2(U16, u16, uint16_t, U8, u8, uint8_t, {
    const __m256i m = _mm256_set1_epi16(255);
    out = QC_FIX16(_mm256_packus_epi16(_mm256_min_epu16(LD(0), m), _mm256_min_epu16(LD(1), m)));
})
QC_DEF_CAST2(S32, s32, int32_t, S16, s16, int16_t, { out = QC_FIX16(_mm256_packs_epi32(LD(0), LD(1))); })
QC_DEF_CAST2(S32, s32, int32_t, U16, u16, uint16_t, { out = QC_FIX16(_mm256_packus_epi32(LD(0), LD(1))); })
QC_DEF_CAST2(U32, u32, uint32_t, U16, u16, uint16_t, {
    const __m256i m = _mm256_set1_epi32(65535);
    out = QC_FIX16(_mm256_packus_epi32(_mm256_min_epu32(LD(0), m), _mm256_min_epu32(LD(1), m)));
})
/* 32 -> 8: packs to 16 bits (signed saturation keeps the int8/uint8 result), then to 8 bits;
 * the groups of four come out as a0 b0 c0 d0 a1 b1 c1 d1, reordered by QC_FIX8. */
QC_DEF_CAST2(S32, s32, int32_t, S8, s8, int8_t, {
    __m256i ab = _mm256_packs_epi32(LD(0), LD(1)), cd = _mm256_packs_epi32(LD(2), LD(3));
    out = QC_FIX8(_mm256_packs_epi16(ab, cd));
})
QC_DEF_CAST2(S32, s32, int32_t, U8, u8, uint8_t, {
    __m256i ab = _mm256_packs_epi32(LD(0), LD(1)), cd = _mm256_packs_epi32(LD(2), LD(3));
    out = QC_FIX8(_mm256_packus_epi16(ab, cd));
})
QC_DEF_CAST2(U32, u32, uint32_t, U8, u8, uint8_t, {
    const __m256i m = _mm256_set1_epi32(255);
    __m256i ab = _mm256_packus_epi32(_mm256_min_epu32(LD(0), m), _mm256_min_epu32(LD(1), m));
    __m256i cd = _mm256_packus_epi32(_mm256_min_epu32(LD(2), m), _mm256_min_epu32(LD(3), m));
    out = QC_FIX8(_mm256_packus_epi16(ab, cd));
})
/* 64 -> 32: clamp in 64 bits, then gather the low halves (even dwords) of four vectors. */
QC_DEF_CAST2(S64, s64, int64_t, S32, s32, int32_t, {
    const __m256i lo = _mm256_set1_epi64x(INT32_MIN), hi = _mm256_set1_epi64x(INT32_MAX);
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i a = _mm256_permutevar8x32_epi32(min_epi64(max_epi64(LD(0), lo), hi), even);
    __m256i b = _mm256_permutevar8x32_epi32(min_epi64(max_epi64(LD(1), lo), hi), even);
    out = _mm256_permute2x128_si256(a, b, 0x20);
})
#undef LD

const qc_saturate_kernels qc_saturate_kernels__avx2 = {{
    [QC_INT_S16] = {[QC_INT_S8] = cast_s16_s8__avx2, [QC_INT_U8] = cast_s16_u8__avx2},
    [QC_INT_U16] = {[QC_INT_U8] = cast_u16_u8__avx2},
    [QC_INT_S32] = {[QC_INT_S8] = cast_s32_s8__avx2, [QC_INT_U8] = cast_s32_u8__avx2,
                    [QC_INT_S16] = cast_s32_s16__avx2, [QC_INT_U16] = cast_s32_u16__avx2},
    [QC_INT_U32] = {[QC_INT_U8] = cast_u32_u8__avx2, [QC_INT_U16] = cast_u32_u16__avx2},
    [QC_INT_S64] = {[QC_INT_S32] = cast_s64_s32__avx2},
}};

/* ---- float16: vcvtps2ph with the round-to-nearest-even immediate (not MXCSR) ---- */

static void to_f16__avx2(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(x + i + 8), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(y + i), a);
        _mm_storeu_si128((__m128i *)(y + i + 8), b);
    }
    for (; i < n; i += 8) {
        size_t r = n - i < 8 ? n - i : 8;
        __m256 v = _mm256_maskload_ps(x + i, tail_mask8(r));
        uint16_t tmp[8];
        _mm_storeu_si128((__m128i *)tmp, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        memcpy(y + i, tmp, r * sizeof(uint16_t));
    }
}

const qc_float16_kernels qc_float16_kernels__avx2 = {to_f16__avx2};

/* ---- bfloat16: integer round-to-nearest-even on the float bits (see qc_f32_to_bf16) ---- */

QC_INLINE __m256i bf16_of(__m256 v) {
    const __m256i f = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(f, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(f, _mm256_set1_epi32(0x7fff)), lsb);
    r = _mm256_srli_epi32(r, 16);
    __m256i a = _mm256_and_si256(f, _mm256_set1_epi32(0x7fffffff));
    __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(f, 16), _mm256_set1_epi32(0x0040));
    return _mm256_blendv_epi8(r, q, nan);
}

static void to_bf16__avx2(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        /* lanes hold values <= 0xffff, so the unsigned-saturating pack is exact */
        __m256i p = _mm256_packus_epi32(bf16_of(_mm256_loadu_ps(x + i)),
                                        bf16_of(_mm256_loadu_ps(x + i + 8)));
        _mm256_storeu_si256((__m256i *)(y + i), QC_FIX16(p));
    }
    for (; i < n; i += 8) {
        size_t r = n - i < 8 ? n - i : 8;
        __m256i b = bf16_of(_mm256_maskload_ps(x + i, tail_mask8(r)));
        uint16_t tmp[16];
        _mm256_storeu_si256((__m256i *)tmp, QC_FIX16(_mm256_packus_epi32(b, b)));
        memcpy(y + i, tmp, r * sizeof(uint16_t));
    }
}

static void from_bf16__avx2(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_slli_epi32(w, 16));
    }
    if (i < n) {
        uint16_t tmp[8] = {0};
        memcpy(tmp, x + i, (n - i) * sizeof(uint16_t));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)tmp)), 16);
        _mm256_maskstore_ps(y + i, tail_mask8(n - i), _mm256_castsi256_ps(w));
    }
}

const qc_bfloat16_kernels qc_bfloat16_kernels__avx2 = {to_bf16__avx2, from_bf16__avx2};
