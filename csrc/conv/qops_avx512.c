/* Quantized operator kernels built for AVX-512: qops_impl.h plus hand-written pooling, add, mul
 * and requantizing copies. */
#include <immintrin.h>

#include "conv/qops.h"

#define QC_QOPS_NAME(name) qc_qops_##name##__avx512
#include "conv/qops_impl.h"

/* Keeps the compiler from fusing a vpmovdb into the masked store that follows: the memory form
 * of vpmovdb with a mask is slow on some CPUs (AMD Zen 4), register form + vmovdqu8 is not. */
QC_INLINE __m128i opaque128(__m128i v) {
    __asm__("" : "+v"(v));
    return v;
}

/* ---- element-wise: 16 lanes per step, masked tails (never past the buffers) ---- */

QC_INLINE __mmask16 tail16(size_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

QC_INLINE __m512i load16_i32(const void *p, int is_signed, __mmask16 k) {
    const __m128i v = _mm_maskz_loadu_epi8(k, p);
    return is_signed ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v);
}

/* clamp to [lo, hi], round to nearest even, add the zero point, narrow (in range already) */
QC_INLINE __m128i finish16(__m512 v, __m512 lo, __m512 hi, __m512i yzp) {
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return opaque128(_mm512_cvtepi32_epi8(_mm512_add_epi32(r, yzp)));
}

/* The 64-step loops round without clamping first and let the narrowing clamp: the results
 * rounded to int32 (exact while |v| < 2^31, which multipliers up to 2^22 guarantee for
 * differences of at most 255 in magnitude, or two such terms for add) are packed to int16 with
 * saturation and the zero point added with saturation (a result outside int16 is outside the
 * output type with or without it), clamped to the output bounds if they are narrower than the
 * type (relu), and packed to bytes with saturation: the same as clamping v to [lo, hi] first,
 * since rounding and clamping to integer bounds commute. */
#define QC_PACK_MAX_MULT 4194304.0f

typedef struct {
    __m512i yzp, lo, hi;      /* 16-bit lanes; lo/hi the output bounds qmin..qmax or narrower */
    int clamp;                /* lo/hi are narrower than the output type */
} pack_out;

QC_INLINE pack_out pack_setup(float lo, float hi, int32_t yzp, int sy) {
    const int32_t qlo = (int32_t)lo + yzp, qhi = (int32_t)hi + yzp;
    const pack_out o = {_mm512_set1_epi16((int16_t)yzp), _mm512_set1_epi16((int16_t)qlo),
                        _mm512_set1_epi16((int16_t)qhi),
                        qlo > (sy ? INT8_MIN : 0) || qhi < (sy ? INT8_MAX : UINT8_MAX)};
    return o;
}

QC_INLINE __m512i pack_half(__m512 v0, __m512 v1, const pack_out *o) {
    const int rne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m512i w = _mm512_packs_epi32(_mm512_cvt_roundps_epi32(v0, rne),
                                   _mm512_cvt_roundps_epi32(v1, rne));
    w = _mm512_adds_epi16(w, o->yzp);
    if (o->clamp) w = _mm512_min_epi16(_mm512_max_epi16(w, o->lo), o->hi);
    return w;
}

/* 64 results v[0..3] in the order of widen64's unpacks back to 64 bytes in order: the packs
 * are the inverse of those unpacks (per 128-bit lane, v[0] and v[1] hold bytes 0-3 and 4-7,
 * v[2] and v[3] bytes 8-11 and 12-15). */
QC_INLINE __m512i pack64(const __m512 v[4], const pack_out *o, int sy) {
    const __m512i w01 = pack_half(v[0], v[1], o), w23 = pack_half(v[2], v[3], o);
    return sy ? _mm512_packs_epi16(w01, w23) : _mm512_packus_epi16(w01, w23);
}

/* x - off for float32 values whose difference is exact (integers below 2^24), either as a
 * subtraction or, the same result, as a fused x * 1 - off: the two run on different FP pipes
 * (adds and conversions on one pair, multiplies and FMAs on the other), so a loop can balance
 * them. */
QC_INLINE __m512 exact_sub(__m512 x, __m512 off, int on_fma) {
    if (!on_fma) return _mm512_sub_ps(x, off);
    return _mm512_fmadd_ps(x, _mm512_set1_ps(1.0f), _mm512_sub_ps(_mm512_setzero_ps(), off));
}

/* The float32 that widen64 subtracts to leave q - zp. */
QC_INLINE __m512 widen_off(int32_t zp, int is_signed) {
    return _mm512_set1_ps((float)((1 << 23) + (is_signed ? 128 : 0) + zp));
}

/* 64 bytes at p as the float32 values q - zp, exactly (integers below 2^24), off from
 * widen_off, in four vectors in the unpacks' order (see pack64), which is the same for every
 * operand of an element-wise op. The bytes are interleaved with zeros to 16 bits and with
 * 0x4B00 to 32 bits, which puts each under the exponent bits of 2^23 (the float 2^23 + q), so
 * one subtraction converts and subtracts the zero point; int8 bytes are flipped to q + 128
 * first. fma_mask: which of the four subtractions run as FMAs (exact_sub). */
QC_INLINE void widen64_ps(const void *p, int is_signed, __m512 off, int fma_mask, __m512 v[4]) {
    __m512i b = _mm512_loadu_si512(p);
    if (is_signed) b = _mm512_xor_si512(b, _mm512_set1_epi8((char)0x80));
    const __m512i z = _mm512_setzero_si512(), e = _mm512_set1_epi16(0x4B00);
    const __m512i w0 = _mm512_unpacklo_epi8(b, z), w1 = _mm512_unpackhi_epi8(b, z);
    const __m512i d[4] = {_mm512_unpacklo_epi16(w0, e), _mm512_unpackhi_epi16(w0, e),
                          _mm512_unpacklo_epi16(w1, e), _mm512_unpackhi_epi16(w1, e)};
    for (int q = 0; q < 4; q++)
        v[q] = exact_sub(_mm512_castsi512_ps(d[q]), off, (fma_mask >> q) & 1);
}

/* Bytes before the first 64-byte aligned output address (all of n if fewer), when streaming:
 * those go through the masked 16-lane loop, the rest 64 at a time with aligned stores. */
QC_INLINE size_t stream_head(const void *y, size_t n, int stream) {
    if (!stream) return 0;
    const size_t h = (size_t)(-(uintptr_t)y & 63);
    return h < n ? h : n;
}

QC_INLINE void store64(void *dst, __m512i v, int stream) {
    if (stream) _mm512_stream_si512((void *)dst, v);
    else _mm512_storeu_si512(dst, v);
}

/* Element-wise kernels: a masked 16-lane loop for the head (up to the output's 64-byte
 * alignment when streaming) and the tail, and for everything when a multiplier is above
 * QC_PACK_MAX_MULT; 64 per step in between. Every path computes the same float32 values
 * (exact differences, then the products and sums of the definition) and rounds and clamps
 * them to the same results. */
QC_INLINE void add_span16(const int8_t *pa, int sa, const int8_t *pb, int sb, int8_t *py,
                          size_t n, const qc_add_params *p) {
    const __m512i azp = _mm512_set1_epi32(p->azp), bzp = _mm512_set1_epi32(p->bzp);
    const __m512i yzp = _mm512_set1_epi32(p->yzp);
    const __m512 ma = _mm512_set1_ps(p->ma), mb = _mm512_set1_ps(p->mb);
    const __m512 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        __m512 va = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(pa + i, sa, k), azp));
        __m512 vb = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(pb + i, sb, k), bzp));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(va, ma), _mm512_mul_ps(vb, mb));
        _mm_mask_storeu_epi8(py + i, k, finish16(v, lo, hi, yzp));
    }
}

/* One 64-step loop LOOP(SA, SB, SY) per signedness of a, b and y (sa, sb, sy), so the widening
 * and packing are fixed in each (add, mul). */
#define QC_BINARY_SIGNS(LOOP)                                                                  \
    switch ((sa ? 4 : 0) + (sb ? 2 : 0) + (sy ? 1 : 0)) {                                      \
    case 0: LOOP(0, 0, 0) break;                                                               \
    case 1: LOOP(0, 0, 1) break;                                                               \
    case 2: LOOP(0, 1, 0) break;                                                               \
    case 3: LOOP(0, 1, 1) break;                                                               \
    case 4: LOOP(1, 0, 0) break;                                                               \
    case 5: LOOP(1, 0, 1) break;                                                               \
    case 6: LOOP(1, 1, 0) break;                                                               \
    default: LOOP(1, 1, 1) break;                                                              \
    }

