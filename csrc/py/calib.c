/* Bindings for the calib family: |x| histograms, clipping search, quantization error stats. */
#include "py/pyutil.h"

#include <math.h>
#include <stdlib.h>

#include "calib/calib.h"

static const qc_calib_kernels calib_scalar = {qc_error_stats__scalar, qc_fq_sq_error__scalar};
static const qc_calib_kernels calib_avx2 = {qc_error_stats__avx2, qc_fq_sq_error__avx2};
static const qc_calib_kernels calib_avx512 = {qc_error_stats__avx512, qc_fq_sq_error__avx512};

static const qc_variant calib_variants[] = {
    {"calib__avx512", QC_ISA_AVX512, &calib_avx512},
    {"calib__avx2", QC_ISA_AVX2, &calib_avx2},
    {"calib__scalar", QC_ISA_SCALAR, &calib_scalar},
};
static const qc_family calib_family = {"calib", 3, calib_variants};

/* Bound on qmin/qmax and zero points given to the calib kernels (see the checks below). */
#define QC_CALIB_QLIMIT (1 << 24)

static const qc_calib_kernels *calib_kernels(void) {
    return (const qc_calib_kernels *)qc_family_select(&calib_family)->impl;
}

/* A 2-D float32 view (R, L) split into groups of `block` along L (the last one may be short). */
typedef struct {
    const float *x;
    size_t rows, len, block, groups; /* groups per row */
} group_layout;

static int parse_groups(PyObject *xo, PyObject *blocko, PyArrayObject **xa, group_layout *g) {
    PyArrayObject *x = qc_float32_array(xo, "x");
    if (!x) return -1;
    if (PyArray_NDIM(x) != 2) {
        qc_value_error("x: expected a 2-D array, got %d dimensions", PyArray_NDIM(x));
        Py_DECREF(x);
        return -1;
    }
    Py_ssize_t block;
    if (qc_parse_ssize(blocko, "block", &block) < 0) {
        Py_DECREF(x);
        return -1;
    }
    if (block < 1) {
        qc_value_error("block: expected a positive int, got %zd", block);
        Py_DECREF(x);
        return -1;
    }
    g->x = PyArray_DATA(x);
    g->rows = (size_t)PyArray_DIM(x, 0);
    g->len = (size_t)PyArray_DIM(x, 1);
    g->block = (size_t)block;
    g->groups = g->len / g->block + (g->len % g->block != 0); /* no wrap for a huge block */
    *xa = x;
    return 0;
}

static PyObject *py_abs_histogram(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *co;
    double inv_width;
    if (!PyArg_ParseTuple(args, "OOd:_calib_abs_histogram", &xo, &co, &inv_width)) return NULL;
    if (!PyArray_Check(co) || !PyArray_EquivTypenums(PyArray_TYPE((PyArrayObject *)co), NPY_INT64) ||
        PyArray_NDIM((PyArrayObject *)co) != 1 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)co) ||
        !PyArray_ISWRITEABLE((PyArrayObject *)co) || !PyArray_ISALIGNED((PyArrayObject *)co)) {
        return (qc_type_error("counts: expected a writable contiguous 1-D int64 array"), NULL);
    }
    if (!(inv_width >= 0.0) || !isfinite(inv_width)) {
        return (qc_value_error("inv_width: expected a finite value >= 0, got %R",
                               PyTuple_GET_ITEM(args, 2)), NULL);
    }
    PyArrayObject *counts = (PyArrayObject *)co;
    PyArrayObject *x = qc_float32_array(xo, "x");
    if (!x) return NULL;
    const float *xp = PyArray_DATA(x);
    size_t n = (size_t)PyArray_SIZE(x), bins = (size_t)PyArray_SIZE(counts);
    int64_t *cp = PyArray_DATA(counts);
    Py_BEGIN_ALLOW_THREADS
    qc_abs_histogram_f32(xp, n, inv_width, bins, cp);
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    Py_RETURN_NONE;
}

typedef struct {
    qc_fq_sq_error_fn fn;
    group_layout g;
    const float *mins, *maxs, *fractions;
    size_t k;
    int qmin, qmax, symmetric;
    int64_t *best;
    double *errors; /* (rows, groups, k) or NULL */
} mse_ctx;

static void mse_task(void *vctx, size_t row) {
    mse_ctx *c = vctx;
    const group_layout *g = &c->g;
    for (size_t b = 0; b < g->groups; b++) {
        size_t lo = b * g->block, hi = QC_MIN(g->len, lo + g->block);
        size_t gi = row * g->groups + b;
        c->best[gi] = (int64_t)qc_mse_clip_search_f32(
            c->fn, g->x + row * g->len + lo, hi - lo, c->mins[gi], c->maxs[gi], c->qmin,
            c->qmax, c->symmetric, c->fractions, c->k, c->errors ? c->errors + gi * c->k : NULL);
    }
}

