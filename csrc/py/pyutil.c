/* Binding-layer helpers shared by every family: dtype/axis/profile parsing, array conversion. */
#include "py/pyutil.h"
#include <numpy/arrayscalars.h>

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "convert/convert.h"

int qc_value_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    PyErr_FormatV(PyExc_ValueError, fmt, ap);
    va_end(ap);
    return -1;
}

int qc_type_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    PyErr_FormatV(PyExc_TypeError, fmt, ap);
    va_end(ap);
    return -1;
}

/* The sized name of an integer C type ("int64" for both long and long long on LP64). */
static const char *int_name(int is_signed, size_t size) {
    switch (size) {
    case 1: return is_signed ? "int8" : "uint8";
    case 2: return is_signed ? "int16" : "uint16";
    case 4: return is_signed ? "int32" : "uint32";
    case 8: return is_signed ? "int64" : "uint64";
    default: return is_signed ? "a signed integer dtype" : "an unsigned integer dtype";
    }
}

const char *qc_typename(int typenum) {
    /* every spelling of a type (NPY_LONG, NPY_LONGLONG, NPY_INT, ...) gets NumPy's sized
     * name, so a message never depends on which alias of int64 an array carries */
    switch (typenum) {
    case NPY_BOOL: return "bool";
    case NPY_BYTE: return "int8";
    case NPY_UBYTE: return "uint8";
    case NPY_SHORT: return int_name(1, sizeof(short));
    case NPY_USHORT: return int_name(0, sizeof(short));
    case NPY_INT: return int_name(1, sizeof(int));
    case NPY_UINT: return int_name(0, sizeof(int));
    case NPY_LONG: return int_name(1, sizeof(long));
    case NPY_ULONG: return int_name(0, sizeof(long));
    case NPY_LONGLONG: return int_name(1, sizeof(long long));
    case NPY_ULONGLONG: return int_name(0, sizeof(long long));
    case NPY_HALF: return "float16";
    case NPY_FLOAT: return "float32";
    case NPY_DOUBLE: return "float64";
    case NPY_LONGDOUBLE: return "longdouble";
    case NPY_CFLOAT: return "complex64";
    case NPY_CDOUBLE: return "complex128";
    case NPY_CLONGDOUBLE: return "clongdouble";
    case NPY_OBJECT: return "object";
    case NPY_STRING: return "bytes";
    case NPY_UNICODE: return "str";
    case NPY_VOID: return "void";
    case NPY_DATETIME: return "datetime64";
    case NPY_TIMEDELTA: return "timedelta64";
    default: break;
    }
    /* a registered user type (ml_dtypes' bfloat16, int4, ...): its scalar type's name, which
     * lives as long as the type */
    PyArray_Descr *d = typenum >= NPY_USERDEF ? PyArray_DescrFromType(typenum) : NULL;
    const char *name = d && d->typeobj && d->typeobj->tp_name ? d->typeobj->tp_name : NULL;
    Py_XDECREF(d);
    if (!name) {
        PyErr_Clear();
        return "an unknown dtype";
    }
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

static int typenum_allowed(int t, const int *allowed) {
    if (!allowed) return PyTypeNum_ISINTEGER(t) && !PyTypeNum_ISBOOL(t);
    for (; *allowed >= 0; allowed++) {
        /* equivalent type numbers are the same type: NPY_LONGLONG is NPY_INT64 on LP64 */
        if (*allowed == t || PyArray_EquivTypenums(*allowed, t)) return 1;
    }
    return 0;
}

static void allowed_list(const int *allowed, char *buf, size_t n) {
    buf[0] = '\0';
    if (!allowed) {
        snprintf(buf, n, "an integer dtype");
        return;
    }
    for (const int *a = allowed; *a >= 0; a++) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", a == allowed ? "" : " or ", qc_typename(*a));
    }
}

