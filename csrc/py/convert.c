/* Bindings for the conversion kernels: round, clamp, saturate_cast, to_float16, to/from_bfloat16. */
#include "py/pyutil.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "convert/convert.h"

/* Elements per task: large arrays are split in chunks of at least this many elements (a
 * multiple of 64, so every chunk but the last runs whole vectors). Element-wise kernels give
 * the same result for any split. */
#define QC_CONVERT_GRAIN ((size_t)1 << 16)

typedef enum { JOB_ROUND, JOB_CLAMP_F32, JOB_CLAMP_INT, JOB_CAST, JOB_F16, JOB_BF16, JOB_FROM_BF16 } job_kind;

typedef struct {
    job_kind kind;
    union {
        qc_round_fn round;
        qc_clamp_f32_fn clamp_f32;
        qc_clamp_int_fn clamp_int;
        qc_cast_fn cast;
        qc_f32_to_u16_fn f32_to_u16;
        qc_u16_to_f32_fn u16_to_f32;
    } fn;
    const char *x;
    char *y;
    size_t xsize, ysize, n, chunk;
    float flo, fhi;
    int64_t ilo, ihi;
} job;

static void run_range(const job *j, size_t begin, size_t count) {
    const void *x = j->x + begin * j->xsize;
    void *y = j->y + begin * j->ysize;
    switch (j->kind) {
    case JOB_ROUND: j->fn.round((const float *)x, (float *)y, count); break;
    case JOB_CLAMP_F32: j->fn.clamp_f32((const float *)x, (float *)y, count, j->flo, j->fhi); break;
    case JOB_CLAMP_INT: j->fn.clamp_int(x, y, count, j->ilo, j->ihi); break;
    case JOB_CAST: j->fn.cast(x, y, count); break;
    case JOB_F16:
    case JOB_BF16: j->fn.f32_to_u16((const float *)x, (uint16_t *)y, count); break;
    case JOB_FROM_BF16: j->fn.u16_to_f32((const uint16_t *)x, (float *)y, count); break;
    }
}

static void job_task(void *ctx, size_t task) {
    const job *j = (const job *)ctx;
    size_t begin = task * j->chunk;
    run_range(j, begin, QC_MIN(j->chunk, j->n - begin));
}

/* Run a job over x -> y with the GIL released, split over threads when large. */
static void run_job(job *j, PyArrayObject *x, PyArrayObject *y) {
    j->x = PyArray_BYTES(x);
    j->y = PyArray_BYTES(y);
    j->xsize = (size_t)PyArray_ITEMSIZE(x);
    j->ysize = (size_t)PyArray_ITEMSIZE(y);
    j->n = (size_t)PyArray_SIZE(x);
    if (j->n == 0) return;
    size_t ntasks = qc_split_count(j->n, QC_CONVERT_GRAIN);
    Py_BEGIN_ALLOW_THREADS
    if (ntasks <= 1) {
        run_range(j, 0, j->n);
    } else {
        size_t chunk = (j->n + ntasks - 1) / ntasks;
        j->chunk = (chunk + 63) & ~(size_t)63;
        qc_parallel_for((j->n + j->chunk - 1) / j->chunk, job_task, j);
    }
    Py_END_ALLOW_THREADS
}

/* out= may alias x (in place is fine: each element is read before it is written), but a
 * partial overlap, or the same memory with a different element size, needs a private copy of
 * x first. Replaces *x with the copy; returns -1 on error. */
static int separate_input(PyArrayObject **x, PyArrayObject *y) {
    char *x0 = PyArray_BYTES(*x), *y0 = PyArray_BYTES(y);
    char *x1 = x0 + PyArray_NBYTES(*x), *y1 = y0 + PyArray_NBYTES(y);
    if (!(x0 < y1 && y0 < x1)) return 0;
    if (x0 == y0 && PyArray_ITEMSIZE(*x) == PyArray_ITEMSIZE(y)) return 0;
    PyArrayObject *c = (PyArrayObject *)PyArray_NewCopy(*x, NPY_CORDER);
    if (!c) return -1;
    Py_DECREF(*x);
    *x = c;
    return 0;
}

