"""The images a calibration sweep evaluates: the config's val split, or a
held-out part of its training set (:mod:`mmlongtail.datasets.heldout_split`);
see :mod:`mmlongtail.apis.calibrate`."""
import copy
import json
import os.path as osp
from dataclasses import dataclass
from typing import Optional

from mmengine.config import Config
from mmengine.logging import MMLogger

from mmlongtail.datasets.heldout_split import (heldout_of_remaining,
                                               split_heldout, split_info)
from .params import component_type_name

SPLITS = ('heldout', 'val')

@dataclass
class SplitInfo:
    """The images a sweep evaluated.

    Attributes:
        name (str): ``'heldout'`` or ``'val'``.
        ann_file (str): Their LVIS-format annotation file.
        num_images (int): Images in it.
        seen_in_training (bool, optional): Whether the checkpoint's training
            set (the config's) contains them: True for a held-out part of
            the file the config trains on, False for the held-out twin of a
            remaining part the config trains on, None for val.
        note (str): One sentence for the table.
    """
    name: str
    ann_file: str
    num_images: int
    seen_in_training: Optional[bool]
    note: str
    remaining_ann_file: Optional[str] = None


def _innermost(dataset_cfg: dict, what: str) -> dict:
    while 'ann_file' not in dataset_cfg and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    if 'ann_file' not in dataset_cfg:
        raise ValueError(
            f'calibration sweep: the {what} dataset has no ann_file (a '
            f'{component_type_name(dataset_cfg) or "dataset"} of several '
            'datasets is not supported); give heldout_ann_file or '
            "split='val'")
    return dataset_cfg


def _resolve(dataset_cfg: dict, path: str) -> str:
    root = dataset_cfg.get('data_root') or ''
    return path if osp.isabs(path) or not root else osp.join(root, path)


def _count_images(ann_file: str) -> int:
    with open(ann_file, encoding='utf-8') as f:
        return len(json.load(f)['images'])


def prepare_split(cfg: Config,
                  split: str = 'heldout',
                  work_dir: Optional[str] = None,
                  seed: int = 0,
                  fraction: Optional[float] = None,
                  num_images: Optional[int] = None,
                  heldout_ann_file: Optional[str] = None) -> SplitInfo:
    """Point ``cfg``'s test dataloader and evaluator at ``split`` (in place)
    and describe it (see the module docstring).

    For ``'heldout'`` without a size, ``fraction=0.1``.
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    logger = MMLogger.get_current_instance()
    if split == 'val':
        if heldout_ann_file is not None:
            raise ValueError("heldout_ann_file is for split='heldout'")
        metrics = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        ann = next((m['ann_file'] for m in metrics if m.get('ann_file')),
                   None)
        if ann is None:
            test = _innermost(cfg.test_dataloader.dataset, 'test')
            ann = _resolve(test, test['ann_file'])
        return SplitInfo(
            'val', ann, _count_images(ann), None,
            "the config's test split: tuning on the split that is reported "
            'inflates its numbers')
    train = _innermost(cfg.train_dataloader.dataset, 'training')
    train_ann = _resolve(train, train['ann_file'])
    twin = heldout_of_remaining(train_ann)
    remaining = train_ann if twin else None
    if heldout_ann_file is not None:
        if fraction is not None or num_images is not None:
            raise ValueError('give heldout_ann_file or a held-out size '
                             '(fraction / num_images), not both')
        if not osp.isfile(heldout_ann_file):
            raise FileNotFoundError(
                f'held-out annotation file not found: {heldout_ann_file}')
        ann, info = heldout_ann_file, split_info(heldout_ann_file) or {}
        if twin is not None and osp.samefile(twin[0], ann):
            seen = False
        elif info.get('source') == osp.abspath(train_ann):
            seen = True
        else:
            seen = None
    elif twin is not None:
        if fraction is not None or num_images is not None:
            raise ValueError(
                f'the config trains on {train_ann}, the remaining part of '
                'an existing split; its held-out twin is used, so do not '
                'give a held-out size')
        ann, info, seen = twin[0], twin[1], False
    else:
        if fraction is None and num_images is None:
            fraction = 0.1
        paths = split_heldout(
            train_ann, osp.join(work_dir or cfg.work_dir, 'splits'),
            seed=seed, fraction=fraction, num_images=num_images)
        ann, remaining, seen = paths['heldout'], paths['remaining'], True
        info = split_info(ann)
    note = (f'seed {info["seed"]}, {info["num_heldout_images"]} of the '
            f'{info["num_source_images"]} images of {info["source"]}'
            if info.get('seed') is not None else 'a given file')
    if seen:
        note += ('; the checkpoint was trained on these images (held out '
                 'only if stage 1 trains on the remaining part)')
        logger.warning(
            f'calibration split {ann}: the model was trained on these '
            'images, so they are not unseen data. For a true held-out '
            f'split, train stage 1 with ann_file={remaining or "<remaining>"}'
            ' and calibrate with that config.')
    elif seen is False:
        note += '; not in the training set of the config (its remaining part)'
    else:
        note += '; whether the model was trained on them is not recorded'
    test = cfg.test_dataloader.dataset
    inner = _innermost(test, 'test')
    inner['ann_file'] = osp.abspath(ann)
    inner['data_root'] = train.get('data_root')
    inner['data_prefix'] = copy.deepcopy(train.get('data_prefix', {}))
    metrics = cfg.test_evaluator if isinstance(
        cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    for m in metrics:
        if 'ann_file' in m:
            m['ann_file'] = osp.abspath(ann)
    return SplitInfo('heldout', osp.abspath(ann), _count_images(ann), seen,
                     note, remaining)


