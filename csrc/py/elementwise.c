/* Bindings for the elementwise family (to be filled). */
#include "py/pyutil.h"

PyMethodDef qc_elementwise_methods[] = {
    {NULL, NULL, 0, NULL},
};

int qc_elementwise_init(PyObject *m) {
    (void)m;
    return 0;
}
