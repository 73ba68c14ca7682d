/* AVX-512 (F/BW/VL/DQ) conversion kernels with masked tails; each equals the scalar kernel bit for bit. */
#include <immintrin.h>

#include "convert/convert.h"

/* vrndscaleps immediates: bits 1:0 the rounding direction, bit 3 no precision exception,
 * bits 7:4 zero (keep no fraction bits). */
#define QC_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define QC_FLOOR (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define QC_CEIL (_MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC)
#define QC_TRUNC (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)

/* Mask of the first min(r, 16) lanes. */
QC_INLINE __mmask16 mask16(size_t r) {
    return r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r) - 1u);
}

/* ---- round (see avx2.c and convert.h for the half_away / half_up formulas) ---- */

QC_INLINE __m512 op_half_even(__m512 v) { return _mm512_roundscale_ps(v, QC_RNE); }
QC_INLINE __m512 op_floor(__m512 v) { return _mm512_roundscale_ps(v, QC_FLOOR); }
QC_INLINE __m512 op_ceil(__m512 v) { return _mm512_roundscale_ps(v, QC_CEIL); }
QC_INLINE __m512 op_trunc(__m512 v) { return _mm512_roundscale_ps(v, QC_TRUNC); }
QC_INLINE __m512 op_half_away(__m512 v) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512i vi = _mm512_castps_si512(v);
    __m512 a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, vi));
    __m512 t = _mm512_roundscale_ps(a, QC_TRUNC);
    __mmask16 ge = _mm512_cmp_ps_mask(_mm512_sub_ps(a, t), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 r = _mm512_add_ps(t, _mm512_maskz_mov_ps(ge, _mm512_set1_ps(1.0f)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), _mm512_and_si512(sign, vi)));
}
QC_INLINE __m512 op_half_up(__m512 v) {
    __m512 t = _mm512_roundscale_ps(v, QC_FLOOR);
    __mmask16 ge = _mm512_cmp_ps_mask(_mm512_sub_ps(v, t), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm512_add_ps(t, _mm512_maskz_mov_ps(ge, _mm512_set1_ps(1.0f)));
}

#define QC_DEF_ROUND(name)                                                             \
    static void round_##name##__avx512(const float *x, float *y, size_t n) {           \
        size_t i = 0;                                                                  \
        for (; i + 64 <= n; i += 64) {                                                 \
            __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);        \
            __m512 c = _mm512_loadu_ps(x + i + 32), d = _mm512_loadu_ps(x + i + 48);   \
            _mm512_storeu_ps(y + i, op_##name(a));                                     \
            _mm512_storeu_ps(y + i + 16, op_##name(b));                                \
            _mm512_storeu_ps(y + i + 32, op_##name(c));                                \
            _mm512_storeu_ps(y + i + 48, op_##name(d));                                \
        }                                                                              \
        for (; i < n; i += 16) {                                                       \
            __mmask16 m = mask16(n - i);                                               \
            _mm512_mask_storeu_ps(y + i, m, op_##name(_mm512_maskz_loadu_ps(m, x + i))); \
        }                                                                              \
    }
QC_DEF_ROUND(half_even)
QC_DEF_ROUND(half_away)
QC_DEF_ROUND(half_up)
QC_DEF_ROUND(floor)
QC_DEF_ROUND(ceil)
QC_DEF_ROUND(trunc)
#undef QC_DEF_ROUND

const qc_round_kernels qc_round_kernels__avx512 = {{
    [QC_ROUND_HALF_EVEN] = round_half_even__avx512,
    [QC_ROUND_HALF_AWAY] = round_half_away__avx512,
    [QC_ROUND_HALF_UP] = round_half_up__avx512,
    [QC_ROUND_FLOOR] = round_floor__avx512,
    [QC_ROUND_CEIL] = round_ceil__avx512,
    [QC_ROUND_TRUNC] = round_trunc__avx512,
}};

/* ---- clamp ---- */

/* vmaxps(lo, x) returns x when x is NaN (the second operand), like qc_clamp_f32. */
QC_INLINE __m512 clamp_ps(__m512 v, __m512 lo, __m512 hi) {
    return _mm512_min_ps(hi, _mm512_max_ps(lo, v));
}

static void clamp_f32__avx512(const float *x, float *y, size_t n, float lo, float hi) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        __m512 c = _mm512_loadu_ps(x + i + 32), d = _mm512_loadu_ps(x + i + 48);
        _mm512_storeu_ps(y + i, clamp_ps(a, vlo, vhi));
        _mm512_storeu_ps(y + i + 16, clamp_ps(b, vlo, vhi));
        _mm512_storeu_ps(y + i + 32, clamp_ps(c, vlo, vhi));
        _mm512_storeu_ps(y + i + 48, clamp_ps(d, vlo, vhi));
    }
    for (; i < n; i += 16) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, clamp_ps(_mm512_maskz_loadu_ps(m, x + i), vlo, vhi));
    }
}

