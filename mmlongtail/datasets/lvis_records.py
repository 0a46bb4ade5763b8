"""Compact records of an LVIS-format annotation file, decoded once.

:func:`read_lvis_records` decodes the file once (``json`` with an
``object_hook``): every annotation is checked as it is decoded and, if it is
sound, appended to flat columns (``array``), so the full file never exists as
1.27M Python dicts. The result, :class:`LVISRecords`, holds numpy arrays
only: boxes ``(M, 4)``, labels, flags, polygons as one flat float64 array of
coordinates with ring offsets, file names as one byte buffer. Dataloader
workers forked from the main process share these pages (nothing in them is
reference counted per record), and :meth:`LVISRecords.instances` builds
mmdet's instance dicts for one image when the pipeline asks for it.

Policy for bad annotations (stated here, configured on the dataset):

* **Bad records** (kinds in :data:`BAD_KINDS`: not an object, a required key
  missing, a value of the wrong type, a non-finite number, an image or
  category id not in the file, a polygon with fewer than 3 points or an odd
  number of coordinates): ``bad_annotation='error'`` (default) raises
  :class:`~mmlongtail.datasets.annotation_file.AnnotationFileError` naming
  the file, the counts per kind and the first annotation and image ids of
  each; ``'skip'`` drops them, counts them per kind and logs the counts and
  the first ids (MMLogger, warning).
* **Degenerate boxes** (:data:`DEGENERATE`): boxes mmdet's ``CocoDataset``
  drops while it parses (width or height under 1, ``area <= 0``, or no
  overlap with the image). ``degenerate_box='skip'`` (default, mmdet's
  records) drops them, counted and logged; ``'error'`` refuses them.
* Annotations with ``ignore`` set are dropped, as mmdet does; they are
  counted and logged (:data:`IGNORED`).
* Problems of the file as a whole are always errors: not JSON, a list
  missing, categories or images malformed, duplicate ids.
"""
import pickle
from array import array
from typing import Dict, List, Optional, Tuple

import numpy as np

from .annotation_file import (REQUIRED_KEYS, AnnotationFileError,
                              check_categories, check_images,
                              require_list,
                              decode_annotation_text, read_annotation_text,
                              unique_ids)

#: Kinds of bad annotation records, governed by ``bad_annotation``.
BAD_KINDS: Tuple[str, ...] = ('not_an_object', 'missing_key', 'wrong_type',
                              'non_finite', 'unknown_image',
                              'unknown_category', 'invalid_polygon')
#: Boxes mmdet's parser drops; governed by ``degenerate_box``.
DEGENERATE = 'degenerate_box'
#: Annotations with ``ignore`` set; always dropped (as mmdet does), counted.
IGNORED = 'ignored'
#: Values of ``bad_annotation`` and ``degenerate_box``.
POLICIES = ('error', 'skip')

#: LVIS v1 names an image by its COCO URL, which holds the split folder
#: (http://images.cocodataset.org/train2017/x.jpg); the file name is the
#: rest, as in mmdet.
COCO_URL = 'http://images.cocodataset.org/'

_NUMS = frozenset((int, float))
_FLAGS = frozenset((0, 1))
_INT64 = 2**63
_SHOW = 3
_SEG_NONE, _SEG_POLY, _SEG_OTHER = 0, 1, 2


class _Row(int):
    """An annotation stored in the columns: its row, in the place of the
    decoded dict (an ``int`` subclass, so no JSON value is mistaken for it).
    """
    __slots__ = ()


def _json_type(v) -> str:
    return {dict: 'object', list: 'array', str: 'string', bool: 'boolean',
            type(None): 'null'}.get(type(v), 'number')


