"""Decoupled training: retrain only the box classifier of a trained detector.

Stage 2 of the decoupled recipes, e.g. BAGS (Li et al., CVPR 2020, Sec. 4.1)
and classifier re-training, cRT (Kang et al., "Decoupling Representation and
Classifier for Long-Tailed Recognition", ICLR 2020).
"""
import fnmatch
import re
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict
from torch.nn.modules.batchnorm import _BatchNorm

from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model


def match_modules(model: nn.Module,
                  patterns: Sequence[str]) -> List[Tuple[str, nn.Module]]:
    """Modules whose dotted name matches one of the ``fnmatch`` patterns."""
    return [(name, m) for name, m in model.named_modules()
            if name and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def freeze_except(model: nn.Module,
                  trainable: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Set ``requires_grad=False`` on every parameter outside ``trainable``.

    Args:
        model (nn.Module): The detector (unwrapped).
        trainable (Sequence[str]): ``fnmatch`` patterns of module names whose
            parameters stay trainable, e.g. ``'*bbox_head*.fc_cls'``.

    Returns:
        tuple[list[str], list[str]]: Names of the trainable and of the frozen
        parameters.

    Raises:
        ValueError: If no module matches ``trainable``.
    """
    matched = match_modules(model, trainable)
    if not matched:
        raise ValueError(
            f'no module of {type(model).__name__} matches trainable='
            f'{list(trainable)}; module names look like '
            f'{[n for n, _ in model.named_modules() if n][:8]}')
    keep = {id(p) for _, m in matched for p in m.parameters()}
    trained, frozen = [], []
    for name, param in model.named_parameters():
        if id(param) in keep:
            param.requires_grad_(True)
            trained.append(name)
        else:
            param.requires_grad_(False)
            frozen.append(name)
    return trained, frozen


def frozen_norm_layers(model: nn.Module,
                       trainable: Sequence[str]) -> List[_BatchNorm]:
    """Batch-norm layers outside the ``trainable`` modules."""
    inside = {
        id(sub)
        for _, m in match_modules(model, trainable) for sub in m.modules()
    }
    return [
        m for m in model.modules()
        if isinstance(m, _BatchNorm) and id(m) not in inside
    ]


@HOOKS.register_module()
class ClassifierRetrainingHook(Hook):
    """Load a stage-1 checkpoint and train only the box classifier.

    Before training starts (after mmengine has initialized the weights and
    handled ``load_from``/``resume``) the hook

    1. loads ``checkpoint`` into the model with mmengine's checkpoint loader,
       leaving out the trainable modules when ``reinit_trainable`` (their
       fresh initialization is kept, as in cRT and BAGS, whose classifier has a
       different number of channels anyway). Skipped when the run resumes
       (``runner.iter > 0``), so a resumed stage 2 keeps its own weights;
    2. freezes every parameter outside the modules matching ``trainable``
       (default: ``fc_cls`` of every bbox head, cascade stages included).
       Frozen parameters never get a gradient, so the optimizer (SGD, Adam,
       ...) skips them: neither momentum nor weight decay touches them. They
       stay in its parameter groups, so resuming a stage-2 run loads its
       optimizer state unchanged;
    3. keeps every batch-norm layer outside the trainable modules in eval
       mode at every iteration, so its running statistics stay frozen
       (mmengine's loops switch the model back to train mode).

    With distributed training, set ``find_unused_parameters = True`` in the
    config: the model is wrapped in DDP before hooks run.

    Args:
        checkpoint (str, optional): Stage-1 checkpoint (path or URL). None
            only freezes (use this with ``load_from``).
        trainable (Sequence[str]): ``fnmatch`` patterns of module names that
            stay trainable. Defaults to ``('*bbox_head*.fc_cls',)``.
        reinit_trainable (bool): Do not load the trainable modules' weights
            from ``checkpoint``. Defaults to True.
        strict (bool): Passed to mmengine's ``load_state_dict``. Defaults to
            False.
        freeze_norm (bool): Keep frozen batch-norm layers in eval mode.
            Defaults to True.
    """
    priority = 'VERY_HIGH'

    def __init__(self,
                 checkpoint: Optional[str] = None,
                 trainable: Sequence[str] = ('*bbox_head*.fc_cls', ),
                 reinit_trainable: bool = True,
                 strict: bool = False,
                 freeze_norm: bool = True) -> None:
        if isinstance(trainable, str):
            trainable = (trainable, )
        if not trainable:
            raise ValueError('ClassifierRetrainingHook: trainable must name '
                             'at least one module pattern')
        self.checkpoint = checkpoint
        self.trainable = tuple(trainable)
        self.reinit_trainable = reinit_trainable
        self.strict = strict
        self.freeze_norm = freeze_norm
        self._norms: List[_BatchNorm] = []

    def load(self, model: nn.Module) -> None:
        """Load ``self.checkpoint`` into ``model`` (unwrapped)."""
        logger = MMLogger.get_current_instance()
        ckpt = CheckpointLoader.load_checkpoint(
            self.checkpoint, map_location='cpu', logger=logger)
        if not isinstance(ckpt, dict):
            raise RuntimeError(f'no state_dict found in {self.checkpoint}')
        state = ckpt.get('state_dict', ckpt)
        state = OrderedDict(
            (re.sub(r'^module\.', '', k), v) for k, v in state.items())
        if self.reinit_trainable:
            prefixes = tuple(
                name + '.' for name, _ in match_modules(model, self.trainable))
            skipped = [k for k in state if k.startswith(prefixes)]
            for k in skipped:
                del state[k]
            logger.info(f'ClassifierRetrainingHook: not loading {skipped} '
                        'from the checkpoint (reinit_trainable=True)')
        load_state_dict(model, state, strict=self.strict, logger=logger)
        logger.info(f'ClassifierRetrainingHook: loaded {self.checkpoint}')

    def before_train(self, runner) -> None:
        if getattr(runner.model, 'find_unused_parameters', None) is False:
            # DDP registered every parameter when it wrapped the model; it
            # would wait forever for the frozen ones' gradients
            raise ValueError(
                'ClassifierRetrainingHook freezes parameters after the model '
                'was wrapped in DistributedDataParallel: set '
                '`find_unused_parameters = True` in the config')
        model = unwrap_model(runner.model)
        logger = MMLogger.get_current_instance()
        if self.checkpoint is not None:
            if runner.iter > 0:
                logger.info('ClassifierRetrainingHook: resumed at iter '
                            f'{runner.iter}, not loading {self.checkpoint}')
            else:
                self.load(model)
        trained, frozen = freeze_except(model, self.trainable)
        if self.freeze_norm:
            self._norms = frozen_norm_layers(model, self.trainable)
            self._set_norm_eval()
        logger.info(f'ClassifierRetrainingHook: training {trained}; froze '
                    f'{len(frozen)} parameter tensors and '
                    f'{len(self._norms)} batch-norm layers')

    def _set_norm_eval(self) -> None:
        for m in self._norms:
            m.eval()

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        # the train loops call model.train() at each epoch and after val
        self._set_norm_eval()
