"""An LVIS v1-format dataset whose classes are read from its own file."""
import json
from typing import List

from mmdet.datasets import LVISV1Dataset
from mmengine.fileio import get_local_path

from mmlongtail.registry import DATASETS


@DATASETS.register_module()
class LVISFormatDataset(LVISV1Dataset):
    """mmdet's ``LVISV1Dataset`` for any LVIS v1-format annotation file.

    mmdet's class hard-codes the 1203 LVIS v1 class names as its metainfo, so
    a custom LVIS-format file (the synthetic dataset, a subset, a new domain)
    would be evaluated and visualised under the wrong names. Here, unless the
    config passes ``metainfo=dict(classes=...)``, the classes are the file's
    categories sorted by id, which is also the label order
    (``cat2label``).

    It also refuses, with the offending ids named, what mmdet would skip
    silently: annotations whose ``category_id`` is not among the categories,
    and category lists that are not sorted by id (labels would then disagree
    with :mod:`mmlongtail.datasets.category_stats`).
    """
    METAINFO = dict(classes=(), palette=None)

    def load_data_list(self) -> List[dict]:
        with get_local_path(
                self.ann_file, backend_args=self.backend_args) as local_path:
            with open(local_path, encoding='utf-8') as f:
                raw = json.load(f)
        cats = raw.get('categories')
        if not isinstance(cats, list) or not cats:
            raise ValueError(f'malformed annotation file {self.ann_file}: '
                             "missing or empty 'categories'")
        ids = [c['id'] for c in cats]
        if ids != sorted(ids):
            raise ValueError(
                f'malformed annotation file {self.ann_file}: categories must '
                'be sorted by id (labels are positions in id order)')
        known = set(ids)
        unknown = sorted({
            a['category_id']
            for a in raw.get('annotations', [])
            if a['category_id'] not in known
        })
        if unknown:
            raise ValueError(
                f'malformed annotation file {self.ann_file}: annotations '
                f'refer to category ids {unknown[:10]} that are not in '
                "'categories'")
        names = tuple(c['name'] for c in cats)
        del raw
        data_list = super().load_data_list()
        if not self._metainfo.get('classes'):
            self._metainfo['classes'] = names
        elif len(self._metainfo['classes']) != len(names):
            raise ValueError(
                f'metainfo gives {len(self._metainfo["classes"])} classes '
                f'but {self.ann_file} has {len(names)} categories')
        return data_list