/* Output for x's shape (new or validated out=), with x made safe against overlap. */
static PyArrayObject *make_output(PyObject *out, PyArrayObject **x, int typenum) {
    PyArrayObject *y = qc_output(out, "out", PyArray_NDIM(*x), PyArray_DIMS(*x), typenum);
    if (y && out && out != Py_None && separate_input(x, y) < 0) {
        Py_DECREF(y);
        return NULL;
    }
    return y;
}

/* Integer array types by (signedness, size): any int64 spelling (long, longlong) maps to S64. */
static int int_id(int typenum, int *id) {
    if (!PyTypeNum_ISINTEGER(typenum) || PyTypeNum_ISBOOL(typenum)) return -1;
    PyArray_Descr *d = PyArray_DescrFromType(typenum);
    if (!d) {
        PyErr_Clear();
        return -1;
    }
    npy_intp size = PyDataType_ELSIZE(d);
    Py_DECREF(d);
    int s = PyTypeNum_ISSIGNED(typenum) ? 0 : 1;
    switch (size) {
    case 1: *id = QC_INT_S8 + s; return 0;
    case 2: *id = QC_INT_S16 + s; return 0;
    case 4: *id = QC_INT_S32 + s; return 0;
    case 8: *id = QC_INT_S64 + s; return 0;
    default: return -1;
    }
}

/* Name and limits of each integer type, for bounds checks and messages. */
static const struct {
    const char *name;
    int64_t min;
    uint64_t max;
} g_int_info[QC_INT_COUNT] = {
    [QC_INT_S8] = {"int8", INT8_MIN, INT8_MAX},
    [QC_INT_U8] = {"uint8", 0, UINT8_MAX},
    [QC_INT_S16] = {"int16", INT16_MIN, INT16_MAX},
    [QC_INT_U16] = {"uint16", 0, UINT16_MAX},
    [QC_INT_S32] = {"int32", INT32_MIN, INT32_MAX},
    [QC_INT_U32] = {"uint32", 0, UINT32_MAX},
    [QC_INT_S64] = {"int64", INT64_MIN, INT64_MAX},
    [QC_INT_U64] = {"uint64", 0, UINT64_MAX},
};

/* Name of an array's dtype for messages ("float32", "bool", "complex128", "object"). */
static const char *dtype_name(PyArrayObject *a) {
    return qc_typename(PyArray_TYPE(a));
}

/* ---------------------------------------------------------------------------------------- */

static const char *const g_round_modes[QC_ROUND_COUNT] = {
    [QC_ROUND_HALF_EVEN] = "half_even", [QC_ROUND_HALF_AWAY] = "half_away",
    [QC_ROUND_HALF_UP] = "half_up",     [QC_ROUND_FLOOR] = "floor",
    [QC_ROUND_CEIL] = "ceil",           [QC_ROUND_TRUNC] = "trunc",
};

static int parse_round_mode(PyObject *obj, qc_round_mode *mode) {
    const char *expected = "one of half_even, half_away, half_up, floor, ceil, trunc";
    if (obj == NULL) {
        *mode = QC_ROUND_HALF_EVEN;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        return qc_type_error("mode: expected %s, got %s", expected, Py_TYPE(obj)->tp_name);
    }
    const char *s = qc_utf8_or_null(obj);
    if (!s) return qc_value_error("mode: expected %s, got %R", expected, obj);
    for (int i = 0; i < QC_ROUND_COUNT; i++) {
        if (strcmp(s, g_round_modes[i]) == 0) {
            *mode = (qc_round_mode)i;
            return 0;
        }
    }
    return qc_value_error("mode: expected %s, got %R", expected, obj);
}

PyDoc_STRVAR(round_doc,
"round(x, mode='half_even', *, out=None)\n--\n\n"
"Round to integral values, as float32.\n\n"
"x is converted to float32 first (float16/64 and integer inputs accepted). Modes:\n"
"``half_even`` ties to even (``np.rint``), ``half_away`` ties away from zero (C ``round``),\n"
"``half_up`` ties toward +inf (``floor(x + 0.5)`` computed exactly, so 0.49999997 -> 0; every\n"
"result in (-0.5, 0] is +0.0), ``floor``, ``ceil``, ``trunc``. NaN stays NaN, +-inf stay,\n"
"-0.0 keeps its sign except under ``half_up``. Returns a float32 array of x's shape\n"
"(``out`` if given: float32, C-contiguous, same shape).");

