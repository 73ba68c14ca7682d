/* Bindings for quantize / dequantize / fake_quantize / the min-max pass: parsing, validation. */
#include "py/pyutil.h"

#include <math.h>
#include <string.h>

#include <numpy/arrayscalars.h>

#include "quant/quant.h"

static const int k_q8[] = {NPY_INT8, NPY_UINT8, -1};

static void qrange_of(int typenum, int32_t *qmin, int32_t *qmax) {
    if (typenum == NPY_INT8) {
        *qmin = -128;
        *qmax = 127;
    } else {
        *qmin = 0;
        *qmax = 255;
    }
}

static const qc_quant_kernels *kernels(const qc_family *fam) {
    return (const qc_quant_kernels *)qc_family_select(fam)->impl;
}

/* ---- granularity ---- */

typedef struct {
    qc_layout L;
    size_t block_arg; /* block_size as given (L.block is it capped at the axis length) */
    int has_axis, axis;
    int pndim; /* the shape scale/zero_point must have */
    npy_intp pshape[NPY_MAXDIMS];
    size_t np;
} granularity;

static int parse_granularity(PyArrayObject *x, PyObject *axis_obj,
                             PyObject *block_obj, granularity *g) {
    int ndim = PyArray_NDIM(x);
    const npy_intp *shape = PyArray_DIMS(x);
    size_t block = 0;
    if (qc_parse_axis(axis_obj, "axis", ndim, &g->axis, &g->has_axis) < 0) return -1;
    if (block_obj && block_obj != Py_None) {
        if (PyBool_Check(block_obj) || !PyIndex_Check(block_obj)) {
            return qc_type_error("block_size: expected an int or None, got %s",
                                 Py_TYPE(block_obj)->tp_name);
        }
        Py_ssize_t b;
        if (qc_parse_ssize(block_obj, "block_size", &b) < 0) return -1;
        if (b < 1) return qc_value_error("block_size: expected an int >= 1, got %zd", b);
        if (!g->has_axis) {
            return qc_value_error("block_size: blocked quantization needs an axis, got axis=None "
                                  "with block_size=%zd", b);
        }
        block = (size_t)b;
    }
    g->L.block = block;
    g->block_arg = block;
    if (!g->has_axis) {
        g->L.per_tensor = 1;
        g->L.outer = 1;
        g->L.C = 1;
        g->L.inner = (size_t)PyArray_SIZE(x);
        g->pndim = 0;
        g->np = 1;
        return 0;
    }
    g->L.per_tensor = 0;
    size_t outer = 1, inner = 1;
    for (int d = 0; d < g->axis; d++) outer *= (size_t)shape[d];
    for (int d = g->axis + 1; d < ndim; d++) inner *= (size_t)shape[d];
    g->L.outer = outer;
    g->L.C = (size_t)shape[g->axis];
    g->L.inner = inner;
    if (block == 0) {
        g->pndim = 1;
        g->pshape[0] = shape[g->axis];
    } else {
        /* a block longer than the axis is one block of the whole axis: capping it keeps every
         * block computation (ceil(C / B), (c / B + 1) * B) far from wrapping */
        const size_t C = g->L.C;
        if (block > C) g->L.block = C ? C : 1;
        g->pndim = ndim;
        for (int d = 0; d < ndim; d++) g->pshape[d] = shape[d];
        g->pshape[g->axis] = (npy_intp)(C / block + (C % block != 0));
    }
    g->np = qc_layout_nparams(&g->L);
    return 0;
}

static void shape_text(char *buf, size_t n, int ndim, const npy_intp *shape) {
    size_t len = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && len < n; i++) {
        len += (size_t)snprintf(buf + len, n - len, "%s%" NPY_INTP_FMT, i ? ", " : "", shape[i]);
    }
    if (len < n) snprintf(buf + len, n - len, ndim == 1 ? ",)" : ")");
}

/* Does a parameter array have the shape the granularity needs? Per-tensor accepts () and (1,). */
static int check_param_shape(PyArrayObject *a, const char *arg, const granularity *g) {
    int nd = PyArray_NDIM(a);
    const npy_intp *sh = PyArray_DIMS(a);
    int ok;
    if (g->pndim == 0) {
        ok = nd == 0 || (nd == 1 && sh[0] == 1);
    } else {
        ok = nd == g->pndim;
        for (int d = 0; ok && d < nd; d++) ok = sh[d] == g->pshape[d];
    }
    if (ok) return 0;
    char want[200], got[200];
    shape_text(got, sizeof got, nd, sh);
    if (g->pndim == 0) {
        return qc_value_error("%s: expected a scalar for per-tensor quantization (axis=None), "
                              "got shape %s", arg, got);
    }
    shape_text(want, sizeof want, g->pndim, g->pshape);
    if (g->L.block) {
        return qc_value_error("%s: expected shape %s for blocked quantization (axis=%d, "
                              "block_size=%zu), got shape %s", arg, want, g->axis, g->block_arg,
                              got);
    }
    return qc_value_error("%s: expected shape %s for per-axis quantization (axis=%d), got shape %s",
                          arg, want, g->axis, got);
}

/* ---- scale and zero point ---- */

