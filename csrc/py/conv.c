/* Bindings for the conv family (to be filled). */
#include "py/pyutil.h"

PyMethodDef qc_conv_methods[] = {
    {NULL, NULL, 0, NULL},
};

int qc_conv_init(PyObject *m) {
    (void)m;
    return 0;
}