def annotation_problem(ann) -> Optional[Tuple[str, str]]:
    """The first structural problem of one decoded annotation.

    Checks what is checkable on the record alone: it is an object; it has
    the keys of ``REQUIRED_KEYS['annotations']``; ``id``, ``image_id`` and
    ``category_id`` are 64-bit integers; ``bbox`` is 4 numbers; ``area`` a
    number; ``iscrowd`` and ``ignore`` (optional) are 0/1 or booleans;
    ``segmentation`` (optional) is null, a list of polygons, each an even
    number (6 or more) of numbers, or an RLE object with ``counts`` and
    ``size``. Finiteness and ids are checked on the columns afterwards.

    Args:
        ann: One element of the file's ``annotations``.

    Returns:
        tuple or None: ``(kind, what was found)``, kind in
        :data:`BAD_KINDS`; None if sound.
    """
    if type(ann) is not dict:
        return 'not_an_object', f'a JSON {_json_type(ann)}, not an object'
    for k in REQUIRED_KEYS['annotations']:
        if k not in ann:
            return 'missing_key', f'no {k!r}'
    for k in ('id', 'image_id', 'category_id'):
        v = ann[k]
        if type(v) is not int or not -_INT64 <= v < _INT64:
            return 'wrong_type', f'{k} is {v!r:.60}, not an integer'
    box = ann['bbox']
    if (type(box) is not list or len(box) != 4
            or not set(map(type, box)) <= _NUMS):
        return 'wrong_type', (f'bbox is {box!r:.80}, not 4 numbers '
                              '[x, y, width, height]')
    if type(ann['area']) not in _NUMS:
        return 'wrong_type', f'area is {ann["area"]!r:.60}, not a number'
    for k in ('iscrowd', 'ignore'):
        if k in ann:
            v = ann[k]
            if type(v) not in (int, bool) or v not in _FLAGS:
                return 'wrong_type', f'{k} is {v!r:.60}, not 0 or 1'
    seg = ann.get('segmentation')
    if seg is None:
        return None
    if type(seg) is list:
        for i, ring in enumerate(seg):
            if type(ring) is not list or not set(map(type, ring)) <= _NUMS:
                return 'wrong_type', (f'segmentation polygon #{i} is '
                                      f'{ring!r:.60}, not a list of numbers')
            if len(ring) < 6 or len(ring) % 2:
                return 'invalid_polygon', (
                    f'segmentation polygon #{i} has {len(ring)} coordinates '
                    '(a polygon needs an even number, 6 or more: 3 points '
                    'or more)')
        return None
    if type(seg) is dict and 'counts' in seg and 'size' in seg:
        return None
    return 'wrong_type', (f'segmentation is {seg!r:.60}, not a list of '
                          'polygons or an RLE object with counts and size')