typedef struct {
    /* per-tensor values live here; per-axis/blocked values in buf */
    float s1, inv1, zpf1;
    int32_t zpi1;
    const float *s;
    float *inv, *zpf;
    int32_t *zpi;
    PyArrayObject *s_arr;
    void *buf, *zbuf;
    int zp_typenum; /* the zero point's NumPy integer dtype, or -1 (None or a Python int) */
} qparams;

static void qparams_free(qparams *p) {
    Py_XDECREF(p->s_arr);
    PyMem_Free(p->buf);
    PyMem_Free(p->zbuf);
}

static int parse_scale(PyObject *obj, const granularity *g, qparams *p) {
    if (obj == NULL || obj == Py_None) {
        return qc_type_error("scale: expected a positive float or an array of them, got None");
    }
    if (g->pndim == 0 && (PyFloat_Check(obj) || (PyLong_Check(obj) && !PyBool_Check(obj)) ||
                          PyArray_IsScalar(obj, Float))) {
        double d = PyArray_IsScalar(obj, Float) ? (double)PyArrayScalar_VAL(obj, Float)
                                                : PyFloat_AsDouble(obj);
        if (d == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear(); /* an int beyond float64: name the argument, not a bare overflow */
            return qc_value_error("scale: expected a positive finite float32 value, got an int "
                                  "too large for a float");
        }
        p->s1 = (float)d;
        p->s = &p->s1;
        if ((d > 0.0 && isfinite(d)) && !(p->s1 > 0.0f && isfinite(p->s1))) {
            return qc_value_error("scale: expected a positive finite float32 value, got %R "
                                  "(%s in float32)", obj, p->s1 > 0.0f ? "inf" : "0.0");
        }
        return qc_check_scales(p->s, 1, "scale");
    }
    if (PyBool_Check(obj) || (PyArray_Check(obj) && PyArray_ISBOOL((PyArrayObject *)obj))) {
        return qc_type_error("scale: expected positive float values, got bool");
    }
    p->s_arr = qc_float32_array(obj, "scale");
    if (!p->s_arr) return -1;
    if (check_param_shape(p->s_arr, "scale", g) < 0) return -1;
    p->s = (const float *)PyArray_DATA(p->s_arr);
    return qc_check_scales(p->s, g->np, "scale");
}

/* zero_point: None -> 0; a Python int; a NumPy integer scalar or array (any integer dtype),
 * every value in [lo, hi]. Sets zpi/zpf (per-tensor: zpi1/zpf1) and zp_typenum. The range
 * is checked later (check_zero_point) once the output dtype is known. */
static int parse_zero_point(PyObject *obj, const granularity *g, qparams *p) {
    p->zp_typenum = -1;
    p->zpi1 = 0;
    p->zpi = &p->zpi1;
    if (obj == NULL || obj == Py_None) {
        if (g->np > 1 || g->pndim > 0) {
            /* zeros for every parameter */
            p->zpi = NULL;
        }
        return 0;
    }
    if (PyLong_Check(obj) && !PyBool_Check(obj)) {
        if (g->pndim != 0) {
            char want[200];
            shape_text(want, sizeof want, g->pndim, g->pshape);
            return qc_value_error("zero_point: expected an integer array of shape %s, got a "
                                  "Python int", want);
        }
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow || v < INT32_MIN || v > INT32_MAX) {
            return qc_value_error("zero_point: expected an integer in the quantized range, got %R",
                                  obj);
        }
        p->zpi1 = (int32_t)v;
        return 0;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!a) return -1;
    int t = PyArray_TYPE(a);
    if (!PyTypeNum_ISINTEGER(t) || PyTypeNum_ISBOOL(t)) {
        qc_type_error("zero_point: expected integer values (a Python int or an integer array), "
                      "got %s", PyTypeNum_ISBOOL(t) ? "bool" : (PyTypeNum_ISFLOAT(t) ? "float" :
                      PyArray_DESCR(a)->typeobj->tp_name));
        Py_DECREF(a);
        return -1;
    }
    if (check_param_shape(a, "zero_point", g) < 0) {
        Py_DECREF(a);
        return -1;
    }
    /* only an ndarray or a NumPy scalar carries a dtype for the output (a list does not) */
    p->zp_typenum = (PyArray_Check(obj) || PyArray_IsScalar(obj, Generic)) ? t : -1;
    PyArrayObject *c = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a, PyArray_DescrFromType(NPY_INT64), 0, 0,
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
    Py_DECREF(a);
    if (!c) return -1;
    const int64_t *v = (const int64_t *)PyArray_DATA(c);
    int is_unsigned = PyTypeNum_ISUNSIGNED(t);
    if (g->pndim == 0) {
        int64_t z = v[0];
        Py_DECREF(c);
        if ((is_unsigned && (uint64_t)z > INT32_MAX) || z < INT32_MIN || z > INT32_MAX) {
            return qc_value_error("zero_point: expected an integer in the quantized range, got "
                                  "%lld", (long long)z);
        }
        p->zpi1 = (int32_t)z;
        return 0;
    }
    p->zpi = PyMem_Malloc(g->np * sizeof(int32_t) + 1);
    if (!p->zpi) {
        Py_DECREF(c);
        PyErr_NoMemory();
        return -1;
    }
    int bad = -1;
    for (size_t i = 0; i < g->np; i++) {
        int64_t z = v[i];
        if ((is_unsigned && (uint64_t)z > INT32_MAX) || z < INT32_MIN || z > INT32_MAX) {
            bad = (int)i;
            break;
        }
        p->zpi[i] = (int32_t)z;
    }
    Py_DECREF(c);
    if (bad >= 0) {
        PyMem_Free(p->zpi);
        p->zpi = NULL;
        return qc_value_error("zero_point: expected integers in the quantized range, got an "
                              "out-of-range value at index %d", bad);
    }
    p->zbuf = p->zpi; /* freed with the params */
    return 0;
}