/* One 64-byte vector per step, the last one masked (MASKT wide enough for 64 / sizeof(T)). */
#define QC_DEF_CLAMP_INT(sfx, T, MASKT, SET1, LOADZ, STOREM, MAXF, MINF)                 \
    static void clamp_##sfx##__avx512(const void *xv, void *yv, size_t n, int64_t lo64,  \
                                      int64_t hi64) {                                    \
        const T *x = (const T *)xv;                                                      \
        T *y = (T *)yv;                                                                  \
        const __m512i vlo = SET1((T)lo64), vhi = SET1((T)hi64);                          \
        const size_t step = 64 / sizeof(T);                                              \
        size_t i = 0;                                                                    \
        for (; i + step <= n; i += step) {                                               \
            __m512i v = _mm512_loadu_si512((const void *)(x + i));                       \
            _mm512_storeu_si512((void *)(y + i), MINF(MAXF(v, vlo), vhi));               \
        }                                                                                \
        if (i < n) {                                                                     \
            MASKT m = (MASKT)((1ull << (n - i)) - 1u);                                   \
            __m512i v = LOADZ(m, x + i);                                                 \
            STOREM(y + i, m, MINF(MAXF(v, vlo), vhi));                                   \
        }                                                                                \
    }
#define QC_SET1_8(v) _mm512_set1_epi8((char)(v))
#define QC_SET1_16(v) _mm512_set1_epi16((short)(v))
#define QC_SET1_32(v) _mm512_set1_epi32((int)(v))
#define QC_SET1_64(v) _mm512_set1_epi64((long long)(v))
QC_DEF_CLAMP_INT(s8, int8_t, __mmask64, QC_SET1_8, _mm512_maskz_loadu_epi8, _mm512_mask_storeu_epi8,
                 _mm512_max_epi8, _mm512_min_epi8)
QC_DEF_CLAMP_INT(u8, uint8_t, __mmask64, QC_SET1_8, _mm512_maskz_loadu_epi8, _mm512_mask_storeu_epi8,
                 _mm512_max_epu8, _mm512_min_epu8)
QC_DEF_CLAMP_INT(s16, int16_t, __mmask32, QC_SET1_16, _mm512_maskz_loadu_epi16,
                 _mm512_mask_storeu_epi16, _mm512_max_epi16, _mm512_min_epi16)
QC_DEF_CLAMP_INT(u16, uint16_t, __mmask32, QC_SET1_16, _mm512_maskz_loadu_epi16,
                 _mm512_mask_storeu_epi16, _mm512_max_epu16, _mm512_min_epu16)
QC_DEF_CLAMP_INT(s32, int32_t, __mmask16, QC_SET1_32, _mm512_maskz_loadu_epi32,
                 _mm512_mask_storeu_epi32, _mm512_max_epi32, _mm512_min_epi32)
QC_DEF_CLAMP_INT(u32, uint32_t, __mmask16, QC_SET1_32, _mm512_maskz_loadu_epi32,
                 _mm512_mask_storeu_epi32, _mm512_max_epu32, _mm512_min_epu32)
QC_DEF_CLAMP_INT(s64, int64_t, __mmask8, QC_SET1_64, _mm512_maskz_loadu_epi64,
                 _mm512_mask_storeu_epi64, _mm512_max_epi64, _mm512_min_epi64)
QC_DEF_CLAMP_INT(u64, uint64_t, __mmask8, QC_SET1_64, _mm512_maskz_loadu_epi64,
                 _mm512_mask_storeu_epi64, _mm512_max_epu64, _mm512_min_epu64)
#undef QC_DEF_CLAMP_INT

const qc_clamp_kernels qc_clamp_kernels__avx512 = {
    .f32 = clamp_f32__avx512,
    .i = {
#define QC_CLAMP_ENTRY(ID, sfx, T, sgn, mn, mx) [QC_INT_##ID] = clamp_##sfx##__avx512,
        QC_INT_TYPES(QC_CLAMP_ENTRY)
#undef QC_CLAMP_ENTRY
    },
};