/* per 64 outputs, besides the 8 subtractions: 8 multiplies on the FMA pipes, 4 adds and 4
 * conversions on the add pipes; a's subtractions run as FMAs, b's as subtractions, 12 each */
#define QC_ADD64(SA, SB, SY)                                                                   \
    for (; i + 64 <= n; i += 64) {                                                             \
        __m512 va[4], vb[4];                                                                   \
        widen64_ps(pa + i, SA, aoff, 0xF, va);                                                 \
        widen64_ps(pb + i, SB, boff, 0x0, vb);                                                 \
        for (int q = 0; q < 4; q++)                                                            \
            va[q] = _mm512_add_ps(_mm512_mul_ps(va[q], ma), _mm512_mul_ps(vb[q], mb));         \
        store64(py + i, pack64(va, &o, SY), stream);                                           \
    }

/* The ort arithmetic (qops.h): two FMAs on the raw values, rounded, clamped to the bounds with
 * the zero point (which `fixed` holds); 16 lanes masked for heads and tails. */
QC_INLINE void add_ort_span16(const int8_t *pa, int sa, const int8_t *pb, int sb, int8_t *py,
                              size_t n, const qc_add_params *p) {
    const __m512 ma = _mm512_set1_ps(p->ma), mb = _mm512_set1_ps(p->mb);
    const __m512 fx = _mm512_set1_ps(p->fixed);
    const __m512 lo = _mm512_set1_ps(p->lo + (float)p->yzp);
    const __m512 hi = _mm512_set1_ps(p->hi + (float)p->yzp);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        const __m512 va = _mm512_cvtepi32_ps(load16_i32(pa + i, sa, k));
        const __m512 vb = _mm512_cvtepi32_ps(load16_i32(pb + i, sb, k));
        const __m512 v = _mm512_fmadd_ps(va, ma, _mm512_fmadd_ps(vb, mb, fx));
        _mm_mask_storeu_epi8(py + i, k, finish16(v, lo, hi, _mm512_setzero_si512()));
    }
}

/* per 64 outputs: the raw values widened (widen64_ps with zero point 0), 8 FMAs, the packs
 * (pack64: rounding, then the clamps; |v| < 2^30 under QC_ADD_ORT_MAX_MULT) */
#define QC_ADD64_ORT(SA, SB, SY)                                                               \
    for (; i + 64 <= n; i += 64) {                                                             \
        __m512 va[4], vb[4];                                                                   \
        widen64_ps(pa + i, SA, aoff, 0xF, va);                                                 \
        widen64_ps(pb + i, SB, boff, 0x0, vb);                                                 \
        for (int q = 0; q < 4; q++)                                                            \
            va[q] = _mm512_fmadd_ps(va[q], ma, _mm512_fmadd_ps(vb[q], mb, fx));                \
        store64(py + i, pack64(va, &o, SY), stream);                                           \
    }

static void add_ort_avx512(const int8_t *pa, int sa, const int8_t *pb, int sb, int8_t *py,
                           int sy, size_t n, const qc_add_params *p) {
    if (!(p->ma <= QC_ADD_ORT_MAX_MULT && p->mb <= QC_ADD_ORT_MAX_MULT)) {
        add_ort_span16(pa, sa, pb, sb, py, n, p);
        return;
    }
    const int stream = p->stream;
    size_t i = stream_head(py, n, stream);
    add_ort_span16(pa, sa, pb, sb, py, i, p);
    const __m512 aoff = widen_off(0, sa), boff = widen_off(0, sb);
    const __m512 ma = _mm512_set1_ps(p->ma), mb = _mm512_set1_ps(p->mb);
    const __m512 fx = _mm512_set1_ps(p->fixed);
    const pack_out o = pack_setup(p->lo + (float)p->yzp, p->hi + (float)p->yzp, 0, sy);
    QC_BINARY_SIGNS(QC_ADD64_ORT)
    if (stream) _mm_sfence();
    add_ort_span16(pa + i, sa, pb + i, sb, py + i, n - i, p);
}

static void add_avx512(const void *a, int sa, const void *b, int sb, void *y, int sy, size_t n,
                       const qc_add_params *p) {
    const int8_t *pa = a, *pb = b;
    int8_t *py = y;
    if (p->ort) {
        add_ort_avx512(pa, sa, pb, sb, py, sy, n, p);
        return;
    }
    if (!(p->ma <= QC_PACK_MAX_MULT && p->mb <= QC_PACK_MAX_MULT)) {
        add_span16(pa, sa, pb, sb, py, n, p);
        return;
    }
    const int stream = p->stream;
    size_t i = stream_head(py, n, stream);
    add_span16(pa, sa, pb, sb, py, i, p);
    const __m512 aoff = widen_off(p->azp, sa), boff = widen_off(p->bzp, sb);
    const __m512 ma = _mm512_set1_ps(p->ma), mb = _mm512_set1_ps(p->mb);
    const pack_out o = pack_setup(p->lo, p->hi, p->yzp, sy);
    QC_BINARY_SIGNS(QC_ADD64)
    if (stream) _mm_sfence();
    add_span16(pa + i, sa, pb + i, sb, py + i, n - i, p);
}

/* ---- element-wise multiply (qops.h: qc_mul_params) ---- */

/* 16 lanes, masked (heads, tails). The differences q - zp convert exactly. ORT: their product
 * is exact (|.| <= 65025), scaled, the zero point added, rounded (out of int32 range: the
 * conversion's INT32_MIN, which the clamp in int32 takes to lo, as MLAS's conversion and
 * saturating packs do). Else the definition's dequantized product and quotient, clamped,
 * rounded. */
QC_INLINE void mul_span16(const int8_t *pa, int sa, const int8_t *pb, int sb, int8_t *py,
                          size_t n, const qc_mul_params *p) {
    const __m512i azp = _mm512_set1_epi32(p->azp), bzp = _mm512_set1_epi32(p->bzp);
    if (p->ort) {
        const __m512 ratio = _mm512_set1_ps(p->ratio), fz = _mm512_set1_ps((float)p->yzp);
        const __m512i qlo = _mm512_set1_epi32((int32_t)p->lo);
        const __m512i qhi = _mm512_set1_epi32((int32_t)p->hi);
        for (size_t i = 0; i < n; i += 16) {
            const __mmask16 k = tail16(n - i);
            __m512 va = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(pa + i, sa, k), azp));
            __m512 vb = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(pb + i, sb, k), bzp));
            const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(va, vb), ratio), fz);
            __m512i q = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm512_min_epi32(_mm512_max_epi32(q, qlo), qhi);
            _mm_mask_storeu_epi8(py + i, k, opaque128(_mm512_cvtepi32_epi8(q)));
        }
        return;
    }
    const __m512 ms = _mm512_set1_ps(p->sa), mt = _mm512_set1_ps(p->sb);
    const __m512 sy = _mm512_set1_ps(p->sy);
    const __m512 zlo = _mm512_set1_ps(p->lo - (float)p->yzp);
    const __m512 zhi = _mm512_set1_ps(p->hi - (float)p->yzp);
    const __m512i yzp = _mm512_set1_epi32(p->yzp);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        __m512 va = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(pa + i, sa, k), azp));
        __m512 vb = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(pb + i, sb, k), bzp));
        const __m512 v = _mm512_mul_ps(_mm512_mul_ps(va, ms), _mm512_mul_ps(vb, mt));
        _mm_mask_storeu_epi8(py + i, k, finish16(_mm512_div_ps(v, sy), zlo, zhi, yzp));
    }
}

/* per 64 outputs: the exact differences (widen64_ps), product, scale, zero point; pack64 rounds
 * and saturates, which gives lo for a value beyond int32 (the conversion's INT32_MIN), as MLAS */
#define QC_MUL64_ORT(SA, SB, SY)                                                               \
    for (; i + 64 <= n; i += 64) {                                                             \
        __m512 va[4], vb[4];                                                                   \
        widen64_ps(pa + i, SA, aoff, 0xF, va);                                                 \
        widen64_ps(pb + i, SB, boff, 0x0, vb);                                                 \
        for (int q = 0; q < 4; q++)                                                            \
            va[q] = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(va[q], vb[q]), ratio), fz);      \
        _mm512_storeu_si512(py + i, pack64(va, &o, SY));                                       \
    }

