/* Bindings for convolution and the quantized operator set: parsing, validation, GIL release. */
#include "py/pyutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv/conv.h"
#include "conv/gconv.h"
#include "conv/nchw.h"
#include "conv/dw.h"
#include "conv/qops.h"

static const int QC_ACT_TYPES[] = {NPY_INT8, NPY_UINT8, -1};
#define CAPSULE_NAME "quantc.conv_weight"

/* ---- small parsers ---- */

static int range_of(int typenum, int32_t *lo, int32_t *hi) {
    *lo = typenum == NPY_INT8 ? -128 : 0;
    *hi = typenum == NPY_INT8 ? 127 : 255;
    return 0;
}

/* A tuple/list of n ints, each in [minval, 2^20]. The items are read from a tuple copy: an
 * item's __index__ may run Python code that changes `obj` (clears a list) while we iterate. */
static int parse_ints(PyObject *obj, const char *arg, int n, int minval, int *out) {
    PyObject *seq = PySequence_Check(obj) && !PyUnicode_Check(obj) ? PySequence_Tuple(obj) : NULL;
    if (!seq || PyTuple_GET_SIZE(seq) != n) {
        Py_XDECREF(seq);
        PyErr_Clear();
        return qc_type_error("%s: expected a sequence of %d ints, got %R", arg, n, obj);
    }
    for (int i = 0; i < n; i++) {
        PyObject *it = PyTuple_GET_ITEM(seq, i);
        if (PyBool_Check(it) || !PyIndex_Check(it)) {
            Py_DECREF(seq);
            return qc_type_error("%s: expected a sequence of %d ints, got %R", arg, n, obj);
        }
        Py_ssize_t v;
        if (qc_parse_ssize(it, arg, &v) < 0) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < minval || v > (1 << 20)) {
            Py_DECREF(seq);
            return qc_value_error("%s: expected values in [%d, %d], got %zd at index %d", arg,
                                  minval, 1 << 20, v, i);
        }
        out[i] = (int)v;
    }
    Py_DECREF(seq);
    return 0;
}

/* The integer typenum of a zero point given as an ndarray or NumPy scalar; -1 for Python ints. */
static int zp_typenum(PyObject *obj) {
    if (PyArray_Check(obj)) return PyArray_TYPE((PyArrayObject *)obj);
    if (PyArray_IsScalar(obj, Generic)) {
        PyArray_Descr *d = PyArray_DescrFromScalar(obj);
        int t = d->type_num;
        Py_DECREF(d);
        return t;
    }
    return -1;
}

/* Zero points: None (0), a scalar, or (n_allowed,) values; each in typenum's range. A NumPy
 * integer zero point must have typenum's dtype (as in ONNX). Fills out[0..count). */
static int parse_zps(PyObject *obj, const char *arg, int typenum, const char *typename_of,
                     npy_intp n_allowed, int32_t *out, npy_intp *count) {
    *count = 1;
    out[0] = 0;
    if (obj == NULL || obj == Py_None) return 0;
    int32_t lo, hi;
    range_of(typenum, &lo, &hi);
    /* the usual scalars without the arrays (a few tenths of a microsecond each, which small
     * tensors feel); anything else, and every error, through the arrays below */
    if (PyLong_CheckExact(obj)) {
        int overflow;
        const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (!overflow && !PyErr_Occurred() && v >= lo && v <= hi) {
            out[0] = (int32_t)v;
            return 0;
        }
        PyErr_Clear();
    }
    if (qc_zp_scalar(obj, typenum, out)) return 0;
    int t = zp_typenum(obj);
    if (t >= 0 && t != typenum) {
        return qc_type_error("%s: expected %s (the dtype of %s), got %s", arg,
                             qc_typename(typenum), typename_of, qc_typename(t));
    }
    PyArrayObject *z = qc_int_array(obj, arg, NULL);
    if (!z) return -1;
    npy_intp size = PyArray_SIZE(z);
    int ok = PyArray_NDIM(z) == 0 || (PyArray_NDIM(z) == 1 && (size == 1 || size == n_allowed));
    if (!ok) {
        int nd = PyArray_NDIM(z);
        Py_DECREF(z);
        if (n_allowed > 1) {
            return qc_value_error("%s: expected a scalar or shape (%zd,), got %d-D shape with %zd "
                                  "elements", arg, (Py_ssize_t)n_allowed, nd, (Py_ssize_t)size);
        }
        return qc_value_error("%s: expected a scalar, got %d-D shape with %zd elements", arg, nd,
                              (Py_ssize_t)size);
    }
    PyArrayObject *z64 = qc_int64_values(z, arg); /* a uint64 2**64 - 1 must not read as -1 */
    Py_DECREF(z);
    if (!z64) return -1;
    const int64_t *v = PyArray_DATA(z64);
    for (npy_intp i = 0; i < size; i++) {
        if (v[i] < lo || v[i] > hi) {
            long long bad = (long long)v[i];
            Py_DECREF(z64);
            return qc_value_error("%s: expected values in [%d, %d] (%s), got %lld at index %zd",
                                  arg, lo, hi, qc_typename(typenum), bad, (Py_ssize_t)i);
        }
        out[i] = (int32_t)v[i];
    }
    *count = size;
    Py_DECREF(z64);
    return 0;
}

/* Scales: a scalar or (n_allowed,) positive finite values. */
static int parse_scales(PyObject *obj, const char *arg, npy_intp n_allowed, float *out,
                        npy_intp *count) {
    if (obj == NULL || obj == Py_None) {
        return qc_type_error("%s: expected a positive float, got None", arg);
    }
    if (qc_float_scalar(obj, out)) {
        *count = 1;
        return qc_check_scales(out, 1, arg);
    }
    PyArrayObject *s = qc_float32_array(obj, arg);
    if (!s) return -1;
    npy_intp size = PyArray_SIZE(s);
    int ok = PyArray_NDIM(s) == 0 || (PyArray_NDIM(s) == 1 && (size == 1 || size == n_allowed));
    if (!ok) {
        int nd = PyArray_NDIM(s);
        Py_DECREF(s);
        if (n_allowed > 1) {
            return qc_value_error("%s: expected a scalar or shape (%zd,), got %d-D shape with %zd "
                                  "elements", arg, (Py_ssize_t)n_allowed, nd, (Py_ssize_t)size);
        }
        return qc_value_error("%s: expected a scalar, got %d-D shape with %zd elements", arg, nd,
                              (Py_ssize_t)size);
    }
    memcpy(out, PyArray_DATA(s), (size_t)size * sizeof(float));
    Py_DECREF(s);
    *count = size;
    return qc_check_scales(out, (size_t)size, arg);
}

/* The output dtype of a requantizing op: y_zero_point's dtype when it is a NumPy integer
 * (array or scalar), else `fallback`. */
static int out_typenum(PyObject *yzp, int fallback, int *typenum) {
    int t = (yzp && yzp != Py_None) ? zp_typenum(yzp) : -1;
    if (t < 0) {
        *typenum = fallback;
        return 0;
    }
    if (t != NPY_INT8 && t != NPY_UINT8) {
        return qc_type_error("y_zero_point: expected int8 or uint8 (it sets the output dtype), "
                             "got %s", qc_typename(t));
    }
    *typenum = t;
    return 0;
}

/* An activation array: int8/uint8, `ndim` dimensions (checked before anything is copied),
 * then a C-contiguous copy if needed. */
static PyArrayObject *act_array(PyObject *obj, const char *arg, int ndim, const char *layout) {
    PyArrayObject *a = qc_int_view(obj, arg, QC_ACT_TYPES);
    if (!a) return NULL;
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        qc_value_error("%s: expected a %d-D array %s, got %d dimensions", arg, ndim, layout,
                       PyArray_NDIM(a));
        Py_DECREF(a);
        return NULL;
    }
    return qc_contiguous(a, arg);
}

/* ---- packed conv weights (a capsule held by quantc.PackedConvWeight) ---- */

static void capsule_free(PyObject *cap) {
    qc_conv_weights_free(PyCapsule_GetPointer(cap, CAPSULE_NAME));
}

