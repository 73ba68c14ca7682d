/* Portable scalar conversion kernels: the ground truth every SIMD variant must equal bit for bit. */
#include "convert/convert.h"

/* ---- round ---- */

static void round_half_even(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_rint_f32(x[i]); /* default FP environment: ties to even */
}
static void round_half_away(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_round_half_away_f32(x[i]);
}
static void round_half_up(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_round_half_up_f32(x[i]);
}
static void round_floor(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_floor_f32(x[i]);
}
static void round_ceil(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_ceil_f32(x[i]);
}
static void round_trunc(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_trunc_f32(x[i]);
}

const qc_round_kernels qc_round_kernels__scalar = {{
    [QC_ROUND_HALF_EVEN] = round_half_even,
    [QC_ROUND_HALF_AWAY] = round_half_away,
    [QC_ROUND_HALF_UP] = round_half_up,
    [QC_ROUND_FLOOR] = round_floor,
    [QC_ROUND_CEIL] = round_ceil,
    [QC_ROUND_TRUNC] = round_trunc,
}};

/* ---- clamp ---- */

static void clamp_f32(const float *x, float *y, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) y[i] = qc_clamp_f32(x[i], lo, hi);
}

#define QC_DEF_CLAMP(ID, sfx, T, sgn, mn, mx)                                         \
    static void clamp_##sfx(const void *xv, void *yv, size_t n, int64_t lo64,         \
                            int64_t hi64) {                                           \
        const T *x = (const T *)xv;                                                   \
        T *y = (T *)yv;                                                               \
        const T lo = (T)lo64, hi = (T)hi64;                                           \
        for (size_t i = 0; i < n; i++) {                                              \
            T v = x[i] < lo ? lo : x[i];                                              \
            y[i] = v > hi ? hi : v;                                                   \
        }                                                                             \
    }
QC_INT_TYPES(QC_DEF_CLAMP)
#undef QC_DEF_CLAMP

const qc_clamp_kernels qc_clamp_kernels__scalar = {
    .f32 = clamp_f32,
    .i = {
#define QC_CLAMP_ENTRY(ID, sfx, T, sgn, mn, mx) [QC_INT_##ID] = clamp_##sfx,
        QC_INT_TYPES(QC_CLAMP_ENTRY)
#undef QC_CLAMP_ENTRY
    },
};

/* ---- saturate_cast: every (source, destination) pair ----
 * A signed source is compared as int64, an unsigned one as uint64, against the destination's
 * [min, max]; the result always fits the destination, so the final conversion is exact. */

QC_INLINE uint64_t sat_from_signed(int64_t v, int64_t lo, uint64_t hi) {
    if (v < lo) return (uint64_t)lo;
    if (v > 0 && (uint64_t)v > hi) return hi;
    return (uint64_t)v;
}
QC_INLINE uint64_t sat_from_unsigned(uint64_t v, uint64_t hi) { return v > hi ? hi : v; }

#define QC_SAT_ELEM(ssgn, v, dmn, dmx)                                                \
    ((ssgn) ? sat_from_signed((int64_t)(v), (int64_t)(dmn), (uint64_t)(dmx))          \
            : sat_from_unsigned((uint64_t)(v), (uint64_t)(dmx)))

#define QC_DEF_CAST(DID, dsfx, DT, dsgn, dmn, dmx, SID, ssfx, ST, ssgn, smn, smx)     \
    static void cast_##ssfx##_##dsfx(const void *xv, void *yv, size_t n) {           \
        const ST *x = (const ST *)xv;                                                 \
        DT *y = (DT *)yv;                                                             \
        for (size_t i = 0; i < n; i++) y[i] = (DT)QC_SAT_ELEM(ssgn, x[i], dmn, dmx);  \
    }
#define QC_DEF_CAST_ROW(SID, ssfx, ST, ssgn, smn, smx) \
    QC_INT_TYPES2(QC_DEF_CAST, SID, ssfx, ST, ssgn, smn, smx)
QC_INT_TYPES(QC_DEF_CAST_ROW)
#undef QC_DEF_CAST_ROW
#undef QC_DEF_CAST

const qc_saturate_kernels qc_saturate_kernels__scalar = {{
#define QC_CAST_ENTRY(DID, dsfx, DT, dsgn, dmn, dmx, SID, ssfx, ST, ssgn, smn, smx) \
    [QC_INT_##SID][QC_INT_##DID] = cast_##ssfx##_##dsfx,
#define QC_CAST_ROW(SID, ssfx, ST, ssgn, smn, smx) \
    QC_INT_TYPES2(QC_CAST_ENTRY, SID, ssfx, ST, ssgn, smn, smx)
    QC_INT_TYPES(QC_CAST_ROW)
#undef QC_CAST_ROW
#undef QC_CAST_ENTRY
}};

/* ---- float16 / bfloat16 ---- */

static void to_f16(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_f32_to_f16(x[i]);
}
static void to_bf16(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_f32_to_bf16(x[i]);
}
static void from_bf16(const uint16_t *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = qc_bf16_to_f32(x[i]);
}

const qc_float16_kernels qc_float16_kernels__scalar = {to_f16};
const qc_bfloat16_kernels qc_bfloat16_kernels__scalar = {to_bf16, from_bf16};
