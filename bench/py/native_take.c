/*
 * The least a Python delivery shape built in native code must do per event, for bench/bound.sh:
 * one call takes a batch with tether_client_poll_batch (the GIL released while it waits) and
 * returns the MESSAGE payloads as a list of bytes, one copy each, with no Event objects, queue,
 * reader thread or routing. A benchmark probe, not part of the binding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "tether.h"

/* take(client, batch, timeout_ms, end_command) -> (payloads, ended): the payloads of the
 * batch's MESSAGE events before the first one named end_command, and whether it was seen. */
static PyObject *take(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long client, batch;
    int timeout_ms;
    const char *end;
    Py_ssize_t end_len;
    if (!PyArg_ParseTuple(args, "KKis#", &client, &batch, &timeout_ms, &end, &end_len)) return NULL;
    size_t count = 0;
    tether_status st;
    Py_BEGIN_ALLOW_THREADS
    st = tether_client_poll_batch((tether_client *)client, timeout_ms, (tether_batch *)batch, &count);
    Py_END_ALLOW_THREADS
    if (st != TETHER_OK) return PyErr_Format(PyExc_RuntimeError, "tether_client_poll_batch: %d", st);
    const tether_batch_entry *entries;
    const uint8_t *bytes;
    size_t n, bytes_len;
    st = tether_batch_view((tether_batch *)batch, &entries, &n, &bytes, &bytes_len);
    if (st != TETHER_OK) return PyErr_Format(PyExc_RuntimeError, "tether_batch_view: %d", st);
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    int ended = 0;
    for (size_t i = 0; i < n; i++) {
        const tether_batch_entry *e = &entries[i];
        if (e->kind != TETHER_EVENT_MESSAGE) continue;
        if (e->command_len == (uint32_t)end_len && memcmp(bytes + e->command_offset, end, (size_t)end_len) == 0) {
            ended = 1;
            break;
        }
        PyObject *p = PyBytes_FromStringAndSize((const char *)bytes + e->data_offset, (Py_ssize_t)e->data_len);
        if (p == NULL || PyList_Append(list, p) != 0) {
            Py_XDECREF(p);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(p);
    }
    return Py_BuildValue("(Ni)", list, ended);
}

static PyMethodDef methods[] = {
    {"take", take, METH_VARARGS, "take(client, batch, timeout_ms, end_command) -> (payloads, ended)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "native_take", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_native_take(void) { return PyModule_Create(&module); }