/* per 64 outputs: the definition's products and quotient, clamped to the bounds (an overflow
 * to inf included) before pack64 rounds, adds the zero point and narrows */
#define QC_MUL64_REF(SA, SB, SY)                                                               \
    for (; i + 64 <= n; i += 64) {                                                             \
        __m512 va[4], vb[4];                                                                   \
        widen64_ps(pa + i, SA, aoff, 0xF, va);                                                 \
        widen64_ps(pb + i, SB, boff, 0x0, vb);                                                 \
        for (int q = 0; q < 4; q++) {                                                          \
            const __m512 v = _mm512_mul_ps(_mm512_mul_ps(va[q], ms), _mm512_mul_ps(vb[q], mt)); \
            va[q] = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, sy_), zlo), zhi);             \
        }                                                                                      \
        _mm512_storeu_si512(py + i, pack64(va, &o, SY));                                       \
    }

static void mul_avx512(const void *a, int sa, const void *b, int sb, void *y, int sy, size_t n,
                       const qc_mul_params *p) {
    const int8_t *pa = a, *pb = b;
    int8_t *py = y;
    size_t i = 0;
    const __m512 aoff = widen_off(p->azp, sa), boff = widen_off(p->bzp, sb);
    if (p->ort) {
        const __m512 ratio = _mm512_set1_ps(p->ratio), fz = _mm512_set1_ps((float)p->yzp);
        const pack_out o = pack_setup(p->lo, p->hi, 0, sy);
        QC_BINARY_SIGNS(QC_MUL64_ORT)
    } else {
        const __m512 ms = _mm512_set1_ps(p->sa), mt = _mm512_set1_ps(p->sb);
        const __m512 sy_ = _mm512_set1_ps(p->sy);
        const float fzp = (float)p->yzp;
        const __m512 zlo = _mm512_set1_ps(p->lo - fzp), zhi = _mm512_set1_ps(p->hi - fzp);
        const pack_out o = pack_setup(p->lo - fzp, p->hi - fzp, p->yzp, sy);
        QC_BINARY_SIGNS(QC_MUL64_REF)
    }
    mul_span16(pa + i, sa, pb + i, sb, py + i, n - i, p);
}

/* ---- table lookup: 64 bytes per step ----
 * The 256-entry table as 16 rows of 16 bytes, each broadcast to every 128-bit lane; vpshufb
 * looks every byte's low nibble up in all 16 rows, and a tree of blends on the high nibble's
 * bits (4 to 7) picks the row: 16 shuffles, 15 blends. */
static void lut8_avx512(const uint8_t *x, uint8_t *y, size_t n, const uint8_t *table) {
    __m512i row[16];
    for (int k = 0; k < 16; k++)
        row[k] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(table + 16 * k)));
    const __m512i nib = _mm512_set1_epi8(0x0F);
    for (size_t i = 0; i < n; i += 64) {
        const __mmask64 k = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        const __m512i v = _mm512_maskz_loadu_epi8(k, x + i), lo = _mm512_and_si512(v, nib);
        __m512i r[8];
        __mmask64 bit = _mm512_test_epi8_mask(v, _mm512_set1_epi8(0x10));
        for (int j = 0; j < 8; j++)
            r[j] = _mm512_mask_blend_epi8(bit, _mm512_shuffle_epi8(row[2 * j], lo),
                                          _mm512_shuffle_epi8(row[2 * j + 1], lo));
        for (int level = 1, m = 8; level < 4; level++, m /= 2) {
            bit = _mm512_test_epi8_mask(v, _mm512_set1_epi8((char)(0x10 << level)));
            for (int j = 0; j < m / 2; j++)
                r[j] = _mm512_mask_blend_epi8(bit, r[2 * j], r[2 * j + 1]);
        }
        _mm512_mask_storeu_epi8(y + i, k, r[0]);
    }
}

QC_INLINE void requant_span16(const int8_t *px, int sx, int8_t *py, size_t n,
                              const qc_rq_params *p) {
    const __m512i zp = _mm512_set1_epi32(p->zp), yzp = _mm512_set1_epi32(p->yzp);
    const __m512 m = _mm512_set1_ps(p->m), lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(load16_i32(px + i, sx, k), zp));
        _mm_mask_storeu_epi8(py + i, k, finish16(_mm512_mul_ps(v, m), lo, hi, yzp));
    }
}

/* per 64 outputs 4 multiplies and 4 conversions: half the subtractions run as FMAs, so
 * both pipe pairs get 6 */
#define QC_RQ64(SX, SY)                                                                        \
    for (; i + 64 <= n; i += 64) {                                                             \
        __m512 v[4];                                                                           \
        widen64_ps(px + i, SX, off, 0x5, v);                                                   \
        for (int q = 0; q < 4; q++) v[q] = _mm512_mul_ps(v[q], m);                             \
        store64(py + i, pack64(v, &o, SY), stream);                                            \
    }

static void requant_avx512(const void *x, int sx, void *y, int sy, size_t n,
                           const qc_rq_params *p) {
    const int8_t *px = x;
    int8_t *py = y;
    if (!(p->m <= QC_PACK_MAX_MULT)) {
        requant_span16(px, sx, py, n, p);
        return;
    }
    const int stream = p->stream;
    size_t i = stream_head(py, n, stream);
    requant_span16(px, sx, py, i, p);
    const __m512 off = widen_off(p->zp, sx), m = _mm512_set1_ps(p->m);
    const pack_out o = pack_setup(p->lo, p->hi, p->yzp, sy);
    switch ((sx ? 2 : 0) + (sy ? 1 : 0)) {
    case 0: QC_RQ64(0, 0) break;
    case 1: QC_RQ64(0, 1) break;
    case 2: QC_RQ64(1, 0) break;
    default: QC_RQ64(1, 1) break;
    }
    if (stream) _mm_sfence();
    requant_span16(px + i, sx, py + i, n - i, p);
}

/* ---- max pooling: stride 2 with 2 <= kw <= 4 in one pass (maxpool_s2_avx512), the rest as
 * the generic kernel (vertical max into ws, then horizontal), 64 bytes per step with masked
 * loads/stores; scratch ws holds a band of (at most OH) rows of pw bytes plus slack (the
 * stride-2 path loads whole 16-bit words, one byte past a row) ---- */

QC_INLINE __mmask64 tail64(size_t left) {
    return left >= 64 ? ~(__mmask64)0 : (__mmask64)((1ull << left) - 1);
}

/* the bits of a 64-byte load from column c (negative at the left border) whose columns are
 * in [0, W) */
QC_INLINE __mmask64 s2_cols(ptrdiff_t c, size_t W) {
    const ptrdiff_t end = (ptrdiff_t)W - c;
    if (end <= 0) return 0;
    return tail64((size_t)end) & ~tail64(c < 0 ? (size_t)-c : 0);
}

/* row + c for a column c that may be negative: the bytes before the row are masked off and
 * never read; the address is formed as an integer so no pointer leaves the array */
QC_INLINE const void *s2_at(const uint8_t *row, ptrdiff_t c) {
    return (const void *)((uintptr_t)row + (uintptr_t)c);
}

/* ---- max pooling with stride 2 and 2 <= kw <= 4 (3x3/2 and 2x2/2 above all): one pass per
 * output row, 64 outputs per step, no scratch rows. Chunk j of the row (outputs 64j + i',
 * i' < 64) covers the input columns 128j .. 128j + 127, and V, the vertical max of the
 * window's rows there, takes two loads per row, at columns inside the row (masked to
 * [0, W), reading the type's minimum beyond, the neutral padding; a full mask costs nothing).
 * Output 64j + i' is the max of V[2i' - pl + t] for t < kw, that is of the byte pair
 * M[2i'], M[2i' + 1] where M[b] is the max of V[b + s] for s from s0 = -pl to s1 = kw - 2 - pl:
 * V shifted by s bytes (valignd and vpalignr) with the previous chunk's V (the minimum before
 * the first) or the next one's, computed ahead. A 16-bit shift left and a byte max put each
 * pair's max in its high byte, a shift right widens it to the 16-bit lane, and the packs narrow
 * two halves back to 64 bytes. ws holds the masks of the loads, computed once per plane: 2 per
 * chunk and one after the last, at most 16 * (OW / 64 + 2) < pw + 64 bytes. ---- */

