"""The nearest-class-mean (NCM) classifier, post hoc (Kang et al.,
"Decoupling Representation and Classifier for Long-Tailed Recognition",
ICLR 2020, Sec. 4.2; official code, image classification only:
https://github.com/facebookresearch/classifier-balancing).

Kang et al. replace the trained classifier by the mean feature of each
class over the training set and classify by the nearest mean, with cosine
similarity (features and means L2-normalized). For a detector's box head:

* the means are those of the features ``fc_cls`` sees (the box head's last
  shared layer) on the positives of the head's assigner on training images
  (:class:`~mmlongtail.engine.NCMClassifierHook` makes them);
* the class mean is the mean of the L2-normalized features (the official
  code's ``l2n`` centroids), scored by a true cosine: both sides
  normalized. The official ``dist_type='cos'`` divides ``x̂ · c`` by the
  feature dimension and leaves the centroid ``c`` unnormalized, i.e.
  ``cos(x, c) ||c|| / D``, which favours tight classes (large ``||c||``);
  we follow the paper's text (cosine similarity) instead;
* NCM gives no background score, so the trained classifier keeps it:
  with ``p_bg`` the trained softmax's background probability and
  ``q = softmax(cos(x, m) / T)`` over the classes with a mean,

  ``P(c) = (1 - p_bg) q_c`` and ``P(bg) = p_bg``,

  i.e. NCM decides *which* class, the trained model *whether* an object.
  The temperature ``T`` turns cosines (in ``[-1, 1]``) into a distribution;
  Kang et al. only need the arg-max and have none. Choose it on held-out
  data (``tools/calibrate.py --param NCMClassifierHook.temperature``).

:class:`NCMClassifier` wraps the trained ``fc_cls`` and returns logits
whose softmax is exactly that distribution (``log((1 - p_bg) q_c)``,
``log p_bg``), so the head's own softmax, scorers and NMS run unchanged.
A class without a mean has logit ``-inf`` (score 0).

This module also owns the file format of cached class means
(:func:`save_class_means`, :func:`load_class_means`).
"""
import os
import os.path as osp
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.utils.dist import all_reduce_sum_, is_distributed

#: Version of the cached class-means file (:func:`save_class_means`).
MEANS_FORMAT = 'mmlongtail.ncm_class_means.v1'


def check_temperature(temperature: Any, owner: str = 'NCM') -> float:
    """``temperature`` as a float; ``ValueError`` unless a finite number
    > 0."""
    if temperature is None or isinstance(temperature, bool) or \
            not isinstance(temperature, (int, float)) or \
            not float(temperature) > 0 or \
            not torch.isfinite(torch.tensor(float(temperature))):
        raise ValueError(
            f'{owner}: temperature must be a finite number > 0 (cosines in '
            f'[-1, 1] are divided by it; e.g. 0.05 - 0.5), got '
            f'{temperature!r}')
    return float(temperature)


def ncm_log_probs(feats: Tensor, means: Tensor, valid: Tensor,
                  temperature: float) -> Tensor:
    """Log of the cosine NCM distribution over the classes.

    Args:
        feats (Tensor): ``(N, D)`` features.
        means (Tensor): ``(C, D)`` class means (any norm; normalized here).
        valid (Tensor): ``(C,)`` bool, the classes with a mean. Others get
            ``-inf``.
        temperature (float): ``T > 0``.

    Returns:
        Tensor: ``(N, C)``, ``log_softmax(cos(x, m_c) / T)`` over the valid
        classes, ``-inf`` elsewhere.

    Raises:
        ValueError: Shapes disagree, or no class is valid.
    """
    if feats.dim() != 2 or means.dim() != 2 or \
            feats.size(1) != means.size(1):
        raise ValueError(
            f'NCM: features (N, D) and means (C, D) must share D, got '
            f'{tuple(feats.shape)} and {tuple(means.shape)}')
    if valid.shape != (means.size(0), ):
        raise ValueError(f'NCM: valid must be ({means.size(0)},), got '
                         f'{tuple(valid.shape)}')
    if not bool(valid.any()):
        raise ValueError('NCM: no class has a mean')
    cos = F.normalize(feats, dim=1) @ F.normalize(means, dim=1).t()
    logits = (cos / temperature).masked_fill(~valid, float('-inf'))
    return torch.log_softmax(logits, dim=1)


def ncm_logits(feats: Tensor, trained_logits: Tensor, means: Tensor,
               valid: Tensor, temperature: float) -> Tensor:
    """Softmax-CE logits ``(N, C + 1)`` (background last) whose softmax is
    ``[(1 - p_bg) q, p_bg]``: the NCM class distribution ``q``
    (:func:`ncm_log_probs`) under the trained background probability
    ``p_bg = softmax(trained_logits)[:, C]``.

    Args:
        feats (Tensor): ``(N, D)``, the input of ``fc_cls``.
        trained_logits (Tensor): ``(N, C + 1)``, the trained ``fc_cls``'s
            output on ``feats``.
        means, valid, temperature: As :func:`ncm_log_probs`.

    Returns:
        Tensor: ``(N, C + 1)`` log-probabilities (valid logits).
    """
    C = means.size(0)
    if trained_logits.dim() != 2 or trained_logits.size(1) != C + 1 or \
            trained_logits.size(0) != feats.size(0):
        raise ValueError(
            f'NCM: the trained classifier must give (N, C + 1) = '
            f'({feats.size(0)}, {C + 1}) logits (softmax, background last), '
            f'got {tuple(trained_logits.shape)}')
    log_p = torch.log_softmax(trained_logits.float(), dim=1)
    log_fg = torch.logsumexp(log_p[:, :C], dim=1, keepdim=True)
    log_q = ncm_log_probs(feats.float(), means.float(), valid, temperature)
    out = torch.cat([log_fg + log_q, log_p[:, C:]], dim=1)
    return out.to(trained_logits.dtype)