/* ---- saturate_cast: vpmovs* (signed -> signed) and vpmovus* (unsigned -> unsigned)
 * narrowing with saturation, straight to memory under a mask. A signed source going to an
 * unsigned type is first raised to >= 0 (PRE), so the unsigned-saturating form is exact. ---- */

#define QC_PRE_NONE(v) (v)
#define QC_PRE_MAX0_16(v) _mm512_max_epi16((v), _mm512_setzero_si512())
#define QC_PRE_MAX0_32(v) _mm512_max_epi32((v), _mm512_setzero_si512())
#define QC_PRE_MAX0_64(v) _mm512_max_epi64((v), _mm512_setzero_si512())

#define QC_DEF_NARROW(ssfx, ST, dsfx, DT, MASKT, LOADZ, PRE, CVT_STORE)                 \
    static void cast_##ssfx##_##dsfx##__avx512(const void *xv, void *yv, size_t n) {    \
        const ST *x = (const ST *)xv;                                                   \
        DT *y = (DT *)yv;                                                               \
        const size_t step = 64 / sizeof(ST);                                            \
        const MASKT all = (MASKT)~(MASKT)0;                                             \
        size_t i = 0;                                                                   \
        for (; i + step <= n; i += step) {                                              \
            __m512i v = _mm512_loadu_si512((const void *)(x + i));                      \
            CVT_STORE((void *)(y + i), all, PRE(v));                                    \
        }                                                                               \
        if (i < n) {                                                                    \
            MASKT m = (MASKT)((1ull << (n - i)) - 1u);                                  \
            CVT_STORE((void *)(y + i), m, PRE(LOADZ(m, x + i)));                        \
        }                                                                               \
    }

/* 16-bit sources */
QC_DEF_NARROW(s16, int16_t, s8, int8_t, __mmask32, _mm512_maskz_loadu_epi16, QC_PRE_NONE,
              _mm512_mask_cvtsepi16_storeu_epi8)
QC_DEF_NARROW(s16, int16_t, u8, uint8_t, __mmask32, _mm512_maskz_loadu_epi16, QC_PRE_MAX0_16,
              _mm512_mask_cvtusepi16_storeu_epi8)
QC_DEF_NARROW(u16, uint16_t, u8, uint8_t, __mmask32, _mm512_maskz_loadu_epi16, QC_PRE_NONE,
              _mm512_mask_cvtusepi16_storeu_epi8)
/* 32-bit sources */
QC_DEF_NARROW(s32, int32_t, s8, int8_t, __mmask16, _mm512_maskz_loadu_epi32, QC_PRE_NONE,
              _mm512_mask_cvtsepi32_storeu_epi8)
QC_DEF_NARROW(s32, int32_t, u8, uint8_t, __mmask16, _mm512_maskz_loadu_epi32, QC_PRE_MAX0_32,
              _mm512_mask_cvtusepi32_storeu_epi8)
QC_DEF_NARROW(s32, int32_t, s16, int16_t, __mmask16, _mm512_maskz_loadu_epi32, QC_PRE_NONE,
              _mm512_mask_cvtsepi32_storeu_epi16)
QC_DEF_NARROW(s32, int32_t, u16, uint16_t, __mmask16, _mm512_maskz_loadu_epi32, QC_PRE_MAX0_32,
              _mm512_mask_cvtusepi32_storeu_epi16)
QC_DEF_NARROW(u32, uint32_t, u8, uint8_t, __mmask16, _mm512_maskz_loadu_epi32, QC_PRE_NONE,
              _mm512_mask_cvtusepi32_storeu_epi8)
QC_DEF_NARROW(u32, uint32_t, u16, uint16_t, __mmask16, _mm512_maskz_loadu_epi32, QC_PRE_NONE,
              _mm512_mask_cvtusepi32_storeu_epi16)
/* 64-bit sources */
QC_DEF_NARROW(s64, int64_t, s8, int8_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_NONE,
              _mm512_mask_cvtsepi64_storeu_epi8)
QC_DEF_NARROW(s64, int64_t, u8, uint8_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_MAX0_64,
              _mm512_mask_cvtusepi64_storeu_epi8)
QC_DEF_NARROW(s64, int64_t, s16, int16_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_NONE,
              _mm512_mask_cvtsepi64_storeu_epi16)
QC_DEF_NARROW(s64, int64_t, u16, uint16_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_MAX0_64,
              _mm512_mask_cvtusepi64_storeu_epi16)
