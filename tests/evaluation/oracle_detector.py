"""Test-only pieces for running ``tools/test.py`` fast: a detector whose
predictions are derived from the ground truth with seeded noise (so AP is
neither 0 nor 1 and depends on its one weight), a hook that kills the test
after a number of images, and the config that uses both.

Imported by the configs (``custom_imports``) with ``tests/evaluation`` on
``PYTHONPATH``; registers ``EvalsafeOracleDetector`` and
``EvalsafeKillHook`` in mmdet's registries.
"""
import os
import signal

import numpy as np
import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import HOOKS, MODELS
from mmengine.hooks import Hook
from mmengine.structures import InstanceData

#: ``EvalsafeKillHook`` kills its process (SIGKILL) once it has seen this
#: many test images (unset: never).
KILL_AFTER_ENV = 'EVALSAFE_TEST_KILL_AFTER_IMAGES'


@MODELS.register_module()
class EvalsafeOracleDetector(BaseDetector):
    """Predicts each ground-truth box jittered by ``noise`` (its weight,
    saved in checkpoints) pixels, with a seeded score and a wrong label one
    time in five, plus four random false positives per image; masks are the
    filled boxes. Same image and weight, same predictions."""

    def __init__(self, num_classes: int, data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.num_classes = num_classes
        self.noise = torch.nn.Parameter(torch.tensor(0.7))

    def extract_feat(self, batch_inputs):
        return batch_inputs

    def _forward(self, batch_inputs, batch_data_samples=None):
        return batch_inputs

    def loss(self, batch_inputs, batch_data_samples):
        return {'loss': self.noise * 0}

    def predict(self, batch_inputs, batch_data_samples, rescale=True):
        for ds in batch_data_samples:
            ds.pred_instances = self._predict_one(ds)
        return batch_data_samples

    def _predict_one(self, ds) -> InstanceData:
        img_id = int(ds.metainfo['img_id'])
        h, w = ds.metainfo['ori_shape'][:2]
        rng = np.random.default_rng(img_id)
        gt = ds.gt_instances.bboxes
        gt = gt.tensor if hasattr(gt, 'tensor') else gt
        gt = gt.numpy().astype(np.float64).reshape(-1, 4)
        labels = ds.gt_instances.labels.numpy().astype(np.int64)
        noise = float(self.noise.detach())
        boxes = gt + rng.normal(0, noise, gt.shape)
        wrong = rng.random(len(labels)) < 0.2
        labels = np.where(wrong, rng.integers(0, self.num_classes,
                                              len(labels)), labels)
        fp = rng.uniform(0, min(h, w) / 2, (4, 2))
        fp = np.concatenate([fp, fp + rng.uniform(4, min(h, w) / 2,
                                                  (4, 2))], 1)
        boxes = np.concatenate([boxes, fp])
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        labels = np.concatenate([labels,
                                 rng.integers(0, self.num_classes, 4)])
        scores = rng.uniform(0.05, 1.0, len(labels))
        masks = np.zeros((len(labels), h, w), bool)
        for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
            masks[k, y1:y2, x1:x2] = True
        return InstanceData(
            bboxes=torch.from_numpy(boxes.astype(np.float32)),
            scores=torch.from_numpy(scores.astype(np.float32)),
            labels=torch.from_numpy(labels),
            masks=torch.from_numpy(masks))


@HOOKS.register_module()
class EvalsafeKillHook(Hook):
    """SIGKILL this process after :data:`KILL_AFTER_ENV` test images (after
    the evaluator has processed them)."""

    def __init__(self) -> None:
        self.seen = 0

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        self.seen += len(outputs)
        after = os.environ.get(KILL_AFTER_ENV)
        if after and self.seen >= int(after):
            os.kill(os.getpid(), signal.SIGKILL)


def oracle_config(data_root: str, ann_file: str, num_classes: int) -> dict:
    """The test config: the oracle detector on ``data_root``'s val split,
    evaluated by ``mmlongtail.LVISMetric`` (box and mask, standard and fixed
    protocols), with the kill hook."""
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=False),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor')),
    ]
    return dict(
        default_scope='mmdet',
        custom_imports=dict(imports=['oracle_detector'],
                            allow_failed_imports=False),
        model=dict(type='EvalsafeOracleDetector', num_classes=num_classes,
                   data_preprocessor=dict(type='DetDataPreprocessor')),
        test_dataloader=dict(
            batch_size=1, num_workers=0, persistent_workers=False,
            drop_last=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='mmlongtail.LVISFormatDataset', data_root=data_root,
                ann_file=ann_file, data_prefix=dict(img=''), test_mode=True,
                pipeline=pipeline)),
        test_evaluator=dict(
            type='mmlongtail.LVISMetric',
            ann_file=os.path.join(data_root, ann_file),
            metric=['bbox', 'segm'], protocol=['standard', 'fixed']),
        test_cfg=dict(type='TestLoop'),
        custom_hooks=[dict(type='EvalsafeKillHook')],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=50)),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='INFO')
