"""The nearest-class-mean classifier, post hoc, on any checkpoint (Kang et
al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020): :class:`NCMClassifierHook` computes the class
means of the box head's RoI features over the training set in one pass and
evaluates with :class:`~mmlongtail.models.layers.ncm.NCMClassifier` in
place of ``fc_cls``. The scoring and the cache file format live in
:mod:`mmlongtail.models.layers.ncm`.

Which features: each training image once (RFS / class-aware repeats removed),
through the config's *test* pipeline (deterministic, and the geometry the
classifier scores at test time; the training pipeline's flips and random scales
would make the means a random draw). For each image, the RPN proposals made as
in training (``train_cfg.rpn_proposal``) are assigned by the RoI head's own
``bbox_assigner`` (``MaxIoUAssigner``, positives at IoU >=
``train_cfg.rcnn.assigner.pos_iou_thr``), and the ground-truth boxes are added
as proposals, as the head's sampler does (``add_gt_as_proposals``): the
classifier's own positives. Unlike training, *all* positives count, not the
sampler's random quarter of 512, so the means do not depend on a random draw.
The feature is the input of ``fc_cls`` (the last shared layer), taken with a
forward pre-hook, so any ``BBoxHead`` works; it is L2-normalized before it is
averaged (the official ``l2n`` centroids).
"""
import copy
import hashlib
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmengine.dist import get_comm_device, get_rank
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

from mmlongtail.models.layers.classifier_rebalance import box_heads
from mmlongtail.models.layers.ncm import (ClassMeanAccumulator,
                                          NCMClassifier, check_temperature,
                                          load_class_means, save_class_means)
from mmlongtail.models.losses.layout import ScoringFamily
from mmlongtail.models.losses.protocol import head_layout
from mmlongtail.models.roi_heads.feature_capture import captured_inputs
from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model
from mmlongtail.utils.progress import Progress

PHASES = ('val', 'test')


def ncm_box_head(model: nn.Module) -> Tuple[str, nn.Module]:
    """The one box head of ``model`` NCM can act on, checked.

    Raises:
        ValueError: No RoI head with one box head (Cascade: see
            :class:`NCMClassifierHook`), or a classifier that is not a
            softmax over ``C + 1`` rows with the background last.
    """
    roi_head = getattr(model, 'roi_head', None)
    heads = box_heads(model)
    if roi_head is None or not hasattr(model, 'rpn_head') or not heads:
        raise ValueError(
            f'NCM: {type(model).__name__} is not a two-stage detector with '
            'an R-CNN box head (backbone, RPN, RoI head)')
    if len(heads) != 1 or isinstance(getattr(roi_head, 'bbox_head', None),
                                     nn.ModuleList):
        raise ValueError(
            f'NCM: {type(roi_head).__name__} has {len(heads)} box heads '
            f'({[n for n, _ in heads]}); NCM is defined for one box head. '
            'Cascade stages are refused: each stage has its own assigner '
            '(IoU threshold) and the stages average their logits, so per-'
            'stage means would need a per-stage background rule not '
            'defined here')
    name, head = heads[0]
    layout = head_layout(head)
    C = head.num_classes
    if layout.family is not ScoringFamily.SOFTMAX or \
            layout.num_outputs != C + 1 or \
            list(layout.class_rows) != list(range(C)):
        raise ValueError(
            f'NCM needs a softmax classifier over C + 1 rows (classes, then '
            f'background), got {layout.owner}: {layout.describe()} '
            f'(family {layout.family}). Sigmoid-family and Seesaw/BAGS '
            'heads are refused: NCM keeps the trained background '
            'probability, which those heads do not give as one softmax row')
    if getattr(roi_head, 'bbox_assigner', None) is None:
        raise ValueError(
            'NCM: the RoI head has no bbox_assigner (the model was built '
            'without train_cfg); the class means need the assigner that '
            'picks the positives the classifier was trained on')
    return name, head


