"""The benchmark's pretrained start: ImageNet's role for the synthetic world.

Every published LVIS recipe starts from an ImageNet-pretrained backbone,
and the decoupling methods the benchmark tests (cRT, τ-norm, LWS, NCM) are
claims about a representation learned first. :func:`pretrain_backbone`
pretrains the benchmark's light backbone (the config's ``model.backbone``,
a ResNet-18 at half width) once, on a **balanced** classification task
drawn from the same synthetic world as the benchmark's dataset:

* ``C + 1`` classes: the dataset's ``C`` categories (shape, colour) and
  background; every class in equal numbers (``crops_per_class`` per epoch);
* a crop (``crop_size`` px) holds one object of its class, drawn as the
  generator draws objects (:mod:`mmlongtail_bench.synthetic.
  rendered_dataset`: the category's shape and colour, size in the dataset's
  ``min_size .. max_size``, any rotation, colour jitter, anywhere in the
  crop) on the generator's background (its renderer, ``_render_image``); a
  background crop holds none;
* fresh crops every epoch from one seeded stream (no crop is seen twice,
  so the task is learnt, not memorised); the detector's input
  normalisation (its ``data_preprocessor`` mean and std, RGB);
* SGD with momentum, cosine learning rate, cross-entropy on a linear
  classifier over the globally pooled last stage; only the backbone is
  kept.

It is **deterministic**: the crops come from a ``numpy`` generator and the
initialisation and batches from seeded torch generators; with the same
settings and threads, the weights are the same bit for bit (the test of
the machinery checks the checkpoint's hash twice).

It is **cached by content**: its identity (:func:`pretrain_identity`) is a
hash of the settings, the backbone config, the normalisation, the
dataset's generator config (``info.config`` of the training file: the
world the crops come from), the generator's shapes, colours and renderer
source and :data:`PRETRAIN_VERSION`; the checkpoint is written under
``{cache_dir}/{identity[:16]}/`` with ``pretrain.json`` beside it (the
settings, the identity, the checkpoint's SHA-256, its accuracy on fresh
balanced crops and its cost). A call with the same identity reuses it.

The checkpoint is ``{'state_dict': backbone weights}``, what mmengine's
``Pretrained`` init loads (``model.backbone.init_cfg``, see
``configs/benchmark/baseline_ce.py``, which reads its path from
``$LONGTAIL_BENCH_PRETRAINED``).

Nothing of the benchmark's val or held-out images is used, nor its
training images: the crops are new draws of the same world.
"""
import hashlib
import inspect
import json
import logging
import os
import os.path as osp
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import numpy as np

#: Bump when the task (crops, training) changes in a way the settings and
#: the hashed generator do not show; the cache then pretrains again.
PRETRAIN_VERSION = 1
#: Wall seconds of the default pretraining on two free cores, as measured
#: (:class:`PretrainSettings`); the estimate of
#: ``tools/benchmark_longtail.py --estimate`` adds it.
PRETRAIN_SECONDS = 95.0
#: The record beside a pretrained checkpoint.
RECORD_NAME = 'pretrain.json'
CHECKPOINT_NAME = 'backbone.pth'


@dataclass(frozen=True)
class PretrainSettings:
    """The pretraining task (see the module docstring). The defaults are
    ``make bench``'s: 41 classes x 250 crops x 6 epochs = 61,500 training
    crops of 48 px in 966 steps of 64. Budget: at most 10 min on the 2-core
    CPU machine. Measured at full size on that machine, idle, two threads:
    94 s wall, 170 s CPU, evaluation included (accuracy 83.2% on fresh
    balanced crops, chance 2.4%).

    Args:
        crops_per_class (int): Crops of each class (and of background) per
            epoch.
        epochs (int): Passes, each over fresh crops.
        crop_size (int): Crop side in pixels; must hold the dataset's
            largest object (``max_size + 4``).
        batch_size (int): Crops per step.
        lr (float): Peak SGD learning rate (cosine decay to 0 over the
            steps, momentum 0.9).
        weight_decay (float): SGD weight decay.
        seed (int): Seed of the crops, the initialisation and the batches.
        threads (int): Torch threads while pretraining (results are
            reproducible for a given number).
        eval_crops_per_class (int): Fresh crops per class on which the
            accuracy is measured after training.
    """
    crops_per_class: int = 250
    epochs: int = 6
    crop_size: int = 48
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2
    eval_crops_per_class: int = 20

    def validate(self, max_size: int) -> None:
        """Raise ``ValueError`` naming the first setting that cannot
        hold (``max_size``: the dataset's largest object)."""
        for name in ('crops_per_class', 'epochs', 'batch_size', 'threads',
                     'eval_crops_per_class'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'pretraining: {name} must be >= 1, got '
                                 f'{getattr(self, name)}')
        if self.crop_size < max_size + 4:
            raise ValueError(
                f'pretraining: crop_size {self.crop_size} cannot hold the '
                f"dataset's largest objects ({max_size} px); use at least "
                f'{max_size + 4}')
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f'pretraining: need lr > 0 and weight_decay >= '
                             f'0, got {self.lr}, {self.weight_decay}')