QC_INLINE __m512i mp2_max(__m512i a, __m512i b, int is_signed) {
    return is_signed ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
}

/* the vertical max of the n rows from `rows` over the 64 columns from c, masked by k (the
 * columns may start past the row: s2_at forms the address) */
QC_INLINE __m512i mp2_col(const uint8_t *rows, size_t W, ptrdiff_t n, size_t c, __mmask64 k,
                          int is_signed) {
    const __m512i tmin = _mm512_set1_epi8(is_signed ? INT8_MIN : 0);
    __m512i v = _mm512_mask_loadu_epi8(tmin, k, s2_at(rows, (ptrdiff_t)c));
#pragma GCC unroll 4
    for (ptrdiff_t r = 1; r < n; r++)
        v = mp2_max(v, _mm512_mask_loadu_epi8(tmin, k, s2_at(rows + (size_t)r * W, (ptrdiff_t)c)),
                    is_signed);
    return v;
}

/* the 64 bytes from byte s (-3 <= s <= 2) of the 192 bytes p:a:n. vpalignr shifts each 128-bit
 * lane of its second operand right, filling from the first: t holds the lanes before a's
 * (s < 0) or after them (s > 0). */
QC_INLINE __m512i mp2_shift(__m512i p, __m512i a, __m512i n, int s) {
    if (s > 0) {
        const __m512i t = _mm512_alignr_epi32(n, a, 4);
        return s == 1 ? _mm512_alignr_epi8(t, a, 1) : _mm512_alignr_epi8(t, a, 2);
    }
    const __m512i t = _mm512_alignr_epi32(a, p, 12);
    switch (s) {
    case 0: return a;
    case -1: return _mm512_alignr_epi8(a, t, 15);
    case -2: return _mm512_alignr_epi8(a, t, 14);
    default: return _mm512_alignr_epi8(a, t, 13);
    }
}

/* M over the 64 bytes a, p and n the 64 before and after them */
QC_INLINE __m512i mp2_taps(__m512i p, __m512i a, __m512i n, int s0, int s1, int is_signed) {
    __m512i m = mp2_shift(p, a, n, s0);
    for (int s = s0 + 1; s <= s1; s++) m = mp2_max(m, mp2_shift(p, a, n, s), is_signed);
    return m;
}

/* the max of each byte pair of m, widened to its 16-bit lane */
QC_INLINE __m512i mp2_pairs(__m512i m, int is_signed) {
    const __m512i t = mp2_max(m, _mm512_slli_epi16(m, 8), is_signed);
    return is_signed ? _mm512_srai_epi16(t, 8) : _mm512_srli_epi16(t, 8);
}

/* one output row from the n real rows of its windows; k: the plane's load masks */
QC_INLINE void mp2_row(const uint8_t *rows, size_t W, ptrdiff_t n, int s0, int s1,
                       const __mmask64 *k, int is_signed, uint8_t *out, size_t OW) {
    const __m512i fix = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    const __m512i tmin = _mm512_set1_epi8(is_signed ? INT8_MIN : 0);
    __m512i v0 = mp2_col(rows, W, n, 0, k[0], is_signed), prev = tmin;
    for (size_t o = 0; o < OW; o += 64, k += 2) {
        const __m512i v1 = mp2_col(rows, W, n, 2 * o + 64, k[1], is_signed);
        /* the next chunk's V: its first bytes are taps of this one when s1 > 0 */
        const __m512i v2 = s1 > 0 || OW - o > 64
                               ? mp2_col(rows, W, n, 2 * o + 128, k[2], is_signed) : tmin;
        const __m512i w0 = mp2_pairs(mp2_taps(prev, v0, v1, s0, s1, is_signed), is_signed);
        const __m512i w1 = mp2_pairs(mp2_taps(v0, v1, v2, s0, s1, is_signed), is_signed);
        /* the qwords of the two halves interleave */
        const __m512i b = is_signed ? _mm512_packs_epi16(w0, w1) : _mm512_packus_epi16(w0, w1);
        const __m512i v = _mm512_permutexvar_epi64(fix, b);
        if (OW - o >= 64) _mm512_storeu_si512((void *)(out + o), v);
        else _mm512_mask_storeu_epi8(out + o, tail64(OW - o), v);
        prev = v1;
        v0 = v2;
    }
}

QC_INLINE int maxpool_s2_fits(const qc_win2d *g) {
    return g->sw == 2 && g->kw >= 2 && g->kw <= 4;
}

QC_INLINE void maxpool_s2_avx512(const void *x, int is_signed, void *y, const qc_win2d *g,
                                 __mmask64 *k) {
    const size_t W = g->W, OW = g->OW;
    const int s0 = -g->pl, s1 = g->kw - 2 - g->pl;
    for (size_t i = 0; i <= 2 * ((OW + 63) / 64); i++) k[i] = s2_cols(64 * (ptrdiff_t)i, W);
    for (size_t oy = 0; oy < g->OH; oy++) {
        const ptrdiff_t ya = (ptrdiff_t)oy * g->sh - g->pt;
        const ptrdiff_t y0 = QC_MAX(ya, 0), y1 = QC_MIN(ya + g->kh, (ptrdiff_t)g->H);
        const uint8_t *rows = (const uint8_t *)x + (size_t)y0 * W;
        uint8_t *out = (uint8_t *)y + oy * OW;
        /* the inner rows of 3x3/2 pad 1 with the counts fixed for the compiler */
        if (y1 - y0 == 3 && s0 == -1 && s1 == 0) mp2_row(rows, W, 3, -1, 0, k, is_signed, out, OW);
        else mp2_row(rows, W, y1 - y0, s0, s1, k, is_signed, out, OW);
    }
}

#define QC_DEF_MAXPOOL512(T, TMIN, MAX512, EVEN16, ODD16, MAX16, PACK16, NAME)          \
    static void NAME(const T *x, T *y, const qc_win2d *g, T *ws) {                            \
        if (maxpool_s2_fits(g)) {                                                             \
            maxpool_s2_avx512(x, (T)-1 < 0, y, g, (__mmask64 *)ws);                           \
            return;                                                                           \
        }                                                                                     \
        const size_t W = g->W, pw = (size_t)g->pl + W + (size_t)g->pr, OW = g->OW;             \
        const int kw = g->kw;                                                                 \
        /* in bands of output rows: the band's vertical maxima first (rows of pw in ws, ~2  \
         * KiB, so they stay in L1), then its horizontal maxima, which never load bytes just  \
         * written by a masked store (store forwarding would stall) */                        \
        const size_t band = QC_MIN(g->OH, QC_MAX((size_t)1, 2048 / pw));                     \
        for (size_t ob = 0; ob < g->OH; ob += band) {                                         \
        const size_t oe = QC_MIN(g->OH, ob + band);                                           \
        for (size_t oy = ob; oy < oe; oy++) {                                                 \
            T *wrow = ws + (oy - ob) * pw;                                                           \
            for (size_t i = 0; i < (size_t)g->pl; i++) wrow[i] = TMIN;                        \
            for (size_t i = (size_t)g->pl + W; i < pw; i++) wrow[i] = TMIN;                   \
            T *row = wrow + g->pl;                                                            \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt, y1 = y0 + g->kh;                    \
            if (y0 < 0) y0 = 0;                                                               \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                   \
            for (size_t i = 0; i < W; i += 64) {                                              \
                const __mmask64 k = tail64(W - i);                                            \
                __m512i v = _mm512_maskz_loadu_epi8(k, x + (size_t)y0 * W + i);               \
                for (ptrdiff_t iy = y0 + 1; iy < y1; iy++)                                    \
                    v = MAX512(v, _mm512_maskz_loadu_epi8(k, x + (size_t)iy * W + i));        \
                _mm512_mask_storeu_epi8(row + i, k, v);                                       \
            }                                                                                 \
        }                                                                                     \
        for (size_t oy = ob; oy < oe; oy++) {                                                 \
            const T *hrow = ws + (oy - ob) * pw;                                                     \
            T *out = y + oy * OW;                                                             \
            if (g->sw == 1) {                                                                 \
                for (size_t i = 0; i < OW; i += 64) {                                         \
                    const __mmask64 k = tail64(OW - i);                                       \
                    __m512i v = _mm512_maskz_loadu_epi8(k, hrow + i);                           \
                    for (int kx = 1; kx < kw; kx++)                                           \
                        v = MAX512(v, _mm512_maskz_loadu_epi8(k, hrow + i + kx));               \
                    _mm512_mask_storeu_epi8(out + i, k, v);                                   \
                }                                                                             \
            } else if (g->sw == 2) {                                                          \
                /* 16-bit lanes: tap kx is the even (kx even) or odd byte of the words at      \
                 * hrow + 2i + (kx & ~1); two halves of 32 outputs, packed back to 64 bytes */   \
                const __m512i fix = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);                \
                for (size_t i = 0; i < OW; i += 64) {                                         \
                    __m512i r[2];                                                             \
                    for (int h = 0; h < 2; h++) {                                             \
                        const size_t o = i + 32 * (size_t)h;                                  \
                        const size_t nb = o < OW ? QC_MIN((size_t)32, OW - o) : 0;            \
                        const __mmask64 k = tail64(2 * nb);                                   \
                        __m512i v = EVEN16(_mm512_maskz_loadu_epi8(k, hrow + 2 * o));           \
                        for (int kx = 1; kx < kw; kx++) {                                     \
                            __m512i wv = _mm512_maskz_loadu_epi8(k, hrow + 2 * o + (kx & ~1));  \
                            v = MAX16(v, (kx & 1) ? ODD16(wv) : EVEN16(wv));                  \
                        }                                                                     \
                        r[h] = v;                                                             \
                    }                                                                         \
                    __m512i packed = _mm512_permutexvar_epi64(fix, PACK16(r[0], r[1]));       \
                    _mm512_mask_storeu_epi8(out + i, tail64(OW - i), packed);                 \
                }                                                                             \
            } else {                                                                          \
                const size_t sw = (size_t)g->sw;                                              \
                QC_MAXPOOL_ROW(T, out, hrow, 0, OW, sw, kw);                                  \
            }                                                                                 \
        }                                                                                     \
        }                                                                                     \
    }