class NCMClassifier(nn.Module):
    """A box classifier scoring classes by cosine nearest class mean, with
    the wrapped trained classifier's background probability (see the module
    docstring).

    Args:
        fc (nn.Module): The trained ``fc_cls`` (``(N, D) -> (N, C + 1)``,
            softmax, background last). Kept as ``self.fc``.
        means (Tensor): ``(C, D)`` class means.
        counts (Tensor): ``(C,)`` features per class behind each mean; 0
            marks a class without a mean (score 0).
        temperature (float): ``T > 0``.

    Attributes:
        means (Tensor): ``(C, D)`` buffer.
        counts (Tensor): ``(C,)`` int64 buffer.
    """

    def __init__(self, fc: nn.Module, means: Tensor, counts: Tensor,
                 temperature: float) -> None:
        super().__init__()
        if means.dim() != 2 or counts.shape != (means.size(0), ):
            raise ValueError(
                f'NCMClassifier: means (C, D) and counts (C,) expected, got '
                f'{tuple(means.shape)} and {tuple(counts.shape)}')
        self.fc = fc
        self.temperature = check_temperature(temperature, 'NCMClassifier')
        self.register_buffer('means', means.detach().float().clone())
        self.register_buffer('counts', counts.detach().long().clone())

    @property
    def valid(self) -> Tensor:
        """``(C,)`` bool: classes with a mean."""
        return self.counts > 0

    def forward(self, x: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C + 1)`` logits (:func:`ncm_logits`)."""
        return ncm_logits(x, self.fc(x), self.means.to(x.device),
                          self.valid.to(x.device), self.temperature)


class ClassMeanAccumulator(nn.Module):
    """Per-class sums and counts of features, for the class means.

    Attributes:
        sums (Tensor): ``(C, D)`` float64 buffer.
        counts (Tensor): ``(C,)`` int64 buffer.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer('sums', torch.zeros(num_classes, dim,
                                                 dtype=torch.float64))
        self.register_buffer('counts', torch.zeros(num_classes,
                                                   dtype=torch.long))

    @torch.no_grad()
    def update(self, feats: Tensor, labels: Tensor) -> None:
        """Add ``feats`` ``(N, D)`` to the sums of ``labels`` ``(N,)`` (in
        ``[0, C)``), in one vectorized op."""
        C, D = self.sums.shape
        if feats.dim() != 2 or feats.size(1) != D or labels.dim() != 1 or \
                labels.numel() != feats.size(0):
            raise ValueError(
                f'class means: features (N, {D}) and labels (N,) expected, '
                f'got {tuple(feats.shape)} and {tuple(labels.shape)}')
        if labels.numel() and (int(labels.min()) < 0
                               or int(labels.max()) >= C):
            raise ValueError(f'class means: labels must lie in [0, {C}), got '
                             f'[{int(labels.min())}, {int(labels.max())}]')
        labels = labels.to(self.sums.device)
        self.sums.index_add_(0, labels,
                             feats.detach().to(self.sums.device).double())
        self.counts += torch.bincount(labels, minlength=C)

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Sum over ranks (one collective) when a process group exists."""
        if not is_distributed():
            return
        flat = all_reduce_sum_(
            torch.cat([self.sums.view(-1), self.counts.double()]))
        n = self.sums.numel()
        self.sums.copy_(flat[:n].view_as(self.sums))
        self.counts.copy_(flat[n:].round().long())

    def means(self) -> Tuple[Tensor, Tensor]:
        """``(C, D)`` float32 means (zero rows for classes without a
        feature) and ``(C,)`` counts."""
        denom = self.counts.clamp(min=1).double().unsqueeze(1)
        return (self.sums / denom).float(), self.counts.clone()


def save_class_means(path: str, means: Tensor, counts: Tensor,
                     meta: Dict[str, Any]) -> None:
    """Write class means: a ``torch.save`` dict ``{'format': MEANS_FORMAT,
    'means': (C, D) float32, 'counts': (C,) int64, 'meta': {...}}``
    (``meta``: what they were computed from; see
    :func:`load_class_means`). Written to a temporary file, then renamed."""
    tmp = f'{path}.tmp'
    torch.save(dict(format=MEANS_FORMAT, means=means.detach().cpu(),
                    counts=counts.detach().cpu(), meta=dict(meta)), tmp)
    os.replace(tmp, path)


def load_class_means(path: str,
                     expect: Optional[Dict[str, Any]] = None
                     ) -> Optional[Tuple[Tensor, Tensor]]:
    """Read :func:`save_class_means`'s file.

    Args:
        path (str): The file.
        expect (dict, optional): ``meta`` entries that must match.

    Returns:
        tuple or None: ``(means, counts)``; None when an ``expect`` entry
        differs (the cache is stale).

    Raises:
        FileNotFoundError: No file.
        ValueError: Not a class-means file of this format.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'NCM class means file not found: {path}')
    data = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(data, dict) or data.get('format') != MEANS_FORMAT:
        raise ValueError(f'{path} is not an NCM class-means file (format '
                         f'{MEANS_FORMAT!r})')
    meta = data.get('meta', {})
    for k, v in (expect or {}).items():
        if meta.get(k) != v:
            return None
    return data['means'], data['counts']