class _Columns:
    """Flat columns that sound annotations are appended to while the file
    is decoded (``object_hook``)."""

    def __init__(self) -> None:
        self.ann_id = array('q')
        self.img_id = array('q')
        self.cat_id = array('q')
        self.box = array('d')
        self.area = array('d')
        self.crowd = array('b')
        self.ignore = array('b')
        self.seg_kind = array('b')
        self.num_rings = array('q')
        self.ring_len = array('q')
        self.coords = array('d')
        self.rle: Dict[int, bytes] = {}
        self.n = 0
        self.strict = True

    def hook(self, d: dict):
        """``object_hook``: a sound annotation goes to the columns and a
        :class:`_Row` takes its place; anything else is returned as is, to
        be diagnosed by :func:`annotation_problem`.

        Fast path: ``array`` conversions refuse strings, nulls and nested
        lists (``TypeError``) and out-of-range ids (``OverflowError``), but
        take booleans as numbers, so when the file's text holds a JSON
        boolean anywhere (``self.strict``) each record is first checked in
        full by :func:`annotation_problem`. Only sound records are stored
        either way.
        """
        if not ('image_id' in d or 'category_id' in d or 'bbox' in d):
            return d
        if self.strict and annotation_problem(d) is not None:
            return d
        try:
            aid, iid, cid = d['id'], d['image_id'], d['category_id']
            box, area = d['bbox'], d['area']
        except KeyError:
            return d
        if (type(aid) is not int or type(iid) is not int
                or type(cid) is not int or type(box) is not list
                or len(box) != 4 or type(area) not in _NUMS):
            return d
        for k in ('iscrowd', 'ignore'):
            if k in d and (type(d[k]) not in (int, bool)
                           or d[k] not in _FLAGS):
                return d
        seg = d.get('segmentation')
        try:
            ids = array('q', (aid, iid, cid))
            box = array('d', box)
            if type(seg) is list and seg:
                lens = [len(r) if type(r) is list else -1 for r in seg]
                if min(lens) < 6 or any(n & 1 for n in lens):
                    return d
                ring = array('d')
                for r in seg:
                    ring.extend(r)
                kind = _SEG_POLY
            elif seg is None or seg == []:
                kind = _SEG_NONE
            elif type(seg) is dict and 'counts' in seg and 'size' in seg:
                kind = _SEG_OTHER
            else:
                return d
        except (TypeError, OverflowError):
            return d
        self.ann_id.append(ids[0])
        self.img_id.append(ids[1])
        self.cat_id.append(ids[2])
        self.box.extend(box)
        self.area.append(area)
        self.crowd.append(1 if d.get('iscrowd') else 0)
        self.ignore.append(1 if d.get('ignore') else 0)
        self.seg_kind.append(kind)
        if kind == _SEG_POLY:
            self.num_rings.append(len(lens))
            self.ring_len.extend(lens)
            self.coords.extend(ring)
        else:
            if kind == _SEG_OTHER:
                self.rle[self.n] = pickle.dumps(seg)
            self.num_rings.append(0)
        row = _Row(self.n)
        self.n += 1
        return row


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _where(ann_id, img_id, pos: int) -> str:
    aid = (f'annotation id {ann_id}'
           if type(ann_id) is int else f'annotation #{pos} (no id)')
    iid = f'image id {img_id}' if img_id is not None else 'no image_id'
    return f'{aid}, {iid}'