static PyObject *py_round(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"x", "mode", "out", NULL};
    PyObject *xo, *modeo = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$O:round", kwlist, &xo, &modeo, &out))
        return NULL;
    qc_round_mode mode = QC_ROUND_HALF_EVEN;
    if (parse_round_mode(modeo, &mode) < 0) return NULL;
    PyArrayObject *x = qc_float32_array(xo, "x");
    if (!x) return NULL;
    PyArrayObject *y = make_output(out, &x, NPY_FLOAT32);
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    const qc_round_kernels *k = qc_family_select(&qc_round_family)->impl;
    job j = {.kind = JOB_ROUND};
    j.fn.round = k->mode[mode] ? k->mode[mode] : qc_round_kernels__scalar.mode[mode];
    run_job(&j, x, y);
    Py_DECREF(x);
    return (PyObject *)y;
}

/* ---------------------------------------------------------------------------------------- */

/* A float bound: None -> `dflt`; a real number that float32 can hold (NaN refused). */
static int parse_float_bound(PyObject *obj, const char *arg, float dflt, float *v) {
    if (obj == Py_None) {
        *v = dflt;
        return 0;
    }
    if (PyBool_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj) ||
        (PyArray_Check(obj) && PyArray_NDIM((PyArrayObject *)obj) != 0)) {
        return qc_type_error("%s: expected a real scalar or None, got %s", arg, Py_TYPE(obj)->tp_name);
    }
    double d = PyFloat_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return qc_type_error("%s: expected a real scalar or None, got %s", arg, Py_TYPE(obj)->tp_name);
    }
    if (isnan(d)) return qc_value_error("%s: expected a number, got nan", arg);
    if (isfinite(d) && fabs(d) > (double)FLT_MAX) {
        return qc_value_error("%s: expected a value representable in float32, got %R", arg, obj);
    }
    *v = (float)d;
    return 0;
}

/* An integer bound for type `id`: None -> the type's limit; an integer in the type's range. */
static int parse_int_bound(PyObject *obj, const char *arg, int id, int is_hi, int64_t *v) {
    const char *tname = g_int_info[id].name;
    int is_signed = (id % 2) == 0;
    if (obj == Py_None) {
        *v = is_hi ? (int64_t)g_int_info[id].max : g_int_info[id].min;
        return 0;
    }
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        return qc_type_error("%s: expected an integer or None for a %s array, got %s", arg,
                             tname, Py_TYPE(obj)->tp_name);
    }
    PyObject *i = PyNumber_Index(obj);
    if (!i) return -1;
    int overflow = 0;
    long long s = PyLong_AsLongLongAndOverflow(i, &overflow);
    int ok;
    if (s == -1 && PyErr_Occurred()) {
        Py_DECREF(i);
        return -1;
    }
    if (overflow == 0) {
        ok = s >= g_int_info[id].min && (s < 0 || (uint64_t)s <= g_int_info[id].max);
        *v = s;
    } else if (overflow > 0 && !is_signed) {
        unsigned long long u = PyLong_AsUnsignedLongLong(i);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            ok = 0;
        } else {
            ok = 1;
            *v = (int64_t)u; /* bit pattern; the uint64 kernel reads it back as unsigned */
        }
    } else {
        ok = 0;
    }
    Py_DECREF(i);
    if (!ok) {
        if (is_signed) {
            return qc_value_error("%s: expected an integer in [%lld, %llu] for a %s array, got %R",
                                  arg, (long long)g_int_info[id].min,
                                  (unsigned long long)g_int_info[id].max, tname, obj);
        }
        return qc_value_error("%s: expected an integer in [0, %llu] for a %s array, got %R", arg,
                              (unsigned long long)g_int_info[id].max, tname, obj);
    }
    return 0;
}

PyDoc_STRVAR(clamp_doc,
"clamp(x, lo, hi, *, out=None)\n--\n\n"
"Limit x to [lo, hi] element-wise.\n\n"
"Integer arrays (int8 ... uint64) keep their dtype; lo/hi must then be integers within that\n"
"dtype's range. Float arrays (float16/32/64) are converted to float32 and the result is\n"
"float32; lo/hi are rounded to float32. lo or hi may be None (no bound on that side).\n"
"lo > hi, a NaN bound or an out-of-range bound raise ValueError. NaN in x stays NaN (as\n"
"np.clip); -0.0 and +0.0 compare equal, so x's zero is kept.");