int qc_parse_int_dtype(PyObject *obj, const char *arg, const int *allowed, int *typenum) {
    char expected[128];
    allowed_list(allowed, expected, sizeof expected);
    if (obj == NULL || obj == Py_None) {
        return qc_type_error("%s: expected %s, got None", arg, expected);
    }
    PyArray_Descr *descr = NULL;
    if (PyUnicode_Check(obj)) {
        const char *s = qc_utf8_or_null(obj);
        if (!s) return qc_value_error("%s: expected %s, got %R", arg, expected, obj);
        static const struct { const char *name; int t; } names[] = {
            {"int8", NPY_INT8}, {"uint8", NPY_UINT8}, {"int16", NPY_INT16},
            {"uint16", NPY_UINT16}, {"int32", NPY_INT32}, {"uint32", NPY_UINT32},
            {"int64", NPY_INT64}, {"uint64", NPY_UINT64},
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (strcmp(s, names[i].name) == 0 && typenum_allowed(names[i].t, allowed)) {
                *typenum = names[i].t;
                return 0;
            }
        }
        return qc_value_error("%s: expected %s, got '%s'", arg, expected, s);
    }
    if (!PyArray_DescrConverter2(obj, &descr) || descr == NULL) {
        PyErr_Clear();
        return qc_type_error("%s: expected %s (a string or NumPy dtype), got %R", arg, expected,
                             obj);
    }
    int t = descr->type_num;
    Py_DECREF(descr);
    if (!typenum_allowed(t, allowed)) {
        return qc_value_error("%s: expected %s, got %s", arg, expected, qc_typename(t));
    }
    *typenum = t;
    return 0;
}

int qc_parse_profile(PyObject *obj, qc_profile *profile) {
    if (obj == NULL || obj == Py_None) {
        *profile = QC_PROFILE_ONNX;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        return qc_type_error("profile: expected 'onnx', 'torch' or 'tflite', got %R", obj);
    }
    const char *s = qc_utf8_or_null(obj);
    if (!s) return qc_value_error("profile: expected 'onnx', 'torch' or 'tflite', got %R", obj);
    if (strcmp(s, "onnx") == 0) *profile = QC_PROFILE_ONNX;
    else if (strcmp(s, "torch") == 0) *profile = QC_PROFILE_TORCH;
    else if (strcmp(s, "tflite") == 0) *profile = QC_PROFILE_TFLITE;
    else return qc_value_error("profile: expected 'onnx', 'torch' or 'tflite', got '%s'", s);
    return 0;
}

int qc_parse_axis(PyObject *obj, const char *arg, int ndim, int *axis, int *has_axis) {
    if (obj == NULL || obj == Py_None) {
        *has_axis = 0;
        *axis = 0;
        return 0;
    }
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        return qc_type_error("%s: expected an int or None, got %s", arg, Py_TYPE(obj)->tp_name);
    }
    Py_ssize_t v;
    if (qc_parse_ssize(obj, arg, &v) < 0) return -1;
    if (v < -ndim || v >= ndim) {
        return qc_value_error("%s: expected an axis in [%d, %d) for an array of %d dimensions, "
                              "got %zd", arg, -ndim, ndim, ndim, v);
    }
    *axis = (int)(v < 0 ? v + ndim : v);
    *has_axis = 1;
    return 0;
}

PyArrayObject *qc_any_array(PyObject *obj, const char *arg) {
    if (obj == NULL || obj == Py_None) {
        qc_type_error("%s: expected an array, got None", arg);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!a) {
        PyErr_Clear();
        qc_type_error("%s: expected an array-like of numbers, got %s", arg,
                      Py_TYPE(obj)->tp_name);
    }
    return a;
}

/* An ml_dtypes.bfloat16 array widened to a new C-contiguous float32 array with the SIMD
 * bfloat16 kernel (exact: bits << 16, as ml_dtypes' own cast), not NumPy's generic cast. */
static PyArrayObject *bfloat16_to_float32(PyArrayObject *a) {
    PyArray_Descr *d = PyArray_DESCR(a);
    Py_INCREF(d);
    PyArrayObject *c = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a, d, 0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (!c) return NULL;
    PyArrayObject *r = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(c), PyArray_DIMS(c),
                                                          NPY_FLOAT32);
    if (!r) {
        Py_DECREF(c);
        return NULL;
    }
    const qc_bfloat16_kernels *k = qc_family_select(&qc_bfloat16_family)->impl;
    qc_u16_to_f32_fn fn = k->from_bf16 ? k->from_bf16 : qc_bfloat16_kernels__scalar.from_bf16;
    const uint16_t *src = (const uint16_t *)PyArray_DATA(c);
    float *dst = (float *)PyArray_DATA(r);
    size_t n = (size_t)PyArray_SIZE(c);
    Py_BEGIN_ALLOW_THREADS
    fn(src, dst, n);
    Py_END_ALLOW_THREADS
    Py_DECREF(c);
    return r;
}

int qc_is_ml_float(PyArray_Descr *d) {
    /* ml_dtypes' low-precision floats (bfloat16, float8_*, float4_e2m1fn, ...) are NumPy
     * user-defined types; each registers an exact cast to float32. */
    if (d->type_num < NPY_USERDEF || !d->typeobj || !d->typeobj->tp_name) return 0;
    const char *n = d->typeobj->tp_name;
    return strncmp(n, "ml_dtypes.bfloat16", 18) == 0 || strncmp(n, "ml_dtypes.float", 15) == 0;
}