class LVISRecords:
    """Per-image records of an LVIS-format file in flat numpy arrays.

    Images (``N``) are in file order; each image's kept annotations (``M`` in
    all) are contiguous, in file order. Polygons stay in the decoded order:
    ring ``r`` is ``coords[ring_offsets[r]:ring_offsets[r + 1]]``.

    Attributes:
        img_ids (np.ndarray): ``(N,)`` int64.
        heights (np.ndarray): ``(N,)`` int64.
        widths (np.ndarray): ``(N,)`` int64.
        name_bytes (np.ndarray): uint8, the UTF-8 file names, concatenated.
        name_offsets (np.ndarray): ``(N + 1,)`` int64.
        ann_offsets (np.ndarray): ``(N + 1,)`` int64: image ``i``'s kept
            annotations are ``ann_offsets[i]:ann_offsets[i + 1]``.
        boxes (np.ndarray): ``(M, 4)`` float64, ``[x, y, w, h]`` as in the
            file.
        labels (np.ndarray): ``(M,)`` int64, position of the category.
        crowd (np.ndarray): ``(M,)`` int8, 1 if ``iscrowd``.
        seg_kind (np.ndarray): ``(M,)`` int8: 0 no mask, 1 polygons, 2 RLE.
        first_ring (np.ndarray): ``(M,)`` int64.
        num_rings (np.ndarray): ``(M,)`` int64.
        ring_offsets (np.ndarray): ``(R + 1,)`` int64.
        coords (np.ndarray): ``(ring_offsets[-1],)`` float64.
        rle_rows (np.ndarray): ``(K,)`` int64, sorted: the kept annotations
            with an RLE mask; ``rle_bytes``/``rle_offsets`` hold them
            pickled.
        cat_ids (list[int]): Category ids, ascending (label order).
        cat_names (tuple[str]): Their names.
        cat_img_map (dict[int, list[int]]): Category id to the image id of
            each of its annotations, in file order (lvis-api's index, as
            mmdet's dataset exposes it; degenerate and ignored annotations
            included, bad records not).
        counts (dict[str, int]): Annotations dropped, per kind.
    """

    def __init__(self, **arrays) -> None:
        self.__dict__.update(arrays)

    def __len__(self) -> int:
        return self.img_ids.shape[0]

    @property
    def num_annotations(self) -> int:
        return self.labels.shape[0]

    def file_name(self, i: int) -> str:
        a, b = self.name_offsets[i], self.name_offsets[i + 1]
        return self.name_bytes[a:b].tobytes().decode('utf-8')

    def instances(self, i: int) -> List[dict]:
        """mmdet's instance dicts for image ``i`` (``CocoDataset``'s
        ``parse_data_info`` layout: ``ignore_flag``, ``bbox`` as
        ``[x1, y1, x2, y2]``, ``bbox_label`` and, if the annotation has a
        segmentation, ``mask``: its polygons, or its RLE object)."""
        a0, a1 = int(self.ann_offsets[i]), int(self.ann_offsets[i + 1])
        boxes = self.boxes[a0:a1].tolist()
        labels = self.labels[a0:a1].tolist()
        crowd = self.crowd[a0:a1].tolist()
        kinds = self.seg_kind[a0:a1].tolist()
        first = self.first_ring[a0:a1]
        nring = self.num_rings[a0:a1]
        ro, coords = self.ring_offsets, self.coords
        # each annotation's rings are contiguous: one slice of coordinates
        starts = ro[first].tolist()
        ends = ro[first + nring].tolist()
        nring = nring.tolist()
        out = []
        for j, (x, y, w, h) in enumerate(boxes):
            inst = {
                'ignore_flag': crowd[j],
                'bbox': [x, y, x + w, y + h],
                'bbox_label': labels[j]
            }
            if kinds[j] == _SEG_POLY:
                flat = coords[starts[j]:ends[j]].tolist()
                if nring[j] == 1:
                    inst['mask'] = [flat]
                else:
                    r0 = int(first[j])
                    cut = (ro[r0:r0 + nring[j] + 1] - starts[j]).tolist()
                    inst['mask'] = [
                        flat[cut[k]:cut[k + 1]] for k in range(nring[j])
                    ]
            elif kinds[j] == _SEG_OTHER:
                k = int(np.searchsorted(self.rle_rows, a0 + j))
                s, e = self.rle_offsets[k], self.rle_offsets[k + 1]
                inst['mask'] = pickle.loads(self.rle_bytes[s:e].tobytes())
            out.append(inst)
        return out


def _image_columns(images: list, ann_file: str):
    """Heights, widths and file names of the images, refusing values of the
    wrong type (a file-level error)."""
    n = len(images)
    heights = np.empty(n, dtype=np.int64)
    widths = np.empty(n, dtype=np.int64)
    names = []
    for i, im in enumerate(images):
        h, w, url = im['height'], im['width'], im['coco_url']
        if type(h) is not int or type(w) is not int or h <= 0 or w <= 0 \
                or type(url) is not str:
            raise AnnotationFileError(
                f'malformed annotation file {ann_file}: image id {im["id"]} '
                f'has height={h!r:.40}, width={w!r:.40}, coco_url='
                f'{url!r:.80}; height and width must be positive integers '
                'and coco_url a string.', ann_file)
        heights[i], widths[i] = h, w
        names.append(url.replace(COCO_URL, '').encode('utf-8'))
    name_offsets = _offsets(np.fromiter(map(len, names), np.int64, n))
    name_bytes = np.frombuffer(b''.join(names), dtype=np.uint8).copy()
    return heights, widths, name_bytes, name_offsets


def _report(counts: Dict[str, int], examples: Dict[str, List[str]],
            total: int) -> str:
    lines = [
        f'  - {k}: {counts[k]} of {total} (first: '
        f'{"; ".join(examples[k])})' for k in counts
    ]
    return '\n'.join(lines)