static PyObject *py_mse_clip_search(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"x", "block", "mins", "maxs", "qmin", "qmax", "symmetric",
                             "fractions", "return_errors", NULL};
    PyObject *xo, *blocko, *mino, *maxo, *fo;
    int qmin, qmax, symmetric, want_errors = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOiipO|p:_calib_mse_clip_search", kwlist, &xo,
                                     &blocko, &mino, &maxo, &qmin, &qmax, &symmetric, &fo,
                                     &want_errors))
        return NULL;
    if (qmin >= qmax) return (qc_value_error("qmin, qmax: expected qmin < qmax, got %d, %d",
                                             qmin, qmax), NULL);
    /* the search computes qmax - qmin and qmin + qmax + 1 in int, and treats the bounds as
     * exact float32 values: both hold for |q| <= 2^24 (every integer format quantc has) */
    if (qmin < -QC_CALIB_QLIMIT || qmax > QC_CALIB_QLIMIT) {
        return (qc_value_error("qmin, qmax: expected values in [-2**24, 2**24], got %d, %d",
                               qmin, qmax), NULL);
    }
    PyArrayObject *x = NULL, *mins = NULL, *maxs = NULL, *fr = NULL, *best = NULL;
    PyArrayObject *errs = NULL;
    group_layout g;
    if (parse_groups(xo, blocko, &x, &g) < 0) return NULL;
    mins = qc_float32_array(mino, "mins");
    maxs = mins ? qc_float32_array(maxo, "maxs") : NULL;
    fr = maxs ? qc_float32_array(fo, "fractions") : NULL;
    if (!fr) goto fail;
    if ((size_t)PyArray_SIZE(mins) != g.rows * g.groups ||
        (size_t)PyArray_SIZE(maxs) != g.rows * g.groups) {
        qc_value_error("mins, maxs: expected %zu values each (rows x groups), got %zd and %zd",
                       g.rows * g.groups, (Py_ssize_t)PyArray_SIZE(mins),
                       (Py_ssize_t)PyArray_SIZE(maxs));
        goto fail;
    }
    if (PyArray_SIZE(fr) < 1) {
        qc_value_error("fractions: expected at least one candidate, got 0");
        goto fail;
    }
    npy_intp dims[2] = {(npy_intp)g.rows, (npy_intp)g.groups};
    best = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
    if (!best) goto fail;
    if (want_errors) {
        npy_intp edims[3] = {(npy_intp)g.rows, (npy_intp)g.groups, PyArray_SIZE(fr)};
        errs = (PyArrayObject *)PyArray_SimpleNew(3, edims, NPY_FLOAT64);
        if (!errs) goto fail;
    }
    mse_ctx ctx = {calib_kernels()->fq_sq_error, g, PyArray_DATA(mins), PyArray_DATA(maxs),
                   PyArray_DATA(fr), (size_t)PyArray_SIZE(fr), qmin, qmax, symmetric,
                   PyArray_DATA(best), errs ? PyArray_DATA(errs) : NULL};
    Py_BEGIN_ALLOW_THREADS
    qc_parallel_for(g.rows, mse_task, &ctx);
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    Py_DECREF(mins);
    Py_DECREF(maxs);
    Py_DECREF(fr);
    if (errs) return Py_BuildValue("(NN)", best, errs);
    return (PyObject *)best;
fail:
    Py_XDECREF(best);
    Py_XDECREF(errs);
    Py_XDECREF(x);
    Py_XDECREF(mins);
    Py_XDECREF(maxs);
    Py_XDECREF(fr);
    return NULL;
}

static PyObject *py_hist_mse(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *co;
    double width;
    int levels;
    if (!PyArg_ParseTuple(args, "Odi:_calib_hist_mse", &co, &width, &levels)) return NULL;
    if (!(width > 0.0) || !isfinite(width) || levels < 1) {
        return (qc_value_error("width, levels: expected a positive finite width and levels >= 1"),
                NULL);
    }
    static const int allowed[] = {NPY_INT64, -1};
    PyArrayObject *counts = qc_int_array(co, "counts", allowed);
    if (!counts) return NULL;
    if (PyArray_NDIM(counts) != 1) {
        Py_DECREF(counts);
        return (qc_value_error("counts: expected a 1-D array, got %d dimensions",
                               PyArray_NDIM(counts)), NULL);
    }
    npy_intp bins = PyArray_DIM(counts, 0);
    PyArrayObject *err = (PyArrayObject *)PyArray_SimpleNew(1, &bins, NPY_FLOAT64);
    if (!err) {
        Py_DECREF(counts);
        return NULL;
    }
    const int64_t *cp = PyArray_DATA(counts);
    double *ep = PyArray_DATA(err);
    Py_BEGIN_ALLOW_THREADS
    qc_hist_mse_f64(cp, (size_t)bins, width, levels, ep);
    Py_END_ALLOW_THREADS
    Py_DECREF(counts);
    return (PyObject *)err;
}

typedef struct {
    qc_error_stats_fn fn;
    group_layout g;
    const void *q;
    int is_signed;
    const float *scale;
    const int32_t *zp;
    qc_error_stats *rows;
} stats_ctx;