static qc_conv_weights *make_weights(PyArrayObject *w, PyObject *wzp_obj, size_t G) {
    const npy_intp *ws = PyArray_DIMS(w);
    const size_t M = (size_t)ws[0];
    int32_t *zps = malloc((M ? M : 1) * sizeof(int32_t));
    if (!zps) return (qc_conv_weights *)PyErr_NoMemory();
    npy_intp cnt;
    if (parse_zps(wzp_obj, "w_zero_point", PyArray_TYPE(w), "w", (npy_intp)M, zps, &cnt) < 0) {
        free(zps);
        return NULL;
    }
    const int per_channel = cnt > 1 || (cnt == 1 && M == 1 && wzp_obj && wzp_obj != Py_None &&
                                        PyArray_Check(wzp_obj) &&
                                        PyArray_NDIM((PyArrayObject *)wzp_obj) == 1);
    for (size_t m = 1; m < M && cnt == 1; m++) zps[m] = zps[0];
    qc_conv_weights *cw;
    Py_BEGIN_ALLOW_THREADS
    cw = qc_conv_weights_create(PyArray_DATA(w), PyArray_TYPE(w) == NPY_INT8, zps, per_channel,
                                M, (size_t)ws[1], (size_t)ws[2], (size_t)ws[3], G);
    Py_END_ALLOW_THREADS
    free(zps);
    if (!cw) PyErr_NoMemory();
    return cw;
}

static PyArrayObject *weight_array(PyObject *obj, size_t G) {
    PyArrayObject *w = act_array(obj, "w", 4, "(M, C/group, kH, kW)");
    if (!w) return NULL;
    const npy_intp *s = PyArray_DIMS(w);
    if (s[0] % (npy_intp)G != 0) {
        qc_value_error("w: expected M = w.shape[0] divisible by group = %zu, got %zd", G,
                       (Py_ssize_t)s[0]);
        Py_DECREF(w);
        return NULL;
    }
    if (s[2] < 1 || s[3] < 1 || s[1] < 1) {
        qc_value_error("w: expected C/group, kH and kW >= 1, got shape (%zd, %zd, %zd, %zd)",
                       (Py_ssize_t)s[0], (Py_ssize_t)s[1], (Py_ssize_t)s[2], (Py_ssize_t)s[3]);
        Py_DECREF(w);
        return NULL;
    }
    return w;
}

static int parse_group(PyObject *obj, size_t *G) {
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        return qc_type_error("group: expected an int, got %s", Py_TYPE(obj)->tp_name);
    }
    Py_ssize_t g;
    if (qc_parse_ssize(obj, "group", &g) < 0) return -1;
    if (g < 1) return qc_value_error("group: expected an int >= 1, got %zd", g);
    *G = (size_t)g;
    return 0;
}

/* _pack_conv_weight(w, w_zero_point, group) -> capsule */
static PyObject *py_pack_conv_weight(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *wobj, *wzp, *gobj;
    if (!PyArg_ParseTuple(args, "OOO", &wobj, &wzp, &gobj)) return NULL;
    size_t G = 1;
    if (parse_group(gobj, &G) < 0) return NULL;
    PyArrayObject *w = weight_array(wobj, G);
    if (!w) return NULL;
    qc_conv_weights *cw = make_weights(w, wzp, G);
    Py_DECREF(w);
    if (!cw) return NULL;
    PyObject *cap = PyCapsule_New(cw, CAPSULE_NAME, capsule_free);
    if (!cap) qc_conv_weights_free(cw);
    return cap;
}

/* The shape part of a conv call: x's channels against the weights, the dilated kernel
 * against the padded input, and a's N..OW, strides, pads and dilations. */
static int conv_shape(qc_conv_args *a, const qc_conv_weights *cw, const npy_intp *xs, size_t G,
                      const int *strides, const int *pads, const int *dil) {
    const int nhwc = a->x_nhwc;
    const size_t N = (size_t)xs[0], C = (size_t)xs[nhwc ? 3 : 1], H = (size_t)xs[nhwc ? 1 : 2],
                 W = (size_t)xs[nhwc ? 2 : 3];
    if (C != cw->Cg * G)
        return qc_value_error("x: expected C = %zu channels (w.shape[1] = %zu times group = "
                              "%zu), got %zu", cw->Cg * G, cw->Cg, G, C);
    const size_t eh = (cw->kh - 1) * (size_t)dil[0] + 1, ew = (cw->kw - 1) * (size_t)dil[1] + 1;
    const size_t PH = H + (size_t)pads[0] + (size_t)pads[2];
    const size_t PW = W + (size_t)pads[1] + (size_t)pads[3];
    /* an empty plane gives an empty output even when the kernel does not fit the padding
     * (ONNX's floor((PH - eh) / s) + 1 is 0 or less there) */
    if ((eh > PH || ew > PW) && H > 0 && W > 0)
        return qc_value_error("w: expected a kernel that fits the padded input (%zu, %zu), got "
                              "a dilated kernel of (%zu, %zu)", PH, PW, eh, ew);
    a->N = N, a->C = C, a->H = H, a->W = W;
    a->OH = eh > PH ? 0 : (PH - eh) / (size_t)strides[0] + 1;
    a->OW = ew > PW ? 0 : (PW - ew) / (size_t)strides[1] + 1;
    a->sh = strides[0], a->sw = strides[1], a->dh = dil[0], a->dw = dil[1];
    a->pt = pads[0], a->pl = pads[1], a->pb = pads[2], a->pr = pads[3];
    return 0;
}

/* The requantization part of a QLinearConv call (x of type xt, M output channels): the
 * multipliers (*mult, malloc'd, M floats), the bias (*bias, an int32 array or NULL), the
 * output type, zero point, relu and arithmetic (rq32: ONNX Runtime's float32) in a. */
static int conv_requant(qc_conv_args *a, size_t M, int xt, PyObject *xso, PyObject *wso,
                        PyObject *yso, PyObject *yzpo, PyObject *biaso, int relu, int rq32,
                        float **mult, PyArrayObject **bias, int *yt) {
    float xsc, ysc;
    npy_intp cnt, nws;
    if (parse_scales(xso, "x_scale", 1, &xsc, &cnt) < 0) return -1;
    float *wsc = malloc((M ? M : 1) * sizeof(float));
    *mult = malloc((M ? M : 1) * sizeof(float));
    if (!wsc || !*mult) {
        free(wsc);
        PyErr_NoMemory();
        return -1;
    }
    int32_t yzp;
    int rc = -1;
    if (parse_scales(wso, "w_scale", (npy_intp)M, wsc, &nws) < 0) goto done;
    if (parse_scales(yso, "y_scale", 1, &ysc, &cnt) < 0) goto done;
    if (yzpo == Py_None) {
        qc_type_error("y_zero_point: expected an int8 or uint8 zero point, got None");
        goto done;
    }
    if (out_typenum(yzpo, xt, yt) < 0) goto done;
    if (parse_zps(yzpo, "y_zero_point", *yt, "the output", 1, &yzp, &cnt) < 0) goto done;
    for (size_t m = 0; m < M; m++) {
        /* the multiplier exactly as onnx's reference: float32 (x_scale * w_scale) / y_scale */
        float xw = xsc * wsc[nws > 1 ? m : 0];
        (*mult)[m] = xw / ysc;
        if (qc_check_ratio((*mult)[m], "x_scale * w_scale / y_scale") < 0) goto done;
    }
    a->mult = *mult;
    a->y_signed = *yt == NPY_INT8;
    a->y_zp = yzp;
    a->relu = relu;
    a->rq32 = rq32;
    if (biaso != Py_None) {
        static const int i32[] = {NPY_INT32, -1};
        *bias = qc_int_array(biaso, "bias", i32);
        if (!*bias) goto done;
        if (PyArray_NDIM(*bias) != 1 || (size_t)PyArray_DIM(*bias, 0) != M) {
            qc_value_error("bias: expected shape (%zu,), got %d-D with %zd elements", M,
                           PyArray_NDIM(*bias), (Py_ssize_t)PyArray_SIZE(*bias));
            goto done;
        }
        a->bias = PyArray_DATA(*bias);
    }
    rc = 0;
done:
    free(wsc);
    return rc;
}

