"""Class-aware sampling: the sampling strategies of the decoupling paper.

Kang et al. ("Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020, Sec. 3) sample class ``j`` with probability

    p_j = n_j^q / sum_k n_k^q,

``q = 1`` instance-balanced, ``q = 0`` class-balanced, ``q = 1/2``
square-root sampling, and *progressively-balanced* sampling moves from
instance- to class-balanced over training,
``p_j(t) = (1 - t/T) p_j^{q=1} + (t/T) p_j^{q=0}``. DCL (Wang et al., ICCV
2019) schedules the exponent instead: ``p_j(t) ∝ n_j^{g(t)}`` with ``g``
going from 1 to 0. Both schedules are here (``progressive.mode``), and
DCL's four forms of ``g`` (convex ``cos``, linear, concave, composite;
:mod:`mmlongtail.utils.curriculum`, their one owner) set how fast the
schedule moves (``progressive.shape``).

**Images hold several classes.** A detection sample is an image, not an
instance, so a class draw needs a rule to become an image draw. This sampler
draws in two steps (class-aware sampling of Shen et al., ECCV 2016, the rule
of mmdet's and Kang et al.'s class-aware samplers):

1. a class ``j`` with probability ``p_j``;
2. an image uniformly among the ``n_j`` training images that contain ``j``.

``n_j`` is the number of images of the sampled dataset containing class ``j``
(:func:`mmlongtail.datasets.image_categories.image_categories`, the same
per-image categories as repeat-factor sampling). So image ``I`` with distinct
classes ``C(I)`` is drawn with probability

    P(I) = sum_{j in C(I)} p_j / n_j,

the *drawn* class follows ``p_j`` exactly, and an image without annotations
is never drawn. With ``q = 1``, ``p_j / n_j`` is the same for every class and
``P(I)`` is proportional to ``|C(I)|``, the number of distinct classes in the
image (not uniform over images: for a uniform stream use mmengine's
``DefaultSampler``). Because classes co-occur, the share of draws whose image
*contains* class ``j`` is ``sum_{I ∋ j} P(I) >= p_j``; equality holds when
images hold one class each.
"""
import time
from typing import Optional, Sized, Tuple

import numpy as np
import torch
from mmengine.logging import MMLogger

from mmlongtail.registry import DATA_SAMPLERS
from mmlongtail.utils.curriculum import check_shape, sampling_g
from ..image_categories import SOURCES, image_categories
from .epoch_stream import EpochStreamSampler

#: Schedules of progressively-balanced sampling.
PROGRESSIVE_MODES = ('mix', 'exponent')


def class_probabilities(image_count: np.ndarray, q: float) -> np.ndarray:
    """``p_j = n_j^q / sum_k n_k^q`` over the classes with ``n_j > 0``.

    Args:
        image_count (np.ndarray): ``(C,)`` images containing each class.
        q (float): The exponent.

    Returns:
        np.ndarray: ``(C,)`` float64, 0 where ``n_j = 0``, summing to 1.

    Raises:
        ValueError: No class has an image, or a count is negative.
    """
    n = np.asarray(image_count, dtype=np.float64)
    if n.ndim != 1 or (n < 0).any():
        raise ValueError('image counts must be a 1-d array of counts >= 0')
    present = n > 0
    if not present.any():
        raise ValueError('no class has an image: nothing to sample')
    w = np.zeros_like(n)
    w[present] = n[present]**float(q)
    return w / w.sum()