#define QC_EVEN_U16(v) _mm512_and_si512((v), _mm512_set1_epi16(0xFF))
#define QC_ODD_U16(v) _mm512_srli_epi16((v), 8)
#define QC_EVEN_S16(v) _mm512_srai_epi16(_mm512_slli_epi16((v), 8), 8)
#define QC_ODD_S16(v) _mm512_srai_epi16((v), 8)
QC_DEF_MAXPOOL512(uint8_t, 0, _mm512_max_epu8, QC_EVEN_U16, QC_ODD_U16, _mm512_max_epu16,
                  _mm512_packus_epi16, maxpool_u8_avx512)
QC_DEF_MAXPOOL512(int8_t, INT8_MIN, _mm512_max_epi8, QC_EVEN_S16, QC_ODD_S16, _mm512_max_epi16,
                  _mm512_packs_epi16, maxpool_s8_avx512)

/* ---- average pooling, in bands of output rows (their vertical sums stay in L1). Vertical
 * pass first, for the band's rows: raw sums of q over the window's real rows in 16-bit lanes
 * (32 per step; kh <= 256 keeps them exact: uint16 for uint8, int16 for int8), padding
 * columns 0. Then 16 outputs per step: horizontal sums widened to int32 (stride 2 takes the
 * even 16-bit lanes of 32-bit lanes), minus nrow * (real columns) * xzp, so acc = sum of
 * (q - xzp) over real cells; times float32(m / cnt) (a true division). The per-column
 * multipliers and offsets are cached after the rows and recomputed only when the number of
 * real rows changes. ws: band * pw int16 (band <= OH), then 2 * (OW + 16) 32-bit values. ---- */

/* A window covering the whole plane without padding (global average pooling): one sum of the
 * H * W bytes with vpsadbw into 64-bit lanes (int8 biased by 128 to uint8 first, the bias taken
 * back from the total), then the int32 accumulator (wrapping like the generic kernel's) minus
 * H * W * xzp and the same float32 requantization as every other window. */
QC_INLINE int whole_plane(const qc_win2d *g) {
    return g->OH == 1 && g->OW == 1 && (size_t)g->kh == g->H && (size_t)g->kw == g->W &&
           (g->pt | g->pl | g->pb | g->pr) == 0;
}

static uint64_t sum_u8_avx512(const uint8_t *x, size_t n, int bias128) {
    const __m512i flip = _mm512_set1_epi8(bias128 ? (char)0x80 : 0), zero = _mm512_setzero_si512();
    __m512i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_sad_epu8(_mm512_xor_si512(
                                      _mm512_loadu_si512((const void *)(x + i)), flip), zero));
        s1 = _mm512_add_epi64(s1, _mm512_sad_epu8(_mm512_xor_si512(
                                      _mm512_loadu_si512((const void *)(x + i + 64)), flip), zero));
        s2 = _mm512_add_epi64(s2, _mm512_sad_epu8(_mm512_xor_si512(
                                      _mm512_loadu_si512((const void *)(x + i + 128)), flip), zero));
        s3 = _mm512_add_epi64(s3, _mm512_sad_epu8(_mm512_xor_si512(
                                      _mm512_loadu_si512((const void *)(x + i + 192)), flip), zero));
    }
    for (; i < n; i += 64) {
        /* masked-off bytes load as 0 and must stay 0 after the flip */
        const __mmask64 k = tail64(n - i);
        const __m512i v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, x + i), flip);
        s0 = _mm512_add_epi64(s0, _mm512_sad_epu8(_mm512_maskz_mov_epi8(k, v), zero));
    }
    s0 = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
    return (uint64_t)_mm512_reduce_add_epi64(s0);
}

QC_INLINE void avgpool_whole_avx512(const void *x, int is_signed, void *y, const qc_win2d *g,
                                    const qc_avgpool_params *p) {
    const size_t n = g->H * g->W;
    uint64_t s = sum_u8_avx512(x, n, is_signed);
    if (is_signed) s -= 128 * (uint64_t)n;
    const int32_t cnt = (int32_t)n;
    const int32_t acc = (int32_t)((uint32_t)s - (uint32_t)cnt * (uint32_t)p->xzp);
    const float mc = p->m / (float)cnt;
    *(uint8_t *)y = (uint8_t)qc_requant_f32((float)acc * mc, p->lo, p->hi, p->yzp);
}

/* ---- average pooling with stride 2 and kw <= 4: one pass per output row, 64 outputs per
 * step, no scratch rows. Output i sums padded columns 2i .. 2i + kw - 1, i.e. input columns
 * from c = 2i - pl: vpmaddubsw against byte weights (1, 1) adds the column pairs (c, c + 1) of
 * one row into a 16-bit lane ((1, 0) for kw = 1), so a 64-byte load from column c gives the
 * sums of 32 outputs; kw = 3 adds a second load from c + 1 with weights (0, 1), kw = 4 one from
 * c + 2 with (1, 1). Loads are masked to the row's columns [0, W) where they reach past them,
 * so padding adds 0. The rows of the window add in 16 bits: |sum| <= kh * kw * 255 (uint8,
 * unsigned) or kh * kw * 128 (int8, signed) fits for kh * kw <= 257 or 255. When consecutive
 * windows share one row (kh = sh + 1, as 3x3/2), that row's sums are kept from the previous
 * output row instead of recomputed. The 32 sums of a half go to float32 lanes with in-lane
 * unpacks (no cross-lane shuffle); the packs that narrow the results undo that order, so only
 * the table of per-output multipliers float32(m / cnt) and offsets has to follow it (see
 * s2_quarter). The table is rebuilt only when the number of real rows changes, and halves
 * whose windows are all whole use constants instead.
 * ws, per chunk of 64 outputs: the table (2 * 64 32-bit values), the shared row's sums (64
 * 16-bit values) and the load masks (4 64-bit values). Helpers shared with the AVX2 kernel
 * are in qops_impl.h. ---- */

/* Output offsets within a chunk of 64 held by the int32 lanes of quarter q: half q / 2 holds
 * outputs 32 * (q / 2) + [0, 32) as 16-bit lanes; unpacklo (q even) takes words 0-3 of each
 * 128-bit lane l, unpackhi (q odd) words 4-7, which are outputs 8l + [0, 4) and 8l + [4, 8). */