static PyObject *py_clamp(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"x", "lo", "hi", "out", NULL};
    PyObject *xo, *loo, *hio, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|$O:clamp", kwlist, &xo, &loo, &hio, &out))
        return NULL;
    PyArrayObject *a = qc_any_array(xo, "x");
    if (!a) return NULL;
    int t = PyArray_TYPE(a), id;
    PyArrayObject *x;
    job j;
    memset(&j, 0, sizeof j);
    if (int_id(t, &id) == 0) {
        if (parse_int_bound(loo, "lo", id, 0, &j.ilo) < 0 ||
            parse_int_bound(hio, "hi", id, 1, &j.ihi) < 0) {
            Py_DECREF(a);
            return NULL;
        }
        int bad = id % 2 == 0 ? j.ilo > j.ihi : (uint64_t)j.ilo > (uint64_t)j.ihi;
        if (bad) {
            Py_DECREF(a);
            return (qc_value_error("lo: expected lo <= hi, got lo=%R > hi=%R", loo, hio), NULL);
        }
        x = qc_native_array(a);
        Py_DECREF(a);
        if (!x) return NULL;
        const qc_clamp_kernels *k = qc_family_select(&qc_clamp_family)->impl;
        j.kind = JOB_CLAMP_INT;
        j.fn.clamp_int = k->i[id] ? k->i[id] : qc_clamp_kernels__scalar.i[id];
    } else if (PyTypeNum_ISFLOAT(t) && t != NPY_LONGDOUBLE) {
        if (parse_float_bound(loo, "lo", -INFINITY, &j.flo) < 0 ||
            parse_float_bound(hio, "hi", INFINITY, &j.fhi) < 0) {
            Py_DECREF(a);
            return NULL;
        }
        if (j.flo > j.fhi) {
            Py_DECREF(a);
            return (qc_value_error("lo: expected lo <= hi, got lo=%R > hi=%R", loo, hio), NULL);
        }
        x = qc_float32_array((PyObject *)a, "x");
        Py_DECREF(a);
        if (!x) return NULL;
        const qc_clamp_kernels *k = qc_family_select(&qc_clamp_family)->impl;
        j.kind = JOB_CLAMP_F32;
        j.fn.clamp_f32 = k->f32 ? k->f32 : qc_clamp_kernels__scalar.f32;
    } else {
        qc_type_error("x: expected an integer or float16/32/64 array, got %s", dtype_name(a));
        Py_DECREF(a);
        return NULL;
    }
    PyArrayObject *y = make_output(out, &x, PyArray_TYPE(x));
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    run_job(&j, x, y);
    Py_DECREF(x);
    return (PyObject *)y;
}

/* ---------------------------------------------------------------------------------------- */

PyDoc_STRVAR(saturate_cast_doc,
"saturate_cast(x, dtype, *, out=None)\n--\n\n"
"Convert an integer array to the integer ``dtype``, saturating at its limits.\n\n"
"Values below dtype's minimum become the minimum, above its maximum the maximum (int32 300\n"
"-> int8 127, int16 -5 -> uint8 0, uint64 2**63 -> int64 2**63 - 1). Every integer\n"
"dtype pair int8 ... uint64 is accepted. Float input raises TypeError: round it first\n"
"(``qc.round``) so the rounding is explicit.");

static PyObject *py_saturate_cast(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"x", "dtype", "out", NULL};
    PyObject *xo, *dto, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$O:saturate_cast", kwlist, &xo, &dto, &out))
        return NULL;
    int dt, did, sid;
    if (qc_parse_int_dtype(dto, "dtype", NULL, &dt) < 0) return NULL;
    if (int_id(dt, &did) < 0) {
        return (qc_value_error("dtype: expected an integer dtype of 1, 2, 4 or 8 bytes, got %R", dto),
                NULL);
    }
    PyArrayObject *a = qc_any_array(xo, "x");
    if (!a) return NULL;
    if (int_id(PyArray_TYPE(a), &sid) < 0) {
        qc_type_error("x: expected an integer array, got %s%s", dtype_name(a),
                      PyTypeNum_ISFLOAT(PyArray_TYPE(a)) ? " (round it first, e.g. with qc.round)"
                                                         : "");
        Py_DECREF(a);
        return NULL;
    }
    PyArrayObject *x = qc_native_array(a);
    Py_DECREF(a);
    if (!x) return NULL;
    PyArrayObject *y = make_output(out, &x, dt);
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    const qc_saturate_kernels *k = qc_family_select(&qc_saturate_cast_family)->impl;
    job j = {.kind = JOB_CAST};
    j.fn.cast = k->cast[sid][did] ? k->cast[sid][did] : qc_saturate_kernels__scalar.cast[sid][did];
    run_job(&j, x, y);
    Py_DECREF(x);
    return (PyObject *)y;
}

