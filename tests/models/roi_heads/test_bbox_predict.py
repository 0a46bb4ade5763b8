"""The home of test-time scoring: mmlongtail.StandardRoIHead and
mmlongtail.CascadeRoIHead predict through mmlongtail.models.roi_heads.
bbox_predict.

* Without a scorer the predictions are bit-identical to mmdet's heads (same
  weights), for mmdet's CE and for losses with their own activation.
* A scorer changes only scores: with ``ClassScoreWeights`` the boxes and
  labels stay mmdet's and the scores are scaled, in a single head, a
  Cascade (both stage-combination modes) and a checkpoint rescored by a
  config delta.
"""
import copy

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope

import mmlongtail  # noqa: F401
from mmlongtail.models.roi_heads import decode_and_nms
from mmlongtail.models.roi_heads.bbox_predict import (apply_scorers,
                                                      build_scorers)

register_all_modules()

C = 4
#: instance counts 3, 40, 400, 5000: one class in each BAGS group
STATS = dict(num_images=100, categories=[
    dict(id=j + 1, name=f'c{j}', frequency='r', image_count=n // 60 + 1,
         instance_count=n) for j, n in enumerate((3, 40, 400, 5000))])
LOSSES = {
    'CrossEntropyLoss': dict(type='CrossEntropyLoss', use_sigmoid=False),
    'SeesawLoss': dict(type='mmlongtail.SeesawLoss', num_classes=C),
    'EQLv2Loss': dict(type='mmlongtail.EQLv2Loss', num_classes=C),
    'GroupSoftmaxLoss': dict(type='mmlongtail.GroupSoftmaxLoss',
                             num_classes=C, category_stats=STATS),
    'FocalLoss': dict(type='mmlongtail.FocalLoss', num_classes=C),
}
HALF = [dict(type='mmlongtail.ClassScoreWeights', weights=[0.5] * C)]


@pytest.fixture(autouse=True)
def _mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _box_head(loss_cls, stds=(0.1, 0.1, 0.2, 0.2), agnostic=False):
    return dict(
        type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16,
        roi_feat_size=7, num_classes=C, reg_class_agnostic=agnostic,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[0., 0., 0., 0.],
                        target_stds=list(stds)),
        loss_cls=copy.deepcopy(loss_cls))


EXTRACTOR = dict(
    type='SingleRoIExtractor',
    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
    out_channels=8, featmap_strides=[4])


def _test_cfg(**kw):
    return ConfigDict(dict(score_thr=0.0, nms=dict(type='nms',
                                                   iou_threshold=0.5),
                           max_per_img=1000, **kw))


def _pair(kind, loss_cls, seed=0):
    """mmdet's RoI head and ours, with the same weights."""
    if kind == 'standard':
        cfg = dict(type='StandardRoIHead', bbox_roi_extractor=EXTRACTOR,
                   bbox_head=_box_head(loss_cls), test_cfg=_test_cfg())
    else:
        stds = ([.1, .1, .2, .2], [.05, .05, .1, .1],
                [.033, .033, .067, .067])
        cfg = dict(type='CascadeRoIHead', num_stages=3,
                   stage_loss_weights=[1, 0.5, 0.25],
                   bbox_roi_extractor=EXTRACTOR,
                   bbox_head=[_box_head(loss_cls, s, True) for s in stds],
                   test_cfg=_test_cfg())
    torch.manual_seed(seed)
    ref = MMDET_MODELS.build(copy.deepcopy(cfg))
    ref.init_weights()
    # a little spread in the classifier so that scores differ per class
    for m in ref.modules():
        if hasattr(m, 'fc_cls'):
            torch.nn.init.normal_(m.fc_cls.weight, std=0.3)
    ours = MMDET_MODELS.build(dict(cfg, type=f'mmlongtail.{cfg["type"]}'))
    ours.load_state_dict(ref.state_dict())
    return ref.eval(), ours.eval()


