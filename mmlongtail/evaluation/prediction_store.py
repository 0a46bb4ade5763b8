"""The saved predictions of a test: one folder, written chunk by chunk.

``tools/test.py`` streams each rank's predictions into a folder as it goes
(:mod:`~mmlongtail.evaluation.streamed_test`), so a killed test keeps what it
computed, a rerun continues from it and ``tools/evaluate_predictions.py``
evaluates it without the model. This module owns the folder's layout and its
files; everything else asks it.

Layout::

    <folder>/manifest.json                  what the predictions belong to
    <folder>/rank{R:03d}-{K:06d}.npz        chunk K of rank R

``manifest.json`` (JSON object): ``format`` (:data:`FORMAT`), ``version``
(:data:`VERSION`), ``num_images`` (the test set's length) and
``identity``: ``checkpoint``, ``config`` and ``dataset``, each ``{'path',
'size', 'mtime', 'sha256'}`` (``config``: ``sha256`` of the parts of the
config that decide the predictions, see
:func:`~mmlongtail.evaluation.streamed_test.prediction_identity`). Two
identities match when their ``sha256`` values do.

A chunk holds the complete predictions of ``M`` images with ``D``
detections in all, as NumPy arrays in an ``.npz`` archive (no pickled
objects; ``np.load(path, allow_pickle=False)`` reads it):

* ``img_ids`` ``(M,)`` int64 and ``num_dets`` ``(M,)`` int64: image ``i``
  owns the ``num_dets[i]`` rows after those of images ``0..i-1``;
* ``bboxes`` ``(D, 4)`` float32 ``[x1, y1, x2, y2]`` in the original image;
* ``scores`` ``(D,)`` float32; ``labels`` ``(D,)`` int64 (0-based class
  indices, as the model predicts them);
* with masks: ``mask_sizes`` ``(D, 2)`` int64 ``[height, width]``,
  ``mask_counts`` ``(B,)`` uint8, the compressed RLE ``counts`` strings of
  all rows (pycocotools' format, ASCII) one after the other, and
  ``mask_offsets`` ``(D + 1,)`` int64, where row ``j``'s string starts and
  ends; ``mask_scores`` ``(D,)`` float32 when the model gives them.

Every detection the model returned is kept (no per-image or per-class cut),
so every protocol of :class:`~mmlongtail.evaluation.LVISMetric` can be
computed later. A chunk is written with
:func:`~mmlongtail.utils.atomic_io.atomic_write`: it is on disk complete or
not at all.
"""
import hashlib
import io
import json
import os
import os.path as osp
import re
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from mmlongtail.utils.atomic_io import atomic_write
from .lvis_detections import compact_rles, to_numpy

FORMAT = 'mmlongtail.predictions'
VERSION = 1
MANIFEST = 'manifest.json'
IDENTITY_KEYS = ('checkpoint', 'config', 'dataset')
_CHUNK_RE = re.compile(r'^rank(?P<rank>\d{3,})-(?P<index>\d{6,})\.npz$')

Record = Dict[str, Any]


class PredictionStoreError(ValueError):
    """A prediction folder that cannot be used as it is: a damaged chunk, a
    manifest of other predictions, a missing manifest."""


def chunk_name(rank: int, index: int) -> str:
    """The file name of chunk ``index`` of ``rank``."""
    return f'rank{rank:03d}-{index:06d}.npz'