QC_DEF_NARROW(s64, int64_t, s32, int32_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_NONE,
              _mm512_mask_cvtsepi64_storeu_epi32)
QC_DEF_NARROW(s64, int64_t, u32, uint32_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_MAX0_64,
              _mm512_mask_cvtusepi64_storeu_epi32)
QC_DEF_NARROW(u64, uint64_t, u8, uint8_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_NONE,
              _mm512_mask_cvtusepi64_storeu_epi8)
QC_DEF_NARROW(u64, uint64_t, u16, uint16_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_NONE,
              _mm512_mask_cvtusepi64_storeu_epi16)
QC_DEF_NARROW(u64, uint64_t, u32, uint32_t, __mmask8, _mm512_maskz_loadu_epi64, QC_PRE_NONE,
              _mm512_mask_cvtusepi64_storeu_epi32)
#undef QC_DEF_NARROW

const qc_saturate_kernels qc_saturate_kernels__avx512 = {{
    [QC_INT_S16] = {[QC_INT_S8] = cast_s16_s8__avx512, [QC_INT_U8] = cast_s16_u8__avx512},
    [QC_INT_U16] = {[QC_INT_U8] = cast_u16_u8__avx512},
    [QC_INT_S32] = {[QC_INT_S8] = cast_s32_s8__avx512, [QC_INT_U8] = cast_s32_u8__avx512,
                    [QC_INT_S16] = cast_s32_s16__avx512, [QC_INT_U16] = cast_s32_u16__avx512},
    [QC_INT_U32] = {[QC_INT_U8] = cast_u32_u8__avx512, [QC_INT_U16] = cast_u32_u16__avx512},
    [QC_INT_S64] = {[QC_INT_S8] = cast_s64_s8__avx512, [QC_INT_U8] = cast_s64_u8__avx512,
                    [QC_INT_S16] = cast_s64_s16__avx512, [QC_INT_U16] = cast_s64_u16__avx512,
                    [QC_INT_S32] = cast_s64_s32__avx512, [QC_INT_U32] = cast_s64_u32__avx512},
    [QC_INT_U64] = {[QC_INT_U8] = cast_u64_u8__avx512, [QC_INT_U16] = cast_u64_u16__avx512,
                    [QC_INT_U32] = cast_u64_u32__avx512},
}};

/* ---- float16: vcvtps2ph zmm with the round-to-nearest-even immediate ---- */

static void to_f16__avx512(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        __m256i b = _mm512_cvtps_ph(_mm512_loadu_ps(x + i + 16), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(y + i), a);
        _mm256_storeu_si256((__m256i *)(y + i + 16), b);
    }
    for (; i < n; i += 16) {
        __mmask16 m = mask16(n - i);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(y + i, m, h);
    }
}

const qc_float16_kernels qc_float16_kernels__avx512 = {to_f16__avx512};

/* ---- bfloat16: integer round-to-nearest-even, not vcvtneps2bf16 (AVX512-BF16 treats float32
 * denormal inputs as zero, the scalar kernel rounds them) ---- */

QC_INLINE __m512i bf16_of(__m512 v) {
    const __m512i f = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(f, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(f, _mm512_set1_epi32(0x7fff)), lsb);
    r = _mm512_srli_epi32(r, 16);
    __m512i a = _mm512_and_si512(f, _mm512_set1_epi32(0x7fffffff));
    __mmask16 nan = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7f800000));
    __m512i q = _mm512_or_si512(_mm512_srli_epi32(f, 16), _mm512_set1_epi32(0x0040));
    return _mm512_mask_mov_epi32(r, nan, q);
}

static void to_bf16__avx512(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtepi32_epi16(bf16_of(_mm512_loadu_ps(x + i))));
        _mm256_storeu_si256((__m256i *)(y + i + 16),
                            _mm512_cvtepi32_epi16(bf16_of(_mm512_loadu_ps(x + i + 16))));
    }
    for (; i < n; i += 16) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_cvtepi32_storeu_epi16(y + i, m, bf16_of(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static void from_bf16__avx512(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i)));
        _mm512_storeu_si512((void *)(y + i), _mm512_slli_epi32(w, 16));
    }
    if (i < n) {
        __mmask16 m = mask16(n - i);
        __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x + i));
        _mm512_mask_storeu_epi32(y + i, m, _mm512_slli_epi32(w, 16));
    }
}

const qc_bfloat16_kernels qc_bfloat16_kernels__avx512 = {to_bf16__avx512, from_bf16__avx512};