PyArrayObject *qc_float32_array(PyObject *obj, const char *arg) {
    if (PyArray_Check(obj) && PyArray_TYPE((PyArrayObject *)obj) == NPY_FLOAT32 &&
        PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj) && PyArray_ISALIGNED((PyArrayObject *)obj) &&
        PyArray_ISNOTSWAPPED((PyArrayObject *)obj)) {
        Py_INCREF(obj);
        return (PyArrayObject *)obj;
    }
    PyArrayObject *a = qc_any_array(obj, arg);
    if (!a) return NULL;
    int t = PyArray_TYPE(a);
    if (!(PyTypeNum_ISFLOAT(t) || (PyTypeNum_ISINTEGER(t) && !PyTypeNum_ISBOOL(t)) ||
          qc_is_ml_float(PyArray_DESCR(a))) ||
        t == NPY_LONGDOUBLE) {
        qc_type_error("%s: expected a real-valued array (float16/32/64, bfloat16 or integer), "
                      "got %s", arg,
                      t == NPY_LONGDOUBLE ? "longdouble" : PyArray_DESCR(a)->typeobj->tp_name);
        Py_DECREF(a);
        return NULL;
    }
    if (t >= NPY_USERDEF && PyArray_ITEMSIZE(a) == 2 &&
        strcmp(PyArray_DESCR(a)->typeobj->tp_name, "ml_dtypes.bfloat16") == 0) {
        PyArrayObject *r = bfloat16_to_float32(a);
        if (!r) {
            qc_name_memory_error(arg, "a contiguous float32 copy", PyArray_NDIM(a),
                                 PyArray_DIMS(a), 4);
        }
        Py_DECREF(a);
        return r;
    }
    PyArrayObject *r = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a, PyArray_DescrFromType(NPY_FLOAT32), 0, 0,
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
    if (!r) {
        qc_name_memory_error(arg, "a contiguous float32 copy", PyArray_NDIM(a), PyArray_DIMS(a),
                             4);
    }
    Py_DECREF(a);
    return r;
}