QC_INLINE __m512i s2_quarter(int q) {
    const __m512i j = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i l8 = _mm512_slli_epi32(_mm512_srli_epi32(j, 2), 3);
    const __m512i k = _mm512_and_si512(j, _mm512_set1_epi32(3));
    return _mm512_add_epi32(_mm512_add_epi32(l8, k),
                            _mm512_set1_epi32(32 * (q >> 1) + 4 * (q & 1)));
}

/* mc and the offsets (see s2_off_bias) for every chunk of 64 outputs in the quarter order
 * above, for windows of nrow real rows (lanes past OW get a count of at least 1 and are never
 * stored) */
static void s2_table(const qc_win2d *g, const qc_avgpool_params *p, int is_signed, int32_t nrow,
                     size_t nch, float *mc, float *off) {
    const __m512 m = _mm512_set1_ps(p->m);
    const __m512i W = _mm512_set1_epi32((int32_t)g->W), kw = _mm512_set1_epi32(g->kw);
    const __m512i nr = _mm512_set1_epi32(nrow), xzp = _mm512_set1_epi32(p->xzp);
    const __m512i full = _mm512_set1_epi32(g->kh * g->kw), one = _mm512_set1_epi32(1);
    const __m512i bias = _mm512_set1_epi32(s2_off_bias(is_signed));
    for (size_t c = 0; c < nch; c++) {
        for (int q = 0; q < 4; q++) {
            const __m512i i =
                _mm512_add_epi32(s2_quarter(q), _mm512_set1_epi32((int32_t)(64 * c)));
            __m512i x0 = _mm512_sub_epi32(_mm512_slli_epi32(i, 1), _mm512_set1_epi32(g->pl));
            const __m512i x1 = _mm512_min_epi32(_mm512_add_epi32(x0, kw), W);
            x0 = _mm512_max_epi32(x0, _mm512_setzero_si512());
            const __m512i real = _mm512_mullo_epi32(nr, _mm512_sub_epi32(x1, x0));
            const __m512i cnt = _mm512_max_epi32(p->count_include_pad ? full : real, one);
            const size_t at = (4 * c + (size_t)q) * 16;
            _mm512_storeu_ps(mc + at, _mm512_div_ps(m, _mm512_cvtepi32_ps(cnt)));
            const __m512i o = _mm512_add_epi32(_mm512_mullo_epi32(real, xzp), bias);
            _mm512_storeu_ps(off + at, _mm512_cvtepi32_ps(o));
        }
    }
}

/* vpmaddubsw multiplies unsigned bytes (first operand) by signed ones: uint8 data goes first,
 * int8 data second against the unsigned weights */
QC_INLINE __m512i s2_madd(__m512i v, __m512i w, int is_signed) {
    return is_signed ? _mm512_maddubs_epi16(w, v) : _mm512_maddubs_epi16(v, w);
}

/* The plane's constants. Half h of the output row (outputs 32h .. 32h + 31) loads from column
 * c = 64h - pl and, with a second tap, from c + c1, with the load masks k[2h] and k[2h + 1]
 * computed once. The loads of the halves [h_lo, h_hi) are all inside the row: those halves
 * load without masks, and their windows are whole (the loads cover columns c .. c + 61 + kw). */
typedef struct {
    size_t W, h_lo, h_hi;
    ptrdiff_t pl, c1;
    int taps, is_signed, clamp;
    __m512i w0, w1;      /* byte weights of the taps */
    __m512 lo, hi;
    __m512i yzp16;
    const __mmask64 *k;
} s2_plane;

QC_INLINE __m512i s2_load(const uint8_t *row, ptrdiff_t c, __mmask64 k, int whole) {
    return whole ? _mm512_loadu_si512(s2_at(row, c)) : _mm512_maskz_loadu_epi8(k, s2_at(row, c));
}

/* one row's 16-bit sums for the 32 outputs of half h */
QC_INLINE __m512i s2_row(const s2_plane *s, const uint8_t *row, size_t h, int whole) {
    const ptrdiff_t c = 64 * (ptrdiff_t)h - s->pl;
    __m512i v = s2_madd(s2_load(row, c, s->k[2 * h], whole), s->w0, s->is_signed);
    if (s->taps > 1) {
        const __m512i b = s2_load(row, c + s->c1, s->k[2 * h + 1], whole);
        v = _mm512_add_epi16(v, s2_madd(b, s->w1, s->is_signed));
    }
    return v;
}

/* 16-bit window sums of the 32 outputs of half h; kept: that half's shared-row sums */
QC_INLINE __m512i s2_sum32(const s2_plane *s, const s2_rows *r, size_t h, int16_t *kept,
                           int whole) {
    __m512i v = r->from_kept ? _mm512_loadu_si512((const void *)kept) : _mm512_setzero_si512();
    for (ptrdiff_t j = 0; j < r->n; j++)
        v = _mm512_add_epi16(v, s2_row(s, r->mid + (size_t)j * s->W, h, whole));
    if (r->shared) {
        const __m512i l = r->last ? s2_row(s, r->last, h, whole) : _mm512_setzero_si512();
        _mm512_storeu_si512((void *)kept, l);
        v = _mm512_add_epi16(v, l);
    }
    return v;
}

/* The multipliers and offsets of one output row: the table, and for the halves whose windows
 * are whole (every output has nrow * kw real cells) the constants mci, offi. */
typedef struct {
    const float *mc, *off;
    __m512 mci, offi;
} s2_scale;

/* quarter a of 64 sums (lanes as s2_quarter, as floats 2^23 + u) minus the offsets, times the
 * multipliers, clamped to [lo, hi] unless the packs do it, rounded */
QC_INLINE __m512i s2_requant(const s2_plane *s, __m512i a, __m512 mc, __m512 off) {
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_castsi512_ps(a), off), mc);
    if (s->clamp) v = _mm512_min_ps(_mm512_max_ps(v, s->lo), s->hi);
    return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* 32 sums v of a half as int16: the int32 results packed back in order (saturating) and yzp
 * added (saturating: a result outside int16 is outside the output type with or without yzp,
 * so the final packs clamp it alike). mc/off: the quarters' multipliers and offsets. */
QC_INLINE __m512i s2_finish32(const s2_plane *s, __m512i v, __m512 mc0, __m512 mc1,
                              __m512 off0, __m512 off1) {
    const __m512i fhi = _mm512_set1_epi16(QC_S2_FLOAT_HI);
    if (s->is_signed) v = _mm512_xor_si512(v, _mm512_set1_epi16(INT16_MIN));
    const __m512i lo = s2_requant(s, _mm512_unpacklo_epi16(v, fhi), mc0, off0);
    const __m512i hi = s2_requant(s, _mm512_unpackhi_epi16(v, fhi), mc1, off1);
    return _mm512_adds_epi16(_mm512_packs_epi32(lo, hi), s->yzp16);
}

/* half h of the output row as int16 */
QC_INLINE __m512i s2_half(const s2_plane *s, const s2_rows *r, const s2_scale *t, size_t h,
                          int16_t *kept) {
    if (h >= s->h_lo && h < s->h_hi) {
        const __m512i v = s2_sum32(s, r, h, kept + 32 * h, 1);
        return s2_finish32(s, v, t->mci, t->mci, t->offi, t->offi);
    }
    const __m512i v = s2_sum32(s, r, h, kept + 32 * h, 0);
    const float *mc = t->mc + 32 * h, *off = t->off + 32 * h;
    return s2_finish32(s, v, _mm512_loadu_ps(mc), _mm512_loadu_ps(mc + 16),
                       _mm512_loadu_ps(off), _mm512_loadu_ps(off + 16));
}

/* one output row, 64 outputs (two halves) per step */
QC_INLINE void s2_out_row(const s2_plane *s, const s2_rows *r, const s2_scale *t,
                          int16_t *kept, uint8_t *out, size_t OW) {
    const __m512i fix = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    for (size_t i0 = 0, h = 0; i0 < OW; i0 += 64, h += 2) {
        const __m512i w01 = s2_half(s, r, t, h, kept);
        const __m512i w23 = s2_half(s, r, t, h + 1, kept);
        /* the qwords of the two halves interleave */
        const __m512i b =
            s->is_signed ? _mm512_packs_epi16(w01, w23) : _mm512_packus_epi16(w01, w23);
        const __m512i v = _mm512_permutexvar_epi64(fix, b);
        /* a plain store for whole chunks: measured faster here than a full-mask store */
        if (OW - i0 >= 64) _mm512_storeu_si512((void *)(out + i0), v);
        else _mm512_mask_storeu_epi8(out + i0, tail64(OW - i0), v);
    }
}