/* The torch profile multiplies by inv = 1.0f / s: a scale below ~2.9e-39 has inv = inf, and
 * 0 * inf would be NaN, so such scales are refused there. */
static int check_inv(const float *s, const float *inv, size_t np, int torch) {
    if (!torch) return 0;
    for (size_t i = 0; i < np; i++) {
        if (!isfinite(inv[i])) {
            char *repr = PyOS_double_to_string((double)s[i], 'r', 0, 0, NULL);
            if (!repr) return -1;
            qc_value_error("scale: expected values whose float32 reciprocal is finite for "
                           "profile='torch', got %s at index %zu", repr, i);
            PyMem_Free(repr);
            return -1;
        }
    }
    return 0;
}

/* Every zero point in [qmin, qmax]; then fills zpf and inv (1.0f / s) for the kernels. */
static int finish_params(const granularity *g, qparams *p, int32_t qmin, int32_t qmax,
                         const char *range_what, int torch) {
    size_t np = g->np;
    if (g->pndim == 0) {
        if (p->zpi1 < qmin || p->zpi1 > qmax) {
            return qc_value_error("zero_point: expected an integer in [%d, %d] (%s), got %d",
                                  (int)qmin, (int)qmax, range_what, (int)p->zpi1);
        }
        p->zpf1 = (float)p->zpi1;
        p->inv1 = 1.0f / p->s[0];
        p->zpf = &p->zpf1;
        p->inv = &p->inv1;
        return check_inv(p->s, p->inv, 1, torch);
    }
    /* inv and zpf (and zeros for zpi when zero_point is None) in one block */
    float *f = PyMem_Malloc(2 * np * sizeof(float) + np * sizeof(int32_t) + 1);
    if (!f) {
        PyErr_NoMemory();
        return -1;
    }
    p->buf = f;
    p->inv = f;
    p->zpf = f + np;
    if (!p->zpi) {
        p->zpi = (int32_t *)(f + 2 * np);
        memset(p->zpi, 0, np * sizeof(int32_t));
    }
    for (size_t i = 0; i < np; i++) {
        if (p->zpi[i] < qmin || p->zpi[i] > qmax) {
            return qc_value_error("zero_point: expected integers in [%d, %d] (%s), got %d at "
                                  "index %zu", (int)qmin, (int)qmax, range_what, (int)p->zpi[i],
                                  i);
        }
        p->zpf[i] = (float)p->zpi[i];
        p->inv[i] = 1.0f / p->s[i];
    }
    return check_inv(p->s, p->inv, np, torch);
}

/* ValueError naming the NaN count and the first one's index in x. */
static PyObject *nan_error(PyArrayObject *x, const char *arg) {
    const float *v = (const float *)PyArray_DATA(x);
    npy_intp n = PyArray_SIZE(x), count = 0, first = -1;
    for (npy_intp i = 0; i < n; i++) {
        if (v[i] != v[i]) {
            if (first < 0) first = i;
            count++;
        }
    }
    int nd = PyArray_NDIM(x);
    npy_intp idx[NPY_MAXDIMS] = {0};
    npy_intp rem = first < 0 ? 0 : first;
    for (int d = nd - 1; d >= 0; d--) {
        npy_intp dim = PyArray_DIM(x, d);
        idx[d] = dim ? rem % dim : 0;
        rem = dim ? rem / dim : 0;
    }
    char where[200];
    if (nd == 1) snprintf(where, sizeof where, "%" NPY_INTP_FMT, idx[0]);
    else shape_text(where, sizeof where, nd, idx);
    qc_value_error("%s: expected no NaN values, got %zd NaN value%s, the first at index %s", arg,
                   (Py_ssize_t)count, count == 1 ? "" : "s", where);
    return NULL;
}

/* *x (any array) replaced by its C-contiguous float32 form; -1 (and *x NULL) on error. */
static int to_float32(PyArrayObject **x) {
    PyArrayObject *f = qc_float32_array((PyObject *)*x, "x");
    Py_DECREF(*x);
    *x = f;
    return f ? 0 : -1;
}

/* x kept as bfloat16 when it is an ml_dtypes.bfloat16 array (made C-contiguous: the kernels
 * widen it themselves, no float32 copy), else converted to float32. Sets *bf16. */
static int to_kernel_input(PyArrayObject **x, int *bf16) {
    PyArray_Descr *d = PyArray_DESCR(*x);
    *bf16 = PyArray_TYPE(*x) >= NPY_USERDEF && PyArray_ITEMSIZE(*x) == 2 && d->typeobj &&
            strcmp(d->typeobj->tp_name, "ml_dtypes.bfloat16") == 0;
    if (!*bf16) return to_float32(x);
    Py_INCREF(d);
    PyArrayObject *c = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)*x, d, 0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    Py_DECREF(*x);
    *x = c;
    return c ? 0 : -1;
}

