"""Through a real model: the stock mmdet inference path (FCNMaskHead,
multiclass_nms, full-image bitmaps) and mmlongtail's (label-gathered mask
head, exact early-stopping NMS, box-local RLE) give the same detections and
the same LVIS box and mask AP on the synthetic dataset; so does the
Fixed-AP mode against mmdet's uncapped NMS cut per class."""
import copy
import os
import os.path as osp
from unittest import mock

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmlongtail.models.mask_heads import decode_rles
from mmlongtail.models.roi_heads import StandardRoIHead
from mmlongtail_bench.demo import DATA_ROOT_VAR, demo_config

CONFIG = 'configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py'
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

register_all_modules(init_default_scope=False)


@pytest.fixture(scope='module')
def setup(tiny_lvis, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('paths'))
    with mock.patch.dict(os.environ, {DATA_ROOT_VAR: tiny_lvis['root']}):
        cfg = demo_config(osp.join(ROOT, CONFIG), work_dir)
    n = tiny_lvis['cfg'].num_classes
    head = cfg.model.roi_head
    head.bbox_head.num_classes = n
    head.bbox_head.loss_cls.num_classes = n
    head.mask_head.num_classes = n
    cfg.val_dataloader.batch_size = 2
    cfg.val_dataloader.num_workers = 0
    cfg.val_dataloader.persistent_workers = False
    cfg.val_evaluator.outfile_prefix = None
    # 30 detections per image (of 100 proposals x 12 classes) keep the
    # per-mask pastes few; the early stop still has work to skip
    cfg.model.test_cfg.rcnn.max_per_img = 30
    # 60 mask RoIs per batch in chunks of 7 (RoI features and mask head):
    # the chunked test-time mask branch gives the stock path's masks
    cfg.model.roi_head.mask_head.inference_chunk_size = 7
    assert cfg.model.roi_head.type == 'mmlongtail.StandardRoIHead'
    assert cfg.model.roi_head.mask_head.type == \
        'mmlongtail.LabelGatheredFCNMaskHead'
    assert cfg.model.test_cfg.rcnn.early_stop_nms
    assert cfg.model.test_cfg.rcnn.mask_format == 'rle'
    stock_cfg = copy.deepcopy(cfg.model)
    stock_cfg.roi_head.type = 'StandardRoIHead'  # mmdet's
    stock_cfg.roi_head.mask_head.type = 'FCNMaskHead'
    stock_cfg.roi_head.mask_head.pop('inference_chunk_size')
    for key in ('early_stop_nms', 'mask_format'):
        stock_cfg.test_cfg.rcnn.pop(key)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        ours = MODELS.build(cfg.model)
        stock = MODELS.build(stock_cfg)
    ours.init_weights()
    stock.load_state_dict(ours.state_dict(), strict=True)
    assert isinstance(ours.roi_head, StandardRoIHead)
    with DefaultScope.overwrite_default_scope('mmdet'):
        # a few val images keep this quick; LVIS AP is computed on them
        batches = list(Runner.build_dataloader(cfg.val_dataloader))[:3]
    return cfg, stock.eval(), ours.eval(), batches


def _predict(model, batches):
    out = []
    with torch.no_grad():
        for batch in batches:
            out.extend(model.test_step(batch))
    return out


def _evaluate(cfg, preds, dataset_meta):
    ev = Evaluator([dict(cfg.val_evaluator)])
    ev.dataset_meta = dataset_meta
    ev.process(preds)
    return ev.evaluate(len(preds))


def test_same_detections_and_lvis_ap(setup):
    cfg, stock, ours, batches = setup
    stock_preds = _predict(stock, batches)
    sizes = []
    hook = ours.roi_head.mask_roi_extractor.register_forward_hook(
        lambda m, i, o: sizes.append(o.size(0)))
    try:
        our_preds = _predict(ours, batches)
    finally:
        hook.remove()
    # mask RoI features in chunks of inference_chunk_size
    assert max(sizes) == 7 and len(sizes) > len(batches)
    total = 0
    for a, b in zip(stock_preds, our_preds):
        pa, pb = a.pred_instances, b.pred_instances
        assert torch.equal(pa.bboxes, pb.bboxes)
        assert torch.equal(pa.scores, pb.scores)
        assert torch.equal(pa.labels, pb.labels)
        assert isinstance(pb.masks, list)  # RLE, no (N, H, W) tensor
        assert torch.equal(decode_rles(pb.masks), pa.masks) or (
            len(pb.masks) == 0 and pa.masks.numel() == 0)
        total += len(pa)
    assert total > 0
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmengine.registry import DATASETS
        ds = DATASETS.build(cfg.val_dataloader.dataset)
    m_stock = _evaluate(cfg, stock_preds, ds.metainfo)
    m_ours = _evaluate(cfg, our_preds, ds.metainfo)
    assert m_stock == m_ours
    assert 'lvis/segm_AP' in m_ours and 'lvis/bbox_AP' in m_ours