def _inputs(seed=1):
    torch.manual_seed(seed)
    shapes = [(3, 64, 64), (3, 48, 64)]
    samples = demo_mm_inputs(batch_size=2, image_shapes=shapes,
                             num_classes=C)['data_samples']
    for s in samples:
        s.set_metainfo(dict(scale_factor=(1.5, 2.0)))
    feats = (torch.randn(2, 8, 16, 16), )
    return feats, demo_mm_proposals(shapes, 40), samples


def _predict(head, test_cfg=None, rescale=True):
    feats, proposals, samples = _inputs()
    if test_cfg is not None:
        head.test_cfg = test_cfg
    with torch.no_grad():
        return head.predict(feats, proposals, samples, rescale=rescale)


def _assert_same(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert len(r) > 0
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(g[key], r[key]), key


@pytest.mark.parametrize('kind', ['standard', 'cascade'])
@pytest.mark.parametrize('name', sorted(LOSSES))
def test_without_scorers_bit_identical_to_mmdet(kind, name):
    ref, ours = _pair(kind, LOSSES[name])
    _assert_same(_predict(ours), _predict(ref))
    # an empty list is no scorer too; so is another score_thr
    cfg = _test_cfg(score_calibration=[])
    cfg.score_thr = 0.05
    ref_cfg = _test_cfg()
    ref_cfg.score_thr = 0.05
    _assert_same(_predict(ours, cfg), _predict(ref, ref_cfg))


def test_aug_test_path_without_nms_is_mmdet_s():
    """``rcnn_test_cfg=None``: every decoded box with its score row."""
    ref, ours = _pair('standard', LOSSES['SeesawLoss'])
    feats, proposals, samples = _inputs()
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        got = ours.predict_bbox(feats, metas, proposals, None, rescale=True)
        want = ref.predict_bbox(feats, metas, proposals, None, rescale=True)
    for g, w in zip(got, want):
        assert torch.equal(g.bboxes, w.bboxes)
        assert torch.equal(g.scores, w.scores)
        assert g.scores.shape[1] == C + 1


@pytest.mark.parametrize('kind', ['standard', 'cascade'])
@pytest.mark.parametrize('name', ['CrossEntropyLoss', 'GroupSoftmaxLoss'])
def test_a_scorer_changes_only_scores(kind, name):
    ref, ours = _pair(kind, LOSSES[name])
    want = _predict(ref)
    # halving every class keeps order, boxes and labels
    got = _predict(ours, _test_cfg(score_calibration=HALF))
    for g, w in zip(got, want):
        assert torch.equal(g.bboxes, w.bboxes)
        assert torch.equal(g.labels, w.labels)
        assert torch.equal(g.scores, w.scores * 0.5)
    # weight 0 drops class 1 (score 0 is not above score_thr=0); NMS is per
    # class, so every other detection is mmdet's
    drop = [dict(type='mmlongtail.ClassScoreWeights',
                 weights=[1.0, 0.0, 1.0, 1.0])]
    got = _predict(ours, _test_cfg(score_calibration=drop))
    for g, w in zip(got, want):
        keep = w.labels != 1
        assert (w.labels == 1).any()
        # same detections; ties in score may be ordered differently
        order_g = torch.argsort(g.scores, stable=True)
        order_w = torch.argsort(w.scores[keep], stable=True)
        assert torch.equal(g.scores[order_g], w.scores[keep][order_w])
        assert torch.equal(g.labels[order_g], w.labels[keep][order_w])
        assert torch.equal(g.bboxes[order_g], w.bboxes[keep][order_w])


def test_cascade_mean_scores_and_stage_scorers():
    """'mean_scores' averages each stage's own probabilities (after its own
    scorers): halving every stage halves the average; it differs from
    mmdet's softmax of the mean logits."""
    _, ours = _pair('cascade', LOSSES['CrossEntropyLoss'])
    logits = _predict(ours)
    plain = _predict(ours, _test_cfg(cascade_scoring='mean_scores'))
    halved = _predict(ours, _test_cfg(
        cascade_scoring='mean_scores', stage_score_calibration=[HALF] * 3))
    final = _predict(ours, _test_cfg(cascade_scoring='mean_scores',
                                     score_calibration=HALF))
    for p, h, f, lg in zip(plain, halved, final, logits):
        assert torch.equal(h.bboxes, p.bboxes)
        assert torch.equal(h.labels, p.labels)
        torch.testing.assert_close(h.scores, p.scores * 0.5)
        torch.testing.assert_close(f.scores, p.scores * 0.5)
        assert not torch.allclose(p.scores[:5], lg.scores[:5])
    # a scorer on one stage only: stages 1 and 2 unchanged -> average moves
    # by (1 - 0.5) / 3 of stage 0's scores, never above the plain scores
    one = _predict(ours, _test_cfg(
        cascade_scoring='mean_scores',
        stage_score_calibration=[HALF, None, []]))
    for o, p in zip(one, plain):
        assert o.scores.max() <= p.scores.max()


def _reference_mean_scores(head, feats, proposals, samples):
    """Each stage's softmax, stage by stage as mmdet refines the boxes."""
    from mmdet.structures.bbox import bbox2roi
    rois = bbox2roi([p.bboxes for p in proposals])
    probs = []
    for stage in range(head.num_stages):
        res = head._bbox_forward(stage, feats, rois)
        probs.append(res['cls_score'].softmax(-1))
        if stage < head.num_stages - 1:
            label = res['cls_score'][:, :-1].argmax(dim=1)
            boxes = head.bbox_head[stage].regress_by_class(
                rois[:, 1:], label, res['bbox_pred'], samples[0].metainfo)
            rois = torch.cat([rois[:, :1], boxes], dim=1)
    return sum(probs) / len(probs)


def test_cascade_mean_scores_against_a_stage_by_stage_reference():
    """The probabilities a final scorer sees in 'mean_scores' mode are the
    mean of the stages' softmaxes, each on the boxes mmdet refined."""
    _, ours = _pair('cascade', LOSSES['CrossEntropyLoss'])
    feats, proposals, samples = _inputs()
    feats, proposals, samples = (feats[0][:1], ), proposals[:1], samples[:1]
    seen = []

    def spy(cls_score, scores, layout):
        seen.append(scores.clone())
        return scores

    ours.test_cfg = _test_cfg(cascade_scoring='mean_scores',
                              score_calibration=[spy])
    with torch.no_grad():
        ours.predict(feats, proposals, samples)
        ref = _reference_mean_scores(ours, feats, proposals, samples)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], ref)


