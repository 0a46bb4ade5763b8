/*
 * Compiled fast path of mmlongtail.datasets.compute_repeat_factors.
 *
 * compute_repeat_factors takes one Python sequence of category ids per image.
 * At LVIS scale (100k images, 1.3M instances) NumPy cannot start before every
 * id has been unboxed through the generic iterator protocol, and that alone
 * costs about a tenth of a plain per-image Python loop. These three helpers
 * read the lists directly and keep the rest to single passes:
 *
 *   flatten(image_cat_ids)                   -> (ids, lengths)  int64 bytes
 *   distinct_counts(labels, lengths, K)      -> int64 bytes: images per label
 *   segment_max(values, labels, lengths, d)  -> float64 bytes: max per image
 *
 * The Python side (mmlongtail/datasets/repeat_factors.py) maps ids to labels
 * and computes the factors; it falls back to NumPy when this module is not
 * built. ABI_VERSION must match _EXT_ABI_VERSION there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#define ABI_VERSION 1

/* Unbox one category id. Returns 0 on success, -1 with an exception set. */
static int unbox_id(PyObject *obj, Py_ssize_t image, long long *out) {
  PyObject *index;
  int overflow = 0;
  if (PyBool_Check(obj) || !(PyLong_Check(obj) || PyIndex_Check(obj))) {
    PyErr_Format(PyExc_TypeError,
                 "image_cat_ids must hold integer category ids, got %.80s "
                 "(%R) in image %zd",
                 Py_TYPE(obj)->tp_name, obj, image);
    return -1;
  }
  if (PyLong_CheckExact(obj)) {
    *out = PyLong_AsLongLongAndOverflow(obj, &overflow);
  } else {
    index = PyNumber_Index(obj);
    if (index == NULL) return -1;
    *out = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
  }
  if (overflow) {
    PyErr_Format(PyExc_OverflowError,
                 "category id %R in image %zd does not fit in int64", obj,
                 image);
    return -1;
  }
  if (*out == -1 && PyErr_Occurred()) return -1;
  return 0;
}