/* nan_error for a float32 or bfloat16 x (widened for the message). */
static PyObject *nan_error_any(PyArrayObject *x, int bf16, const char *arg) {
    if (!bf16) return nan_error(x, arg);
    PyArrayObject *f = qc_float32_array((PyObject *)x, arg);
    if (!f) return NULL;
    nan_error(f, arg);
    Py_DECREF(f);
    return NULL;
}

/* ---- quantize ---- */

PyDoc_STRVAR(quantize_doc,
"quantize(x, scale, zero_point=None, dtype=None, *, axis=None, block_size=None,\n"
"         profile='onnx', out=None)\n--\n\n"
"Quantize float values to int8/uint8: ``q = clamp(R(x OP scale) + zero_point, qmin, qmax)``.\n\n"
"``x`` is converted to float32 first. The profile fixes the arithmetic, bit for bit:\n"
"``'onnx'``: ``rint(x / s) + zp`` (true float32 division, ties to even, as\n"
"QuantizeLinear); ``'tflite'``: ``x / s`` rounded half away from zero, ``+ zp``;\n"
"``'torch'``: as ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel`` (x86,\n"
"FBGEMM), with ``inv = 1.0f / s`` rounded to float32 once: per-tensor\n"
"``rint(fmaf(x, inv, zp))`` (one rounding), per-axis and blocked ``rint(fl(x * inv) + zp)``.\n"
"Both equal ``zp + rint(x * inv)`` (``fake_quantize``'s torch formula) except within an\n"
"ulp of a tie when ``zp != 0``. The result is clamped to the dtype's range\n"
"``[qmin, qmax]``, so +-inf saturate. NaN in ``x`` raises ValueError (count and first\n"
"index in the message).\n\n"
"Granularity: per-tensor (``axis=None``, scalar scale/zero_point), per-axis (``axis=k``,\n"
"1-D of length ``x.shape[k]``) or blocked (``axis=k, block_size=B``: the shape of ``x``\n"
"with dimension k replaced by ``ceil(x.shape[k] / B)``, the last block may be short).\n"
"``scale`` is cast to float32 and must be positive and finite; ``zero_point`` (default 0)\n"
"must hold integers in the output dtype's range.\n\n"
"The output dtype is ``dtype`` if given, else ``zero_point``'s dtype if it is a NumPy\n"
"array or scalar (int8 or uint8), else int8. ``out``: a C-contiguous array of that shape\n"
"and dtype to write into. NaN is found during the pass that writes ``out``: after that\n"
"ValueError ``out``'s contents are unspecified (as with NumPy's ``out=``).");

static int resolve_out_dtype(PyObject *dtype_obj, const qparams *p, int *typenum) {
    if (dtype_obj && dtype_obj != Py_None) {
        return qc_parse_int_dtype(dtype_obj, "dtype", k_q8, typenum);
    }
    if (p->zp_typenum < 0) {
        *typenum = NPY_INT8;
        return 0;
    }
    if (p->zp_typenum != NPY_INT8 && p->zp_typenum != NPY_UINT8) {
        return qc_value_error("dtype: expected int8 or uint8 (taken from zero_point's dtype when "
                              "dtype is None), got zero_point of dtype %s; pass dtype=",
                              qc_typename(p->zp_typenum));
    }
    *typenum = p->zp_typenum;
    return 0;
}


/* The end of a quantize call: dst (the output or out='s stand-in) into out, unless the input
 * held NaN: then the error names the first NaN, and out= keeps what the pass wrote into it
 * (NaN is only known once the pass is done; checking first would be a second pass over x).
 * Only a stand-in for an out= that overlaps x is dropped instead of copied. Releases x and
 * the params. */
static PyObject *quantize_finish(PyArrayObject *x, int bf16, PyArrayObject *dst,
                                 PyArrayObject *out, int nan, qparams *p) {
    if (nan && dst != out) Py_DECREF(dst);
    else qc_out_commit(dst, out);
    if (nan) {
        nan_error_any(x, bf16, "x");
        Py_DECREF(out);
        out = NULL;
    }
    Py_DECREF(x);
    qparams_free(p);
    return (PyObject *)out;
}

