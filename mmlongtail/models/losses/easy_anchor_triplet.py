"""Triplet loss with easy anchors (TEA) of Dynamic Curriculum Learning.

Wang et al., "Dynamic Curriculum Learning for Imbalanced Data
Classification", ICCV 2019 (arXiv 1901.06783), Sec. 3.3. There is no
official code.

**From the paper** (as we read Sec. 3.3): a triplet loss on the embedding
before the classifier, ``max(0, m + d(a, p) - d(a, n))`` averaged over the
triplets ``T``, whose anchors are only the *easy* samples of the *minority*
classes of the batch (those the classifier already gets right), pulling the
*hard positives* of the anchor's class (its samples scored lowest on it)
and pushing away the *hard negatives* (samples of other classes scored
highest on it). Minority classes and class-level hard mining by classifier
score follow the class rectification loss the paper builds on (Dong et al.,
"Imbalanced Deep Learning by Minority Class Incremental Rectification",
TPAMI 2019).

**Our choices** (the paper does not fix them for detection):

* minority classes: the foreground classes present in the batch, taken
  from the rarest up while together they hold at most ``minority_ratio``
  (0.5) of the batch's foreground samples (CRL's rule; ties in count are
  broken by class index);
* an easy sample: its top-scoring *class* column (background left out) is
  its own class; every easy minority sample is an anchor. The triplet
  separates classes, not object from background, and with the background
  column an early detector (which scores nearly every RoI background) would
  have no anchors for a long time;
* hard positives of class ``j``: its ``topk`` samples with the lowest score
  on ``j`` (the anchor itself excluded); hard negatives of class ``j``: the
  ``topk`` *foreground* samples of other classes with the highest score on
  ``j`` (background samples are not negatives);
* every (anchor, hard positive, hard negative) combination is a triplet;
  ``d`` is the Euclidean distance, by default between L2-normalised
  embeddings (``normalize=True``, so one ``margin`` fits any feature scale;
  ``margin=0.2`` as FaceNet's unit-sphere margin);
* the scores that pick anchors and hard samples carry no gradient.

Everything is vectorised: per-class tables of hard positives ``(C, k)`` and
hard negatives ``(C, k)`` come from one sort and one ``topk``, the triplets
are an ``(N, k, k)`` masked tensor, and nothing synchronises the host.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.registry import MODELS
from .checks import check_labels, check_reduction


def minority_classes(labels: Tensor, num_classes: int,
                     ratio: float) -> Tensor:
    """``(C,)`` bool: the batch's minority classes.

    Classes present among the foreground ``labels`` (``< num_classes``),
    from the rarest up, while their cumulative count is at most ``ratio``
    times the number of foreground samples.

    Args:
        labels (Tensor): ``(N,)`` int64 in ``[0, C]`` (``C``: background).
        num_classes (int): ``C``.
        ratio (float): Share of the foreground samples, in ``(0, 1]``.
    """
    fg = labels < num_classes
    counts = torch.bincount(
        labels, minlength=num_classes + 1)[:num_classes]
    # stable ascending sort: ties broken by class index
    order = torch.sort(counts, stable=True)[1]
    cum = torch.cumsum(counts[order], 0)
    keep = (cum <= ratio * fg.sum()) & (counts[order] > 0)
    out = torch.zeros(num_classes, dtype=torch.bool, device=labels.device)
    return out.scatter(0, order, keep)


def hard_tables(labels: Tensor, scores: Tensor, num_classes: int,
                topk: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class hard positives and hard negatives.

    Args:
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        scores (Tensor): ``(N, C + 1)`` probabilities (no gradient needed).
        num_classes (int): ``C``.
        topk (int): ``k``.

    Returns:
        tuple: ``pos (C, k)`` sample indices of each class's lowest-scored
        samples, ``pos_valid (C, k)``, ``neg (C, k')`` indices of the
        foreground samples of other classes scored highest on each class
        (``k' = min(k, N)``), ``neg_valid (C, k')``.
    """
    n, c = labels.shape[0], num_classes
    device = labels.device
    fg = labels < c
    own = scores.gather(1, labels.clamp(max=c).unsqueeze(1)).squeeze(1)
    # sort by (label, own score): the lowest-scored of each class first;
    # background rows (label C) sort last and are never read
    by_score = torch.sort(own, stable=True)[1]
    by_class = by_score[torch.sort(labels[by_score], stable=True)[1]]
    counts = torch.bincount(labels, minlength=c + 1)[:c]
    start = torch.cumsum(counts, 0) - counts
    r = torch.arange(topk, device=device)
    pos_valid = r.unsqueeze(0) < counts.unsqueeze(1)
    pos_at = (start.unsqueeze(1) + r.unsqueeze(0)).clamp(max=max(n - 1, 0))
    pos = by_class[pos_at] if n else pos_at
    # hard negatives: highest score on class j among fg samples of other
    # classes
    k_neg = min(topk, n)
    cand = scores[:, :c].masked_fill(
        (labels.unsqueeze(1) == torch.arange(c, device=device))
        | ~fg.unsqueeze(1), float('-inf'))
    val, neg = torch.topk(cand, k_neg, dim=0)
    return pos, pos_valid, neg.t(), torch.isfinite(val).t()