static PyObject *flatten(PyObject *self, PyObject *arg) {
  PyObject *outer, *inner, *result = NULL;
  Py_ssize_t num_images, i, j, n, used = 0, cap = 1024;
  long long *ids = NULL, *lengths = NULL, *grown;
  (void)self;

  outer = PySequence_Fast(arg, "image_cat_ids must be a sequence with one "
                               "sequence of category ids per image");
  if (outer == NULL) return NULL;
  num_images = PySequence_Fast_GET_SIZE(outer);
  /* Size the id buffer from the lists and tuples up front; anything else
   * (sets, arrays, generators' lists) grows it as needed. */
  for (i = 0; i < num_images; ++i) {
    PyObject *item = PySequence_Fast_GET_ITEM(outer, i);
    if (PyList_CheckExact(item))
      used += PyList_GET_SIZE(item);
    else if (PyTuple_CheckExact(item))
      used += PyTuple_GET_SIZE(item);
  }
  if (used > cap) cap = used;
  used = 0;
  lengths = (long long *)malloc(sizeof(long long) * (num_images ? num_images : 1));
  ids = (long long *)malloc(sizeof(long long) * cap);
  if (lengths == NULL || ids == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  for (i = 0; i < num_images; ++i) {
    PyObject *item = PySequence_Fast_GET_ITEM(outer, i);
    PyObject **elems;
    if (PyUnicode_Check(item) || PyBytes_Check(item)) {
      PyErr_Format(PyExc_TypeError,
                   "image_cat_ids[%zd] must be a sequence of category ids, "
                   "got %.80s",
                   i, Py_TYPE(item)->tp_name);
      goto done;
    }
    inner = PySequence_Fast(item, "");
    if (inner == NULL) {
      if (!PyErr_ExceptionMatches(PyExc_TypeError)) goto done;
      PyErr_Format(PyExc_TypeError,
                   "image_cat_ids[%zd] must be a sequence of category ids, "
                   "got %.80s",
                   i, Py_TYPE(item)->tp_name);
      goto done;
    }
    n = PySequence_Fast_GET_SIZE(inner);
    if (used + n > cap) {
      while (used + n > cap) cap *= 2;
      grown = (long long *)realloc(ids, sizeof(long long) * cap);
      if (grown == NULL) {
        Py_DECREF(inner);
        PyErr_NoMemory();
        goto done;
      }
      ids = grown;
    }
    elems = PySequence_Fast_ITEMS(inner);
    for (j = 0; j < n; ++j) {
      if (unbox_id(elems[j], i, &ids[used + j]) < 0) {
        Py_DECREF(inner);
        goto done;
      }
    }
    used += n;
    lengths[i] = (long long)n;
    Py_DECREF(inner);
  }
  result = Py_BuildValue(
      "(y#y#)", (const char *)ids, (Py_ssize_t)(used * sizeof(long long)),
      (const char *)lengths, (Py_ssize_t)(num_images * sizeof(long long)));
done:
  free(ids);
  free(lengths);
  Py_DECREF(outer);
  return result;
}

/* Borrow a contiguous buffer of `count` items of `itemsize` bytes. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *name,
                      Py_ssize_t itemsize) {
  if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
  if (view->len % itemsize) {
    PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of "
                 "%zd-byte items", name, view->len, itemsize);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

/* Check that lengths are >= 0 and sum to num_pairs. */
static int check_lengths(const long long *lengths, Py_ssize_t num_images,
                         Py_ssize_t num_pairs) {
  Py_ssize_t i;
  long long total = 0;
  for (i = 0; i < num_images; ++i) {
    if (lengths[i] < 0) {
      PyErr_Format(PyExc_ValueError, "lengths[%zd] = %lld is negative", i,
                   lengths[i]);
      return -1;
    }
    total += lengths[i];
  }
  if (total != (long long)num_pairs) {
    PyErr_Format(PyExc_ValueError,
                 "lengths sum to %lld but there are %zd labels", total,
                 num_pairs);
    return -1;
  }
  return 0;
}

static PyObject *distinct_counts(PyObject *self, PyObject *args) {
  PyObject *labels_obj, *lengths_obj, *result = NULL;
  Py_ssize_t num_labels, num_pairs, num_images, i, p = 0;
  Py_buffer lab, len;
  const long long *labels, *lengths;
  long long *counts = NULL, *last = NULL, k;
  (void)self;

  if (!PyArg_ParseTuple(args, "OOn", &labels_obj, &lengths_obj, &num_labels))
    return NULL;
  if (num_labels < 0) {
    PyErr_SetString(PyExc_ValueError, "num_labels must be >= 0");
    return NULL;
  }
  if (get_buffer(labels_obj, &lab, "labels", 8) < 0) return NULL;
  if (get_buffer(lengths_obj, &len, "lengths", 8) < 0) {
    PyBuffer_Release(&lab);
    return NULL;
  }
  labels = (const long long *)lab.buf;
  lengths = (const long long *)len.buf;
  num_pairs = lab.len / 8;
  num_images = len.len / 8;
  if (check_lengths(lengths, num_images, num_pairs) < 0) goto done;
  counts = (long long *)calloc(num_labels ? num_labels : 1, sizeof(long long));
  last = (long long *)malloc(sizeof(long long) * (num_labels ? num_labels : 1));
  if (counts == NULL || last == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  for (k = 0; k < num_labels; ++k) last[k] = -1;
  /* An image adds one to each label it holds: `last` remembers the latest
   * image that counted a label, so repeats inside an image count once. */
  for (i = 0; i < num_images; ++i) {
    long long end = p + lengths[i];
    for (; p < end; ++p) {
      k = labels[p];
      if (k < 0 || k >= num_labels) {
        PyErr_Format(PyExc_ValueError, "label %lld at %zd is outside [0, %zd)",
                     k, p, num_labels);
        goto done;
      }
      if (last[k] != i) {
        last[k] = i;
        ++counts[k];
      }
    }
  }
  result = PyBytes_FromStringAndSize((const char *)counts,
                                     num_labels * (Py_ssize_t)sizeof(long long));
done:
  free(counts);
  free(last);
  PyBuffer_Release(&lab);
  PyBuffer_Release(&len);
  return result;
}

static PyObject *segment_max(PyObject *self, PyObject *args) {
  PyObject *values_obj, *labels_obj, *lengths_obj, *result = NULL;
  double fill;
  Py_ssize_t num_values, num_pairs, num_images, i, p = 0;
  Py_buffer val, lab, len;
  const double *values;
  const long long *labels, *lengths;
  double *out = NULL;
  (void)self;

  if (!PyArg_ParseTuple(args, "OOOd", &values_obj, &labels_obj, &lengths_obj,
                        &fill))
    return NULL;
  if (get_buffer(values_obj, &val, "values", 8) < 0) return NULL;
  if (get_buffer(labels_obj, &lab, "labels", 8) < 0) {
    PyBuffer_Release(&val);
    return NULL;
  }
  if (get_buffer(lengths_obj, &len, "lengths", 8) < 0) {
    PyBuffer_Release(&val);
    PyBuffer_Release(&lab);
    return NULL;
  }
  values = (const double *)val.buf;
  labels = (const long long *)lab.buf;
  lengths = (const long long *)len.buf;
  num_values = val.len / 8;
  num_pairs = lab.len / 8;
  num_images = len.len / 8;
  if (check_lengths(lengths, num_images, num_pairs) < 0) goto done;
  out = (double *)malloc(sizeof(double) * (num_images ? num_images : 1));
  if (out == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  for (i = 0; i < num_images; ++i) {
    long long end = p + lengths[i];
    double best = fill;
    for (; p < end; ++p) {
      long long k = labels[p];
      if (k < 0 || k >= num_values) {
        PyErr_Format(PyExc_ValueError, "label %lld at %zd is outside [0, %zd)",
                     k, p, num_values);
        goto done;
      }
      if (values[k] > best) best = values[k];
    }
    out[i] = best;
  }
  result = PyBytes_FromStringAndSize((const char *)out,
                                     num_images * (Py_ssize_t)sizeof(double));
done:
  free(out);
  PyBuffer_Release(&val);
  PyBuffer_Release(&lab);
  PyBuffer_Release(&len);
  return result;
}

static PyMethodDef methods[] = {
    {"flatten", flatten, METH_O,
     "flatten(image_cat_ids) -> (ids, lengths): int64 bytes of all category "
     "ids in order and of the number of ids per image."},
    {"distinct_counts", distinct_counts, METH_VARARGS,
     "distinct_counts(labels, lengths, num_labels) -> int64 bytes: for each "
     "label in [0, num_labels), the number of images holding it."},
    {"segment_max", segment_max, METH_VARARGS,
     "segment_max(values, labels, lengths, fill) -> float64 bytes: per image, "
     "the max of values[label] over its labels, or fill for an empty image."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rfs_ext",
                                    "Compiled helpers of compute_repeat_factors.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__rfs_ext(void) {
  PyObject *m = PyModule_Create(&module);
  if (m == NULL) return NULL;
  if (PyModule_AddIntConstant(m, "ABI_VERSION", ABI_VERSION) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