def _generator_fingerprint() -> str:
    """SHA-256 of what the crops are drawn with: the generator's shapes,
    colours, category table and renderer source."""
    from mmlongtail_bench.synthetic import rendered_dataset as rd
    h = hashlib.sha256()
    for name in sorted(rd.SHAPES):
        h.update(name.encode())
        h.update(np.ascontiguousarray(rd.SHAPES[name], np.float64).tobytes())
    h.update(json.dumps(rd.COLOURS, sort_keys=True).encode())
    for fn in (rd._render_image, rd.category_table, render_crop):
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()


def world_of(train_ann_file: str):
    """The generator config (:class:`SyntheticLVISConfig`) that made the
    benchmark's training file (its ``info.config``).

    Raises:
        ValueError: If the file records none (not made by the generator).
    """
    from mmlongtail_bench.synthetic import SyntheticLVISConfig
    with open(train_ann_file, encoding='utf-8') as f:
        info = json.load(f).get('info') or {}
    if 'config' not in info:
        raise ValueError(
            f'{train_ann_file} records no generator config (info.config): '
            'the pretrained start draws from the synthetic world that '
            'made the dataset (tools/make_synthetic_lvis.py)')
    return SyntheticLVISConfig(**info['config'])


def pretrain_identity(settings: PretrainSettings, backbone: dict,
                      mean: List[float], std: List[float], world) -> str:
    """SHA-256 naming a pretraining (see the module docstring)."""
    text = json.dumps(dict(
        version=PRETRAIN_VERSION, settings=asdict(settings),
        backbone=backbone, mean=list(mean), std=list(std),
        world=asdict(world), generator=_generator_fingerprint()),
        sort_keys=True, default=repr)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def render_crop(label: int, names: List[Tuple[str, str]], world,
                crop_size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(crop_size, crop_size, 3)`` RGB uint8 crop: an object of class
    ``label`` (``names[label]`` = (shape, colour)) drawn as the generator
    draws objects, or background only for ``label == len(names)``."""
    from mmlongtail_bench.synthetic.rendered_dataset import (COLOURS, SHAPES,
                                                             _render_image)
    objects, colours = [], []
    if label < len(names):
        shape, colour = names[label]
        size = int(rng.integers(world.min_size, world.max_size + 1))
        half = size / 2 + 1
        cx, cy = rng.uniform(half, crop_size - half, 2)
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)],
                        [np.sin(theta), np.cos(theta)]])
        poly = np.round(SHAPES[shape] @ rot.T * (size / 2) +
                        np.array([cx, cy]), 2)
        objects.append((label, poly))
        jitter = rng.integers(-12, 13, 3)
        colours.append(tuple(int(v) for v in np.clip(
            np.array(COLOURS[colour]) + jitter, 0, 255)))
    return _render_image(objects, colours, crop_size, rng)


def _batches(num_classes: int, per_class: int, batch_size: int,
             rng: np.random.Generator):
    """Balanced labels (``per_class`` of each of ``num_classes``) in a
    random order, in batches."""
    labels = np.repeat(np.arange(num_classes), per_class)
    labels = labels[rng.permutation(len(labels))]
    for i in range(0, len(labels), batch_size):
        yield labels[i:i + batch_size]


def _tensor(crops: List[np.ndarray], mean, std):
    import torch
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def read_pretrain_record(checkpoint: str) -> Optional[dict]:
    """The ``pretrain.json`` beside a pretrained checkpoint, or None."""
    path = osp.join(osp.dirname(checkpoint), RECORD_NAME)
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def backbone_config(config: str) -> Tuple[dict, List[float], List[float]]:
    """The backbone (without ``init_cfg``) and the input normalisation
    (RGB mean and std) of a benchmark config."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    backbone = dict(cfg.model.backbone.to_dict() if hasattr(
        cfg.model.backbone, 'to_dict') else cfg.model.backbone)
    backbone.pop('init_cfg', None)
    pre = cfg.model.data_preprocessor
    if not pre.get('bgr_to_rgb', False):
        raise ValueError(f'{config}: the pretraining feeds RGB crops; the '
                         'detector must convert its BGR images to RGB '
                         '(data_preprocessor.bgr_to_rgb=True)')
    return backbone, list(pre.mean), list(pre.std)