/* Run a (x given) into a new output, or into out (NULL: a new array). */
static PyObject *conv_call(qc_conv_args *a, PyArrayObject *x, PyArrayObject *bias, int yt,
                           PyObject *out) {
    npy_intp oshape[4] = {(npy_intp)a->N, (npy_intp)a->w->M, (npy_intp)a->OH, (npy_intp)a->OW};
    if (a->y_nhwc) {
        oshape[1] = (npy_intp)a->OH, oshape[2] = (npy_intp)a->OW, oshape[3] = (npy_intp)a->w->M;
    }
    PyArrayObject *y = qc_output(out ? out : Py_None, "out", 4, oshape, yt);
    if (!y) return NULL;
    PyArrayObject *const ins[] = {x, bias};
    PyArrayObject *dst = qc_out_target(y, ins, 2);
    if (!dst) {
        Py_DECREF(y);
        return NULL;
    }
    a->x_signed = PyArray_TYPE(x) == NPY_INT8;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qc_conv_run(a, PyArray_DATA(x), PyArray_DATA(dst));
    Py_END_ALLOW_THREADS
    qc_out_commit(dst, y);
    if (rc < 0) {
        Py_DECREF(y);
        /* the work buffers grow with the padded input, not the output: name that size */
        unsigned long long padded;
        if (__builtin_mul_overflow((unsigned long long)a->C,
                                   (unsigned long long)a->H + (unsigned)a->pt + (unsigned)a->pb,
                                   &padded) ||
            __builtin_mul_overflow(padded,
                                   (unsigned long long)a->W + (unsigned)a->pl + (unsigned)a->pr,
                                   &padded))
            padded = ULLONG_MAX;
        PyErr_Format(PyExc_MemoryError,
                     "x: out of memory for the convolution's work buffers (a padded image of "
                     "C x (H + pads) x (W + pads) = %llu bytes; pads (%d, %d, %d, %d))",
                     padded, a->pt, a->pl, a->pb, a->pr);
        return NULL;
    }
    return (PyObject *)y;
}

/* _conv(x, w, x_zero_point, w_zero_point, x_scale, w_scale, y_scale, y_zero_point, bias,
 *       strides, pads, dilations, group, relu, integer, out[, rq32])
 * w is an array or a capsule from _pack_conv_weight (then w_zero_point must be None and
 * w_signed/group come from the capsule). integer=True: ConvInteger (int32 out). */
static PyObject *py_conv(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *wo, *xzpo, *wzpo, *xso, *wso, *yso, *yzpo, *biaso, *so, *po, *dlo, *go, *out;
    int relu, integer, rq32 = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOppO|p", &xo, &wo, &xzpo, &wzpo, &xso, &wso, &yso,
                          &yzpo, &biaso, &so, &po, &dlo, &go, &relu, &integer, &out, &rq32))
        return NULL;
    int strides[2], pads[4], dil[2];
    size_t G = 1;
    if (parse_ints(so, "strides", 2, 1, strides) < 0 || parse_ints(po, "pads", 4, 0, pads) < 0 ||
        parse_ints(dlo, "dilations", 2, 1, dil) < 0 || parse_group(go, &G) < 0)
        return NULL;
    PyArrayObject *x = NULL, *w = NULL, *bias = NULL;
    qc_conv_weights *cw = NULL;
    int own_cw = 0;
    float *mult = NULL;
    PyObject *result = NULL;

    x = act_array(xo, "x", 4, "(N, C, H, W)");
    if (!x) goto done;
    const int xt = PyArray_TYPE(x);
    if (PyCapsule_CheckExact(wo)) {
        cw = PyCapsule_GetPointer(wo, CAPSULE_NAME);
        if (!cw) goto done;
        if (wzpo != Py_None) {
            qc_value_error("w_zero_point: expected None with a packed weight (its zero points "
                           "were packed with it), got %R", wzpo);
            goto done;
        }
        if (cw->G != G) {
            qc_value_error("group: expected %zu (the group the weight was packed for), got %zu",
                           cw->G, G);
            goto done;
        }
    } else {
        w = weight_array(wo, G);
        if (!w) goto done;
        cw = make_weights(w, wzpo, G);
        if (!cw) goto done;
        own_cw = 1;
    }
    qc_conv_args a;
    memset(&a, 0, sizeof a);
    a.w = cw;
    if (conv_shape(&a, cw, PyArray_DIMS(x), G, strides, pads, dil) < 0) goto done;
    int32_t xzp;
    npy_intp cnt;
    if (parse_zps(xzpo, "x_zero_point", xt, "x", 1, &xzp, &cnt) < 0) goto done;
    a.xzp = xzp;
    int yt = NPY_INT32;
    if (integer) {
        a.out_int32 = 1;
    } else if (conv_requant(&a, cw->M, xt, xso, wso, yso, yzpo, biaso, relu, rq32, &mult,
                            &bias, &yt) < 0) {
        goto done;
    }
    result = conv_call(&a, x, bias, yt, out);
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(bias);
    if (own_cw) qc_conv_weights_free(cw);
    free(mult);
    return result;
}

/* ---- prepared QLinearConv (a model's layer): everything but x parsed once ---- */

#define PLAN_NAME "quantc.conv_plan"

typedef struct {
    PyObject *wcap;      /* the packed weight's capsule (a reference) */
    PyArrayObject *bias; /* int32 (M,) or NULL (a reference) */
    float *mult;
    qc_conv_args a;      /* all but the shape fields, which each call fills */
    size_t G;
    int strides[2], pads[4], dil[2];
    int xt, yt;
} conv_plan;

static void plan_free(PyObject *cap) {
    conv_plan *p = PyCapsule_GetPointer(cap, PLAN_NAME);
    if (!p) return;
    Py_XDECREF(p->wcap);
    Py_XDECREF(p->bias);
    free(p->mult);
    free(p);
}

/* _conv_plan(w_capsule, x_zero_point, x_scale, w_scale, y_scale, y_zero_point, bias, strides,
 *            pads, dilations, group, relu[, layout[, rq32]]) -> plan: a QLinearConv with
 * every argument but x checked and converted once; x_zero_point must be an int8 or uint8
 * NumPy scalar (it gives x's dtype). layout: bit 0, x is NHWC; bit 1, y is NHWC (else NCHW).
 * rq32: ONNX Runtime's float32 requantization.
 * _conv_exec(plan, x) runs it. */
static PyObject *py_conv_plan(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *wo, *xzpo, *xso, *wso, *yso, *yzpo, *biaso, *so, *po, *dlo, *go;
    int relu, layout = 0, rq32 = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOp|ip", &wo, &xzpo, &xso, &wso, &yso, &yzpo, &biaso,
                          &so, &po, &dlo, &go, &relu, &layout, &rq32))
        return NULL;
    if (layout < 0 || layout > 3)
        return qc_value_error("layout: expected 0..3 (bit 0: x NHWC, bit 1: y NHWC), got %d",
                              layout), NULL;
    conv_plan *p = calloc(1, sizeof *p);
    if (!p) return PyErr_NoMemory();
    PyObject *cap = NULL;
    if (parse_ints(so, "strides", 2, 1, p->strides) < 0 ||
        parse_ints(po, "pads", 4, 0, p->pads) < 0 ||
        parse_ints(dlo, "dilations", 2, 1, p->dil) < 0 || parse_group(go, &p->G) < 0)
        goto fail;
    if (!PyCapsule_IsValid(wo, CAPSULE_NAME)) {
        qc_type_error("w: expected a packed conv weight (PackedConvWeight._capsule), got %s",
                      Py_TYPE(wo)->tp_name);
        goto fail;
    }
    qc_conv_weights *cw = PyCapsule_GetPointer(wo, CAPSULE_NAME);
    if (cw->G != p->G) {
        qc_value_error("group: expected %zu (the group the weight was packed for), got %zu",
                       cw->G, p->G);
        goto fail;
    }
    p->xt = zp_typenum(xzpo);
    if (p->xt != NPY_INT8 && p->xt != NPY_UINT8) {
        qc_type_error("x_zero_point: expected an int8 or uint8 NumPy scalar, got %s",
                      Py_TYPE(xzpo)->tp_name);
        goto fail;
    }
    npy_intp cnt;
    if (parse_zps(xzpo, "x_zero_point", p->xt, "x", 1, &p->a.xzp, &cnt) < 0) goto fail;
    if (conv_requant(&p->a, cw->M, p->xt, xso, wso, yso, yzpo, biaso, relu, rq32, &p->mult,
                     &p->bias, &p->yt) < 0)
        goto fail;
    p->a.w = cw;
    p->a.x_nhwc = layout & 1;
    p->a.y_nhwc = layout >> 1 & 1;
    Py_INCREF(wo);
    p->wcap = wo;
    cap = PyCapsule_New(p, PLAN_NAME, plan_free);
    if (cap) return cap;