def test_bad_scorer_configs_are_refused():
    _, cascade = _pair('cascade', LOSSES['CrossEntropyLoss'])
    with pytest.raises(ValueError, match='needs cascade_scoring'):
        _predict(cascade, _test_cfg(stage_score_calibration=[HALF] * 3))
    with pytest.raises(ValueError, match='one list of scorer configs per '
                       r'stage \(3\)'):
        _predict(cascade, _test_cfg(cascade_scoring='mean_scores',
                                    stage_score_calibration=[HALF]))
    with pytest.raises(ValueError, match='cascade_scoring must be one of'):
        _predict(cascade, _test_cfg(cascade_scoring='max'))
    _, head = _pair('standard', LOSSES['SeesawLoss'])
    with pytest.raises(ValueError, match='must be a list of scorer configs'):
        _predict(head, _test_cfg(score_calibration=HALF[0]))
    with pytest.raises(ValueError, match='3 weights but the classifier '
                       r'\(SeesawLoss\) has 4 classes'):
        _predict(head, _test_cfg(score_calibration=[
            dict(type='mmlongtail.ClassScoreWeights', weights=[1, 1, 1])]))
    with pytest.raises(ValueError, match='must return scores of shape'):
        apply_scorers([lambda c, s, layout: s[:, :-1]], torch.zeros(2, 6),
                      torch.zeros(2, 5),
                      head.bbox_head.loss_cls.classifier_layout())
    with pytest.raises(ValueError, match='numbers >= 0'):
        build_scorers([dict(type='mmlongtail.ClassScoreWeights',
                            weights=[1, -1])])