/* The inner rows of 3x3/2 pad 1 (the window's first row the kept one, one row between, the
 * last kept for the next output row) with aligned loads: half h (outputs 32h + i', i' < 32,
 * input columns from c = 64h - 1) loads each row once, from 64h, instead of from c, which
 * crosses a cache line, and c + 1. Output i' sums bytes 2i' - 1, 2i', 2i' + 1 of those 64
 * bytes A: the pair sum P[i'] (vpmaddubsw against (1, 1)) plus the odd byte O[i' - 1] of the
 * word before (a 16-bit shift right), the words O shifted up by one lane (valignd + vpalignr)
 * with the previous half's O, o (0 before the first: the padding column). */
QC_INLINE __m512i s2_row3(const s2_plane *s, const uint8_t *row, size_t h, __m512i *o) {
    const __m512i a = _mm512_maskz_loadu_epi8(s->k[2 * h + 1], s2_at(row, 64 * (ptrdiff_t)h));
    const __m512i odd = s->is_signed ? _mm512_srai_epi16(a, 8) : _mm512_srli_epi16(a, 8);
    const __m512i t = _mm512_alignr_epi32(odd, *o, 12);
    const __m512i prev = _mm512_alignr_epi8(odd, t, 14);
    *o = odd;
    return _mm512_add_epi16(s2_madd(a, s->w0, s->is_signed), prev);
}

QC_INLINE void s2_out_row3(const s2_plane *s, const uint8_t *mid, const uint8_t *last,
                           const s2_scale *t, int16_t *kept, uint8_t *out, size_t OW) {
    const __m512i fix = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    __m512i om = _mm512_setzero_si512(), ol = _mm512_setzero_si512();
    for (size_t i0 = 0, h = 0; i0 < OW; i0 += 64, h += 2) {
        __m512i w[2];
        for (size_t j = 0; j < 2; j++) {
            int16_t *kh = kept + 32 * (h + j);
            const __m512i l = s2_row3(s, last, h + j, &ol);
            const __m512i v = _mm512_add_epi16(
                _mm512_add_epi16(_mm512_loadu_si512((const void *)kh), l),
                s2_row3(s, mid, h + j, &om));
            _mm512_storeu_si512((void *)kh, l);
            if (h + j >= s->h_lo && h + j < s->h_hi) {
                w[j] = s2_finish32(s, v, t->mci, t->mci, t->offi, t->offi);
            } else {
                const float *mc = t->mc + 32 * (h + j), *off = t->off + 32 * (h + j);
                w[j] = s2_finish32(s, v, _mm512_loadu_ps(mc), _mm512_loadu_ps(mc + 16),
                                   _mm512_loadu_ps(off), _mm512_loadu_ps(off + 16));
            }
        }
        /* the qwords of the two halves interleave */
        const __m512i b =
            s->is_signed ? _mm512_packs_epi16(w[0], w[1]) : _mm512_packus_epi16(w[0], w[1]);
        const __m512i v = _mm512_permutexvar_epi64(fix, b);
        if (OW - i0 >= 64) _mm512_storeu_si512((void *)(out + i0), v);
        else _mm512_mask_storeu_epi8(out + i0, tail64(OW - i0), v);
    }
}