fail:
    Py_XDECREF(p->wcap);
    Py_XDECREF(p->bias);
    free(p->mult);
    free(p);
    return NULL;
}

/* The plan in a _conv_plan capsule, or NULL with a TypeError. */
static conv_plan *plan_of(PyObject *po) {
    if (!PyCapsule_IsValid(po, PLAN_NAME))
        return qc_type_error("plan: expected a _conv_plan, got %s", Py_TYPE(po)->tp_name), NULL;
    return PyCapsule_GetPointer(po, PLAN_NAME);
}

/* _conv_exec(plan, x) -> y */
static PyObject *py_conv_exec(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *po, *xo;
    if (!PyArg_ParseTuple(args, "OO", &po, &xo)) return NULL;
    conv_plan *p = plan_of(po);
    if (!p) return NULL;
    PyArrayObject *x = act_array(xo, "x", 4, p->a.x_nhwc ? "(N, H, W, C)" : "(N, C, H, W)");
    if (!x) return NULL;
    PyObject *result = NULL;
    qc_conv_args a = p->a;
    if (PyArray_TYPE(x) != p->xt) {
        qc_type_error("x: expected %s (the dtype of the plan's x_zero_point), got %s",
                      p->xt == NPY_INT8 ? "int8" : "uint8",
                      PyArray_TYPE(x) == NPY_INT8 ? "int8" : "uint8");
    } else if (conv_shape(&a, a.w, PyArray_DIMS(x), p->G, p->strides, p->pads, p->dil) == 0) {
        result = conv_call(&a, x, p->bias, p->yt, NULL);
    }
    Py_DECREF(x);
    return result;
}

/* _conv_route(plan, x_shape) -> "direct" | "nchw" | "gemm": the path the plan takes for an
 * NCHW x of that shape (qc_conv_route) */
static PyObject *py_conv_route(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *po, *so;
    if (!PyArg_ParseTuple(args, "OO", &po, &so)) return NULL;
    conv_plan *p = plan_of(po);
    if (!p) return NULL;
    int dims[4];
    if (parse_ints(so, "x_shape", 4, 1, dims) < 0) return NULL;
    const npy_intp xs[4] = {dims[0], dims[1], dims[2], dims[3]};
    qc_conv_args a = p->a;
    a.x_nhwc = 0;
    if (conv_shape(&a, a.w, xs, p->G, p->strides, p->pads, p->dil) < 0) return NULL;
    static const char *const names[] = {"direct", "nchw", "gemm"};
    return PyUnicode_FromString(names[qc_conv_route(&a)]);
}

/* ---- NCHW <-> NHWC (a QuantizedModel's tensors between convolutions) ---- */

/* _layout4(x, to_nhwc) -> x (N, C, H, W) as a new (N, H, W, C) array, or (to_nhwc False)
 * x (N, H, W, C) as (N, C, H, W); int8 or uint8. NumPy's copy of the transposed view moves
 * one byte at a time (64 x 56 x 56: 60 us); this runs the byte-tile transposes. */