@DATA_SAMPLERS.register_module()
class ClassAwareSampler(EpochStreamSampler):
    """Sample class ``j`` with probability ``∝ n_j^q``, then one of its images
    (Kang et al., ICLR 2020; see the module docstring for how an image's
    draw probability follows from its classes).

    Each epoch draws ``num_samples`` (class, image) pairs independently from
    one ``torch.Generator`` seeded by ``(seed, epoch)``, so, like
    :class:`~mmlongtail.datasets.RepeatFactorSampler` (the same
    :class:`~mmlongtail.datasets.samplers.epoch_stream.EpochStreamSampler`
    machinery), ranks agree on the stream and take disjoint shares, a resumed
    epoch replays exactly, and ``infinite=True`` serves
    ``IterBasedTrainLoop``.

    Build it from a config::

        # class-balanced (q = 0); 0.5: square-root; 1: instance-balanced
        train_dataloader = dict(
            sampler=dict(type='mmlongtail.ClassAwareSampler', q=0.0))
        # progressively-balanced over a 12-epoch schedule (Kang et al.)
        train_dataloader = dict(
            sampler=dict(type='mmlongtail.ClassAwareSampler', q=0.0,
                         progressive=dict(end=12)))

    Args:
        dataset (Sized): The training dataset (passed by the Runner).
        q (float): The exponent (the final one with ``progressive``).
            Defaults to 0.0 (class-balanced).
        progressive (dict, optional): Progressively-balanced sampling: at
            epoch ``e`` the schedule is at ``λ = clip((e - begin) /
            (end - begin), 0, 1)`` and, with ``mode='mix'`` (default, Kang
            et al.), ``p = (1 - λ) p^{start_q} + λ p^{q}``; with
            ``mode='exponent'`` (DCL), ``p ∝ n^{(1 - λ) start_q + λ q}``.
            Keys: ``end`` (int, required: the epoch at which ``q`` is
            reached; ``max_epochs`` gives Kang's ``t / T``), ``begin`` (int,
            default 0), ``start_q`` (float, default 1.0), ``mode``,
            ``shape`` (default ``'linear'``, the ``λ`` above) and ``base``:
            with a DCL form of :data:`~mmlongtail.utils.curriculum.
            SAMPLING_SHAPES`, ``λ = 1 - g(epoch - begin)`` with ``L = end -
            begin``, so ``mode='exponent', start_q=1, q=0`` samples
            ``∝ n^{g(l)}``, DCL's sampling scheduler (``'concave'``, ``g =
            base ** l``, stops at ``λ = 1 - base ** L`` < 1). In infinite
            mode an epoch is ``num_samples`` draws. None: fixed ``q``.
        num_samples (int, optional): Draws per epoch. Defaults to
            ``len(dataset)``.
        seed (int, optional): Base seed, the same on every rank. None draws
            one and synchronizes it. Defaults to None.
        infinite (bool): Endless stream for ``IterBasedTrainLoop``.
            Defaults to False.
        round_up (bool): Pad each epoch to a multiple of the world size.
            Defaults to True.
        category_source (str): ``'auto'``, ``'annotations'`` or
            ``'get_cat_ids'``; see
            :mod:`mmlongtail.datasets.image_categories`. Defaults to
            ``'auto'``.
    """

    def __init__(self,
                 dataset: Sized,
                 q: float = 0.0,
                 progressive: Optional[dict] = None,
                 num_samples: Optional[int] = None,
                 seed: Optional[int] = None,
                 infinite: bool = False,
                 round_up: bool = True,
                 category_source: str = 'auto') -> None:
        self.q = self._check_q(q, 'q')
        self.progressive = self._check_progressive(progressive)
        if category_source not in SOURCES:
            raise ValueError(f'category_source must be one of {SOURCES}, '
                             f'got {category_source!r}')
        super().__init__(dataset, seed, infinite, round_up)
        tic = time.perf_counter()
        cats = image_categories(dataset, category_source)
        self.category_source_used = cats.source
        self.image_count = cats.image_count()
        offsets, images = cats.images_per_class()
        self._class_offsets = torch.from_numpy(offsets)
        self._class_images = torch.from_numpy(images)
        self._n = torch.from_numpy(self.image_count)
        # (N,) image of each pair and its class, for image_probabilities
        self._pairs = (cats.image_index(), cats.labels)
        self.num_images = cats.num_images
        if num_samples is None:
            num_samples = len(dataset)
        if isinstance(num_samples, bool) or not isinstance(
                num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError('num_samples must be a positive int or None, '
                             f'got {num_samples!r}')
        self.num_samples = int(num_samples)
        class_probabilities(self.image_count, self.q)  # raises when empty
        self.build_time = time.perf_counter() - tic
        if self.rank == 0:
            self._log_summary()

    # ------------------------------------------------------------ checks --
    @staticmethod
    def _check_q(q, name: str) -> float:
        if isinstance(q, bool) or not isinstance(
                q, (int, float, np.integer, np.floating)) or \
                not np.isfinite(q):
            raise ValueError(f'ClassAwareSampler: {name} must be a finite '
                             f'number (1: instance-balanced, 0.5: '
                             f'square-root, 0: class-balanced), got {q!r}')
        return float(q)

    def _check_progressive(self, cfg: Optional[dict]) -> Optional[dict]:
        if cfg is None:
            return None
        if not isinstance(cfg, dict):
            raise ValueError('ClassAwareSampler: progressive must be a dict '
                             f'or None, got {cfg!r}')
        unknown = set(cfg) - {'begin', 'end', 'start_q', 'mode', 'shape',
                              'base'}
        if unknown:
            raise ValueError(f'ClassAwareSampler: unknown progressive keys '
                             f'{sorted(unknown)} (begin, end, start_q, mode, '
                             'shape, base)')
        if 'end' not in cfg:
            raise ValueError('ClassAwareSampler: progressive needs `end`, the '
                             'epoch at which q is reached (e.g. max_epochs)')
        out = dict(
            begin=cfg.get('begin', 0),
            end=cfg['end'],
            start_q=self._check_q(cfg.get('start_q', 1.0), 'start_q'),
            mode=cfg.get('mode', 'mix'),
            shape=cfg.get('shape', 'linear'),
            base=cfg.get('base'))
        try:
            check_shape(out['shape'], out['base'])
        except ValueError as err:
            raise ValueError(f'ClassAwareSampler: progressive: {err}') \
                from None
        for key in ('begin', 'end'):
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                    or v < 0:
                raise ValueError(f'ClassAwareSampler: progressive {key} must '
                                 f'be an int >= 0, got {v!r}')
        if out['end'] <= out['begin']:
            raise ValueError(f'ClassAwareSampler: progressive end '
                             f'({out["end"]}) must exceed begin '
                             f'({out["begin"]})')
        if out['mode'] not in PROGRESSIVE_MODES:
            raise ValueError(f'ClassAwareSampler: progressive mode must be '
                             f'one of {PROGRESSIVE_MODES}, got '
                             f'{out["mode"]!r}')
        return out

    # ----------------------------------------------------- probabilities --
    def progress(self, epoch: int) -> float:
        """``λ`` in ``[0, 1]`` at ``epoch`` (1 without ``progressive``)."""
        if self.progressive is None:
            return 1.0
        b, e = self.progressive['begin'], self.progressive['end']
        if self.progressive['shape'] != 'linear':
            return 1.0 - sampling_g(self.progressive['shape'], epoch - b,
                                    e - b, self.progressive['base'])
        return float(min(max((epoch - b) / (e - b), 0.0), 1.0))

    def class_probabilities(self, epoch: int) -> np.ndarray:
        """``(C,)`` float64 probability of drawing each class at
        ``epoch``."""
        lam = self.progress(epoch)
        if self.progressive is None or lam == 1.0:
            return class_probabilities(self.image_count, self.q)
        q0 = self.progressive['start_q']
        if self.progressive['mode'] == 'exponent':
            return class_probabilities(self.image_count,
                                       (1 - lam) * q0 + lam * self.q)
        return (1 - lam) * class_probabilities(self.image_count, q0) + \
            lam * class_probabilities(self.image_count, self.q)

    def image_probabilities(self, epoch: int) -> np.ndarray:
        """``(N,)`` float64 ``P(I) = sum_{j in C(I)} p_j / n_j`` at
        ``epoch``."""
        p = self.class_probabilities(epoch)
        per_class = np.zeros_like(p)
        present = self.image_count > 0
        per_class[present] = p[present] / self.image_count[present]
        image, label = self._pairs
        return np.bincount(
            image, weights=per_class[label], minlength=self.num_images)

    # ------------------------------------------------------------ epochs --
    def epoch_draws(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``(class, image)`` pairs of ``epoch``: two ``(num_samples,)``
        int64 tensors; the images are :meth:`epoch_indices`."""
        return self._draw_pairs(epoch, self.epoch_generator(epoch))

    def _draw_pairs(self, epoch: int, generator: torch.Generator
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        p = torch.from_numpy(self.class_probabilities(epoch))
        classes = torch.multinomial(
            p, self.num_samples, replacement=True, generator=generator)
        n = self._n[classes]
        u = torch.rand(
            self.num_samples, generator=generator, dtype=torch.float64)
        # u < 1, so u * n < n; the minimum guards float rounding at u ~ 1
        within = torch.minimum((u * n).long(), n - 1)
        images = self._class_images[self._class_offsets[classes] + within]
        return classes, images

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        return self._draw_pairs(epoch, generator)[1]

    def _log_epoch(self, stream: torch.Tensor) -> None:
        MMLogger.get_current_instance().info(
            f'ClassAwareSampler: epoch {self.epoch} (progress '
            f'{self.progress(self.epoch):.3f}) draws {stream.shape[0]} '
            f'samples ({self.world_size} rank(s), {len(self)} per rank)')

    def _log_summary(self) -> None:
        n = self.image_count
        p = self.class_probabilities(self.epoch)
        schedule = 'fixed' if self.progressive is None else (
            f'progressive {self.progressive}')
        MMLogger.get_current_instance().info(
            f'ClassAwareSampler: q={self.q} ({schedule}); {self.num_images} '
            f'images, {int((n > 0).sum())} of {n.shape[0]} classes have '
            f'images (categories from {self.category_source_used} in '
            f'{self.build_time:.3f}s); {self.num_samples} draws per epoch; '
            f'class probabilities now in [{p[n > 0].min():.2e}, '
            f'{p.max():.2e}]')
