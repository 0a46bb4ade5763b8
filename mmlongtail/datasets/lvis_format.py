"""LVIS-format datasets: classes from the file (:class:`LVISFormatDataset`),
or LVIS v1's classes checked against the file (:class:`LVISV1Dataset`)."""
from collections import defaultdict
from typing import List, Optional

from mmdet.datasets import LVISV1Dataset as _MMDetLVISV1Dataset

from mmlongtail.registry import DATASETS
from .annotation_file import (check_annotation_file, load_annotation_file,
                              unique_ids)
from .category_stats import load_category_stats

_COCO_URL = 'http://images.cocodataset.org/'


@DATASETS.register_module()
class LVISFormatDataset(_MMDetLVISV1Dataset):
    """mmdet's ``LVISV1Dataset`` for any LVIS v1-format annotation file.

    mmdet's class hard-codes the 1203 LVIS v1 class names as its metainfo, so
    a custom LVIS-format file (the synthetic dataset, a subset, a new domain,
    LVIS v0.5) would be evaluated and visualised under the wrong names. Here,
    unless the config passes ``metainfo=dict(classes=...)``, the classes are
    the file's categories sorted by id, which is also the label order
    (``cat2label``). The model's ``num_classes`` must equal their number.

    The file is decoded once and checked before it is parsed
    (:mod:`mmlongtail.datasets.annotation_file`): a truncated or malformed
    file, or a record mmdet would fail on with a raw ``KeyError`` or skip
    silently (an annotation of an unknown image or category), is refused
    with the file, the problem and the offending ids named.

    Example::

        train_dataloader = dict(dataset=dict(
            type='mmlongtail.LVISFormatDataset',
            data_root='data/my_lvis/',
            ann_file='annotations/train.json',  # LVIS v1 format
            data_prefix=dict(img='')))  # image paths come from coco_url
    """
    METAINFO = dict(classes=(), palette=None)

    #: Packaged category statistics (``category_stats.PACKAGED_STATS``)
    #: whose ids and names the file's categories must equal; ``None``: any.
    REFERENCE_CATEGORIES: Optional[str] = None

    def load_data_list(self) -> List[dict]:
        """Read, check and parse the annotation file, decoding it once.

        What mmdet's ``LVISV1Dataset.load_data_list`` gets from lvis-api
        (which would decode the file again) is built here from the copy the
        checks read, in the same orders: labels follow the categories (in id
        order, checked), images follow the file, each image's annotations
        follow the file; ``cat_img_map`` maps a category id to the image of
        each of its annotations. Each image is then parsed by mmdet's
        ``parse_data_info``, as mmdet does.

        Returns:
            list[dict]: One parsed entry per image of the file.
        """
        raw = load_annotation_file(self.ann_file, self.backend_args)
        check_annotation_file(raw, self.ann_file, self.REFERENCE_CATEGORIES,
                              type(self).__name__)
        cats = raw['categories']
        names = tuple(c['name'] for c in cats)
        self.cat_ids = [c['id'] for c in cats]
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        anns_of = defaultdict(list)
        self.cat_img_map = defaultdict(list)
        for ann in raw['annotations']:
            anns_of[ann['image_id']].append(ann)
            self.cat_img_map[ann['category_id']].append(ann['image_id'])
        if self.ANN_ID_UNIQUE:
            unique_ids([a['id'] for a in raw['annotations']], self.ann_file,
                       'annotation')
        data_list = []
        for img in raw['images']:
            img_info = dict(img, img_id=img['id'])
            # LVIS v1 names an image by its COCO URL, which holds the split
            # folder: http://images.cocodataset.org/train2017/x.jpg
            img_info['file_name'] = img['coco_url'].replace(_COCO_URL, '')
            data_list.append(
                self.parse_data_info({
                    'raw_ann_info': anns_of.get(img['id'], []),
                    'raw_img_info': img_info
                }))
        del raw, cats, anns_of
        if not self._metainfo.get('classes'):
            self._metainfo['classes'] = names
        elif len(self._metainfo['classes']) != len(names):
            raise ValueError(
                f'metainfo gives {len(self._metainfo["classes"])} classes '
                f'but {self.ann_file} has {len(names)} categories')
        return data_list


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