static PyObject *py_layout4(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo;
    int to_nhwc;
    if (!PyArg_ParseTuple(args, "Op", &xo, &to_nhwc)) return NULL;
    PyArrayObject *x = act_array(xo, "x", 4, to_nhwc ? "(N, C, H, W)" : "(N, H, W, C)");
    if (!x) return NULL;
    const npy_intp *d = PyArray_DIMS(x);
    const npy_intp oshape[4] = {d[0], to_nhwc ? d[2] : d[3], to_nhwc ? d[3] : d[1],
                                to_nhwc ? d[1] : d[2]};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(4, oshape, PyArray_TYPE(x));
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    const size_t rows = to_nhwc ? (size_t)d[1] : (size_t)d[1] * (size_t)d[2];
    const size_t cols = to_nhwc ? (size_t)d[2] * (size_t)d[3] : (size_t)d[3];
    if (PyArray_SIZE(x) > 0) {
        Py_BEGIN_ALLOW_THREADS
        qc_conv_layout(PyArray_DATA(x), PyArray_DATA(y), (size_t)d[0], rows, cols, 1);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(x);
    return (PyObject *)y;
}

/* _conv_path(capsule) -> "depthwise" | "gemm" */
static PyObject *py_conv_path(PyObject *self, PyObject *cap) {
    (void)self;
    qc_conv_weights *cw = PyCapsule_GetPointer(cap, CAPSULE_NAME);
    if (!cw) return NULL;
    return PyUnicode_FromString(qc_conv_path(cw));
}

/* ---- pooling ---- */

typedef struct {
    const qc_qops_impl *ops;
    const uint8_t *x;
    uint8_t *y;
    qc_win2d g;
    qc_avgpool_params p;
    int is_avg, x_signed, global;
    float gm;          /* global: the multiplier of a plane's sum (py_pool2d) */
    size_t planes_per_task, nplanes;
    int failed;
} pool_ctx;

/* Global average pooling: the planes' sums (the ISA's plane_sums), then the formula of the
 * average pooling kernels (qops.h) with one window of cnt = H * W cells, whose multiplier is
 * c->gm (float32(m / cnt), or ONNX Runtime's float32(x_scale / float32(y_scale * cnt))). */
static void gpool_planes(const pool_ctx *c, size_t p0, size_t p1) {
    const size_t n = c->g.H * c->g.W;
    const float mc = c->gm;
    const int32_t off = (int32_t)n * c->p.xzp; /* |n * xzp| <= 2^23 * 255 */
    int32_t sums[256];
    for (size_t b0 = p0; b0 < p1; b0 += 256) {
        const size_t nb = QC_MIN((size_t)256, p1 - b0);
        c->ops->plane_sums(c->x + b0 * n, c->x_signed, nb, n, sums);
        for (size_t i = 0; i < nb; i++) {
            const int32_t v = qc_requant_f32((float)(sums[i] - off) * mc, c->p.lo, c->p.hi,
                                             c->p.yzp);
            c->y[b0 + i] = (uint8_t)v; /* int8 results keep their two's complement byte */
        }
    }
}

static void pool_task(void *vctx, size_t task) {
    pool_ctx *c = vctx;
    if (c->global) {
        const size_t p0 = task * c->planes_per_task;
        gpool_planes(c, p0, QC_MIN(c->nplanes, p0 + c->planes_per_task));
        return;
    }
    const size_t pw = (size_t)c->g.pl + c->g.W + (size_t)c->g.pr;
    /* scratch of the pooling kernels (qops.h), int32 covers both */
    void *ws = malloc((c->g.OH * pw + pw + 3 * c->g.OW + 192) * sizeof(int32_t));
    if (!ws) {
        c->failed = 1;
        return;
    }
    const size_t in = c->g.H * c->g.W, on = c->g.OH * c->g.OW;
    const size_t p0 = task * c->planes_per_task, p1 = QC_MIN(c->nplanes, p0 + c->planes_per_task);
    for (size_t p = p0; p < p1; p++) {
        const uint8_t *x = c->x + p * in;
        uint8_t *y = c->y + p * on;
        if (c->is_avg) {
            if (c->x_signed) c->ops->avgpool_s8((const int8_t *)x, (int8_t *)y, &c->g, &c->p, ws);
            else c->ops->avgpool_u8(x, y, &c->g, &c->p, ws);
        } else {
            if (c->x_signed) c->ops->maxpool_s8((const int8_t *)x, (int8_t *)y, &c->g, ws);
            else c->ops->maxpool_u8(x, y, &c->g, ws);
        }
    }
    free(ws);
}

/* Largest pooling window, in cells: average pooling sums q - x_zero_point (|.| <= 255) over a
 * window in int32, and 255 * 2^23 < 2^31 keeps every partial sum exact. */
#define QC_POOL_MAX_CELLS ((int64_t)1 << 23)

/* _pool2d(q, kind, kernel, strides, pads, x_scale, x_zp, y_scale, y_zp, count_include_pad, out
 *         [, ort]) kind: 0 max, 1 average, 2 global average (kernel/strides/pads ignored);
 * ort: global average pooling with ONNX Runtime's multiplier */
static PyObject *py_pool2d(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *qo, *ko, *so, *po, *xso, *xzpo, *yso, *yzpo, *out;
    int kind, cip, ort = 0;
    if (!PyArg_ParseTuple(args, "OiOOOOOOOpO|p", &qo, &kind, &ko, &so, &po, &xso, &xzpo, &yso,
                          &yzpo, &cip, &out, &ort))
        return NULL;
    PyArrayObject *q = act_array(qo, "q", 4, "(N, C, H, W)");
    if (!q) return NULL;
    PyArrayObject *y = NULL;
    const npy_intp *s = PyArray_DIMS(q);
    const int qt = PyArray_TYPE(q);
    int k[2], st[2], pd[4] = {0, 0, 0, 0};
    if (kind == 2) {
        if (s[2] == 0 || s[3] == 0) {
            qc_value_error("q: expected H, W >= 1 for global pooling, got (%zd, %zd)",
                           (Py_ssize_t)s[2], (Py_ssize_t)s[3]);
            goto fail;
        }
        if (s[2] > (1 << 20) || s[3] > (1 << 20) || s[2] * s[3] > QC_POOL_MAX_CELLS) {
            qc_value_error("q: expected at most 2^23 elements per plane (H * W) for global "
                           "average pooling, got (%zd, %zd)", (Py_ssize_t)s[2], (Py_ssize_t)s[3]);
            goto fail;
        }
        k[0] = (int)s[2], k[1] = (int)s[3], st[0] = st[1] = 1;
    } else {
        if (parse_ints(ko, "kernel", 2, 1, k) < 0 || parse_ints(so, "strides", 2, 1, st) < 0 ||
            parse_ints(po, "pads", 4, 0, pd) < 0)
            goto fail;
        if ((int64_t)k[0] * k[1] > QC_POOL_MAX_CELLS) {
            qc_value_error("kernel: expected at most 2^23 cells (kH * kW), got (%d, %d)", k[0],
                           k[1]);
            goto fail;
        }
        if (pd[0] >= k[0] || pd[2] >= k[0] || pd[1] >= k[1] || pd[3] >= k[1]) {
            qc_value_error("pads: expected each pad smaller than the kernel (%d, %d), got "
                           "(%d, %d, %d, %d)", k[0], k[1], pd[0], pd[1], pd[2], pd[3]);
            goto fail;
        }
    }
    const size_t PH = (size_t)s[2] + (size_t)pd[0] + (size_t)pd[2];
    const size_t PW = (size_t)s[3] + (size_t)pd[1] + (size_t)pd[3];
    if (((size_t)k[0] > PH || (size_t)k[1] > PW) && s[2] > 0 && s[3] > 0) {
        qc_value_error("kernel: expected a kernel that fits the padded input (%zu, %zu), got "
                       "(%d, %d)", PH, PW, k[0], k[1]);
        goto fail;
    }
    pool_ctx c;
    memset(&c, 0, sizeof c);
    c.g.H = (size_t)s[2], c.g.W = (size_t)s[3];
    c.g.OH = (size_t)k[0] > PH ? 0 : (PH - (size_t)k[0]) / (size_t)st[0] + 1;
    c.g.OW = (size_t)k[1] > PW ? 0 : (PW - (size_t)k[1]) / (size_t)st[1] + 1;
    c.g.kh = k[0], c.g.kw = k[1], c.g.sh = st[0], c.g.sw = st[1], c.g.dh = c.g.dw = 1;
    c.g.pt = pd[0], c.g.pl = pd[1], c.g.pb = pd[2], c.g.pr = pd[3];
    c.is_avg = kind != 0;
    c.global = kind == 2;
    c.x_signed = qt == NPY_INT8;
    if (c.is_avg) {
        float xsc, ysc;
        int32_t xzp, yzp, lo, hi;
        npy_intp cnt;
        if (parse_scales(xso, "x_scale", 1, &xsc, &cnt) < 0 ||
            parse_zps(xzpo, "x_zero_point", qt, "q", 1, &xzp, &cnt) < 0 ||
            parse_scales(yso, "y_scale", 1, &ysc, &cnt) < 0 ||
            parse_zps(yzpo, "y_zero_point", qt, "q", 1, &yzp, &cnt) < 0)
            goto fail;
        c.p.m = xsc / ysc;
        if (qc_check_ratio(c.p.m, "x_scale / y_scale") < 0) goto fail;
        if (c.global) { /* H * W <= 2^23: exact in float32 */
            const float cells = (float)(c.g.H * c.g.W);
            c.gm = ort ? xsc / (ysc * cells) : c.p.m / cells;
        }
        range_of(qt, &lo, &hi);
        c.p.xzp = xzp, c.p.yzp = yzp;
        c.p.lo = (float)(lo - yzp), c.p.hi = (float)(hi - yzp);
        c.p.count_include_pad = cip;
    }
    npy_intp osh[4] = {s[0], s[1], (npy_intp)c.g.OH, (npy_intp)c.g.OW};
    y = qc_output(out, "out", 4, osh, qt);
    if (!y) goto fail;
    PyArrayObject *dst = qc_out_target(y, &q, 1);
    if (!dst) goto fail;
    c.ops = (const qc_qops_impl *)qc_family_select(&qc_qops_family)->impl;
    c.x = PyArray_DATA(q);
    c.y = PyArray_DATA(dst);
    c.nplanes = (size_t)(s[0] * s[1]);
    const size_t work = (size_t)PH * PW + 1;
    c.planes_per_task = QC_MAX((size_t)1, (size_t)(1 << 16) / work);
    if (c.nplanes && c.g.OH && c.g.OW) {
        Py_BEGIN_ALLOW_THREADS
        qc_parallel_for((c.nplanes + c.planes_per_task - 1) / c.planes_per_task, pool_task, &c);
        Py_END_ALLOW_THREADS
    }
    qc_out_commit(dst, y);
    if (c.failed) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_DECREF(q);
    return (PyObject *)y;
fail:
    Py_DECREF(q);
    Py_XDECREF(y);
    return NULL;
}

/* ---- add, mul and concat ---- */

#define QC_CHUNK ((size_t)1 << 16)

/* An element-wise add or mul (add or mul non-NULL) over n elements, in QC_CHUNK tasks. */
typedef struct {
    const qc_qops_impl *ops;
    const char *a, *b;
    char *y;
    int sa, sb, sy;
    size_t n, rep;            /* rep > 1: b holds n / rep elements, each for rep in a row */
    const qc_add_params *add;
    const qc_mul_params *mul;
} binary_ctx;

/* A broadcast b (rep > 1: each of its elements stands for rep consecutive ones, an (N, C, 1, 1)
 * gate by an (N, C, H, W) input) is written out QC_BCAST_BLOCK elements at a time into a small
 * buffer on the stack of the thread running the task, which may be the caller's (a Python
 * thread's stack can be as small as 32 KiB). */
#define QC_BCAST_BLOCK ((size_t)4096)

/* b's elements [i0, i0 + n) (n <= QC_BCAST_BLOCK) into buf: run j of rep bytes, from its
 * offset off (one division per block) */
static void fill_b(char *buf, const char *b, size_t rep, size_t i0, size_t n) {
    size_t j = i0 / rep, off = i0 - j * rep;
    for (size_t i = 0; i < n; j++, off = 0) {
        const size_t len = QC_MIN(rep - off, n - i);
        memset(buf + i, b[j], len);
        i += len;
    }
}

/* elements [i0, i0 + n) with b's values for them at b */
static void binary_span(const binary_ctx *c, size_t i0, const char *b, size_t n) {
    if (c->mul) c->ops->mul(c->a + i0, c->sa, b, c->sb, c->y + i0, c->sy, n, c->mul);
    else c->ops->add(c->a + i0, c->sa, b, c->sb, c->y + i0, c->sy, n, c->add);
}

static __attribute__((noinline)) void binary_bcast(const binary_ctx *c, size_t i0, size_t n) {
    char buf[QC_BCAST_BLOCK];
    for (size_t k = 0; k < n; k += QC_BCAST_BLOCK) {
        const size_t m = QC_MIN(QC_BCAST_BLOCK, n - k);
        fill_b(buf, c->b, c->rep, i0 + k, m);
        binary_span(c, i0 + k, buf, m);
    }
}

static void binary_task(void *vctx, size_t t) {
    const binary_ctx *c = vctx;
    const size_t i0 = t * QC_CHUNK, n = QC_MIN(QC_CHUNK, c->n - i0);
    if (c->rep > 1) binary_bcast(c, i0, n);
    else binary_span(c, i0, c->b + i0, n);
}

/* The operands of _qlinear_add / _qlinear_mul: a and b of one shape (the Python layer
 * broadcasts), or with rep > 1 a b of a's size / rep elements, each standing for rep
 * consecutive elements of a; their per-tensor scales and zero points, the output's scale,
 * zero point and dtype. On failure the arrays are released and NULLed. */
typedef struct {
    PyArrayObject *a, *b;
    float as, bs, ys;
    int32_t az, bz, yz;
    int yt;
} binary_args;

static int parse_binary(PyObject *ao, PyObject *aso, PyObject *azo, PyObject *bo, PyObject *bso,
                        PyObject *bzo, PyObject *yso, PyObject *yzo, Py_ssize_t rep,
                        binary_args *r) {
    npy_intp cnt;
    r->yt = NPY_UINT8;
    r->b = NULL;
    r->a = act_array(ao, "a", -1, "");
    if (!r->a) return -1;
    r->b = act_array(bo, "b", -1, "");
    if (!r->b) goto fail;
    if (rep > 1) {
        const size_t na = (size_t)PyArray_SIZE(r->a);
        if (na % (size_t)rep) {
            qc_value_error("b: expected a repeat count that divides a's %zu elements, got %zd",
                           na, rep);
            goto fail;
        }
        if (na / (size_t)rep != (size_t)PyArray_SIZE(r->b)) {
            qc_value_error("b: expected %zu elements (a's %zu, each for %zd in a row), got %zd",
                           na / (size_t)rep, na, rep, (Py_ssize_t)PyArray_SIZE(r->b));
            goto fail;
        }
    } else if (rep < 1 || !PyArray_SAMESHAPE(r->a, r->b)) {
        qc_value_error("b: expected the shape of a (or a shape broadcastable with it)");
        goto fail;
    }
    if (parse_scales(aso, "a_scale", 1, &r->as, &cnt) < 0 ||
        parse_zps(azo, "a_zero_point", PyArray_TYPE(r->a), "a", 1, &r->az, &cnt) < 0 ||
        parse_scales(bso, "b_scale", 1, &r->bs, &cnt) < 0 ||
        parse_zps(bzo, "b_zero_point", PyArray_TYPE(r->b), "b", 1, &r->bz, &cnt) < 0 ||
        parse_scales(yso, "y_scale", 1, &r->ys, &cnt) < 0 ||
        out_typenum(yzo, PyArray_TYPE(r->a), &r->yt) < 0 ||
        parse_zps(yzo, "y_zero_point", r->yt, "the output", 1, &r->yz, &cnt) < 0)
        goto fail;
    return 0;
fail:
    Py_CLEAR(r->a);
    Py_CLEAR(r->b);
    return -1;
}

/* ValueError: "<what>: expected <expect>, got <x> and <y>" with the two floats' reprs. */
static void pair_error(const char *what, const char *expect, float x, float y) {
    char *rx = PyOS_double_to_string((double)x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    char *ry = PyOS_double_to_string((double)y, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (rx && ry) qc_value_error("%s: expected %s, got %s and %s", what, expect, rx, ry);
    else PyErr_NoMemory();
    PyMem_Free(rx);
    PyMem_Free(ry);
}

/* The add (add non-NULL) or mul of r's operands into a new array or out= (one overlapping a or
 * b is written through a temporary); releases r's arrays. NULL with an exception set on
 * failure. */
static PyObject *run_binary(binary_args *r, PyObject *out, Py_ssize_t rep,
                            const qc_add_params *add, const qc_mul_params *mul) {
    PyArrayObject *y = qc_output(out, "out", PyArray_NDIM(r->a), PyArray_DIMS(r->a), r->yt);
    PyArrayObject *const ins[] = {r->a, r->b};
    PyArrayObject *dst = y ? qc_out_target(y, ins, 2) : NULL;
    if (dst) {
        const binary_ctx c = {(const qc_qops_impl *)qc_family_select(&qc_qops_family)->impl,
                              PyArray_DATA(r->a), PyArray_DATA(r->b), PyArray_DATA(dst),
                              PyArray_TYPE(r->a) == NPY_INT8, PyArray_TYPE(r->b) == NPY_INT8,
                              r->yt == NPY_INT8, (size_t)PyArray_SIZE(r->a), (size_t)rep,
                              add, mul};
        if (c.n) {
            Py_BEGIN_ALLOW_THREADS
            qc_parallel_for((c.n + QC_CHUNK - 1) / QC_CHUNK, binary_task, (void *)&c);
            Py_END_ALLOW_THREADS
        }
        qc_out_commit(dst, y);
    } else {
        Py_CLEAR(y);
    }
    Py_DECREF(r->a);
    Py_DECREF(r->b);
    return (PyObject *)y;
}

/* _qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, relu, out[, ort[, rep]]);
 * a and b have the same shape (the Python layer broadcasts), or b has a's size / rep elements,
 * each for rep consecutive ones of a. ort: ONNX Runtime's arithmetic (qops.h). */
static PyObject *py_qlinear_add(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ao, *aso, *azo, *bo, *bso, *bzo, *yso, *yzo, *out;
    int relu, ort = 0;
    Py_ssize_t rep = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOpO|pn", &ao, &aso, &azo, &bo, &bso, &bzo, &yso, &yzo,
                          &relu, &out, &ort, &rep))
        return NULL;
    binary_args r;
    if (parse_binary(ao, aso, azo, bo, bso, bzo, yso, yzo, rep, &r) < 0) return NULL;
    const int32_t az = r.az, bz = r.bz, yz = r.yz;
    int32_t lo, hi;
    qc_add_params p;
    p.ma = r.as / r.ys;
    p.mb = r.bs / r.ys;
    if (qc_check_ratio(p.ma, "a_scale / y_scale") < 0 ||
        qc_check_ratio(p.mb, "b_scale / y_scale") < 0)
        goto fail;
    /* |a - azp|, |b - bzp| <= 255: with both terms finite and their sum too, the float32 sum
     * is never inf - inf = NaN, whose conversion each ISA would do its own way */
    if (!isfinite(255.0f * p.ma + 255.0f * p.mb)) {
        pair_error("a_scale / y_scale, b_scale / y_scale",
                   "ratios whose terms (255 times each) add up to a finite float32", p.ma, p.mb);
        goto fail;
    }
    range_of(r.yt, &lo, &hi);
    if (relu && yz > lo) lo = yz;
    p.azp = az, p.bzp = bz, p.yzp = yz;
    p.lo = (float)(lo - yz), p.hi = (float)(hi - yz);
    p.ort = ort;
    { /* as MLAS computes it (its build contracts ma * za + mb * zb into one FMA); finite:
       * |z| <= 255 and 255 * ma + 255 * mb is finite */
        const float zb = p.mb * (float)bz;
        p.fixed = (float)yz - fmaf(p.ma, (float)az, zb);
    }
    p.stream = (size_t)PyArray_SIZE(r.a) >= QC_STREAM_BYTES;
    return run_binary(&r, out, rep, &p, NULL);
fail:
    Py_DECREF(r.a);
    Py_DECREF(r.b);
    return NULL;
}

/* _qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, out[, ort[, rep]]); a and b
 * as for _qlinear_add. ort: ONNX Runtime's arithmetic (qops.h). */
static PyObject *py_qlinear_mul(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ao, *aso, *azo, *bo, *bso, *bzo, *yso, *yzo, *out;
    int ort = 0;
    Py_ssize_t rep = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOO|pn", &ao, &aso, &azo, &bo, &bso, &bzo, &yso, &yzo,
                          &out, &ort, &rep))
        return NULL;
    binary_args r;
    if (parse_binary(ao, aso, azo, bo, bso, bzo, yso, yzo, rep, &r) < 0) return NULL;
    qc_mul_params p;
    /* |a - azp|, |b - bzp| <= 255: finite dequantized values keep the reference's product
     * and quotient free of NaN (an overflow to inf saturates); onnxruntime's ratio must be
     * finite (an infinite one would give NaN for a zero product) */
    if (!isfinite(255.0f * r.as) || !isfinite(255.0f * r.bs)) {
        pair_error("a_scale, b_scale", "scales finite when multiplied by 255 in float32", r.as,
                   r.bs);
        goto fail;
    }
    p.ratio = r.as * r.bs / r.ys;
    if (ort && !isfinite(p.ratio)) {
        pair_error("a_scale * b_scale, y_scale",
                   "a float32 ratio (a_scale * b_scale) / y_scale that is finite",
                   r.as * r.bs, r.ys);
        goto fail;
    }
    int32_t lo, hi;
    range_of(r.yt, &lo, &hi);
    p.azp = r.az, p.bzp = r.bz, p.yzp = r.yz;
    p.sa = r.as, p.sb = r.bs, p.sy = r.ys;
    p.lo = (float)lo, p.hi = (float)hi;
    p.ort = ort;
    return run_binary(&r, out, rep, NULL, &p);