static PyObject *py_quantize(PyObject *self, PyObject *args, PyObject *kwds) {
    (void)self;
    static char *kwlist[] = {"x", "scale", "zero_point", "dtype", "axis", "block_size",
                             "profile", "out", NULL};
    PyObject *x_obj, *scale_obj, *zp_obj = NULL, *dtype_obj = NULL, *axis_obj = NULL;
    PyObject *block_obj = NULL, *profile_obj = NULL, *out_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OO$OOOO:quantize", kwlist, &x_obj,
                                     &scale_obj, &zp_obj, &dtype_obj, &axis_obj, &block_obj,
                                     &profile_obj, &out_obj))
        return NULL;
    qc_profile profile;
    if (qc_parse_profile(profile_obj, &profile) < 0) return NULL;
    /* x as given: its shape is checked against the parameters before it is converted */
    PyArrayObject *x = qc_any_array(x_obj, "x");
    if (!x) return NULL;
    PyArrayObject *out = NULL;
    qparams p;
    memset(&p, 0, sizeof p);
    granularity g;
    int typenum, bf16 = 0;
    int32_t qmin, qmax;
    if (parse_granularity(x, axis_obj, block_obj, &g) < 0 ||
        parse_scale(scale_obj, &g, &p) < 0 ||
        parse_zero_point(zp_obj, &g, &p) < 0 || resolve_out_dtype(dtype_obj, &p, &typenum) < 0 ||
        to_kernel_input(&x, &bf16) < 0)
        goto fail;
    qrange_of(typenum, &qmin, &qmax);
    if (finish_params(&g, &p, qmin, qmax, qc_typename(typenum), profile == QC_PROFILE_TORCH) < 0)
        goto fail;
    out = qc_output(out_obj, "out", PyArray_NDIM(x), PyArray_DIMS(x), typenum);
    if (!out) goto fail;
    /* torch's quantize ops add the zero point before rounding (see quant.h) */
    if (profile == QC_PROFILE_TORCH) {
        profile = g.L.per_tensor ? QC_PROFILE_TORCH_FMA : QC_PROFILE_TORCH_ADD;
    }
    qc_qcfg cfg = {profile, (float)qmin, (float)qmax, bf16 ? QC_IN_BF16 : QC_IN_F32,
                   QC_OUT_BYTES};
    const qc_quant_kernels *k = kernels(&qc_family_quantize);
    PyArrayObject *const ins[] = {x, p.s_arr};
    PyArrayObject *dst = qc_out_target(out, ins, 2);
    if (!dst) goto fail;
    int nan;
    Py_BEGIN_ALLOW_THREADS
    if (bf16) {
        nan = qc_quantize_ext_run(k, &g.L, PyArray_DATA(x), (uint8_t *)PyArray_DATA(dst), p.s,
                                  p.inv, p.zpf, &cfg);
    } else {
        nan = qc_quantize_run(k, &g.L, (const float *)PyArray_DATA(x),
                              (uint8_t *)PyArray_DATA(dst), p.s, p.inv, p.zpf, &cfg);
    }
    Py_END_ALLOW_THREADS
    return quantize_finish(x, bf16, dst, out, nan, &p);
fail:
    Py_XDECREF(out);
    Py_XDECREF(x);
    qparams_free(&p);
    return NULL;
}


/* ---- 4-bit and float8 quantize (behind quantc._lowbit.quantize) ---- */

static const struct {
    const char *name;
    qc_qout out; /* QC_OUT_NIBBLE for the 4-bit types (QC_OUT_PACKED4 with packed=True) */
    float qmin, qmax;
} k_lowbit[] = {
    {"int4", QC_OUT_NIBBLE, -8.0f, 7.0f},
    {"uint4", QC_OUT_NIBBLE, 0.0f, 15.0f},
    {"float8_e4m3fn", QC_OUT_F8_E4M3FN, -448.0f, 448.0f},
    {"float8_e4m3fnuz", QC_OUT_F8_E4M3FNUZ, -240.0f, 240.0f},
    {"float8_e5m2", QC_OUT_F8_E5M2, -57344.0f, 57344.0f},
    {"float8_e5m2fnuz", QC_OUT_F8_E5M2FNUZ, -57344.0f, 57344.0f},
};

PyDoc_STRVAR(quantize_lowbit_doc,
"_quantize_lowbit(x, scale, zero_point, kind, *, axis=None, block_size=None, profile='onnx',\n"
"                 packed=False, out=None)\n--\n\n"
"quantize() for kind int4/uint4 (profiles 'onnx'/'tflite') and the float8 types (ONNX\n"
"saturate=1, zero_point None), one C pass: a uint8 array of x's shape holding the ml_dtypes\n"
"bytes, or with packed=True (4-bit kinds) the ONNX packed bytes, 1-D of ceil(size / 2).\n"
"x may be float32 or bfloat16 (read directly) or anything quantize() converts. out: a\n"
"C-contiguous uint8 array of the result's shape to write into (the caller views an\n"
"ml_dtypes array as uint8).");