def test_decode_and_nms_is_separately_callable():
    """Step (c) on its own: mmdet's decoding and multiclass NMS."""
    ref, _ = _pair('standard', LOSSES['CrossEntropyLoss'])
    head = ref.bbox_head
    feats, proposals, samples = _inputs()
    from mmdet.structures.bbox import bbox2roi
    rois = bbox2roi([proposals[0].bboxes])
    with torch.no_grad():
        out = ref._bbox_forward(feats, rois)
        cls_score, bbox_pred = out['cls_score'], out['bbox_pred']
        scores = cls_score.softmax(-1)
        got = decode_and_nms(head, rois, bbox_pred, scores,
                             samples[0].metainfo, True, _test_cfg())
        want = head._predict_by_feat_single(rois, cls_score, bbox_pred,
                                            samples[0].metainfo, True,
                                            _test_cfg())
    for key in ('bboxes', 'scores', 'labels'):
        assert torch.equal(got[key], want[key])


@pytest.mark.parametrize('cascade', [False, True])
def test_rescoring_a_checkpoint_by_a_config_delta(tiny_lvis, tmp_path,
                                                  cascade):
    """A saved Mask R-CNN (and Cascade) checkpoint, rescored: the delta
    switches ``model.roi_head.type`` and adds ``score_calibration``, as a
    config file with ``_base_`` or ``--cfg-options`` would
    (``Config.merge_from_dict``). Boxes, labels and masks stay those of the
    original model; scores are halved."""
    from mmengine.runner import load_checkpoint

    from longtail_probe import tiny_config
    cfg = tiny_config(tiny_lvis['root'], 12, str(tmp_path),
                      cascade_eqlv2=cascade)
    if cascade:  # one loss for both stages (the consistency rule)
        cfg.model.roi_head.bbox_head[1] = copy.deepcopy(
            cfg.model.roi_head.bbox_head[0])
    torch.manual_seed(0)
    model = MMDET_MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path / 'epoch_1.pth')
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)

    delta = {
        'model.roi_head.type':
        'mmlongtail.CascadeRoIHead' if cascade else
        'mmlongtail.StandardRoIHead',
        'model.test_cfg.rcnn.score_calibration':
        [dict(type='mmlongtail.ClassScoreWeights', weights=[0.5] * 12)],
    }
    # few proposals and detections: masks dominate the time on CPU
    cfg.merge_from_dict({'model.test_cfg.rcnn.score_thr': 0.0,
                         'model.test_cfg.rcnn.max_per_img': 30,
                         'model.test_cfg.rpn.nms_pre': 200,
                         'model.test_cfg.rpn.max_per_img': 50})
    rescored_cfg = copy.deepcopy(cfg)
    rescored_cfg.merge_from_dict(delta)
    rescored = MMDET_MODELS.build(rescored_cfg.model)
    assert type(rescored.roi_head).__module__.startswith('mmlongtail.')
    load_checkpoint(rescored, path, map_location='cpu')
    original = MMDET_MODELS.build(cfg.model)
    load_checkpoint(original, path, map_location='cpu')

    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)],
                            num_classes=12, with_mask=True)
    outs = []
    for m in (original, rescored):
        m.eval()
        with torch.no_grad():
            data = m.data_preprocessor(copy.deepcopy(packed), False)
            outs.append(m(**data, mode='predict')[0].pred_instances)
    want, got = outs
    assert len(want) > 0
    assert torch.equal(got.bboxes, want.bboxes)
    assert torch.equal(got.labels, want.labels)
    # the LVIS configs' masks are RLE dicts (test_cfg.rcnn.mask_format='rle')
    assert isinstance(want.masks, list) and got.masks == want.masks
    assert torch.equal(got.scores, want.scores * 0.5)