def chunk_paths(folder: str) -> List[str]:
    """The chunk files of ``folder``, ordered by rank then chunk index."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _CHUNK_RE.match(name)
        if m:
            found.append((int(m['rank']), int(m['index']), name))
    return [osp.join(folder, n) for _, _, n in sorted(found)]


def next_chunk_index(folder: str, rank: int) -> int:
    """The index the next chunk of ``rank`` takes (after its existing
    ones)."""
    last = -1
    for path in chunk_paths(folder):
        m = _CHUNK_RE.match(osp.basename(path))
        if int(m['rank']) == rank:
            last = max(last, int(m['index']))
    return last + 1


# ---------------------------------------------------------------- records
def image_record(data_sample: dict) -> Record:
    """One image's predictions, compact, from a data sample as metrics get
    it (``img_id`` and ``pred_instances`` with ``bboxes`` ``(N, 4)``,
    ``scores`` ``(N,)``, ``labels`` ``(N,)``, optionally ``masks``
    ``(N, H, W)`` or a list of RLE dicts, and ``mask_scores`` ``(N,)``).

    Returns:
        dict: ``img_id`` (int), ``bboxes``, ``scores``, ``labels`` arrays,
        ``masks`` (compact RLE list, or None), ``mask_scores`` (or None).
        :meth:`~mmlongtail.evaluation.LVISMetric.process` takes it back
        through :func:`record_sample`.
    """
    pred = data_sample['pred_instances']
    scores = to_numpy(pred['scores']).astype(np.float32).ravel()
    n = scores.shape[0]
    rec: Record = {
        'img_id': int(data_sample['img_id']),
        'bboxes': to_numpy(pred['bboxes']).astype(np.float32).reshape(n, 4),
        'scores': scores,
        'labels': to_numpy(pred['labels']).astype(np.int64).ravel(),
        'masks': None,
        'mask_scores': None,
    }
    if 'masks' in pred:
        rec['masks'] = compact_rles(pred['masks']) if n else []
    if 'mask_scores' in pred:
        rec['mask_scores'] = to_numpy(pred['mask_scores']).astype(
            np.float32).ravel()
    return rec


def record_sample(rec: Record) -> dict:
    """A saved record as the data sample dict
    :meth:`~mmlongtail.evaluation.LVISMetric.process` takes."""
    pred = {k: rec[k] for k in ('bboxes', 'scores', 'labels')}
    if rec['masks'] is not None:
        pred['masks'] = rec['masks']
    if rec['mask_scores'] is not None:
        pred['mask_scores'] = rec['mask_scores']
    return {'img_id': rec['img_id'], 'pred_instances': pred}


# ---------------------------------------------------------------- chunks
def encode_chunk(records: Sequence[Record]) -> bytes:
    """The ``.npz`` bytes of a chunk holding ``records`` (see the module
    doc)."""
    if not records:
        raise ValueError('a chunk holds at least one image')
    with_masks = {r['masks'] is not None for r in records}
    with_ms = {r['mask_scores'] is not None for r in records}
    if len(with_masks) > 1 or len(with_ms) > 1:
        raise ValueError(
            'images of one test differ in having masks or mask scores '
            f'(image {records[0]["img_id"]} and others)')
    arrays = {
        'img_ids': np.array([r['img_id'] for r in records], np.int64),
        'num_dets': np.array([r['scores'].shape[0] for r in records],
                             np.int64),
        'bboxes': np.concatenate([r['bboxes'] for r in records]).astype(
            np.float32).reshape(-1, 4),
        'scores': np.concatenate([r['scores'] for r in records]).astype(
            np.float32),
        'labels': np.concatenate([r['labels'] for r in records]).astype(
            np.int64),
    }
    if with_masks == {True}:
        rles = [m for r in records for m in r['masks']]
        counts = [m['counts'].encode('ascii') for m in rles]
        arrays['mask_sizes'] = np.array([m['size'] for m in rles],
                                        np.int64).reshape(-1, 2)
        arrays['mask_offsets'] = np.concatenate(
            [[0], np.cumsum([len(c) for c in counts])]).astype(np.int64)
        arrays['mask_counts'] = np.frombuffer(b''.join(counts), np.uint8)
    if with_ms == {True}:
        arrays['mask_scores'] = np.concatenate(
            [r['mask_scores'] for r in records]).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_chunk(folder: str, rank: int, index: int,
                records: Sequence[Record]) -> str:
    """Write ``records`` as chunk ``index`` of ``rank``, atomically; return
    its path."""
    path = osp.join(folder, chunk_name(rank, index))
    atomic_write(path, encode_chunk(records))
    return path


def read_chunk(path: str) -> List[Record]:
    """The records of one chunk file.

    Raises:
        PredictionStoreError: Naming the file when it is not a complete
            chunk (unreadable, missing arrays, inconsistent lengths).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise PredictionStoreError(
            f'prediction chunk {path} is unreadable ({e}); delete it and '
            'rerun tools/test.py with the same arguments to predict its '
            'images again') from e
    missing = [k for k in ('img_ids', 'num_dets', 'bboxes', 'scores',
                           'labels') if k not in a]
    n = int(a['num_dets'].sum()) if 'num_dets' in a else -1
    bad = missing or a['img_ids'].shape != a['num_dets'].shape or any(
        a[k].shape[0] != n for k in ('bboxes', 'scores', 'labels')) or (
        'mask_offsets' in a and a['mask_offsets'].shape[0] != n + 1)
    if bad:
        raise PredictionStoreError(
            f'prediction chunk {path} is not a complete chunk (missing '
            f'{missing}, or array lengths disagree with num_dets); delete it '
            'and rerun tools/test.py with the same arguments')
    ends = np.cumsum(a['num_dets'])
    starts = ends - a['num_dets']
    blob = a['mask_counts'].tobytes() if 'mask_counts' in a else None
    out = []
    for i, img_id in enumerate(a['img_ids'].tolist()):
        s, e = int(starts[i]), int(ends[i])
        rec: Record = {
            'img_id': int(img_id),
            'bboxes': a['bboxes'][s:e],
            'scores': a['scores'][s:e],
            'labels': a['labels'][s:e],
            'masks': None,
            'mask_scores': a['mask_scores'][s:e]
            if 'mask_scores' in a else None,
        }
        if blob is not None:
            off = a['mask_offsets']
            rec['masks'] = [{
                'size': a['mask_sizes'][j].tolist(),
                'counts': blob[off[j]:off[j + 1]].decode('ascii')
            } for j in range(s, e)]
        out.append(rec)
    return out


