"""The V3Det configs (configs/v3det/): the baseline's loss is mmdet's V3Det
recipe loss, and the recipe's settings are kept."""
import os.path as osp

import torch
from mmdet.models.losses import CrossEntropyCustomLoss
from mmengine.config import Config

from mmlongtail.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASELINE = osp.join(ROOT, 'configs', 'v3det',
                    'faster_rcnn_r50_fpn_normed_sigmoid_ms_rfs_2x_v3det.py')


def test_baseline_loss_is_mmdets_sigmoid_cross_entropy():
    """FocalLoss(gamma=0, alpha=0.5, loss_weight=2) == mmdet's
    CrossEntropyCustomLoss(use_sigmoid=True) with the arguments BBoxHead
    passes (label_weights, avg_factor = number of RoIs): loss and gradient,
    at 13,204 classes."""
    cfg = Config.fromfile(BASELINE)
    head = cfg.model.roi_head.bbox_head
    C = head.num_classes
    assert C == 13204
    ours = MODELS.build(head.loss_cls)
    stock = CrossEntropyCustomLoss(use_sigmoid=True, num_classes=C)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, C, generator=g) * 3
    y = torch.tensor([0, 5, C, 13203, C, 7, 7, C, 1, 2, 3, C, 9000, 4, C, 6])
    w = torch.ones(16)
    w[3] = 0  # an ignored RoI
    xs, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    ls = stock(xs, y, w, avg_factor=15.0)
    lo = ours(xo, y, w, avg_factor=15.0)
    ls.backward()
    lo.backward()
    torch.testing.assert_close(lo, ls, rtol=1e-6, atol=0)
    torch.testing.assert_close(xo.grad, xs.grad, rtol=1e-5, atol=1e-12)
    # both classify with C channels
    assert ours.get_cls_channels(C) == stock.get_cls_channels(C) == C


def test_recipe_of_mmdet_v3det_config():
    cfg = Config.fromfile(BASELINE)
    head = cfg.model.roi_head.bbox_head
    assert head.reg_class_agnostic
    assert head.cls_predictor_cfg == dict(
        type='mmlongtail.NormedLinear', temperature=50, bias=True)
    assert cfg.model.type == 'FasterRCNN'
    assert cfg.model.roi_head.mask_head is None
    assert cfg.train_dataloader.sampler == dict(
        type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3,
        infinite=True)
    assert cfg.train_cfg.max_iters == 137520
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.model.test_cfg.rcnn.nms.iou_threshold == 0.6
    # the backbone by URL, not torchvision://
    assert cfg.model.backbone.init_cfg.checkpoint.startswith('https://')
