"""V3Det (Wang et al., "V3Det: Vast Vocabulary Visual Detection Dataset",
ICCV 2023): 13,204 categories in a COCO-format file.

mmdet's ``V3DetDataset`` takes its class names from a separate text file and
its labels from the order in which the JSON lists its categories (pycocotools'
``getCatIds``). mmlongtail's category statistics, and so every loss and
sampler that reads them, put label ``i`` on the ``i``-th category *by id*.
:class:`V3DetDataset` here takes the classes from the annotation file itself,
in id order, so the two agree whatever order the file lists them in.
"""
from collections import defaultdict
from typing import List

from mmdet.datasets import CocoDataset

from mmlongtail.registry import DATASETS
from .annotation_file import (adopt_file_classes, load_annotation_file,
                              unique_ids)

#: How many offending ids a message names.
_SHOW = 5


@DATASETS.register_module()
class V3DetDataset(CocoDataset):
    """A V3Det-format (COCO-format) detection dataset, labels in id order.

    The file is decoded once. Its classes are the categories' names sorted
    by category id, which is also the label order (``cat2label``), the order
    of :func:`mmlongtail.datasets.load_category_stats`; ``num_classes`` of
    the model must equal their number (13,204 for V3Det v1). Image paths are
    ``data_prefix['img']`` joined with each image's ``file_name`` (V3Det:
    ``images/<synset>/<name>.jpg``, so ``data_prefix=dict(img='')`` with
    ``data_root='data/V3Det/'``).

    Refused with ``ValueError`` naming the file and the first ids: duplicate
    category or image ids, annotations of an image or category the file
    does not list (mmdet would drop them silently or fail with a
    ``KeyError``).

    Example::

        train_dataloader = dict(dataset=dict(
            type='mmlongtail.V3DetDataset',
            data_root='data/V3Det/',
            ann_file='annotations/v3det_2023_v1_train.json',
            data_prefix=dict(img='')))
    """
    METAINFO = dict(classes=(), palette=None)

    def load_data_list(self) -> List[dict]:
        """Read, check and parse the annotation file.

        Returns:
            list[dict]: One parsed entry per image, in file order.
        """
        raw = load_annotation_file(self.ann_file, self.backend_args)
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(raw.get(key), list):
                raise ValueError(
                    f'malformed annotation file {self.ann_file}: missing or '
                    f'not a list: {key!r}. A V3Det (COCO-format) file has '
                    "'images', 'annotations' and 'categories' lists.")
        cats = sorted(raw['categories'], key=lambda c: c['id'])
        if not cats:
            raise ValueError(f'malformed annotation file {self.ann_file}: '
                             "empty 'categories'")
        cat_set = unique_ids([c['id'] for c in cats], self.ann_file,
                             'category')
        img_set = unique_ids([im['id'] for im in raw['images']],
                             self.ann_file, 'image')
        self.cat_ids = [c['id'] for c in cats]
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        names = tuple(c['name'] for c in cats)
        anns_of = defaultdict(list)
        self.cat_img_map = defaultdict(list)
        bad_img, bad_cat = [], []
        n_bad_img = n_bad_cat = 0
        for ann in raw['annotations']:
            img_id, cat_id = ann['image_id'], ann['category_id']
            if img_id not in img_set:
                n_bad_img += 1
                if len(bad_img) < _SHOW:
                    bad_img.append(ann.get('id'))
                continue
            if cat_id not in cat_set:
                n_bad_cat += 1
                if len(bad_cat) < _SHOW:
                    bad_cat.append((ann.get('id'), cat_id))
                continue
            anns_of[img_id].append(ann)
            self.cat_img_map[cat_id].append(img_id)
        if n_bad_img or n_bad_cat:
            raise ValueError(
                f'malformed annotation file {self.ann_file}: '
                f'{n_bad_img} annotations of an image_id not in images '
                f'(first annotation ids {bad_img}), {n_bad_cat} of a '
                f'category_id not in categories (first (annotation id, '
                f'category id) {bad_cat}). Nothing is skipped silently: fix '
                'or remove them.')
        if self.ANN_ID_UNIQUE:
            unique_ids([a['id'] for a in raw['annotations']], self.ann_file,
                       'annotation')
        data_list = [
            self.parse_data_info({
                'raw_ann_info': anns_of.get(img['id'], []),
                'raw_img_info': dict(img, img_id=img['id'])
            }) for img in raw['images']
        ]
        del raw, anns_of
        adopt_file_classes(self._metainfo, names, self.ann_file)
        return data_list
