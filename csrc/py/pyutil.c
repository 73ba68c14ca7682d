/* Binding-layer helpers shared by every family: dtype/axis/profile parsing, array conversion. */
#include "py/pyutil.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

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

const char *qc_typename(int typenum) {
    switch (typenum) {
    case NPY_INT8: return "int8";
    case NPY_UINT8: return "uint8";
    case NPY_INT16: return "int16";
    case NPY_UINT16: return "uint16";
    case NPY_INT32: return "int32";
    case NPY_UINT32: return "uint32";
    case NPY_INT64: return "int64";
    case NPY_UINT64: return "uint64";
    case NPY_FLOAT16: return "float16";
    case NPY_FLOAT32: return "float32";
    case NPY_FLOAT64: return "float64";
    case NPY_BOOL: return "bool";
    default: return "unsupported";
    }
}

static int typenum_allowed(int t, const int *allowed) {
    if (!allowed) return PyTypeNum_ISINTEGER(t) && !PyTypeNum_ISBOOL(t);
    for (; *allowed >= 0; allowed++) {
        if (*allowed == t) return 1;
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
        const char *s = PyUnicode_AsUTF8(obj);
        if (!s) return -1;
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
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
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
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) return -1;
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
    if (!(PyTypeNum_ISFLOAT(t) || (PyTypeNum_ISINTEGER(t) && !PyTypeNum_ISBOOL(t))) ||
        t == NPY_LONGDOUBLE) {
        qc_type_error("%s: expected a real-valued array (float16/32/64 or integer), got %s", arg,
                      t == NPY_LONGDOUBLE ? "longdouble" : PyArray_DESCR(a)->typeobj->tp_name);
        Py_DECREF(a);
        return NULL;
    }
    PyArrayObject *r = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a, PyArray_DescrFromType(NPY_FLOAT32), 0, 0,
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
    Py_DECREF(a);
    return r;
}

PyArrayObject *qc_int_array(PyObject *obj, const char *arg, const int *allowed) {
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
    PyArrayObject *r = qc_native_array(a);
    Py_DECREF(a);
    return r;
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
        return (PyArrayObject *)PyArray_SimpleNew(ndim, (npy_intp *)shape, typenum);
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
    if (PyArray_TYPE(o) != typenum) {
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