static PyObject *py_quantize_lowbit(PyObject *self, PyObject *args, PyObject *kwds) {
    (void)self;
    static char *kwlist[] = {"x", "scale", "zero_point", "kind", "axis", "block_size",
                             "profile", "packed", "out", NULL};
    PyObject *x_obj, *scale_obj, *zp_obj, *axis_obj = NULL, *block_obj = NULL;
    PyObject *profile_obj = NULL, *out_obj = NULL;
    const char *kind;
    int packed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOs|$OOOpO:_quantize_lowbit", kwlist, &x_obj,
                                     &scale_obj, &zp_obj, &kind, &axis_obj, &block_obj,
                                     &profile_obj, &packed, &out_obj))
        return NULL;
    int t = -1;
    for (size_t i = 0; i < sizeof k_lowbit / sizeof k_lowbit[0]; i++) {
        if (strcmp(kind, k_lowbit[i].name) == 0) t = (int)i;
    }
    if (t < 0) return (qc_value_error("kind: expected int4, uint4 or a float8 type, got %s", kind), NULL);
    qc_qout outk = k_lowbit[t].out;
    int is_f8 = outk >= QC_OUT_F8_E4M3FN;
    if (packed && is_f8) return (qc_value_error("packed: only 4-bit kinds pack, got %s", kind), NULL);
    if (packed) outk = QC_OUT_PACKED4;
    qc_profile profile;
    if (qc_parse_profile(profile_obj, &profile) < 0) return NULL;
    if (profile == QC_PROFILE_TORCH) {
        return (qc_value_error("profile: 'torch' has no %s quantization; use 'onnx' or 'tflite'",
                               kind), NULL);
    }
    if (is_f8 && zp_obj != Py_None) {
        return (qc_value_error("zero_point: expected None for %s (checked to be 0 by the caller)",
                               kind), NULL);
    }
    PyArrayObject *x = qc_any_array(x_obj, "x");
    if (!x) return NULL;
    PyArrayObject *out = NULL;
    qparams p;
    memset(&p, 0, sizeof p);
    granularity g;
    int bf16 = 0;
    if (parse_granularity(x, axis_obj, block_obj, &g) < 0 ||
        parse_scale(scale_obj, &g, &p) < 0 || parse_zero_point(zp_obj, &g, &p) < 0 ||
        to_kernel_input(&x, &bf16) < 0)
        goto fail;
    if (finish_params(&g, &p, (int32_t)k_lowbit[t].qmin, is_f8 ? 0 : (int32_t)k_lowbit[t].qmax,
                      kind, 0) < 0)
        goto fail;
    if (packed) {
        npy_intp m = (npy_intp)(((size_t)PyArray_SIZE(x) + 1) / 2);
        out = qc_output(out_obj, "out", 1, &m, NPY_UINT8);
    } else {
        out = qc_output(out_obj, "out", PyArray_NDIM(x), PyArray_DIMS(x), NPY_UINT8);
    }
    if (!out) goto fail;
    PyArrayObject *const ins[] = {x, p.s_arr};
    PyArrayObject *dst = qc_out_target(out, ins, 2);
    if (!dst) goto fail;
    qc_qcfg cfg = {profile, k_lowbit[t].qmin, k_lowbit[t].qmax, bf16 ? QC_IN_BF16 : QC_IN_F32,
                   outk};
    const qc_quant_kernels *k = kernels(&qc_family_quantize);
    int nan;
    Py_BEGIN_ALLOW_THREADS
    nan = qc_quantize_ext_run(k, &g.L, PyArray_DATA(x), (uint8_t *)PyArray_DATA(dst), p.s, p.inv,
                              p.zpf, &cfg);
    Py_END_ALLOW_THREADS
    return quantize_finish(x, bf16, dst, out, nan, &p);
fail:
    Py_XDECREF(out);
    Py_XDECREF(x);
    qparams_free(&p);
    return NULL;
}

/* ---- fake_quantize ---- */

static int parse_qbound(PyObject *obj, const char *arg, int32_t dflt, int32_t lo, int32_t hi,
                        int typenum, int32_t *v) {
    if (obj == NULL || obj == Py_None) {
        *v = dflt;
        return 0;
    }
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        return qc_type_error("%s: expected an int or None, got %s", arg, Py_TYPE(obj)->tp_name);
    }
    long long x = PyLong_AsLongLong(obj);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        x = (long long)hi + 1;
    }
    if (x < lo || x > hi) {
        return qc_value_error("%s: expected an int in [%d, %d] (%s), got %R", arg, (int)lo,
                              (int)hi, qc_typename(typenum), obj);
    }
    *v = (int32_t)x;
    return 0;
}

PyDoc_STRVAR(fake_quantize_doc,
"fake_quantize(x, scale, zero_point=None, dtype='int8', *, axis=None, block_size=None,\n"
"              qmin=None, qmax=None, profile='onnx', return_mask=False, out=None)\n--\n\n"
"Quantize and dequantize in one pass, in float32:\n"
"``y = (clamp(R(x OP scale) + zero_point, qmin, qmax) - zero_point) * scale``,\n"
"with ``R`` and ``OP`` as in ``quantize`` for the profile (``'torch'`` gives exactly\n"
"``torch.fake_quantize_per_tensor_affine``). ``qmin``/``qmax`` default to ``dtype``'s\n"
"range and may narrow it (e.g. 4-bit ``qmin=-8, qmax=7``); ``zero_point`` must lie in\n"
"``[qmin, qmax]``. Granularity as in ``quantize``.\n\n"
"With ``return_mask=True`` returns ``(y, mask)``: the straight-through-estimator mask, a\n"
"bool array True where ``R(x OP scale) + zero_point`` (before the clamp) lies in\n"
"``[qmin, qmax]``. NaN in ``x`` raises ValueError; ``out`` (a C-contiguous float32 array\n"
"of ``x``'s shape) has unspecified contents after it, as in ``quantize``.");

