/* Bindings for the convert family (to be filled). */
#include "py/pyutil.h"

PyMethodDef qc_convert_methods[] = {
    {NULL, NULL, 0, NULL},
};

int qc_convert_init(PyObject *m) {
    (void)m;
    return 0;
}