@torch.no_grad()
def positive_roi_features(model: nn.Module, data: dict
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``fc_cls`` inputs of the positives of one preprocessed training
    batch (see the module docstring) and their labels.

    Args:
        model (nn.Module): A two-stage detector in eval mode (unwrapped).
        data (dict): ``model.data_preprocessor(batch, False)`` of a batch
            with ground truth.

    Returns:
        tuple: ``(N, D)`` features and ``(N,)`` labels.
    """
    _, head = ncm_box_head(model)
    roi_head = model.roi_head
    samples = data['data_samples']
    x = model.extract_feat(data['inputs'])
    if samples[0].get('proposals', None) is not None:
        proposals = [s.proposals for s in samples]
    else:
        proposal_cfg = model.train_cfg.get('rpn_proposal',
                                           model.test_cfg.rpn)
        proposals = model.rpn_head.predict_by_feat(
            *model.rpn_head(x),
            batch_img_metas=[s.metainfo for s in samples],
            cfg=proposal_cfg, rescale=False)
    boxes, labels = [], []
    for sample, props in zip(samples, proposals):
        gt = sample.gt_instances
        ignored = sample.get('ignored_instances', None)
        pred = InstanceData(priors=get_box_tensor(props.bboxes))
        assign = roi_head.bbox_assigner.assign(pred, gt, ignored)
        pos = assign.gt_inds > 0
        boxes.append(torch.cat([get_box_tensor(gt.bboxes),
                                pred.priors[pos]]))
        labels.append(torch.cat([gt.labels, assign.labels[pos]]))
    labels = torch.cat(labels).long()
    if labels.numel() == 0:
        dim = head.fc_cls.in_features if hasattr(head.fc_cls,
                                                 'in_features') else 0
        return x[0].new_zeros(0, dim), labels
    with captured_inputs(head.fc_cls) as store:
        roi_head._bbox_forward(x, bbox2roi(boxes))
    feats = store[0].flatten(1)
    return feats, labels


#: Dataset wrappers the pass looks through (their repeats would weight the
#: means).
_WRAPPERS = ('ClassBalancedDataset', 'RepeatDataset')


def _pass_dataloader(runner):
    """The training images once each, through the *test* pipeline: the
    config's training dataset (looked through RFS / repeat wrappers), the
    test dataloader's pipeline (deterministic: no flip, no random scale,
    the geometry the NCM classifier scores at test time; it loads the
    annotations), a non-shuffling sampler without padding."""
    cfg = copy.deepcopy(runner.cfg.get('train_dataloader'))
    test = runner.cfg.get('test_dataloader') or {}
    pipeline = (test.get('dataset') or {}).get('pipeline')
    if not cfg or not pipeline:
        raise ValueError(
            'NCMClassifierHook: the config needs a train_dataloader (the '
            'class means are those of the training set) and a '
            'test_dataloader whose pipeline it uses for them')
    if not any(t.get('type', '').split('.')[-1] == 'LoadAnnotations'
               for t in pipeline if isinstance(t, dict)):
        raise ValueError(
            'NCMClassifierHook: the test pipeline has no LoadAnnotations; '
            'the pass over the training set needs its ground truth')
    dataset = cfg['dataset']
    while str(dataset.get('type', '')).split('.')[-1] in _WRAPPERS:
        dataset = dataset['dataset']
    dataset['pipeline'] = copy.deepcopy(pipeline)
    cfg['dataset'] = dataset
    cfg['sampler'] = dict(type='DefaultSampler', shuffle=False,
                          round_up=False)
    cfg.pop('batch_sampler', None)
    cfg['persistent_workers'] = False
    return runner.build_dataloader(cfg, seed=runner.seed)


@torch.no_grad()
def compute_class_means(model: nn.Module, dataloader,
                        log_interval: int = 50
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The class means of the positives' L2-normalized ``fc_cls`` inputs
    over ``dataloader`` (one pass, model in eval mode), summed over ranks.

    Each feature is L2-normalized before it is averaged, as the official
    code's ``l2n`` centroids (``run_networks.py``, ``get_knncentroids``), so
    every RoI weighs the same in the mean's direction whatever its norm.
    We do not centre the features by the global mean (the official
    ``cl2n``): the detector's features of background proposals would make
    "the global mean" ambiguous.

    Returns:
        tuple: ``(C, D)`` means (zero rows where a class has no positive)
        and ``(C,)`` int64 counts.
    """
    model = unwrap_model(model)
    _, head = ncm_box_head(model)
    was_training = model.training
    model.eval()
    logger = MMLogger.get_current_instance()
    progress = Progress('NCM class means: training batch', len(dataloader),
                        logger, log_interval)
    acc: Optional[ClassMeanAccumulator] = None
    C = head.num_classes
    try:
        for batch in dataloader:
            data = model.data_preprocessor(batch, False)
            feats, labels = positive_roi_features(model, data)
            if acc is None and feats.size(1):
                acc = ClassMeanAccumulator(C, feats.size(1)).to(feats.device)
            if acc is not None:  # means of L2-normalized features
                acc.update(F.normalize(feats, dim=1), labels)
            progress.step()
    finally:
        model.train(was_training)
    if acc is None:
        dim = getattr(head.fc_cls, 'in_features', None)
        if dim is None:
            raise ValueError('NCM: no positive on this rank and fc_cls has '
                             'no in_features to size the means')
        acc = ClassMeanAccumulator(C, dim).to(
            next(model.parameters()).device)
    acc.all_reduce()
    return acc.means()