static PyObject *py_fake_quantize(PyObject *self, PyObject *args, PyObject *kwds) {
    (void)self;
    static char *kwlist[] = {"x", "scale", "zero_point", "dtype", "axis", "block_size", "qmin",
                             "qmax", "profile", "return_mask", "out", NULL};
    PyObject *x_obj, *scale_obj, *zp_obj = NULL, *dtype_obj = NULL, *axis_obj = NULL;
    PyObject *block_obj = NULL, *qmin_obj = NULL, *qmax_obj = NULL, *profile_obj = NULL;
    PyObject *out_obj = NULL;
    int return_mask = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OO$OOOOOpO:fake_quantize", kwlist, &x_obj,
                                     &scale_obj, &zp_obj, &dtype_obj, &axis_obj, &block_obj,
                                     &qmin_obj, &qmax_obj, &profile_obj, &return_mask, &out_obj))
        return NULL;
    qc_profile profile;
    int typenum = NPY_INT8;
    if (qc_parse_profile(profile_obj, &profile) < 0) return NULL;
    if (dtype_obj && dtype_obj != Py_None &&
        qc_parse_int_dtype(dtype_obj, "dtype", k_q8, &typenum) < 0)
        return NULL;
    int32_t dmin, dmax, qmin, qmax;
    qrange_of(typenum, &dmin, &dmax);
    if (parse_qbound(qmin_obj, "qmin", dmin, dmin, dmax, typenum, &qmin) < 0 ||
        parse_qbound(qmax_obj, "qmax", dmax, dmin, dmax, typenum, &qmax) < 0)
        return NULL;
    if (qmin > qmax) {
        return (qc_value_error("qmax: expected qmax >= qmin = %d, got %d", (int)qmin, (int)qmax),
                NULL);
    }
    PyArrayObject *x = qc_any_array(x_obj, "x"); /* converted once the shapes are checked */
    if (!x) return NULL;
    PyArrayObject *out = NULL, *mask = NULL;
    qparams p;
    memset(&p, 0, sizeof p);
    granularity g;
    if (parse_granularity(x, axis_obj, block_obj, &g) < 0 ||
        parse_scale(scale_obj, &g, &p) < 0 ||
        parse_zero_point(zp_obj, &g, &p) < 0 ||
        finish_params(&g, &p, qmin, qmax, "qmin..qmax", profile == QC_PROFILE_TORCH) < 0 ||
        to_float32(&x) < 0)
        goto fail;
    out = qc_output(out_obj, "out", PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32);
    if (!out) goto fail;
    if (return_mask) {
        mask = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(x), PyArray_DIMS(x), NPY_BOOL);
        if (!mask) goto fail;
    }
    qc_qcfg cfg = {profile, (float)qmin, (float)qmax, QC_IN_F32, QC_OUT_BYTES};
    const qc_quant_kernels *k = kernels(&qc_family_fake_quantize);
    PyArrayObject *const ins[] = {x, p.s_arr};
    PyArrayObject *dst = qc_out_target(out, ins, 2);
    if (!dst) goto fail;
    int nan;
    Py_BEGIN_ALLOW_THREADS
    nan = qc_fake_quantize_run(k, &g.L, (const float *)PyArray_DATA(x), (float *)PyArray_DATA(dst),
                               mask ? (uint8_t *)PyArray_DATA(mask) : NULL, p.s, p.inv, p.zpf,
                               &cfg);
    Py_END_ALLOW_THREADS
    if (nan && dst != out) Py_DECREF(dst); /* out= as in quantize_finish */
    else qc_out_commit(dst, out);
    if (nan) {
        nan_error(x, "x");
        goto fail;
    }
    Py_DECREF(x);
    qparams_free(&p);
    if (mask) {
        PyObject *r = PyTuple_Pack(2, out, mask);
        Py_DECREF(out);
        Py_DECREF(mask);
        return r;
    }
    return (PyObject *)out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(mask);
    Py_XDECREF(x);
    qparams_free(&p);
    return NULL;
}

/* ---- dequantize ---- */

PyDoc_STRVAR(dequantize_doc,
"dequantize(q, scale, zero_point=None, *, axis=None, block_size=None, out=None)\n--\n\n"
"Map int8/uint8 values back to float32: ``y = (q - zero_point) * scale``, with\n"
"``q - zero_point`` exact and one float32 rounding in the product (as ONNX\n"
"DequantizeLinear). Granularity as in ``quantize``; ``zero_point`` (default 0) must lie in\n"
"``q``'s dtype range. ``out``: a C-contiguous float32 array of ``q``'s shape.");