def test_fixed_ap_mode_through_the_model(setup):
    """topk_per_class=k without a per-image cap: mmdet's uncapped NMS, then
    each class's best k per image."""
    cfg, stock, ours, batches = setup
    k = 3
    saved = (copy.deepcopy(ours.roi_head.test_cfg),
             copy.deepcopy(stock.roi_head.test_cfg))
    ours.roi_head.test_cfg.update(max_per_img=-1, topk_per_class=k)
    stock.roi_head.test_cfg.update(max_per_img=-1)
    try:
        stock_preds = _predict(stock, batches[:1])
        our_preds = _predict(ours, batches[:1])
    finally:
        ours.roi_head.test_cfg, stock.roi_head.test_cfg = saved
    for a, b in zip(stock_preds, our_preds):
        pa, pb = a.pred_instances, b.pred_instances
        seen, keep = {}, []
        for i, lab in enumerate(pa.labels.tolist()):
            seen[lab] = seen.get(lab, 0) + 1
            if seen[lab] <= k:
                keep.append(i)
        keep = torch.tensor(keep, dtype=torch.long)
        assert torch.equal(pa.bboxes[keep], pb.bboxes)
        assert torch.equal(pa.scores[keep], pb.scores)
        assert torch.equal(pa.labels[keep], pb.labels)
        assert torch.equal(decode_rles(pb.masks), pa.masks[keep]) or (
            len(keep) == 0)


def test_cascade_gathered_equals_stock(tiny_lvis, tmp_path):
    """A 2-stage Cascade: mmlongtail.CascadeRoIHead with label-gathered mask
    heads (each stage gathers, the stages' masks are averaged per label)
    against mmdet's CascadeRoIHead with FCNMaskHead: same predictions, same
    training losses and mask-head gradients."""
    from longtail_probe import tiny_config
    from mmdet.testing import demo_mm_inputs
    cfg = tiny_config(tiny_lvis['root'], 12, str(tmp_path),
                      cascade_eqlv2=True)
    # one loss in both stages: mmdet's Cascade averages the stages' logits
    cfg.model.roi_head.bbox_head[1] = copy.deepcopy(
        cfg.model.roi_head.bbox_head[0])
    cfg.model.roi_head.type = 'mmlongtail.CascadeRoIHead'
    cfg.model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=30)
    stock_cfg = copy.deepcopy(cfg.model)
    stock_cfg.roi_head.type = 'CascadeRoIHead'
    stock_cfg.roi_head.mask_head.type = 'FCNMaskHead'
    for key in ('early_stop_nms', 'mask_format'):
        stock_cfg.test_cfg.rcnn.pop(key)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        ours = MODELS.build(cfg.model)
        stock = MODELS.build(stock_cfg)
    ours.init_weights()
    stock.load_state_dict(ours.state_dict(), strict=True)
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64)] * 2,
                            num_classes=12, with_mask=True)
    # training: same sampling (same seed), same losses and gradients
    grads, losses = [], []
    for m in (stock, ours):
        m.train()
        m.zero_grad()
        data = m.data_preprocessor(copy.deepcopy(packed), True)
        torch.manual_seed(1)
        out = m(**data, mode='loss')
        out = {k: sum(v) if isinstance(v, list) else v
               for k, v in out.items() if 'loss' in k}
        sum(out.values()).backward()
        losses.append({k: float(v) for k, v in out.items()})
        grads.append(ours.roi_head.mask_head[0].conv_logits.weight.grad
                     if m is ours else
                     stock.roi_head.mask_head[0].conv_logits.weight.grad)
    assert losses[0].keys() == losses[1].keys()
    for k in losses[0]:
        assert losses[1][k] == pytest.approx(losses[0][k], rel=1e-5,
                                             abs=1e-6), k
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
    # prediction
    outs = []
    for m in (stock, ours):
        m.eval()
        with torch.no_grad():
            data = m.data_preprocessor(copy.deepcopy(packed), False)
            outs.append([s.pred_instances for s in m(**data,
                                                      mode='predict')])
    for want, got in zip(*outs):
        assert len(want) > 0
        assert torch.equal(got.bboxes, want.bboxes)
        assert torch.equal(got.scores, want.scores)
        assert torch.equal(got.labels, want.labels)
        assert torch.equal(decode_rles(got.masks), want.masks)