def read_lvis_records(ann_file: str,
                      backend_args: Optional[dict] = None,
                      reference: Optional[str] = None,
                      dataset: str = 'this dataset',
                      bad_annotation: str = 'error',
                      degenerate_box: str = 'skip',
                      unique_ann_ids: bool = True,
                      logger=None) -> LVISRecords:
    """Decode an LVIS-format file once into :class:`LVISRecords`.

    Args:
        ann_file (str): Path (or backend URI) of the file.
        backend_args (dict, optional): mmengine file backend arguments.
        reference (str, optional): Packaged statistics name whose categories
            the file must have (``'lvis_v1'``); ``None``: any.
        dataset (str): The dataset class reading it, for messages.
        bad_annotation (str): ``'error'`` or ``'skip'``, for the kinds of
            :data:`BAD_KINDS` (see the module's docstring).
        degenerate_box (str): ``'skip'`` or ``'error'``, for boxes mmdet's
            parser drops.
        unique_ann_ids (bool): Refuse repeated annotation ids.
        logger (MMLogger, optional): Where skips are reported; defaults to
            the current MMLogger.

    Returns:
        LVISRecords: The images (all, in file order) and kept annotations.

    Raises:
        AnnotationFileError: For a bad file, or bad annotations under
            ``'error'``; the message names the file, each kind's count and
            the first annotation and image ids.
    """
    for name, value in (('bad_annotation', bad_annotation),
                        ('degenerate_box', degenerate_box)):
        if value not in POLICIES:
            raise ValueError(f'{name} must be one of {POLICIES}, got '
                             f'{value!r}')
    cols = _Columns()
    text = read_annotation_text(ann_file, backend_args)
    cols.strict = 'true' in text or 'false' in text
    data = decode_annotation_text(text, ann_file, cols.hook)
    del text
    if not isinstance(data, dict):
        raise AnnotationFileError(
            f'malformed annotation file {ann_file}: its top level is not an '
            'object', ann_file)
    require_list(data, 'images', ann_file)
    require_list(data, 'annotations', ann_file)
    cat_list = check_categories(data, ann_file, reference, dataset)
    check_images(data, ann_file)
    cat_names = tuple(c['name'] for c in data['categories'])
    images = data['images']
    anns = data['annotations']
    del data
    img_ids = np.fromiter((im['id'] for im in images), np.int64, len(images))
    heights, widths, name_bytes, name_offsets = _image_columns(
        images, ann_file)
    del images

    # where each annotation of the list is: a stored row, or a bad record
    rows = array('q')
    bad: List[Tuple[int, object]] = []
    for pos, a in enumerate(anns):
        if type(a) is _Row:
            rows.append(a)
        else:
            bad.append((pos, a))
    positions = np.fromiter(
        (p for p, a in enumerate(anns) if type(a) is _Row), np.int64,
        len(rows)) if bad else None
    del anns
    rows = np.frombuffer(rows, dtype=np.int64)
    total = rows.shape[0] + len(bad)

    counts: Dict[str, int] = {}
    examples: Dict[str, List[str]] = {}

    def note(kind: str, where: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        if len(examples.setdefault(kind, [])) < _SHOW:
            examples[kind].append(where)

    bad_ids = []
    for pos, a in bad:
        kind, what = annotation_problem(a)
        d = a if type(a) is dict else {}
        iid = d.get('image_id')
        note(kind, f'{_where(d.get("id"), iid, pos)}: {what}')
        if type(d.get('id')) is int:
            bad_ids.append(d['id'])

    def pos_of(j: int) -> int:
        return int(positions[j]) if positions is not None else j

    def col(a: array, dtype, width: int = 1) -> np.ndarray:
        arr = np.frombuffer(a, dtype=dtype)
        if width > 1:
            arr = arr.reshape(-1, width)
        return arr[rows]

    ann_id = col(cols.ann_id, np.int64)
    if unique_ann_ids:
        unique_ids(ann_id.tolist() + bad_ids, ann_file, 'annotation')
    ann_img = col(cols.img_id, np.int64)
    ann_cat = col(cols.cat_id, np.int64)
    boxes = col(cols.box, np.float64, 4)
    area = col(cols.area, np.float64)

    # checks on the columns, in this order; a record counts once
    m = rows.shape[0]
    kind_of = np.zeros(m, dtype=np.int8)  # 0 sound, else index + 1
    what: Dict[int, str] = {}
    coords_all = np.frombuffer(cols.coords, dtype=np.float64)
    ring_len_all = np.frombuffer(cols.ring_len, dtype=np.int64)
    nring_all = np.frombuffer(cols.num_rings, dtype=np.int64)
    ring_off_all = _offsets(ring_len_all)
    first_ring_all = _offsets(nring_all)[:-1]
    finite = np.isfinite(boxes).all(1) & np.isfinite(area)
    bad_coord = ~np.isfinite(coords_all)
    if bad_coord.any():
        ring_of = np.repeat(np.arange(ring_len_all.shape[0]), ring_len_all)
        row_of_ring = np.repeat(np.arange(nring_all.shape[0]), nring_all)
        bad_rows = np.zeros(nring_all.shape[0], dtype=bool)
        bad_rows[row_of_ring[ring_of[bad_coord]]] = True
        finite &= ~bad_rows[rows]
    sorter = np.argsort(img_ids, kind='stable')
    img_pos = np.searchsorted(img_ids, ann_img, sorter=sorter)
    img_pos = np.minimum(img_pos, max(len(img_ids) - 1, 0))
    img_row = sorter[img_pos] if len(img_ids) else img_pos
    known_img = (img_ids[img_row] == ann_img) if len(img_ids) else \
        np.zeros(m, dtype=bool)
    cat_arr = np.asarray(cat_list, dtype=np.int64)
    label = np.minimum(np.searchsorted(cat_arr, ann_cat), len(cat_arr) - 1)
    known_cat = cat_arr[label] == ann_cat
    for kind, ok in (('non_finite', finite), ('unknown_image', known_img),
                     ('unknown_category', known_cat)):
        hit = np.flatnonzero(~ok & (kind_of == 0))
        kind_of[hit] = BAD_KINDS.index(kind) + 1
        for j in hit[:_SHOW].tolist():
            if kind == 'non_finite':
                what[j] = (f'bbox {boxes[j].tolist()}, area {area[j]}: '
                           'a value (box, area or polygon) is NaN or '
                           'infinite')
            elif kind == 'unknown_image':
                what[j] = f"image id {ann_img[j]} is not in 'images'"
            else:
                what[j] = f"category id {ann_cat[j]} is not in 'categories'"
        if hit.size:
            counts[kind] = counts.get(kind, 0) + int(hit.size)
            examples.setdefault(kind, []).extend(
                f'{_where(int(ann_id[j]), int(ann_img[j]), pos_of(j))}: '
                f'{what[j]}' for j in hit[:_SHOW].tolist())
    sound = kind_of == 0
    bad_counts = {k: counts[k] for k in BAD_KINDS if k in counts}
    if bad_counts and bad_annotation == 'error':
        raise AnnotationFileError(
            f'bad annotations in {ann_file}:\n' +
            _report(bad_counts, examples, total) +
            f"\n{dataset} has bad_annotation='error': fix or remove these "
            "annotations, or set bad_annotation='skip' in the dataset's "
            'config to skip them (counted and logged).', ann_file,
            bad_counts)

    # cat_img_map: every sound annotation, in file order
    order_cat = np.argsort(ann_cat[sound], kind='stable')
    s_cat, s_img = ann_cat[sound][order_cat], ann_img[sound][order_cat]
    cuts = np.searchsorted(s_cat, cat_arr)
    cuts = np.append(cuts, s_cat.shape[0])
    img_list = s_img.tolist()
    cat_img_map = {
        int(c): img_list[cuts[k]:cuts[k + 1]]
        for k, c in enumerate(cat_arr.tolist()) if cuts[k + 1] > cuts[k]
    }

    # what mmdet's parser drops: ignore, then boxes it cannot use
    ignored = sound & (col(cols.ignore, np.int8) != 0)
    x, y, w, h = boxes.T
    W = widths[img_row].astype(np.float64)
    H = heights[img_row].astype(np.float64)
    inter_w = np.maximum(0, np.minimum(x + w, W) - np.maximum(x, 0))
    inter_h = np.maximum(0, np.minimum(y + h, H) - np.maximum(y, 0))
    degenerate = (sound & ~ignored & ((inter_w * inter_h == 0) | (area <= 0)
                                      | (w < 1) | (h < 1)))
    for kind, hit_mask in ((IGNORED, ignored), (DEGENERATE, degenerate)):
        hit = np.flatnonzero(hit_mask)
        if hit.size:
            counts[kind] = int(hit.size)
            examples[kind] = [
                f'{_where(int(ann_id[j]), int(ann_img[j]), pos_of(j))}: bbox '
                f'{boxes[j].tolist()}, area {area[j]}, image '
                f'{int(W[j])}x{int(H[j])}' for j in hit[:_SHOW].tolist()
            ]
    if DEGENERATE in counts and degenerate_box == 'error':
        raise AnnotationFileError(
            f'degenerate boxes in {ann_file} (width or height under 1, '
            'area <= 0, or outside the image):\n' +
            _report({DEGENERATE: counts[DEGENERATE]}, examples, total) +
            f"\n{dataset} has degenerate_box='error'; set "
            "degenerate_box='skip' to drop them (counted and logged), as "
            "mmdet's parser does.", ann_file, {DEGENERATE: counts[DEGENERATE]})

    keep = np.flatnonzero(sound & ~ignored & ~degenerate)
    keep = keep[np.argsort(img_row[keep], kind='stable')]
    kept_rows = rows[keep]
    seg_kind = np.frombuffer(cols.seg_kind, dtype=np.int8)[kept_rows]
    rle_rows = np.flatnonzero(seg_kind == _SEG_OTHER)
    rle = [cols.rle[int(r)] for r in kept_rows[rle_rows].tolist()]
    records = LVISRecords(
        img_ids=img_ids,
        heights=heights,
        widths=widths,
        name_bytes=name_bytes,
        name_offsets=name_offsets,
        ann_offsets=_offsets(np.bincount(img_row[keep],
                                         minlength=len(img_ids))),
        boxes=np.ascontiguousarray(boxes[keep]),
        labels=label[keep],
        crowd=col(cols.crowd, np.int8)[keep],
        seg_kind=seg_kind,
        first_ring=first_ring_all[kept_rows],
        num_rings=nring_all[kept_rows],
        ring_offsets=ring_off_all,
        coords=coords_all,
        rle_rows=rle_rows.astype(np.int64),
        rle_offsets=_offsets(np.fromiter(map(len, rle), np.int64,
                                         len(rle))),
        rle_bytes=np.frombuffer(b''.join(rle), dtype=np.uint8).copy(),
        cat_ids=[int(c) for c in cat_list],
        cat_names=cat_names,
        cat_img_map=cat_img_map,
        counts=counts)
    del cols
    if counts:
        _log_skips(ann_file, dataset, counts, examples, total,
                   bad_annotation, degenerate_box, logger)
    return records


def _log_skips(ann_file: str, dataset: str, counts: Dict[str, int],
               examples: Dict[str, List[str]], total: int,
               bad_annotation: str, degenerate_box: str, logger) -> None:
    if logger is None:
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
    logger.warning(
        f'{dataset}: {sum(counts.values())} of {total} annotations in '
        f'{ann_file} dropped (bad_annotation={bad_annotation!r}, '
        f'degenerate_box={degenerate_box!r}; annotations with ignore set '
        'are dropped as mmdet does):\n' +
        _report(counts, examples, total))