def pretrain_backbone(settings: PretrainSettings, config: str,
                      train_ann_file: str, cache_dir: str,
                      logger=None) -> dict:
    """The pretrained backbone of ``config`` for the world of
    ``train_ann_file``: found in ``cache_dir`` by its identity, else
    pretrained and written there (see the module docstring).

    Returns:
        dict: The record (``pretrain.json``): ``checkpoint`` (path),
        ``sha256``, ``identity``, ``settings``, ``accuracy`` (on fresh
        balanced crops, background included), ``chance``, ``seconds`` /
        ``cpu_seconds``, ``reused``.
    """
    import torch
    from mmengine.logging import MMLogger

    from .identity import file_sha256
    logger = logger or MMLogger.get_current_instance()
    backbone_cfg, mean, std = backbone_config(config)
    world = world_of(train_ann_file)
    settings.validate(world.max_size)
    identity = pretrain_identity(settings, backbone_cfg, mean, std, world)
    out_dir = osp.join(cache_dir, identity[:16])
    ckpt = osp.join(out_dir, CHECKPOINT_NAME)
    rec = read_pretrain_record(ckpt)
    if rec is not None and rec.get('identity') == identity and osp.isfile(
            ckpt) and file_sha256(ckpt) == rec.get('sha256'):
        logger.info(f'pretrained start: reusing {ckpt} (identity '
                    f'{identity[:16]}, accuracy {rec["accuracy"]:.3f})')
        return dict(rec, checkpoint=ckpt, reused=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(int(settings.threads))
    wall, cpu = time.time(), time.process_time()
    # the global torch RNG (mmdet's init draws from it) seeded here and
    # restored after
    with torch.random.fork_rng():
        return _pretrain(settings, backbone_cfg, mean, std, world, identity,
                         out_dir, ckpt, threads, wall, cpu, logger)


def _pretrain(settings, backbone_cfg, mean, std, world, identity, out_dir,
              ckpt, threads, wall, cpu, logger) -> dict:
    import torch
    from mmengine.logging import MMLogger
    from mmdet.registry import MODELS

    import mmdet.models  # noqa: F401  (registers the backbones)
    from mmlongtail_bench.synthetic.rendered_dataset import category_table

    from .identity import file_sha256
    try:
        names = category_table(world.num_classes)
        num = len(names) + 1  # + background
        rng = np.random.default_rng([settings.seed, 0x9E7A])
        torch.manual_seed(settings.seed)
        backbone = MODELS.build(dict(backbone_cfg, init_cfg=None))
        # (quietly: mmengine logs every parameter's initialisation)
        quiet = MMLogger.get_current_instance()
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            backbone.init_weights()
        finally:
            quiet.setLevel(level)
        width = backbone.feat_dim
        head = torch.nn.Linear(width, num)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.SGD(params, lr=settings.lr, momentum=0.9,
                              weight_decay=settings.weight_decay)
        steps = settings.epochs * -(-num * settings.crops_per_class //
                                    settings.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

        def logits(labels):
            crops = [render_crop(int(c), names, world, settings.crop_size,
                                 rng) for c in labels]
            feats = backbone(_tensor(crops, mean, std))[-1]
            return head(feats.mean((2, 3)))

        backbone.train()
        step, losses = 0, []
        for epoch in range(settings.epochs):
            for labels in _batches(num, settings.crops_per_class,
                                   settings.batch_size, rng):
                loss = torch.nn.functional.cross_entropy(
                    logits(labels), torch.from_numpy(labels).long())
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                losses.append(float(loss.detach()))
            logger.info(f'pretraining: epoch {epoch + 1}/{settings.epochs}, '
                        f'mean loss {np.mean(losses[-20:]):.3f}')
        backbone.eval()
        head.eval()
        correct = total = 0
        with torch.no_grad():
            for labels in _batches(num, settings.eval_crops_per_class,
                                   settings.batch_size, rng):
                pred = logits(labels).argmax(1).numpy()
                correct += int((pred == labels).sum())
                total += len(labels)
        os.makedirs(out_dir, exist_ok=True)
        torch.save({'state_dict': backbone.state_dict()}, ckpt)
    finally:
        torch.set_num_threads(threads)
    rec = dict(
        identity=identity, settings=asdict(settings), backbone=backbone_cfg,
        mean=mean, std=std, world=asdict(world), classes=num,
        accuracy=correct / total, chance=1 / num, steps=step,
        final_loss=float(np.mean(losses[-20:])), sha256=file_sha256(ckpt),
        seconds=time.time() - wall, cpu_seconds=time.process_time() - cpu)
    with open(osp.join(out_dir, RECORD_NAME), 'w', encoding='utf-8') as f:
        json.dump(rec, f, indent=1)
    logger.info(f'pretrained start: {ckpt} in {rec["seconds"]:.0f} s, '
                f'{step} steps; accuracy {rec["accuracy"]:.3f} on fresh '
                f'balanced crops (chance {1 / num:.3f})')
    return dict(rec, checkpoint=ckpt, reused=False)