fail:
    Py_DECREF(r.a);
    Py_DECREF(r.b);
    return NULL;
}

typedef struct {
    const qc_qops_impl *ops;
    const uint8_t *x, *table;
    uint8_t *y;
    size_t n;
} lut_ctx;

static void lut_task(void *vctx, size_t t) {
    lut_ctx *c = vctx;
    const size_t i0 = t * QC_CHUNK, n = QC_MIN(QC_CHUNK, c->n - i0);
    c->ops->lut8(c->x + i0, c->y + i0, n, c->table);
}

/* _lut8(x, table) -> table[x]: x int8 or uint8 (its bytes index the table as uint8), table 256
 * int8 or uint8 values (the result's dtype), a new array of x's shape. */
static PyObject *py_lut8(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *to;
    if (!PyArg_ParseTuple(args, "OO", &xo, &to)) return NULL;
    PyArrayObject *x = act_array(xo, "x", -1, ""), *t = NULL, *y = NULL;
    if (!x) return NULL;
    t = act_array(to, "table", 1, "(256,)");
    if (!t) goto fail;
    if (PyArray_DIM(t, 0) != 256) {
        qc_value_error("table: expected 256 values, got %zd", (Py_ssize_t)PyArray_DIM(t, 0));
        goto fail;
    }
    y = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(x), PyArray_DIMS(x), PyArray_TYPE(t));
    if (!y) goto fail;
    lut_ctx c = {(const qc_qops_impl *)qc_family_select(&qc_qops_family)->impl,
                 PyArray_DATA(x), PyArray_DATA(t), PyArray_DATA(y), (size_t)PyArray_SIZE(x)};
    if (c.n) {
        Py_BEGIN_ALLOW_THREADS
        qc_parallel_for((c.n + QC_CHUNK - 1) / QC_CHUNK, lut_task, &c);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(x);
    Py_DECREF(t);
    return (PyObject *)y;
fail:
    Py_DECREF(x);
    Py_XDECREF(t);
    return NULL;
}