static void stats_task(void *vctx, size_t row) {
    stats_ctx *c = vctx;
    const group_layout *g = &c->g;
    qc_error_stats acc = {0.0, 0.0, 0.0f, 0};
    for (size_t b = 0; b < g->groups; b++) {
        size_t lo = b * g->block, hi = QC_MIN(g->len, lo + g->block);
        size_t off = row * g->len + lo, gi = row * g->groups + b;
        c->fn(g->x + off, (const char *)c->q + off, c->is_signed, hi - lo,
                             c->scale[gi], c->zp[gi], &acc);
    }
    c->rows[row] = acc;
}

static PyObject *py_error_stats(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *qo, *blocko, *so, *zo;
    if (!PyArg_ParseTuple(args, "OOOOO:_calib_error_stats", &xo, &qo, &blocko, &so, &zo))
        return NULL;
    static const int qtypes[] = {NPY_INT8, NPY_UINT8, -1};
    static const int ztypes[] = {NPY_INT32, -1};
    PyArrayObject *x = NULL, *q = NULL, *s = NULL, *z = NULL;
    qc_error_stats *rows = NULL;
    group_layout g;
    if (parse_groups(xo, blocko, &x, &g) < 0) return NULL;
    q = qc_int_array(qo, "q", qtypes);
    s = q ? qc_float32_array(so, "scale") : NULL;
    z = s ? qc_int_array(zo, "zero_point", ztypes) : NULL;
    if (!z) goto fail;
    if (PyArray_NDIM(q) != 2 || PyArray_DIM(q, 0) != (npy_intp)g.rows ||
        PyArray_DIM(q, 1) != (npy_intp)g.len) {
        qc_value_error("q: expected the shape of x");
        goto fail;
    }
    if ((size_t)PyArray_SIZE(s) != g.rows * g.groups ||
        (size_t)PyArray_SIZE(z) != g.rows * g.groups) {
        qc_value_error("scale, zero_point: expected %zu values each (rows x groups)",
                       g.rows * g.groups);
        goto fail;
    }
    {
        /* q - zp is computed in int32: bound the zero points so it cannot overflow */
        const int32_t *zv = PyArray_DATA(z);
        for (size_t i = 0; i < g.rows * g.groups; i++) {
            if (zv[i] < -QC_CALIB_QLIMIT || zv[i] > QC_CALIB_QLIMIT) {
                qc_value_error("zero_point: expected values in [-2**24, 2**24], got %d at index "
                               "%zu", (int)zv[i], i);
                goto fail;
            }
        }
    }
    rows = calloc(g.rows ? g.rows : 1, sizeof *rows);
    if (!rows) {
        PyErr_NoMemory();
        goto fail;
    }
    stats_ctx ctx = {calib_kernels()->error_stats, g, PyArray_DATA(q),
                     PyArray_TYPE(q) == NPY_INT8, PyArray_DATA(s), PyArray_DATA(z), rows};
    Py_BEGIN_ALLOW_THREADS
    qc_parallel_for(g.rows, stats_task, &ctx);
    Py_END_ALLOW_THREADS
    /* rows are summed in order: the result does not depend on the thread count */
    qc_error_stats tot = {0.0, 0.0, 0.0f, 0};
    for (size_t r = 0; r < g.rows; r++) {
        tot.signal += rows[r].signal;
        tot.error += rows[r].error;
        tot.max_abs = rows[r].max_abs > tot.max_abs ? rows[r].max_abs : tot.max_abs;
        tot.clipped += rows[r].clipped;
    }
    free(rows);
    Py_DECREF(x);
    Py_DECREF(q);
    Py_DECREF(s);
    Py_DECREF(z);
    return Py_BuildValue("(dddL)", tot.signal, tot.error, (double)tot.max_abs,
                         (long long)tot.clipped);
fail:
    Py_XDECREF(x);
    Py_XDECREF(q);
    Py_XDECREF(s);
    Py_XDECREF(z);
    return NULL;
}

PyMethodDef qc_calib_methods[] = {
    {"_calib_error_stats", py_error_stats, METH_VARARGS,
     "(sum x^2, sum err^2, max |err|, clamped count) of q against 2-D x, per-group params "
     "for blocks of `block` along each row."},
    {"_calib_abs_histogram", py_abs_histogram, METH_VARARGS,
     "Add the histogram of |x| (bin = floor(|x| * inv_width), capped) into int64 counts."},
    {"_calib_mse_clip_search", (PyCFunction)(void (*)(void))py_mse_clip_search,
     METH_VARARGS | METH_KEYWORDS,
     "Per-group index of the MSE-optimal clipping fraction (and every candidate's error)."},
    {"_calib_hist_mse", py_hist_mse, METH_VARARGS,
     "Squared error of a |x| histogram for every candidate threshold (i + 1) * width."},
    {NULL, NULL, 0, NULL},
};

int qc_calib_init(PyObject *m) {
    (void)m;
    return qc_register_family(&calib_family);
}
