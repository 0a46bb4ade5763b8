"""LVIS-format datasets: classes from the file (:class:`LVISFormatDataset`),
or LVIS v1's classes checked against the file (:class:`LVISV1Dataset`)."""
import copy
import itertools
from collections import defaultdict
from typing import List, Optional, Sequence, Union

import numpy as np
from mmdet.datasets import LVISV1Dataset as _MMDetLVISV1Dataset
from mmengine.dataset import force_full_init

from mmlongtail.registry import DATASETS
from .annotation_file import adopt_file_classes
from .category_stats import load_category_stats
from .lvis_records import POLICIES, LVISRecords, read_lvis_records


@DATASETS.register_module()
class LVISFormatDataset(_MMDetLVISV1Dataset):
    """mmdet's ``LVISV1Dataset`` for any LVIS v1-format annotation file.

    mmdet's class hard-codes the 1203 LVIS v1 class names as its metainfo, so
    a custom LVIS-format file (the synthetic dataset, a subset, a new domain,
    LVIS v0.5) would be evaluated and visualised under the wrong names. Here,
    unless the config passes ``metainfo=dict(classes=...)``, the classes are
    the file's categories sorted by id, which is also the label order
    (``cat2label``). The model's ``num_classes`` must equal their number.

    The file is read and decoded once, into compact records
    (:mod:`mmlongtail.datasets.lvis_records`): numpy arrays that dataloader
    workers share, from which :meth:`get_data_info` builds the item mmdet's
    ``LVISV1Dataset`` would give (same keys, values and order). The class
    list comes from the same decode. A truncated or malformed file is
    refused with :class:`~mmlongtail.datasets.annotation_file.
    AnnotationFileError`, naming the file, the problem and the offending
    image and annotation ids.

    Bad annotations follow a stated policy, never a silent drop:

    * ``bad_annotation='error'`` (default) refuses records mmdet would fail
      on or drop without a word (a missing key, a wrong type, NaN, an
      unknown image or category, a polygon under 3 points or with an odd
      coordinate count); ``'skip'`` drops them, counted per kind and logged.
    * ``degenerate_box='skip'`` (default) drops the boxes mmdet's parser
      drops (width or height under 1, ``area <= 0``, outside the image),
      counted and logged; ``'error'`` refuses them.

    The counts of one load are in ``dataset.records.counts``.

    Example::

        train_dataloader = dict(dataset=dict(
            type='mmlongtail.LVISFormatDataset',
            data_root='data/my_lvis/',
            ann_file='annotations/train.json',  # LVIS v1 format
            data_prefix=dict(img=''),  # image paths come from coco_url
            bad_annotation='error',  # or 'skip': counted and logged
            degenerate_box='skip'))  # mmdet's drops, counted and logged

    Args:
        bad_annotation (str): ``'error'`` or ``'skip'``, see above.
        degenerate_box (str): ``'skip'`` or ``'error'``, see above.
        *args, **kwargs: mmdet's ``LVISV1Dataset`` arguments.
        ``serialize_data`` has no effect: the records are compact already.
    """
    METAINFO = dict(classes=(), palette=None)

    #: Packaged category statistics (``category_stats.PACKAGED_STATS``)
    #: whose ids and names the file's categories must equal; ``None``: any.
    REFERENCE_CATEGORIES: Optional[str] = None

    def __init__(self,
                 *args,
                 bad_annotation: str = 'error',
                 degenerate_box: str = 'skip',
                 **kwargs) -> None:
        for name, value in (('bad_annotation', bad_annotation),
                            ('degenerate_box', degenerate_box)):
            if value not in POLICIES:
                raise ValueError(f'{name} must be one of {POLICIES}, got '
                                 f'{value!r}')
        self.bad_annotation = bad_annotation
        self.degenerate_box = degenerate_box
        self.records: Optional[LVISRecords] = None
        self._rows = np.zeros(0, dtype=np.int64)
        super().__init__(*args, **kwargs)

    def full_init(self) -> None:
        """Read the file once into compact records, then filter and subset
        image indices (``filter_cfg``, ``indices``); nothing is serialized
        per image (``serialize_data`` has no effect: the records are numpy
        arrays, shared by dataloader workers as they are)."""
        if self._fully_initialized:
            return
        rec = read_lvis_records(
            self.ann_file,
            self.backend_args,
            reference=self.REFERENCE_CATEGORIES,
            dataset=type(self).__name__,
            bad_annotation=self.bad_annotation,
            degenerate_box=self.degenerate_box,
            unique_ann_ids=self.ANN_ID_UNIQUE)
        self.records = rec
        self.cat_ids = list(rec.cat_ids)
        self.cat2label = {c: i for i, c in enumerate(self.cat_ids)}
        self.cat_img_map = defaultdict(list, rec.cat_img_map)
        names = rec.cat_names
        adopt_file_classes(self._metainfo, names, self.ann_file)
        self._rows = self._filtered_rows()
        if self._indices is not None:
            self._rows = self._select(self._rows, self._indices)
        self._fully_initialized = True

    def _filtered_rows(self) -> np.ndarray:
        """Image rows kept by ``filter_cfg``, with mmdet's ``CocoDataset``
        rules: ``filter_empty_gt`` keeps images with an annotation in the
        file (dropped ones included), ``min_size`` the images whose shorter
        side is at least that; nothing is filtered in test mode."""
        rec = self.records
        rows = np.arange(len(rec), dtype=np.int64)
        if self.test_mode or self.filter_cfg is None:
            return rows
        keep = np.ones(len(rec), dtype=bool)
        if self.filter_cfg.get('filter_empty_gt', False):
            with_ann = np.fromiter(
                itertools.chain.from_iterable(rec.cat_img_map.values()),
                dtype=np.int64)
            keep &= np.isin(rec.img_ids, with_ann)
        min_size = self.filter_cfg.get('min_size', 0)
        keep &= np.minimum(rec.widths, rec.heights) >= min_size
        return rows[keep]

    @staticmethod
    def _select(rows: np.ndarray, indices: Union[int, Sequence[int]]
                ) -> np.ndarray:
        """mmengine's subset rule: an int keeps the first (or, negative,
        the last) that many; a sequence keeps those positions."""
        if isinstance(indices, int):
            return rows[:indices] if indices >= 0 else rows[indices:]
        return rows[np.asarray(list(indices), dtype=np.int64)]

    def load_data_list(self) -> List[dict]:
        """Every image's record, materialized (what mmdet's
        ``LVISV1Dataset.load_data_list`` returns, before filtering). The
        dataset itself never holds this list; it is for inspection."""
        if not self._fully_initialized:
            self.full_init()
        return [self._materialize(int(r)) for r in range(len(self.records))]

    def _materialize(self, row: int) -> dict:
        rec = self.records
        info = self.parse_data_info({
            'raw_img_info': {
                'img_id': int(rec.img_ids[row]),
                'file_name': rec.file_name(row),
                'height': int(rec.heights[row]),
                'width': int(rec.widths[row])
            },
            'raw_ann_info': []
        })
        info['instances'] = rec.instances(row)
        return info

    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        """The record of dataset index ``idx``, built from the compact
        records: equal to mmdet's ``LVISV1Dataset`` item (``img_path``,
        ``img_id``, ``seg_map_path``, ``height``, ``width``, ``instances``
        with ``ignore_flag``, ``bbox`` ``[x1, y1, x2, y2]``, ``bbox_label``
        and ``mask``; ``sample_idx``)."""
        info = self._materialize(int(self._rows[idx]))
        info['sample_idx'] = idx if idx >= 0 else len(self) + idx
        return info

    def index_img_ids(self) -> np.ndarray:
        """``(len(self),)`` int64: the ``img_id`` of each index (what
        :func:`mmlongtail.datasets.image_categories` reads, without
        building the records)."""
        if not self._fully_initialized:
            self.full_init()
        return self.records.img_ids[self._rows]

    def __len__(self) -> int:
        if not self._fully_initialized:
            self.full_init()
        return int(self._rows.shape[0])

    def get_subset_(self, indices: Union[int, Sequence[int]]) -> None:
        if not self._fully_initialized:
            self.full_init()
        self._rows = self._select(self._rows, indices)

    def get_subset(self, indices: Union[int, Sequence[int]]
                   ) -> 'LVISFormatDataset':
        if not self._fully_initialized:
            self.full_init()
        sub = copy.copy(self)  # the records are shared, read-only
        sub._metainfo = copy.deepcopy(self._metainfo)
        sub._rows = self._select(self._rows, indices)
        return sub


@DATASETS.register_module()
class LVISV1Dataset(LVISFormatDataset):
    """LVIS v1, refusing a file whose categories are not LVIS v1's.

    The LVIS v1 configs (``configs/_base_/datasets/lvis_v1_*.py``) use this
    class. Compared with mmdet's ``LVISV1Dataset``, it checks at load time
    that the file's category ids and names are LVIS v1's (as packaged in
    ``mmlongtail/data``, read through
    :func:`mmlongtail.datasets.load_category_stats`), so an LVIS v0.5 file
    (1230 categories, such as lvis-api's 100-image example) is refused with
    the fix named instead of training under the wrong class names; and it
    refuses malformed files like :class:`LVISFormatDataset`. Its classes are
    LVIS v1's, known before the file is read (``lazy_init=True``).
    """
    REFERENCE_CATEGORIES = 'lvis_v1'

    @classmethod
    def _load_metainfo(cls, metainfo: Optional[dict] = None) -> dict:
        meta = super()._load_metainfo(metainfo)
        if not meta.get('classes'):
            meta['classes'] = load_category_stats(
                cls.REFERENCE_CATEGORIES).names
        return meta