def _checkpoint_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
            h.update(chunk)
    return h.hexdigest()


def _all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one collective when a process
    group exists)."""
    if not (dist.is_available() and dist.is_initialized()) or \
            dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=get_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


@HOOKS.register_module()
class NCMClassifierHook(Hook):
    """Evaluate with the cosine nearest-class-mean classifier (Kang et al.,
    ICLR 2020), post hoc, on any checkpoint of a softmax Mask / Faster
    R-CNN.

    Before each val / test epoch (after the checkpoint is loaded) the hook
    computes the class means of the box head's RoI features of the
    training set's positives in one pass (module docstring; sums and counts
    all-reduced, so every rank has the same means) and wraps ``fc_cls`` in
    :class:`~mmlongtail.models.layers.ncm.NCMClassifier`: class scores from
    ``softmax(cos(x, m_c) / T)``, the background probability the trained
    classifier's. ``fc_cls`` is put back after the epoch. A class with no
    positive in the training set gets score 0, and a warning lists it.

    Apply it to a checkpoint from the config::

        custom_hooks = [dict(type='mmlongtail.NCMClassifierHook',
                             temperature=0.1)]

    Args:
        temperature (float): ``T > 0``. Required (Kang et al. classify by
            arg-max and need none; detection ranks scores). Choose it with
            ``tools/calibrate.py --param NCMClassifierHook.temperature``.
        cache (str, optional): ``'auto'`` (default): in the test phase,
            read/write the means next to the checkpoint
            (``<checkpoint>.ncm_means.pt``, kept only while the checkpoint
            file's SHA-256, the training annotation file and the class count
            are the same); a path: that file; None: no file. Means computed
            during training (val phase) are never cached.
        phases (Sequence[str]): ``'val'`` and/or ``'test'``. Defaults to
            ``('test',)``: during training each validation would cost a
            pass over the training set.
        log_interval (int): Progress line every this many batches of the
            pass. Defaults to 50.
    """
    priority = 'LOW'

    def __init__(self,
                 temperature: Optional[float] = None,
                 cache: Optional[str] = 'auto',
                 phases: Sequence[str] = ('test', ),
                 log_interval: int = 50) -> None:
        self.temperature = check_temperature(temperature,
                                             'NCMClassifierHook')
        if isinstance(phases, str):
            phases = (phases, )
        bad = [p for p in phases if p not in PHASES]
        if bad or not phases:
            raise ValueError(f'NCMClassifierHook: phases must be some of '
                             f'{PHASES}, got {list(phases)}')
        if cache is not None and not isinstance(cache, str):
            raise ValueError("NCMClassifierHook: cache must be 'auto', a "
                             f'path or None, got {cache!r}')
        if not isinstance(log_interval, int) or log_interval < 1:
            raise ValueError('NCMClassifierHook: log_interval must be an '
                             f'int >= 1, got {log_interval!r}')
        self.cache, self.phases = cache, tuple(phases)
        self.log_interval = log_interval
        self._saved: Optional[Tuple[nn.Module, nn.Module]] = None

    # -------------------------------------------------------- the means --
    def _cache_file(self, runner, phase: str) -> Optional[str]:
        if self.cache is None or phase != 'test':
            return None
        if self.cache != 'auto':
            return self.cache
        ckpt = runner.cfg.get('load_from', None)
        return f'{ckpt}.ncm_means.pt' if ckpt and osp.isfile(ckpt) \
            else None

    def _meta(self, runner, head) -> Dict:
        ckpt = runner.cfg.get('load_from', None)
        dataset = runner.cfg.get('train_dataloader', {}).get('dataset', {})
        return dict(
            num_classes=int(head.num_classes),
            checkpoint_sha256=_checkpoint_digest(ckpt)
            if ckpt and osp.isfile(ckpt) else None,
            train_ann_file=str(dataset.get('ann_file', '')))

    def class_means(self, runner, phase: str
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(C, D)`` means and ``(C,)`` counts: from the cache file when
        it matches, else from one pass over the training set."""
        logger = MMLogger.get_current_instance()
        model = unwrap_model(runner.model)
        _, head = ncm_box_head(model)
        path = self._cache_file(runner, phase)
        meta = self._meta(runner, head) if path else {}
        found = None
        if path and osp.isfile(path):
            found = load_class_means(path, meta)
            if found is None:
                logger.warning(f'NCMClassifierHook: {path} was made from '
                               'another checkpoint or training set; '
                               'recomputing')
        # every rank uses the file, or every rank joins the pass (whose
        # sums are all-reduced): a file seen by some ranks only must not
        # leave the others waiting in the collective
        if _all_ranks(found is not None):
            logger.info(f'NCMClassifierHook: class means from {path}')
            return found
        loader = _pass_dataloader(runner)
        logger.info(f'NCMClassifierHook: class means of the RoI features '
                    f'of the training positives, one pass over '
                    f'{len(loader)} batches')
        means, counts = compute_class_means(model, loader,
                                            self.log_interval)
        if path and get_rank() == 0:
            save_class_means(path, means, counts, meta)
            logger.info(f'NCMClassifierHook: wrote the class means to {path}')
        return means, counts

    # ----------------------------------------------------- swap, restore --
    def _apply(self, runner, phase: str) -> None:
        if phase not in self.phases:
            return
        model = unwrap_model(runner.model)
        name, head = ncm_box_head(model)
        means, counts = self.class_means(runner, phase)
        if means.size(0) != head.num_classes:
            raise ValueError(f'NCMClassifierHook: {means.size(0)} class means'
                             f' for a head of {head.num_classes} classes')
        missing = (counts == 0).nonzero().view(-1).tolist()
        logger = MMLogger.get_current_instance()
        if len(missing) == len(counts):
            raise ValueError('NCMClassifierHook: no class has a positive '
                             'proposal in the training set')
        if missing:
            logger.warning(
                f'NCMClassifierHook: {len(missing)} classes have no '
                'positive proposal in the training set and score 0: '
                f'{missing}')
        fc = head.fc_cls
        device = next(fc.parameters()).device
        head.fc_cls = NCMClassifier(fc, means.to(device), counts.to(device),
                                    self.temperature)
        self._saved = (head, fc)
        logger.info(f'NCMClassifierHook: {name}.fc_cls scores classes by '
                    f'cosine nearest class mean, temperature '
                    f'{self.temperature}, for {phase}')

    def _restore(self, runner) -> None:
        if self._saved is not None:
            head, fc = self._saved
            head.fc_cls = fc
            self._saved = None

    def before_val_epoch(self, runner) -> None:
        self._apply(runner, 'val')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._restore(runner)

    def before_test_epoch(self, runner) -> None:
        self._apply(runner, 'test')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._restore(runner)