PyArrayObject *qc_int_view(PyObject *obj, const char *arg, const int *allowed) {
    PyArrayObject *a = qc_any_array(obj, arg);
    if (!a) return NULL;
    if (!typenum_allowed(PyArray_TYPE(a), allowed)) {
        char expected[128];
        allowed_list(allowed, expected, sizeof expected);
        qc_type_error("%s: expected an array of %s, got %s", arg, expected,
                      PyArray_TYPE(a) == NPY_OBJECT ? "object"
                      : PyArray_DESCR(a)->typeobj->tp_name);
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

PyArrayObject *qc_contiguous(PyArrayObject *a, const char *arg) {
    PyArrayObject *r = qc_native_array(a);
    if (!r) {
        qc_name_memory_error(arg, "a contiguous copy", PyArray_NDIM(a), PyArray_DIMS(a),
                             (size_t)PyArray_ITEMSIZE(a));
    }
    Py_DECREF(a);
    return r;
}

PyArrayObject *qc_int_array(PyObject *obj, const char *arg, const int *allowed) {
    PyArrayObject *a = qc_int_view(obj, arg, allowed);
    return a ? qc_contiguous(a, arg) : NULL;
}

PyArrayObject *qc_native_array(PyArrayObject *a) {
    /* the native-byte-order descriptor: a '>i4' input is swapped into a copy */
    return (PyArrayObject *)PyArray_FromAny((PyObject *)a, PyArray_DescrFromType(PyArray_TYPE(a)),
                                            0, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
}

static void shape_str(char *buf, size_t n, int ndim, const npy_intp *shape) {
    size_t len = 0;
    len += snprintf(buf + len, n - len, "(");
    for (int i = 0; i < ndim && len < n; i++) {
        len += snprintf(buf + len, n - len, "%s%" NPY_INTP_FMT, i ? ", " : "", shape[i]);
    }
    if (len < n) snprintf(buf + len, n - len, ndim == 1 ? ",)" : ")");
}

PyArrayObject *qc_output(PyObject *out, const char *arg, int ndim, const npy_intp *shape,
                         int typenum) {
    if (out == NULL || out == Py_None) {
        PyArrayObject *r = (PyArrayObject *)PyArray_SimpleNew(ndim, (npy_intp *)shape, typenum);
        if (!r) {
            PyArray_Descr *d = PyArray_DescrFromType(typenum);
            size_t itemsize = d ? (size_t)PyDataType_ELSIZE(d) : 1;
            Py_XDECREF(d);
            qc_name_memory_error(arg, "the result", ndim, shape, itemsize);
        }
        return r;
    }
    if (!PyArray_Check(out)) {
        qc_type_error("%s: expected a NumPy array, got %s", arg, Py_TYPE(out)->tp_name);
        return NULL;
    }
    PyArrayObject *o = (PyArrayObject *)out;
    int same = PyArray_NDIM(o) == ndim;
    for (int i = 0; same && i < ndim; i++) same = PyArray_DIM(o, i) == shape[i];
    if (!same) {
        char want[160], got[160];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, PyArray_NDIM(o), PyArray_DIMS(o));
        qc_value_error("%s: expected shape %s, got %s", arg, want, got);
        return NULL;
    }
    if (PyArray_TYPE(o) != typenum && !PyArray_EquivTypenums(PyArray_TYPE(o), typenum)) {
        qc_value_error("%s: expected dtype %s, got %s", arg, qc_typename(typenum),
                       qc_typename(PyArray_TYPE(o)));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(o) || !PyArray_ISALIGNED(o) || !PyArray_ISWRITEABLE(o) ||
        !PyArray_ISNOTSWAPPED(o)) {
        qc_value_error("%s: expected a writable, aligned, C-contiguous array in native byte "
                       "order", arg);
        return NULL;
    }
    Py_INCREF(o);
    return o;
}

int qc_float_scalar(PyObject *obj, float *out) {
    if (PyArray_IsScalar(obj, Float)) *out = PyArrayScalar_VAL(obj, Float);
    else if (PyArray_IsScalar(obj, Double)) *out = (float)PyArrayScalar_VAL(obj, Double);
    else if (PyFloat_CheckExact(obj)) *out = (float)PyFloat_AS_DOUBLE(obj);
    else return 0;
    return 1;
}

int qc_zp_scalar(PyObject *obj, int typenum, int32_t *out) {
    if (typenum == NPY_UINT8 && PyArray_IsScalar(obj, UByte))
        *out = PyArrayScalar_VAL(obj, UByte);
    else if (typenum == NPY_INT8 && PyArray_IsScalar(obj, Byte))
        *out = PyArrayScalar_VAL(obj, Byte);
    else
        return 0;
    return 1;
}

int qc_check_scales(const float *s, size_t n, const char *arg) {
    for (size_t i = 0; i < n; i++) {
        if (!(s[i] > 0.0f) || !isfinite(s[i])) {
            char *repr = PyOS_double_to_string((double)s[i], 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (!repr) return -1;
            if (n == 1) {
                qc_value_error("%s: expected a positive finite value, got %s", arg, repr);
            } else {
                qc_value_error("%s: expected positive finite values, got %s at index %zu", arg,
                               repr, i);
            }
            PyMem_Free(repr);
            return -1;
        }
    }
    return 0;
}

int qc_is_real_scalar(PyObject *obj) {
    if (PyBool_Check(obj)) return 0;
    return PyFloat_Check(obj) || PyLong_Check(obj) ||
           (PyArray_IsScalar(obj, Number) && !PyArray_IsScalar(obj, ComplexFloating));
}

int qc_parse_ssize(PyObject *obj, const char *arg, Py_ssize_t *out) {
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        return qc_type_error("%s: expected an int, got %s", arg, Py_TYPE(obj)->tp_name);
    }
    PyObject *i = PyNumber_Index(obj);
    if (!i) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < PY_SSIZE_T_MIN || v > PY_SSIZE_T_MAX) {
        return qc_value_error("%s: expected an int that fits in 64 bits, got one %s", arg,
                              overflow < 0 || (!overflow && v < 0) ? "below -2**63"
                                                                   : "of 2**63 or more");
    }
    *out = (Py_ssize_t)v;
    return 0;
}

const char *qc_utf8_or_null(PyObject *obj) {
    if (!obj || !PyUnicode_Check(obj)) return NULL;
    Py_ssize_t len = 0;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (!s) {
        PyErr_Clear(); /* lone surrogates: not text a name can hold */
        return NULL;
    }
    if ((size_t)len != strlen(s)) return NULL; /* an embedded NUL would end the name early */
    return s;
}

PyArrayObject *qc_int64_values(PyArrayObject *a, const char *arg) {
    const int t = PyArray_TYPE(a);
    const int wide_unsigned = PyTypeNum_ISUNSIGNED(t) && PyArray_ITEMSIZE(a) >= 8;
    PyArrayObject *c = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a, PyArray_DescrFromType(wide_unsigned ? NPY_UINT64 : NPY_INT64), 0, 0,
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
    if (!c || !wide_unsigned) return c;
    const uint64_t *v = (const uint64_t *)PyArray_DATA(c);
    const npy_intp n = PyArray_SIZE(c);
    for (npy_intp i = 0; i < n; i++) {
        if (v[i] > (uint64_t)INT64_MAX) {
            qc_value_error("%s: expected integers that fit in int64, got %llu at index %zd", arg,
                           (unsigned long long)v[i], (Py_ssize_t)i);
            Py_DECREF(c);
            return NULL;
        }
    }
    return c; /* every value <= INT64_MAX: the same bits read as int64 */
}

/* [lo, hi) of the bytes an array's elements occupy (lo == hi when it has none). */
static void byte_bounds(PyArrayObject *a, const char **lo, const char **hi) {
    const char *p = PyArray_BYTES(a);
    *lo = *hi = p;
    if (PyArray_SIZE(a) == 0) return;
    ptrdiff_t l = 0, h = 0;
    for (int d = 0; d < PyArray_NDIM(a); d++) {
        const ptrdiff_t ext = (ptrdiff_t)(PyArray_DIM(a, d) - 1) * PyArray_STRIDE(a, d);
        if (ext < 0) l += ext;
        else h += ext;
    }
    *lo = p + l;
    *hi = p + h + PyArray_ITEMSIZE(a);
}

int qc_may_overlap(PyArrayObject *a, PyArrayObject *b) {
    const char *alo, *ahi, *blo, *bhi;
    byte_bounds(a, &alo, &ahi);
    byte_bounds(b, &blo, &bhi);
    return alo < ahi && blo < bhi && alo < bhi && blo < ahi;
}

PyArrayObject *qc_out_target(PyArrayObject *out, PyArrayObject *const *inputs, int n) {
    for (int i = 0; i < n; i++) {
        if (inputs[i] && qc_may_overlap(out, inputs[i])) {
            PyArrayObject *t = (PyArrayObject *)PyArray_SimpleNew(
                PyArray_NDIM(out), PyArray_DIMS(out), PyArray_TYPE(out));
            if (!t) {
                qc_name_memory_error("out", "a temporary (out overlaps an input)",
                                     PyArray_NDIM(out), PyArray_DIMS(out),
                                     (size_t)PyArray_ITEMSIZE(out));
            }
            return t;
        }
    }
    Py_INCREF(out);
    return out;
}

void qc_out_commit(PyArrayObject *target, PyArrayObject *out) {
    if (target != out) memcpy(PyArray_DATA(out), PyArray_DATA(target), (size_t)PyArray_NBYTES(out));
    Py_DECREF(target);
}

int qc_out_swap(PyArrayObject **out, PyArrayObject **final, PyArrayObject *const *inputs,
                int n) {
    PyArrayObject *dst = qc_out_target(*out, inputs, n);
    if (!dst) return -1;
    if (dst != *out) {
        *final = *out;
        *out = dst;
    } else {
        Py_DECREF(dst);
    }
    return 0;
}

PyObject *qc_out_finish(PyObject *result, PyArrayObject *final) {
    if (!final) return result;
    if (!result) {
        Py_DECREF(final);
        return NULL;
    }
    qc_out_commit((PyArrayObject *)result, final);
    return (PyObject *)final;
}

void qc_name_memory_error(const char *arg, const char *what, int ndim, const npy_intp *shape,
                          size_t itemsize) {
    if (!PyErr_ExceptionMatches(PyExc_MemoryError)) return;
    PyErr_Clear();
    char sh[160];
    shape_str(sh, sizeof sh, ndim, shape);
    /* the byte count in floating point: the element count itself may overflow */
    double bytes = (double)itemsize;
    for (int d = 0; d < ndim; d++) bytes *= (double)shape[d];
    char msg[400];
    snprintf(msg, sizeof msg, "%s: cannot allocate %.0f bytes for %s of shape %s", arg, bytes,
             what, sh);
    PyErr_SetString(PyExc_MemoryError, msg);
}

int qc_check_ratio(float r, const char *what) {
    if (isfinite(r) && r > 0.0f) return 0;
    char *repr = PyOS_double_to_string((double)r, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!repr) return -1;
    qc_value_error("%s: expected a positive finite float32 ratio, got %s", what, repr);
    PyMem_Free(repr);
    return -1;
}