typedef struct {
    const char *x;
    int sx, copy;
    size_t inner;      /* elements per outer index in this input */
    size_t offset;     /* element offset of this input inside an output row */
    qc_rq_params p;
} concat_part;

typedef struct {
    const qc_qops_impl *ops;
    concat_part *parts;
    size_t nparts, outer, row; /* output row = sum of parts' inner */
    size_t nchunks;            /* QC_CHUNK pieces per output row */
    char *y;
    int sy;
} concat_ctx;

/* Task t: output row o = t / nchunks, bytes [r0, r1) of it (chunks of QC_CHUNK), each input
 * contributing the part of its slice that falls inside. */
static void concat_task(void *vctx, size_t t) {
    concat_ctx *c = vctx;
    const size_t o = t / c->nchunks, r0 = t % c->nchunks * QC_CHUNK;
    const size_t r1 = QC_MIN(c->row, r0 + QC_CHUNK);
    for (size_t k = 0; k < c->nparts; k++) {
        const concat_part *p = &c->parts[k];
        const size_t b0 = QC_MAX(r0, p->offset), b1 = QC_MIN(r1, p->offset + p->inner);
        if (b0 >= b1) continue;
        const char *src = p->x + o * p->inner + (b0 - p->offset);
        char *dst = c->y + o * c->row + b0;
        if (p->copy) memcpy(dst, src, b1 - b0);
        else c->ops->requant(src, p->sx, dst, c->sy, b1 - b0, &p->p);
    }
}

/* _qlinear_concat(inputs, y_scale, y_zp, axis, out) */
static PyObject *py_qlinear_concat(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *inputs, *yso, *yzo, *axo, *out;
    if (!PyArg_ParseTuple(args, "OOOOO", &inputs, &yso, &yzo, &axo, &out)) return NULL;
    /* a tuple copy of inputs (and of each item below): parsing an item runs Python code
     * (__array__, __float__) that may change the caller's lists while we iterate */
    PyObject *seq = PySequence_Check(inputs) && !PyUnicode_Check(inputs)
                        ? PySequence_Tuple(inputs) : NULL;
    if (!seq) {
        PyErr_Clear();
        return (qc_type_error("inputs: expected a sequence of (q, scale, zero_point), got %s",
                              Py_TYPE(inputs)->tp_name), NULL);
    }
    const Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyArrayObject **arrs = calloc((size_t)(n ? n : 1), sizeof *arrs);
    concat_part *parts = calloc((size_t)(n ? n : 1), sizeof *parts);
    PyArrayObject *y = NULL;
    PyObject *result = NULL;
    if (!arrs || !parts) {
        PyErr_NoMemory();
        goto done;
    }
    if (n == 0) {
        qc_value_error("inputs: expected at least one (q, scale, zero_point), got an empty "
                       "sequence");
        goto done;
    }
    float ys;
    npy_intp cnt;
    if (parse_scales(yso, "y_scale", 1, &ys, &cnt) < 0) goto done;
    int ndim = 0, axis = 0, has_axis, yt = NPY_INT8;
    npy_intp shape[NPY_MAXDIMS];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PyTuple_GET_ITEM(seq, i);
        char name[48];
        snprintf(name, sizeof name, "inputs[%zd]", i);
        if (!PyTuple_Check(it) && !PyList_Check(it)) {
            qc_type_error("%s: expected a (q, scale, zero_point) tuple, got %s", name,
                          Py_TYPE(it)->tp_name);
            goto done;
        }
        PyObject *item = PySequence_Tuple(it);
        if (!item) goto done;
        if (PyTuple_GET_SIZE(item) != 3) {
            qc_value_error("%s: expected a (q, scale, zero_point) tuple, got %zd items", name,
                           PyTuple_GET_SIZE(item));
            Py_DECREF(item);
            goto done;
        }
        PyObject *q = PyTuple_GET_ITEM(item, 0), *s = PyTuple_GET_ITEM(item, 1),
                 *z = PyTuple_GET_ITEM(item, 2);
        Py_INCREF(q);
        Py_INCREF(s);
        Py_INCREF(z);
        Py_DECREF(item);
        char qname[64], sname[64], zname[64];
        snprintf(qname, sizeof qname, "inputs[%zd] q", i);
        snprintf(sname, sizeof sname, "inputs[%zd] scale", i);
        snprintf(zname, sizeof zname, "inputs[%zd] zero_point", i);
        int ok = q && s && z;
        if (ok) ok = (arrs[i] = act_array(q, qname, -1, "")) != NULL;
        float sc = 1.0f;
        int32_t zp = 0;
        if (ok) ok = parse_scales(s, sname, 1, &sc, &cnt) == 0;
        if (ok) ok = parse_zps(z, zname, PyArray_TYPE(arrs[i]), qname, 1, &zp, &cnt) == 0;
        Py_XDECREF(q);
        Py_XDECREF(s);
        Py_XDECREF(z);
        if (!ok) goto done;
        PyArrayObject *a = arrs[i];
        if (i == 0) {
            ndim = PyArray_NDIM(a);
            if (ndim == 0) {
                qc_value_error("%s: expected at least 1 dimension to concatenate, got a 0-d array",
                               qname);
                goto done;
            }
            if (qc_parse_axis(axo, "axis", ndim, &axis, &has_axis) < 0) goto done;
            if (!has_axis) {
                qc_type_error("axis: expected an int, got None");
                goto done;
            }
            memcpy(shape, PyArray_DIMS(a), sizeof(npy_intp) * (size_t)ndim);
            shape[axis] = 0;
            if (out_typenum(yzo, PyArray_TYPE(a), &yt) < 0) goto done;
        } else {
            int same = PyArray_NDIM(a) == ndim;
            for (int d = 0; same && d < ndim; d++)
                same = d == axis || PyArray_DIM(a, d) == shape[d];
            if (!same) {
                qc_value_error("%s: expected the shape of inputs[0] except along axis %d, got a "
                               "different shape", qname, axis);
                goto done;
            }
        }
        if (shape[axis] > NPY_MAX_INTP - PyArray_DIM(a, axis)) {
            qc_value_error("%s: expected inputs whose total length along axis %d fits in 64 "
                           "bits, got more", qname, axis);
            goto done;
        }
        shape[axis] += PyArray_DIM(a, axis);
        parts[i].x = PyArray_DATA(a);
        parts[i].sx = PyArray_TYPE(a) == NPY_INT8;
        parts[i].p.zp = zp;
        parts[i].p.m = sc / ys;
        if (qc_check_ratio(parts[i].p.m, "scale / y_scale") < 0) goto done;
    }
    int32_t yz, lo, hi;
    if (parse_zps(yzo, "y_zero_point", yt, "the output", 1, &yz, &cnt) < 0) goto done;
    range_of(yt, &lo, &hi);
    size_t outer = 1, inner_unit = 1, row = 0;
    for (int d = 0; d < axis; d++) outer *= (size_t)shape[d];
    for (int d = axis + 1; d < ndim; d++) inner_unit *= (size_t)shape[d];
    for (Py_ssize_t i = 0; i < n; i++) {
        parts[i].inner = (size_t)PyArray_DIM(arrs[i], axis) * inner_unit;
        parts[i].offset = row;
        row += parts[i].inner;
        parts[i].p.yzp = yz;
        parts[i].p.lo = (float)(lo - yz), parts[i].p.hi = (float)(hi - yz);
        /* identical quantization: the requant formula returns q itself, so copy */
        parts[i].copy = (PyArray_TYPE(arrs[i]) == yt) && parts[i].p.m == 1.0f &&
                        parts[i].p.zp == yz;
    }
    for (Py_ssize_t i = 0; i < n; i++) parts[i].p.stream = outer * row >= QC_STREAM_BYTES;
    y = qc_output(out, "out", ndim, shape, yt);
    if (!y) goto done;
    PyArrayObject *dst = qc_out_target(y, arrs, (int)n);
    if (!dst) goto done;
    concat_ctx c = {(const qc_qops_impl *)qc_family_select(&qc_qops_family)->impl, parts,
                    (size_t)n, outer, row, (row + QC_CHUNK - 1) / QC_CHUNK, PyArray_DATA(dst),
                    yt == NPY_INT8};
    if (outer && row) {
        Py_BEGIN_ALLOW_THREADS
        qc_parallel_for(outer * c.nchunks, concat_task, &c);
        Py_END_ALLOW_THREADS
    }
    qc_out_commit(dst, y);
    result = (PyObject *)y;
    y = NULL;
