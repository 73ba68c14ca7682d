/* Conversion kernels: six rounding modes, clamp, saturating integer casts, float16/bfloat16. */
#ifndef QC_CONVERT_H
#define QC_CONVERT_H

#include <math.h>
#include <string.h>

#include "qc_common.h"
#include "cpu/cpu.h"

/* ---- rounding modes (float32 -> float32, integral values) ----
 * half_even  ties to even (rint, IEEE default)
 * half_away  ties away from zero (C round)
 * half_up    ties toward +inf: floor(x + 0.5) computed exactly, so 0.49999997 -> 0 (the naive
 *            float sum would give 1) and every result in (-0.5, 0] is +0.0, as numpy's
 *            floor(x + 0.5) gives
 * floor, ceil, trunc  as numpy's. NaN stays NaN (quieted), +-inf stay. */
typedef enum {
    QC_ROUND_HALF_EVEN = 0,
    QC_ROUND_HALF_AWAY,
    QC_ROUND_HALF_UP,
    QC_ROUND_FLOOR,
    QC_ROUND_CEIL,
    QC_ROUND_TRUNC,
    QC_ROUND_COUNT
} qc_round_mode;

/* The integer element types, by id: X(ID, suffix, C type, is signed, min, max). The two lists
 * are the same; the second lets a macro walk every (source, destination) pair. */
#define QC_INT_TYPES(X)                                \
    X(S8, s8, int8_t, 1, INT8_MIN, INT8_MAX)           \
    X(U8, u8, uint8_t, 0, 0, UINT8_MAX)                \
    X(S16, s16, int16_t, 1, INT16_MIN, INT16_MAX)      \
    X(U16, u16, uint16_t, 0, 0, UINT16_MAX)            \
    X(S32, s32, int32_t, 1, INT32_MIN, INT32_MAX)      \
    X(U32, u32, uint32_t, 0, 0, UINT32_MAX)            \
    X(S64, s64, int64_t, 1, INT64_MIN, INT64_MAX)      \
    X(U64, u64, uint64_t, 0, 0, UINT64_MAX)
#define QC_INT_TYPES2(X, ...)                                      \
    X(S8, s8, int8_t, 1, INT8_MIN, INT8_MAX, __VA_ARGS__)          \
    X(U8, u8, uint8_t, 0, 0, UINT8_MAX, __VA_ARGS__)               \
    X(S16, s16, int16_t, 1, INT16_MIN, INT16_MAX, __VA_ARGS__)     \
    X(U16, u16, uint16_t, 0, 0, UINT16_MAX, __VA_ARGS__)           \
    X(S32, s32, int32_t, 1, INT32_MIN, INT32_MAX, __VA_ARGS__)     \
    X(U32, u32, uint32_t, 0, 0, UINT32_MAX, __VA_ARGS__)           \
    X(S64, s64, int64_t, 1, INT64_MIN, INT64_MAX, __VA_ARGS__)     \
    X(U64, u64, uint64_t, 0, 0, UINT64_MAX, __VA_ARGS__)

typedef enum {
#define QC_INT_ENUM(ID, sfx, T, sgn, mn, mx) QC_INT_##ID,
    QC_INT_TYPES(QC_INT_ENUM)
#undef QC_INT_ENUM
    QC_INT_COUNT
} qc_int_type;

/* ---- kernel tables: one per family and ISA; a NULL entry means "use the scalar kernel" ---- */

typedef void (*qc_round_fn)(const float *x, float *y, size_t n);
typedef struct {
    qc_round_fn mode[QC_ROUND_COUNT];
} qc_round_kernels;

/* Clamp bounds are passed as int64 bit patterns; a kernel converts them to its element type
 * (uint64 bounds above INT64_MAX arrive as their two's-complement bits). */
typedef void (*qc_clamp_f32_fn)(const float *x, float *y, size_t n, float lo, float hi);
typedef void (*qc_clamp_int_fn)(const void *x, void *y, size_t n, int64_t lo, int64_t hi);
typedef struct {
    qc_clamp_f32_fn f32;
    qc_clamp_int_fn i[QC_INT_COUNT];
} qc_clamp_kernels;

typedef void (*qc_cast_fn)(const void *x, void *y, size_t n);
typedef struct {
    qc_cast_fn cast[QC_INT_COUNT][QC_INT_COUNT]; /* [source][destination] */
} qc_saturate_kernels;

typedef void (*qc_f32_to_u16_fn)(const float *x, uint16_t *y, size_t n);
typedef void (*qc_u16_to_f32_fn)(const uint16_t *x, float *y, size_t n);
typedef struct {
    qc_f32_to_u16_fn to_f16;
} qc_float16_kernels;
typedef struct {
    qc_f32_to_u16_fn to_bf16;
    qc_u16_to_f32_fn from_bf16;
} qc_bfloat16_kernels;

/* Pack n values (one per byte, the value in the low `bits` bits; bits 4 or 2) into
 * ceil(n * bits / 8) bytes, the first value in the lowest bits (ONNX's int4/int2 layout). */
void qc_pack_bits_u8(const uint8_t *x, uint8_t *y, size_t n, int bits);

