"""LVIS ground truth as the evaluators read it: the checked, completed
annotation dict (:func:`normalize_gt`) and :class:`LVISGroundTruth`, which
builds each evaluator's index of it once."""
import logging
from typing import Dict, List, Optional

import numpy as np

from mmlongtail.datasets.category_stats import frequency_group
from .faster_coco import silent
from .lvis_detections import DetectionColumns


class LVISGroundTruth:
    """An LVIS-format ground-truth dict plus lazily built evaluator objects.

    Args:
        dataset (dict): ``images``, ``annotations``, ``categories``. Images
            must carry ``neg_category_ids`` and
            ``not_exhaustive_category_ids`` and categories ``frequency``, as in
            LVIS; use :func:`normalize_gt` to fill them in.
        source (str): Where it came from, for messages.
    """

    def __init__(self, dataset: dict, source: str = '<memory>') -> None:
        self.dataset = dataset
        self.source = source
        self.cat_ids = np.array(
            sorted(int(c['id']) for c in dataset['categories']), np.int64)
        cats = {int(c['id']): c for c in dataset['categories']}
        self.cat_names = [str(cats[i].get('name', i)) for i in self.cat_ids]
        self.frequency = [str(cats[i].get('frequency', '')) for i in
                          self.cat_ids]
        self.img_ids = np.array(
            sorted(int(i['id']) for i in dataset['images']), np.int64)
        self._lvis = None
        self._coco = None
        self._eval_keys: Optional[np.ndarray] = None

    @property
    def num_classes(self) -> int:
        return int(self.cat_ids.shape[0])

    def federated_mask(self, dets: DetectionColumns) -> np.ndarray:
        """``(N,)`` bool: which detections LVIS evaluates at all.

        A detection counts only if its category is annotated in its image or
        listed in the image's ``neg_category_ids``; LVIS drops the others
        before matching (after the per-image top-``max_dets`` cut), so
        dropping them earlier changes no number.
        """
        if self._eval_keys is None:
            K = self.num_classes
            img_index = {int(i): k for k, i in enumerate(self.img_ids)}
            keys = []
            for img in self.dataset['images']:
                k = img_index[int(img['id'])] * K
                keys.extend(k + c for c in np.searchsorted(
                    self.cat_ids, np.asarray(img['neg_category_ids'],
                                             np.int64)).tolist())
            anns = self.dataset['annotations']
            a_img = np.fromiter((a['image_id'] for a in anns), np.int64,
                                len(anns))
            a_cat = np.fromiter((a['category_id'] for a in anns), np.int64,
                                len(anns))
            a_key = np.searchsorted(self.img_ids, a_img) * K + np.searchsorted(
                self.cat_ids, a_cat)
            self._eval_keys = np.unique(
                np.concatenate([np.asarray(keys, np.int64), a_key]))
        key = np.searchsorted(self.img_ids, dets.image_id) * \
            self.num_classes + np.searchsorted(self.cat_ids, dets.category_id)
        pos = np.searchsorted(self._eval_keys, key)
        pos = np.minimum(pos, max(len(self._eval_keys) - 1, 0))
        return (self._eval_keys[pos] == key) if len(self._eval_keys) else \
            np.zeros(len(key), bool)

    def images_per_category(
            self, dets: DetectionColumns) -> Dict[int, List[int]]:
        """``{category id: sorted image ids}`` where the category has ground
        truth or one of ``dets``."""
        anns = self.dataset['annotations']
        img = np.concatenate([
            np.fromiter((a['image_id'] for a in anns), np.int64, len(anns)),
            dets.image_id
        ])
        cat = np.concatenate([
            np.fromiter((a['category_id'] for a in anns), np.int64,
                        len(anns)), dets.category_id
        ])
        pairs = np.unique(np.stack([cat, img], 1), axis=0)
        cats, starts = np.unique(pairs[:, 0], return_index=True)
        groups = np.split(pairs[:, 1], starts[1:])
        return {
            int(c): g.tolist()
            for c, g in zip(cats.tolist(), groups)
        }

    def cat_ids_with_annotations(self) -> np.ndarray:
        """Sorted ids of the categories annotated in at least one image."""
        anns = self.dataset['annotations']
        return np.unique(
            np.fromiter((a['category_id'] for a in anns), np.int64,
                        len(anns)))

    def lvis_api(self):
        """``lvis.LVIS`` over this dataset (built once)."""
        if self._lvis is None:
            from lvis import LVIS

            # lvis-api 0.5.3 only reads files; build it from the dict instead
            # of writing one, through its own indexing code.
            api = LVIS.__new__(LVIS)
            api.logger = logging.getLogger('lvis.lvis')
            api.dataset = self.dataset
            api._create_index()
            self._lvis = api
        return self._lvis

    def faster_coco(self):
        """``faster_coco_eval.COCO`` over this dataset (built once)."""
        if self._coco is None:
            from faster_coco_eval import COCO
            self._coco = COCO(self.dataset, print_function=silent)
        return self._coco


def normalize_gt(dataset: dict, source: str = '<memory>',
                 frequency: Optional[Dict[int, str]] = None,
                 logger=None) -> dict:
    """Check an LVIS/COCO-format dict and fill the fields LVIS needs.

    * images without ``neg_category_ids`` / ``not_exhaustive_category_ids`` get
      empty lists (then only categories annotated in an image are evaluated
      there; a warning says so);
    * categories without ``frequency`` take it from ``frequency`` (category
      id to ``'r'/'c'/'f'``), else from their ``image_count`` by LVIS's rule,
      else ``ValueError``.

    Modifies and returns ``dataset``.
    """
    for key in ('images', 'categories'):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f'ground truth {source} has no {key!r} list')
    dataset.setdefault('annotations', [])
    missing = 0
    for img in dataset['images']:
        if 'neg_category_ids' not in img or \
                'not_exhaustive_category_ids' not in img:
            missing += 1
            img.setdefault('neg_category_ids', [])
            img.setdefault('not_exhaustive_category_ids', [])
    if missing and logger is not None:
        logger.warning(
            f'{missing} of {len(dataset["images"])} images of {source} have '
            'no neg_category_ids/not_exhaustive_category_ids; they are '
            'evaluated on their annotated categories only (not federated).')
    derived = 0
    for cat in dataset['categories']:
        if 'frequency' not in cat:
            cid = int(cat['id'])
            if (frequency is None or cid not in frequency) and \
                    cat.get('image_count') is not None:
                # LVIS's rule on the training image count the category records
                cat['frequency'] = frequency_group(int(cat['image_count']))
                derived += 1
                continue
            if frequency is None or cid not in frequency:
                raise ValueError(
                    f'category {cid} ({cat.get("name")!r}) of {source} has no '
                    "'frequency'; LVIS's APr/APc/APf need it. Give the "
                    "metric category_stats= (e.g. 'lvis_v1' or a stats file).")
            cat['frequency'] = frequency[cid]
    if derived and logger is not None:
        logger.warning(
            f'{derived} categories of {source} have no frequency; derived '
            'from their image_count with LVIS\'s rule (rare <= 10 images, '
            'common <= 100).')
    return dataset