QC_INLINE void avgpool_s2_avx512(const void *x, int is_signed, void *yv, const qc_win2d *g,
                                 const qc_avgpool_params *p, int32_t *ws, int clamp) {
    const size_t OW = g->OW, nch = (OW + 63) / 64;
    const int kw = g->kw, taps = kw > 2 ? 2 : 1;
    float *mc = (float *)ws;
    float *off = (float *)(ws + 64 * nch);
    int16_t *kept = (int16_t *)(ws + 128 * nch);
    __mmask64 *k = (__mmask64 *)(ws + 160 * nch);
    /* Byte weights (1, 1) add columns c and c + 1, (1, 0) column c alone, (0, 1) column
     * c + 1 alone: kw = 3 takes its third column from a load at c + 1, which stays inside
     * the row wherever the windows do. */
    s2_plane s = {g->W, 2 * nch, 0, g->pl, kw == 3 ? 1 : 2, taps, is_signed, clamp,
                  _mm512_set1_epi16(kw == 1 ? 0x0001 : 0x0101),
                  _mm512_set1_epi16(kw == 3 ? 0x0100 : 0x0101),
                  _mm512_set1_ps(p->lo), _mm512_set1_ps(p->hi),
                  _mm512_set1_epi16((int16_t)p->yzp), k};
    for (size_t h = 0; h < 2 * nch; h++) {
        const ptrdiff_t c = 64 * (ptrdiff_t)h - s.pl;
        k[2 * h] = s2_cols(c, g->W);
        k[2 * h + 1] = s2_cols(c + s.c1, g->W);
        if (k[2 * h] == ~(__mmask64)0 && (taps == 1 || k[2 * h + 1] == ~(__mmask64)0)) {
            s.h_lo = QC_MIN(s.h_lo, h);
            s.h_hi = h + 1;
        }
    }
    s2_scale t = {mc, off, _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int shared = g->kh == g->sh + 1;
    ptrdiff_t last_nrow = -1;
    for (size_t oy = 0; oy < g->OH; oy++) {
        const ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt;
        const ptrdiff_t nrow = QC_MIN(y0 + g->kh, (ptrdiff_t)g->H) - QC_MAX(y0, 0);
        if (nrow != last_nrow) {
            last_nrow = nrow;
            s2_table(g, p, is_signed, (int32_t)nrow, nch, mc, off);
            const int32_t real = (int32_t)(nrow * kw);
            t.mci = _mm512_set1_ps(p->m / (float)(p->count_include_pad ? g->kh * g->kw : real));
            t.offi = _mm512_set1_ps((float)(real * p->xzp + s2_off_bias(is_signed)));
        }
        s2_rows r = s2_rows_of(x, g, oy, shared);
        uint8_t *out = (uint8_t *)yv + oy * OW;
        if (r.from_kept && r.last && r.n == 1 && kw == 3 && s.pl == 1) {
            s2_out_row3(&s, r.mid, r.last, &t, kept, out, OW);
        } else if (r.from_kept && r.last && r.n == 1) {
            /* the inner rows of 3xkw/2, with the row pattern fixed for the compiler */
            const s2_rows r3 = {r.mid, r.last, 1, 1, 1};
            s2_out_row(&s, &r3, &t, kept, out, OW);
        } else {
            s2_out_row(&s, &r, &t, kept, out, OW);
        }
    }
}

#define QC_DEF_AVGPOOL512(T, T16, CVT16, WIDEN16, EVEN32, GENERIC, NAME)                      \
    static void NAME(const T *x, T *y, const qc_win2d *g, const qc_avgpool_params *p,         \
                     int32_t *ws) {                                                           \
        if (whole_plane(g)) {                                                                 \
            avgpool_whole_avx512(x, (T)-1 < 0, y, g, p);                                      \
            return;                                                                           \
        }                                                                                     \
        if (avgpool_s2_fits(g, (T)-1 < 0)) {                                                  \
            if (s2_packs_clamp(p, (T)-1 < 0))                                                 \
                avgpool_s2_avx512(x, (T)-1 < 0, y, g, p, ws, 0);                              \
            else                                                                              \
                avgpool_s2_avx512(x, (T)-1 < 0, y, g, p, ws, 1);                              \
            return;                                                                           \
        }                                                                                     \
        if (g->kh > 256) {                                                                    \
            GENERIC(x, y, g, p, ws);                                                          \
            return;                                                                           \
        }                                                                                     \
        const size_t W = g->W, pw = (size_t)g->pl + W + (size_t)g->pr, OW = g->OW;             \
        const int kw = g->kw;                                                                 \
        T16 *rows16 = (T16 *)ws;                                                              \
        /* bands of output rows: the band's vertical sums (~8 KiB) stay in L1 for the      \
         * horizontal pass, written a whole band before they are read back */              \
        const size_t band = QC_MIN(g->OH, QC_MAX((size_t)1, 4096 / pw));                     \
        const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, \
                                                14, 15);                                      \
        const __m512 m = _mm512_set1_ps(p->m), lo = _mm512_set1_ps(p->lo);                    \
        const __m512 hi = _mm512_set1_ps(p->hi);                                              \
        const __m512i yzp = _mm512_set1_epi32(p->yzp), zero = _mm512_setzero_si512();         \
        const __m512i Wv = _mm512_set1_epi32((int32_t)W), kwv = _mm512_set1_epi32(kw);        \
        const __m512i xzp = _mm512_set1_epi32(p->xzp);                                        \
        const __m512i full = _mm512_set1_epi32(g->kh * kw);                                   \
        const size_t OWr = (OW + 15) & ~(size_t)15;                                           \
        float *mcrow = (float *)(ws + (band * pw + 1) / 2);                                   \
        int32_t *offrow = (int32_t *)(mcrow + OWr);                                           \
        ptrdiff_t last_nrow = -1;                                                             \
        for (size_t ob = 0; ob < g->OH; ob += band) {                                         \
        const size_t oe = QC_MIN(g->OH, ob + band);                                           \
        for (size_t oy = ob; oy < oe; oy++) {                                                 \
            T16 *wrow = rows16 + (oy - ob) * pw;                                              \
            for (size_t i = 0; i < (size_t)g->pl; i++) wrow[i] = 0;                           \
            for (size_t i = (size_t)g->pl + W; i < pw; i++) wrow[i] = 0;                      \
            T16 *row = wrow + g->pl;                                                          \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt, y1 = y0 + g->kh;                    \
            if (y0 < 0) y0 = 0;                                                               \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                   \
            for (size_t i = 0; i < W; i += 32) {                                              \
                const __mmask32 k = (__mmask32)tail64(QC_MIN((size_t)32, W - i));            \
                __m512i v = _mm512_setzero_si512();                                           \
                for (ptrdiff_t iy = y0; iy < y1; iy++)                                        \
                    v = _mm512_add_epi16(                                                     \
                        v, CVT16(_mm256_maskz_loadu_epi8(k, x + (size_t)iy * W + i)));        \
                _mm512_mask_storeu_epi16(row + i, k, v);                                      \
            }                                                                                 \
        }                                                                                     \
        for (size_t oy = ob; oy < oe; oy++) {                                                 \
            const T16 *hrow = rows16 + (oy - ob) * pw;                                        \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt, y1 = y0 + g->kh;                    \
            if (y0 < 0) y0 = 0;                                                               \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                   \
            if (y1 - y0 != last_nrow) {                                                       \
                last_nrow = y1 - y0;                                                          \
                const __m512i nrow = _mm512_set1_epi32((int32_t)last_nrow);                   \
                for (size_t i = 0; i < OW; i += 16) {                                         \
                    __m512i x0 = _mm512_sub_epi32(                                            \
                        _mm512_mullo_epi32(                                                   \
                            _mm512_add_epi32(lanes, _mm512_set1_epi32((int32_t)i)),           \
                            _mm512_set1_epi32(g->sw)),                                        \
                        _mm512_set1_epi32(g->pl));                                            \
                    __m512i x1 = _mm512_min_epi32(_mm512_add_epi32(x0, kwv), Wv);             \
                    x0 = _mm512_max_epi32(x0, zero);                                          \
                    const __m512i real = _mm512_mullo_epi32(nrow, _mm512_sub_epi32(x1, x0));  \
                    __m512i cnt = p->count_include_pad ? full : real;                         \
                    /* lanes past OW may get cnt <= 0: never used */                          \
                    cnt = _mm512_max_epi32(cnt, _mm512_set1_epi32(1));                        \
                    _mm512_storeu_ps(mcrow + i, _mm512_div_ps(m, _mm512_cvtepi32_ps(cnt)));   \
                    _mm512_storeu_si512((void *)(offrow + i), _mm512_mullo_epi32(real, xzp)); \
                }                                                                             \
            }                                                                                 \
            T *out = y + oy * OW;                                                             \
            for (size_t i = 0; i < OW; i += 16) {                                             \
                const size_t nb = QC_MIN((size_t)16, OW - i);                                 \
                const __mmask16 k = tail16(nb);                                               \
                __m512i acc = zero;                                                           \
                if (g->sw == 1) {                                                             \
                    for (int kx = 0; kx < kw; kx++)                                           \
                        acc = _mm512_add_epi32(                                               \
                            acc, WIDEN16(_mm256_maskz_loadu_epi16(k, hrow + i + kx)));        \
                } else if (g->sw == 2) {                                                      \
                    const __mmask32 k2 = (__mmask32)tail64(2 * nb - 1);                       \
                    for (int kx = 0; kx < kw; kx++)                                           \
                        acc = _mm512_add_epi32(                                               \
                            acc, EVEN32(_mm512_maskz_loadu_epi16(k2, hrow + 2 * i + kx)));    \
                } else {                                                                      \
                    int32_t tmp[16] = {0};                                                    \
                    for (size_t j = 0; j < nb; j++) {                                         \
                        int32_t a = 0;                                                        \
                        for (int kx = 0; kx < kw; kx++)                                       \
                            a += hrow[(i + j) * (size_t)g->sw + (size_t)kx];                  \
                        tmp[j] = a;                                                           \
                    }                                                                         \
                    acc = _mm512_loadu_si512((const void *)tmp);                              \
                }                                                                             \
                acc = _mm512_sub_epi32(acc, _mm512_loadu_si512((const void *)(offrow + i)));  \
                const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc),                       \
                                               _mm512_loadu_ps(mcrow + i));                   \
                _mm_mask_storeu_epi8(out + i, k, finish16(v, lo, hi, yzp));                   \
            }                                                                                 \
        }                                                                                     \
        }                                                                                     \
    }

#define QC_EVEN32_U(v) _mm512_and_si512((v), _mm512_set1_epi32(0xFFFF))
#define QC_EVEN32_S(v) _mm512_srai_epi32(_mm512_slli_epi32((v), 16), 16)
QC_DEF_AVGPOOL512(uint8_t, uint16_t, _mm512_cvtepu8_epi16, _mm512_cvtepu16_epi32, QC_EVEN32_U,
                  QC_QOPS_NAME(avgpool_u8), avgpool_u8_avx512)
QC_DEF_AVGPOOL512(int8_t, int16_t, _mm512_cvtepi8_epi16, _mm512_cvtepi16_epi32, QC_EVEN32_S,
                  QC_QOPS_NAME(avgpool_s8), avgpool_s8_avx512)

/* Each plane in 64-byte pieces (the last one a masked load) summed by vpsadbw against zero into
 * 64-bit lanes; int8 is summed as q + 128 (xor 0x80, the masked-off bytes zeroed after it),
 * then 128 * n taken off. */
static void plane_sums_avx512(const void *x, int sx, size_t nplanes, size_t n, int32_t *sums) {
    const __m512i flip = _mm512_set1_epi8(sx ? (char)0x80 : 0), zero = _mm512_setzero_si512();
    const size_t nfull = n / 64 * 64;
    const __mmask64 kt = n % 64 ? ((__mmask64)1 << (n % 64)) - 1 : 0;
    const int64_t off = sx ? 128 * (int64_t)n : 0;
    for (size_t i = 0; i < nplanes; i++) {
        const uint8_t *p = (const uint8_t *)x + i * n;
        __m512i acc = zero;
        for (size_t j = 0; j < nfull; j += 64)
            acc = _mm512_add_epi64(
                acc, _mm512_sad_epu8(_mm512_xor_si512(_mm512_loadu_si512(p + j), flip), zero));
        if (kt) {
            const __m512i v = _mm512_maskz_mov_epi8(
                kt, _mm512_xor_si512(_mm512_maskz_loadu_epi8(kt, p + nfull), flip));
            acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, zero));
        }
        sums[i] = (int32_t)(_mm512_reduce_add_epi64(acc) - off);
    }
}

const qc_qops_impl qc_qops__avx512 = {
    maxpool_s8_avx512,
    maxpool_u8_avx512,
    avgpool_s8_avx512,
    avgpool_u8_avx512,
    add_avx512,
    mul_avx512,
    lut8_avx512,
    requant_avx512,
    plane_sums_avx512,
};