def image_ids(folder: str) -> np.ndarray:
    """Sorted unique ids of the images ``folder`` holds predictions for."""
    ids = []
    for path in chunk_paths(folder):
        try:
            with np.load(path, allow_pickle=False) as z:
                ids.append(z['img_ids'])
        except (OSError, ValueError, EOFError, KeyError,
                zipfile.BadZipFile) as e:
            raise PredictionStoreError(
                f'prediction chunk {path} is unreadable ({e}); delete it and '
                'rerun tools/test.py with the same arguments') from e
    if not ids:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(ids))


def holds_masks(folder: str) -> bool:
    """Whether the predictions of ``folder`` carry masks (its first chunk
    does; every chunk of a test does or none)."""
    paths = chunk_paths(folder)
    if not paths:
        return False
    try:
        with np.load(paths[0], allow_pickle=False) as z:
            return 'mask_counts' in z.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise PredictionStoreError(
            f'prediction chunk {paths[0]} is unreadable ({e})') from e


def iter_chunks(folder: str, stats: Optional[dict] = None
                ) -> Iterator[List[Record]]:
    """The records of each chunk, one chunk in memory at a time, each image
    once.

    An image saved twice (a distributed sampler pads its last batch with
    images of other ranks) is given once, from its first chunk; the others
    are counted in ``stats['duplicates']`` when ``stats`` is given, with
    ``stats['images']`` and ``stats['chunks']``.
    """
    seen = set()
    counts = {'images': 0, 'duplicates': 0, 'chunks': 0}
    if stats is not None:
        stats.update(counts)
    for path in chunk_paths(folder):
        counts['chunks'] += 1
        out = []
        for rec in read_chunk(path):
            if rec['img_id'] in seen:
                counts['duplicates'] += 1
                continue
            seen.add(rec['img_id'])
            counts['images'] += 1
            out.append(rec)
        if stats is not None:
            stats.update(counts)
        yield out


# ---------------------------------------------------------------- manifest
def file_identity(path: str) -> Dict[str, Any]:
    """``{'path', 'size', 'mtime', 'sha256'}`` of a local file (a URL:
    its text as ``path`` and ``sha256`` of the text)."""
    if '://' in path or not osp.isfile(path):
        return {'path': path, 'size': None, 'mtime': None,
                'sha256': hashlib.sha256(path.encode()).hexdigest()}
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
    st = os.stat(path)
    return {'path': osp.abspath(path), 'size': st.st_size,
            'mtime': st.st_mtime, 'sha256': h.hexdigest()}


def read_manifest(folder: str) -> Optional[dict]:
    """The manifest of ``folder``, or None when it has none."""
    path = osp.join(folder, MANIFEST)
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise PredictionStoreError(
            f'{path} is unreadable ({e}); the predictions beside it cannot '
            'be attributed to a checkpoint: remove the folder (or pass '
            '--fresh-predictions) and test again') from e
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise PredictionStoreError(f'{path} is not a {FORMAT} manifest')
    if manifest.get('version') != VERSION:
        raise PredictionStoreError(
            f'{path} has format version {manifest.get("version")}; this '
            f'mmlongtail reads version {VERSION}')
    return manifest


def write_manifest(folder: str, identity: Dict[str, dict],
                   num_images: int) -> str:
    """Write ``folder``'s manifest (atomically): predictions of
    ``num_images`` images belonging to ``identity``."""
    path = osp.join(folder, MANIFEST)
    atomic_write(path, json.dumps(
        {'format': FORMAT, 'version': VERSION, 'num_images': int(num_images),
         'identity': identity}, indent=1, sort_keys=True))
    return path


def identity_differences(saved: Dict[str, dict],
                         current: Dict[str, dict]) -> List[str]:
    """What differs between two identities, one line per part (empty when
    they match)."""
    out = []
    for key in IDENTITY_KEYS:
        a, b = saved.get(key, {}), current.get(key, {})
        if a.get('sha256') != b.get('sha256'):
            out.append(
                f'{key}: saved for {a.get("path")} (size {a.get("size")}, '
                f'sha256 {str(a.get("sha256"))[:12]}), now '
                f'{b.get("path")} (size {b.get("size")}, sha256 '
                f'{str(b.get("sha256"))[:12]})')
    return out


def clear(folder: str) -> int:
    """Remove the manifest and every chunk of ``folder``; return how many
    chunks were removed."""
    paths = chunk_paths(folder)
    for p in paths:
        os.remove(p)
    if osp.isfile(osp.join(folder, MANIFEST)):
        os.remove(osp.join(folder, MANIFEST))
    return len(paths)