/* The families, registered by the binding layer (names as cpu_info() shows them). */
extern const qc_family qc_round_family;        /* "round" */
extern const qc_family qc_clamp_family;        /* "clamp" */
extern const qc_family qc_saturate_cast_family; /* "saturate_cast" */
extern const qc_family qc_float16_family;      /* "to_float16" */
extern const qc_family qc_bfloat16_family;     /* "bfloat16" */

/* Variant tables, one per ISA file. */
extern const qc_round_kernels qc_round_kernels__scalar, qc_round_kernels__avx2,
    qc_round_kernels__avx512;
extern const qc_clamp_kernels qc_clamp_kernels__scalar, qc_clamp_kernels__avx2,
    qc_clamp_kernels__avx512;
extern const qc_saturate_kernels qc_saturate_kernels__scalar, qc_saturate_kernels__avx2,
    qc_saturate_kernels__avx512;
extern const qc_float16_kernels qc_float16_kernels__scalar, qc_float16_kernels__avx2,
    qc_float16_kernels__avx512;
extern const qc_bfloat16_kernels qc_bfloat16_kernels__scalar, qc_bfloat16_kernels__avx2,
    qc_bfloat16_kernels__avx512;

/* ---- the truth for one element: every SIMD kernel equals these bit for bit ---- */

QC_INLINE uint32_t qc_f32_bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}
QC_INLINE float qc_bits_f32(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* The four direct modes; a NaN comes back quiet (x + x), as the SIMD round instructions
 * return it, whatever the C library does with signaling NaNs. */
QC_INLINE float qc_rint_f32(float x) { return x != x ? x + x : rintf(x); }
QC_INLINE float qc_floor_f32(float x) { return x != x ? x + x : floorf(x); }
QC_INLINE float qc_ceil_f32(float x) { return x != x ? x + x : ceilf(x); }
QC_INLINE float qc_trunc_f32(float x) { return x != x ? x + x : truncf(x); }

/* half_away: round |x| half up (|x| - trunc(|x|) is exact), then put x's sign back, so -0.3
 * gives -0.0 like C's roundf. inf: the fraction is NaN, the comparison false, inf stays. */
QC_INLINE float qc_round_half_away_f32(float x) {
    float a = fabsf(x);
    float t = truncf(a);
    float r = t + ((a - t) >= 0.5f ? 1.0f : 0.0f);
    return copysignf(r, x);
}

/* half_up: floor(x) plus one when the (exact) fraction x - floor(x) is >= 0.5. Adding +0.0
 * otherwise turns -0.0 into +0.0, as floor(-0.0 + 0.5) does. */
QC_INLINE float qc_round_half_up_f32(float x) {
    float t = floorf(x);
    return t + ((x - t) >= 0.5f ? 1.0f : 0.0f);
}

/* clamp: max(lo, x) then min(hi, .), written as the x86 maxps/minps operand order so NaN in x
 * passes through unchanged (np.clip also keeps NaN), and -0.0/+0.0 compare equal (x kept). */
QC_INLINE float qc_clamp_f32(float x, float lo, float hi) {
    float y = lo > x ? lo : x;
    return hi < y ? hi : y;
}

/* float32 -> IEEE half bits, round to nearest even, as F16C vcvtps2ph with imm RNE:
 * overflow (>= 65520) -> inf; NaN -> quiet NaN keeping the sign and the top 10 payload bits;
 * results below 2^-14 are half denormals, rounded exactly. */
QC_INLINE uint16_t qc_f32_to_f16(float x) {
    uint32_t f = qc_f32_bits(x);
    uint16_t sign = (uint16_t)((f >> 16) & 0x8000u);
    uint32_t a = f & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* 65520 = 65504 + half ulp */
    if (a >= 0x38800000u) {                                   /* 2^-14: half normal */
        uint32_t r = a + 0xfffu + ((a >> 13) & 1u);           /* RNE at bit 13 */
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));  /* rebias 127 -> 15 */
    }
    uint32_t e = a >> 23;
    if (e < 102) return sign; /* below 2^-25: rounds to zero */
    /* value = m * 2^(e - 150) = m * 2^(e - 126) units of 2^-24 (the half denormal step) */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t s = 126 - e; /* 14..24 */
    uint32_t q = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1);
    q += (rem > half) || (rem == half && (q & 1u));
    return (uint16_t)(sign | q); /* q may carry into 0x400, the smallest normal: correct */
}

/* float32 -> bfloat16 bits: round to nearest even on the float32 bits (overflow carries into
 * the exponent and gives inf; float32 denormals are rounded like any other value, never
 * flushed); NaN -> quiet NaN keeping the sign and top payload bits. */
QC_INLINE uint16_t qc_f32_to_bf16(float x) {
    uint32_t f = qc_f32_bits(x);
    if ((f & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((f >> 16) | 0x0040u);
    return (uint16_t)((f + 0x7fffu + ((f >> 16) & 1u)) >> 16);
}

QC_INLINE float qc_bf16_to_f32(uint16_t b) { return qc_bits_f32((uint32_t)b << 16); }

#endif