/* ---------------------------------------------------------------------------------------- */

static PyObject *f32_to_u16(PyObject *args, PyObject *kwargs, const char *fmt, int typenum,
                            job_kind kind) {
    static char *kwlist[] = {"x", "out", NULL};
    PyObject *xo, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, &xo, &out)) return NULL;
    PyArrayObject *x = qc_float32_array(xo, "x");
    if (!x) return NULL;
    PyArrayObject *y = make_output(out, &x, typenum);
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    job j = {.kind = kind};
    if (kind == JOB_F16) {
        const qc_float16_kernels *k = qc_family_select(&qc_float16_family)->impl;
        j.fn.f32_to_u16 = k->to_f16 ? k->to_f16 : qc_float16_kernels__scalar.to_f16;
    } else {
        const qc_bfloat16_kernels *k = qc_family_select(&qc_bfloat16_family)->impl;
        j.fn.f32_to_u16 = k->to_bf16 ? k->to_bf16 : qc_bfloat16_kernels__scalar.to_bf16;
    }
    run_job(&j, x, y);
    Py_DECREF(x);
    return (PyObject *)y;
}

PyDoc_STRVAR(to_float16_doc,
"to_float16(x, *, out=None)\n--\n\n"
"Convert to IEEE float16, rounding to nearest even.\n\n"
"x is converted to float32 first. Overflow (|x| >= 65520) gives +-inf, results below 2^-14\n"
"are float16 denormals rounded exactly, NaN stays NaN (quiet, sign and top payload bits\n"
"kept, as F16C vcvtps2ph). Bit-identical to ``x.astype(np.float32).astype(np.float16)``\n"
"for every float32 except signaling NaNs, which NumPy leaves signaling (checked over all\n"
"2^32 inputs).");

static PyObject *py_to_float16(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return f32_to_u16(args, kwargs, "O|$O:to_float16", NPY_FLOAT16, JOB_F16);
}

PyDoc_STRVAR(to_bfloat16_doc,
"to_bfloat16(x, *, out=None)\n--\n\n"
"Convert to bfloat16, returned as uint16 bit patterns (the top half of a float32).\n\n"
"x is converted to float32 first, then rounded to nearest even on its bits:\n"
"``(bits + 0x7FFF + ((bits >> 16) & 1)) >> 16``. Overflow rounds to +-inf, inf stays inf,\n"
"float32 denormals are rounded like any value (never flushed), NaN stays NaN (quieted, sign\n"
"kept). ``from_bfloat16`` reverses it exactly for representable values;\n"
"``to_bfloat16(x).view(ml_dtypes.bfloat16)`` is an ``ml_dtypes.bfloat16`` array equal to\n"
"``x.astype(ml_dtypes.bfloat16)``. ``x`` may itself be bfloat16 or another ml_dtypes float.");

static PyObject *py_to_bfloat16(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return f32_to_u16(args, kwargs, "O|$O:to_bfloat16", NPY_UINT16, JOB_BF16);
}

PyDoc_STRVAR(from_bfloat16_doc,
"from_bfloat16(bits, *, out=None)\n--\n\n"
"Widen bfloat16 values to float32, exactly: ``bits << 16``.\n\n"
"``bits`` is a uint16 array of bfloat16 bit patterns (as ``to_bfloat16`` returns) or an\n"
"``ml_dtypes.bfloat16`` array (read as its bit patterns, without a copy).");