static PyObject *py_dequantize(PyObject *self, PyObject *args, PyObject *kwds) {
    (void)self;
    static char *kwlist[] = {"q", "scale", "zero_point", "axis", "block_size", "out", NULL};
    PyObject *q_obj, *scale_obj, *zp_obj = NULL, *axis_obj = NULL, *block_obj = NULL;
    PyObject *out_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O$OOO:dequantize", kwlist, &q_obj,
                                     &scale_obj, &zp_obj, &axis_obj, &block_obj, &out_obj))
        return NULL;
    PyArrayObject *q = qc_int_view(q_obj, "q", k_q8); /* made contiguous after the checks */
    if (!q) return NULL;
    PyArrayObject *out = NULL;
    qparams p;
    memset(&p, 0, sizeof p);
    granularity g;
    int typenum = PyArray_TYPE(q);
    int32_t qmin, qmax;
    qrange_of(typenum, &qmin, &qmax);
    if (parse_granularity(q, axis_obj, block_obj, &g) < 0 ||
        parse_scale(scale_obj, &g, &p) < 0 ||
        parse_zero_point(zp_obj, &g, &p) < 0 ||
        finish_params(&g, &p, qmin, qmax, qc_typename(typenum), 0) < 0)
        goto fail;
    q = qc_contiguous(q, "q");
    if (!q) goto fail;
    out = qc_output(out_obj, "out", PyArray_NDIM(q), PyArray_DIMS(q), NPY_FLOAT32);
    if (!out) goto fail;
    const qc_quant_kernels *k = kernels(&qc_family_dequantize);
    PyArrayObject *const ins[] = {q, p.s_arr};
    PyArrayObject *dst = qc_out_target(out, ins, 2);
    if (!dst) goto fail;
    Py_BEGIN_ALLOW_THREADS
    qc_dequantize_run(k, &g.L, (const uint8_t *)PyArray_DATA(q), typenum == NPY_INT8,
                      (float *)PyArray_DATA(dst), p.s, p.zpi);
    Py_END_ALLOW_THREADS
    qc_out_commit(dst, out);
    Py_DECREF(q);
    qparams_free(&p);
    return (PyObject *)out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(q);
    qparams_free(&p);
    return NULL;
}

/* ---- the min/max pass ---- */

PyDoc_STRVAR(minmax_doc,
"_minmax(x, axis=None, block_size=None) -> (min, max)\n--\n\n"
"One pass over float32(x): min and max per tensor (0-d), per axis (1-D) or per block\n"
"(x's shape with dimension axis -> ceil(n / block_size)), as float32 arrays. Zeros come\n"
"out as +0.0; a parameter with no element gives (+inf, -inf). NaN raises ValueError.");

static PyObject *py_minmax(PyObject *self, PyObject *args, PyObject *kwds) {
    (void)self;
    static char *kwlist[] = {"x", "axis", "block_size", NULL};
    PyObject *x_obj, *axis_obj = NULL, *block_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:_minmax", kwlist, &x_obj, &axis_obj,
                                     &block_obj))
        return NULL;
    PyArrayObject *x = qc_float32_array(x_obj, "x");
    if (!x) return NULL;
    granularity g;
    PyArrayObject *mn = NULL, *mx = NULL;
    float *scratch = NULL;
    if (parse_granularity(x, axis_obj, block_obj, &g) < 0) goto fail;
    mn = (PyArrayObject *)PyArray_SimpleNew(g.pndim, g.pshape, NPY_FLOAT32);
    mx = (PyArrayObject *)PyArray_SimpleNew(g.pndim, g.pshape, NPY_FLOAT32);
    if (!mn || !mx) goto fail;
    size_t n = qc_layout_size(&g.L);
    size_t ntasks = n ? qc_quant_ntasks(n) : 1;
    if (ntasks > 1) {
        scratch = PyMem_RawMalloc(2 * g.np * (ntasks - 1) * sizeof(float) + 1);
        if (!scratch) {
            PyErr_NoMemory();
            goto fail;
        }
    }
    const qc_quant_kernels *k = kernels(&qc_family_minmax);
    int nan;
    Py_BEGIN_ALLOW_THREADS
    nan = qc_minmax_run(k, &g.L, (const float *)PyArray_DATA(x), (float *)PyArray_DATA(mn),
                        (float *)PyArray_DATA(mx), scratch, ntasks);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    scratch = NULL;
    if (nan) {
        nan_error(x, "x");
        goto fail;
    }
    Py_DECREF(x);
    PyObject *r = PyTuple_Pack(2, mn, mx);
    Py_DECREF(mn);
    Py_DECREF(mx);
    return r;
fail:
    PyMem_RawFree(scratch);
    Py_XDECREF(mn);
    Py_XDECREF(mx);
    Py_DECREF(x);
    return NULL;
}

PyMethodDef qc_elementwise_methods[] = {
    {"quantize", (PyCFunction)(void (*)(void))py_quantize, METH_VARARGS | METH_KEYWORDS,
     quantize_doc},
    {"dequantize", (PyCFunction)(void (*)(void))py_dequantize, METH_VARARGS | METH_KEYWORDS,
     dequantize_doc},
    {"fake_quantize", (PyCFunction)(void (*)(void))py_fake_quantize,
     METH_VARARGS | METH_KEYWORDS, fake_quantize_doc},
    {"_quantize_lowbit", (PyCFunction)(void (*)(void))py_quantize_lowbit,
     METH_VARARGS | METH_KEYWORDS, quantize_lowbit_doc},
    {"_minmax", (PyCFunction)(void (*)(void))py_minmax, METH_VARARGS | METH_KEYWORDS,
     minmax_doc},
    {NULL, NULL, 0, NULL},
};

int qc_elementwise_init(PyObject *m) {
    (void)m;
    if (qc_register_family(&qc_family_quantize) < 0 ||
        qc_register_family(&qc_family_dequantize) < 0 ||
        qc_register_family(&qc_family_fake_quantize) < 0 ||
        qc_register_family(&qc_family_minmax) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "quantc: kernel registry full");
        return -1;
    }
    return 0;
}