def easy_anchor_triplet(embeddings: Tensor,
                        labels: Tensor,
                        scores: Tensor,
                        margin: float = 0.2,
                        topk: int = 5,
                        minority_ratio: float = 0.5,
                        normalize: bool = True) -> Tuple[Tensor, Tensor]:
    """Per-triplet TEA losses (see the module docstring).

    Args:
        embeddings (Tensor): ``(N, D)`` sample embeddings (the gradient flows
            into them).
        labels (Tensor): ``(N,)`` int64 in ``[0, C]``; ``C`` is background
            (never an anchor, positive or negative).
        scores (Tensor): ``(N, C + 1)`` classifier probabilities, background
            last; detached here.
        margin (float): ``m``.
        topk (int): Hard positives and hard negatives per class.
        minority_ratio (float): See :func:`minority_classes`.
        normalize (bool): L2-normalise the embeddings first.

    Returns:
        tuple: ``loss (N, k, k')`` per (anchor, hard positive, hard negative)
        and ``valid (N, k, k')`` bool, the triplets that exist. Memory: two
        ``(N, k, D)`` differences (``N = 1024`` RoIs, ``k = 5``, ``D = 1024``:
        21 MB each in float32) and an ``(N, C)`` score table.
    """
    n = embeddings.shape[0]
    c = scores.shape[1] - 1
    scores = scores.detach()
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
    minority = minority_classes(labels, c, minority_ratio)
    fg = labels < c
    safe = labels.clamp(max=c - 1)
    correct = scores[:, :c].argmax(1) == labels
    anchor = fg & correct & minority[safe]
    pos, pos_valid, neg, neg_valid = hard_tables(labels, scores, c, topk)
    p_idx, n_idx = pos[safe], neg[safe]  # (N, k), (N, k')
    p_ok = pos_valid[safe] & (p_idx != torch.arange(
        n, device=labels.device).unsqueeze(1))
    n_ok = neg_valid[safe]
    d_ap = torch.linalg.vector_norm(
        embeddings.unsqueeze(1) - embeddings[p_idx], dim=-1)
    d_an = torch.linalg.vector_norm(
        embeddings.unsqueeze(1) - embeddings[n_idx], dim=-1)
    loss = F.relu(margin + d_ap.unsqueeze(2) - d_an.unsqueeze(1))
    valid = anchor.view(n, 1, 1) & p_ok.unsqueeze(2) & n_ok.unsqueeze(1)
    return loss * valid, valid


@MODELS.register_module()
class EasyAnchorTriplet(nn.Module):
    """DCL's triplet loss with easy anchors (Wang et al., ICCV 2019), on
    embeddings with the classifier's probabilities; see
    :mod:`~mmlongtail.models.losses.easy_anchor_triplet` for what
    comes from the paper and what is our choice.

    Not a classification loss (it takes embeddings, not logits), so not on
    :class:`~mmlongtail.models.losses.ClassificationLoss` and not named
    ``...Loss`` (in mmlongtail a registered ``...Loss`` is a classification
    loss, which the contract suite checks); it keeps
    mmdet's ``reduction`` / ``loss_weight`` / ``reduction_override``.
    :class:`mmlongtail.DCLRoIHead` feeds it the bbox head's ``fc_cls``
    input and weights it with DCL's loss schedule.

    Args:
        margin (float): ``m`` (> 0). Defaults to 0.2.
        topk (int): Hard positives and negatives per class. Defaults to 5.
        minority_ratio (float): The minority classes hold at most this share
            of the batch's foreground samples, in ``(0, 1]``. Defaults to
            0.5.
        normalize (bool): L2-normalise embeddings. Defaults to True.
        reduction (str): ``'mean'`` over the existing triplets (0 when there
            are none), ``'sum'``, or ``'none'`` (``(N, k, k')``, zero where
            no triplet). Defaults to ``'mean'``.
        loss_weight (float): Defaults to 1.0.
    """

    def __init__(self,
                 margin: float = 0.2,
                 topk: int = 5,
                 minority_ratio: float = 0.5,
                 normalize: bool = True,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        owner = 'EasyAnchorTriplet'
        if isinstance(margin, bool) or not isinstance(
                margin, (int, float)) or not margin > 0:
            raise ValueError(f'{owner}: margin must be > 0, got {margin!r}')
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f'{owner}: topk must be an int >= 1, got '
                             f'{topk!r}')
        if isinstance(minority_ratio, bool) or not isinstance(
                minority_ratio, (int, float)) or not 0 < minority_ratio <= 1:
            raise ValueError(f'{owner}: minority_ratio must be in (0, 1], '
                             f'got {minority_ratio!r}')
        self.margin, self.topk = float(margin), topk
        self.minority_ratio = float(minority_ratio)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction, owner)
        self.loss_weight = float(loss_weight)

    def forward(self,
                embeddings: Tensor,
                labels: Tensor,
                scores: Tensor,
                reduction_override: Optional[str] = None) -> Tensor:
        """Args: ``embeddings (N, D)``, ``labels (N,)`` in ``[0, C]``,
        ``scores (N, C + 1)`` probabilities; returns the weighted loss."""
        assert reduction_override in (None, 'none', 'mean', 'sum')
        reduction = reduction_override or self.reduction
        owner = 'EasyAnchorTriplet'
        if embeddings.dim() != 2 or scores.dim() != 2 or \
                scores.shape[0] != embeddings.shape[0] or scores.shape[1] < 2:
            raise ValueError(
                f'{owner}: embeddings must be (N, D) and scores (N, C + 1) '
                f'with the same N, got {tuple(embeddings.shape)} and '
                f'{tuple(scores.shape)}')
        check_labels(labels, embeddings.shape[0], scores.shape[1] - 1, owner)
        loss, valid = easy_anchor_triplet(
            embeddings, labels, scores, self.margin, self.topk,
            self.minority_ratio, self.normalize)
        if reduction == 'sum':
            loss = loss.sum()
        elif reduction == 'mean':
            loss = loss.sum() / valid.sum().clamp(min=1)
        return self.loss_weight * loss