static PyObject *py_from_bfloat16(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"bits", "out", NULL};
    static const int allowed[] = {NPY_UINT16, -1};
    PyObject *xo, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$O:from_bfloat16", kwlist, &xo, &out))
        return NULL;
    PyArrayObject *x;
    if (PyArray_Check(xo) && PyArray_DESCR((PyArrayObject *)xo)->type_num >= NPY_USERDEF &&
        PyArray_ITEMSIZE((PyArrayObject *)xo) == 2 &&
        strcmp(PyArray_DESCR((PyArrayObject *)xo)->typeobj->tp_name, "ml_dtypes.bfloat16") == 0) {
        /* an ml_dtypes.bfloat16 array: the same bits, read as uint16 (a view, no copy) */
        PyObject *v = PyArray_View((PyArrayObject *)xo, PyArray_DescrFromType(NPY_UINT16), NULL);
        if (!v) return NULL;
        x = qc_int_array(v, "bits", allowed);
        Py_DECREF(v);
    } else {
        x = qc_int_array(xo, "bits", allowed);
    }
    if (!x) return NULL;
    PyArrayObject *y = make_output(out, &x, NPY_FLOAT32);
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    const qc_bfloat16_kernels *k = qc_family_select(&qc_bfloat16_family)->impl;
    job j = {.kind = JOB_FROM_BF16};
    j.fn.u16_to_f32 = k->from_bf16 ? k->from_bf16 : qc_bfloat16_kernels__scalar.from_bf16;
    run_job(&j, x, y);
    Py_DECREF(x);
    return (PyObject *)y;
}

/* _pack_bits(q, bits): q a C-contiguous array of 1-byte elements (checked by the caller in
 * quantc/_lowbit.py), bits 4 or 2 -> a new 1-D uint8 array of the packed bytes. */
static PyObject *py_pack_bits(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *qo;
    int bits;
    if (!PyArg_ParseTuple(args, "Oi:_pack_bits", &qo, &bits)) return NULL;
    if (bits != 4 && bits != 2) {
        return (qc_value_error("bits: expected 4 or 2, got %d", bits), NULL);
    }
    if (!PyArray_Check(qo) || PyArray_ITEMSIZE((PyArrayObject *)qo) != 1 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)qo)) {
        return (qc_type_error("q: expected a C-contiguous array of 1-byte values"), NULL);
    }
    PyArrayObject *q = (PyArrayObject *)qo;
    size_t n = (size_t)PyArray_SIZE(q);
    size_t per = (size_t)(8 / bits);
    npy_intp m = (npy_intp)((n + per - 1) / per);
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(1, &m, NPY_UINT8);
    if (!y) return NULL;
    const uint8_t *src = (const uint8_t *)PyArray_DATA(q);
    uint8_t *dst = (uint8_t *)PyArray_DATA(y);
    Py_BEGIN_ALLOW_THREADS
    qc_pack_bits_u8(src, dst, n, bits);
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

/* ---------------------------------------------------------------------------------------- */

#define QC_KW (METH_VARARGS | METH_KEYWORDS)
PyMethodDef qc_convert_methods[] = {
    {"round", (PyCFunction)(void (*)(void))py_round, QC_KW, round_doc},
    {"clamp", (PyCFunction)(void (*)(void))py_clamp, QC_KW, clamp_doc},
    {"saturate_cast", (PyCFunction)(void (*)(void))py_saturate_cast, QC_KW, saturate_cast_doc},
    {"to_float16", (PyCFunction)(void (*)(void))py_to_float16, QC_KW, to_float16_doc},
    {"to_bfloat16", (PyCFunction)(void (*)(void))py_to_bfloat16, QC_KW, to_bfloat16_doc},
    {"from_bfloat16", (PyCFunction)(void (*)(void))py_from_bfloat16, QC_KW, from_bfloat16_doc},
    {"_pack_bits", py_pack_bits, METH_VARARGS, "Sub-byte packing kernel behind qc.pack_bits."},
    {NULL, NULL, 0, NULL},
};

int qc_convert_init(PyObject *m) {
    (void)m;
    if (qc_register_family(&qc_round_family) < 0 || qc_register_family(&qc_clamp_family) < 0 ||
        qc_register_family(&qc_saturate_cast_family) < 0 ||
        qc_register_family(&qc_float16_family) < 0 || qc_register_family(&qc_bfloat16_family) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "quantc: too many kernel families registered");
        return -1;
    }
    return 0;
}
