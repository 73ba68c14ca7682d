/* Portable calibration kernels: the ground truth every SIMD variant must match bit for bit. */
#include "calib/calib.h"

#include <math.h>

void qc_abs_histogram_f32(const float *x, size_t n, double inv_width, size_t bins,
                          int64_t *counts) {
    if (bins == 0) return;
    for (size_t i = 0; i < n; i++) {
        double t = (double)fabsf(x[i]) * inv_width;
        size_t b = t < (double)bins ? (size_t)t : bins - 1; /* NaN: the last bin, not UB */
        counts[b]++;
    }
}

double qc_fq_sq_error__scalar(const float *x, size_t n, float scale, float zp, float qmin,
                              float qmax) {
    double lanes[QC_STATS_LANES] = {0};
    for (size_t i = 0; i < n; i++) {
        float q = nearbyintf(x[i] / scale) + zp;
        q = QC_MIN(QC_MAX(q, qmin), qmax);
        double d = (double)x[i] - (double)((q - zp) * scale);
        lanes[i % QC_STATS_LANES] += d * d;
    }
    double err = 0.0;
    for (int l = 0; l < QC_STATS_LANES; l++) err += lanes[l];
    return err;
}

size_t qc_mse_clip_search_f32(qc_fq_sq_error_fn errfn, const float *x, size_t n, float mn,
                              float mx, int qmin, int qmax, int symmetric,
                              const float *fractions, size_t k, double *errors) {
    size_t best = 0;
    double best_err = INFINITY;
    for (size_t c = 0; c < k; c++) {
        float lo = mn * fractions[c], hi = mx * fractions[c];
        float scale, zp;
        if (symmetric) {
            float a = QC_MAX(-lo, hi);
            scale = (2.0f * a) / (float)(qmax - qmin);
            zp = floorf((float)(qmin + qmax + 1) / 2.0f);
        } else {
            scale = (hi - lo) / (float)(qmax - qmin);
            zp = scale > 0.0f ? nearbyintf((float)qmin - lo / scale) : 0.0f;
            zp = QC_MIN(QC_MAX(zp, (float)qmin), (float)qmax);
        }
        double err = 0.0;
        if (scale > 0.0f && isfinite(scale)) {
            err = errfn(x, n, scale, zp, (float)qmin, (float)qmax);
        } else {
            for (size_t i = 0; i < n; i++) err += (double)x[i] * (double)x[i];
        }
        if (errors) errors[c] = err;
        if (err < best_err) {
            best_err = err;
            best = c;
        }
    }
    return best;
}

void qc_hist_mse_f64(const int64_t *counts, size_t bins, double width, int levels,
                     double *errors) {
    for (size_t i = 0; i < bins; i++) {
        double s = (double)(i + 1) * width / (double)levels;
        double err = 0.0;
        for (size_t j = 0; j < bins; j++) {
            if (!counts[j]) continue;
            double c = ((double)j + 0.5) * width;
            double q = nearbyint(c / s);
            q = q > (double)levels ? (double)levels : q;
            double d = c - q * s;
            err += (double)counts[j] * d * d;
        }
        errors[i] = err;
    }
}

#include "calib/error_stats_impl.h"

void qc_error_stats__scalar(const float *x, const void *q, int is_signed, size_t n, float scale,
                            int32_t zp, qc_error_stats *acc) {
    qc_stats_lanes a = {{0}, {0}, {0}, {0}};
    qc_stats_lanes_add(&a, x, q, is_signed, n, scale, zp, qc_stats_half_step(scale));
    qc_stats_lanes_reduce(&a, acc);
}
