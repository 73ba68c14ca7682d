/* The portable error-statistics loop and its lane reduction, shared by every ISA's kernel. */
#ifndef QC_ERROR_STATS_IMPL_H
#define QC_ERROR_STATS_IMPL_H

#include <math.h>

#include "calib/calib.h"

/* Per-lane accumulators of qc_error_stats (see calib.h for the lane rule). */
typedef struct {
    double sig[QC_STATS_LANES], err[QC_STATS_LANES];
    float mx[QC_STATS_LANES];
    int64_t cl[QC_STATS_LANES];
} qc_stats_lanes;

/* Elements [0, n) of x/q accumulated into lanes (i % QC_STATS_LANES): the scalar truth. */
QC_INLINE void qc_stats_lanes_add(qc_stats_lanes *a, const float *x, const void *q,
                                  int is_signed, size_t n, float scale, int32_t zp,
                                  float half) {
    for (size_t i = 0; i < n; i++) {
        int l = (int)(i % QC_STATS_LANES);
        int32_t qi = is_signed ? (int32_t)((const int8_t *)q)[i]
                               : (int32_t)((const uint8_t *)q)[i];
        float d = (float)(qi - zp) * scale;
        float xv = x[i];
        float e = fabsf(xv - d);
        double de = (double)xv - (double)d;
        a->sig[l] += (double)xv * (double)xv;
        a->err[l] += de * de;
        a->mx[l] = e > a->mx[l] ? e : a->mx[l];
        a->cl[l] += e > half;
    }
}

/* Lanes summed in lane order into acc. */
QC_INLINE void qc_stats_lanes_reduce(const qc_stats_lanes *a, qc_error_stats *acc) {
    for (int l = 0; l < QC_STATS_LANES; l++) {
        acc->signal += a->sig[l];
        acc->error += a->err[l];
        acc->max_abs = a->mx[l] > acc->max_abs ? a->mx[l] : acc->max_abs;
        acc->clipped += a->cl[l];
    }
}

QC_INLINE float qc_stats_half_step(float scale) { return scale * (0.5f + 1.0f / 2048.0f); }

#endif