done:
    if (arrs)
        for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(arrs[i]);
    free(arrs);
    free(parts);
    Py_XDECREF(y);
    Py_DECREF(seq);
    return result;
}

/* A test switch's mode: -1, 0 or 1. */
static int parse_mode(PyObject *arg, int *mode) {
    const long m = PyLong_AsLong(arg);
    if (m == -1 && PyErr_Occurred()) return -1;
    if (m < -1 || m > 1) return qc_value_error("mode: expected -1, 0 or 1, got %ld", m);
    *mode = (int)m;
    return 0;
}

/* _set_conv_nchw(mode) -> previous mode: 1 runs every GEMM-path convolution on the NCHW
 * GEMM with the selected conv_nchw kernel (the scalar one too), -1 never, 0 the default (only
 * with the AVX-512 VNNI kernel). Tests only. */
static PyObject *py_set_conv_nchw(PyObject *self, PyObject *arg) {
    (void)self;
    int mode = 0;
    return parse_mode(arg, &mode) < 0 ? NULL : PyLong_FromLong(qc_nchw_force(mode));
}

/* _set_conv_gconv(mode) -> previous mode: 1 runs every suited small-group convolution on the
 * channel-quad kernels (the scalar one too), -1 never, 0 the default (only with the AVX-512
 * VNNI kernel). Tests only. */
static PyObject *py_set_conv_gconv(PyObject *self, PyObject *arg) {
    (void)self;
    int mode = 0;
    return parse_mode(arg, &mode) < 0 ? NULL : PyLong_FromLong(qc_conv_gconv_force(mode));
}

/* _set_conv_ix(mode) -> previous mode: -1 runs every GEMM-path convolution on im2col, 0 or 1
 * on indirect rows wherever they suit (the default). Tests only. */
static PyObject *py_set_conv_ix(PyObject *self, PyObject *arg) {
    (void)self;
    int mode = 0;
    return parse_mode(arg, &mode) < 0 ? NULL : PyLong_FromLong(qc_conv_ix_force(mode));
}

/* _set_dw_tile_rows(rows) -> previous: the direct (depthwise) path's tiles get at most `rows`
 * output rows and 3 * rows columns and the NHWC variant is off (0: automatic). Tests only: any
 * tiling gives the same results. */
static PyObject *py_set_dw_tile_rows(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t rows;
    if (qc_parse_ssize(arg, "rows", &rows) < 0) return NULL;
    if (rows < 0) return (qc_value_error("rows: expected an int >= 0, got %zd", rows), NULL);
    return PyLong_FromSize_t(qc_dw_tile_force((size_t)rows));
}

PyMethodDef qc_conv_methods[] = {
    {"_conv", py_conv, METH_VARARGS, "ConvInteger / QLinearConv (see quantc.qlinear_conv)."},
    {"_pack_conv_weight", py_pack_conv_weight, METH_VARARGS, "Prepare conv weights once."},
    {"_conv_path", py_conv_path, METH_O, "The path a packed conv weight runs on."},
    {"_conv_plan", py_conv_plan, METH_VARARGS, "A QLinearConv with all but x prepared."},
    {"_conv_exec", py_conv_exec, METH_VARARGS, "Run a _conv_plan on x."},
    {"_conv_route", py_conv_route, METH_VARARGS, "The path a _conv_plan takes for a shape."},
    {"_layout4", py_layout4, METH_VARARGS, "NCHW <-> NHWC copy of a 4-D int8/uint8 array."},
    {"_set_conv_nchw", py_set_conv_nchw, METH_O, "Force the NCHW conv GEMM on or off (tests)."},
    {"_set_conv_ix", py_set_conv_ix, METH_O, "Turn the conv indirect rows off (tests)."},
    {"_set_conv_gconv", py_set_conv_gconv, METH_O,
     "Force the small-group conv quad path on or off (tests)."},
    {"_set_dw_tile_rows", py_set_dw_tile_rows, METH_O,
     "Force small depthwise tiles (tests; 0: automatic)."},
    {"_pool2d", py_pool2d, METH_VARARGS, "Max / average / global average pooling."},
    {"_qlinear_add", py_qlinear_add, METH_VARARGS,
     "QLinearAdd on same-shape inputs, or b repeated (rep)."},
    {"_qlinear_mul", py_qlinear_mul, METH_VARARGS,
     "QLinearMul on same-shape inputs, or b repeated (rep)."},
    {"_lut8", py_lut8, METH_VARARGS, "Byte table lookup: table[x]."},
    {"_qlinear_concat", py_qlinear_concat, METH_VARARGS, "QLinearConcat."},
    {NULL, NULL, 0, NULL},
};

int qc_conv_init(PyObject *m) {
    (void)m;
    if (qc_register_family(&qc_qops_family) < 0 || qc_register_family(&qc_nchw_family) < 0 ||
        qc_register_family(&qc_gconv_family) < 0 ||
        qc_register_family(&qc_dw_family) < 0)
        return -1;
    return 0;
}