def ncm_classifiers(model: nn.Module) -> List[Tuple[nn.Module,
                                                     NCMClassifier]]:
    """``(box head, its NCMClassifier)`` for each box head of ``model``
    whose ``fc_cls`` is one (as :class:`NCMClassifierHook` leaves it)."""
    return [(h, h.fc_cls) for _, h in box_heads(model)
            if isinstance(h.fc_cls, NCMClassifier)]


def ncm_sweep_row(model: nn.Module, temperature: Optional[float]):
    """Set up one row of a calibration sweep over
    ``NCMClassifierHook.temperature`` on a model the hook has prepared:
    each NCM classifier at ``temperature``, or (None, the sweep's baseline
    row) the trained classifiers back in place.

    Returns:
        callable: Undoes it.

    Raises:
        ValueError: No box head has an NCM classifier (the hook did not
            run).
    """
    found = ncm_classifiers(unwrap_model(model))
    if not found:
        raise ValueError('NCM sweep: no box head has an NCMClassifier; the '
                         'config must use mmlongtail.NCMClassifierHook with '
                         "'test' in its phases")
    before = [(h, ncm, ncm.temperature) for h, ncm in found]
    for head, ncm in found:
        if temperature is None:
            head.fc_cls = ncm.fc
        else:
            ncm.temperature = check_temperature(temperature, 'NCM sweep')

    def undo() -> None:
        for head, ncm, t in before:
            head.fc_cls = ncm
            ncm.temperature = t

    return undo
