"""Tests of mmlongtail.analysis and tools/analyze_longtail.py."""
import json
import os.path as osp
import runpy
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from tiny_federated import tiny_federated_gt, tiny_federated_predictions

import mmlongtail  # noqa: F401  (registers)
from mmengine.config import Config

from mmlongtail.analysis import (analyze_longtail, box_classifier_layouts,
                                 box_classifier_normalized,
                                 classifier_weight_norms, group_table,
                                 load_per_class, spearman, training_counts)
from mmlongtail.datasets import load_category_stats
from mmlongtail.evaluation import LVISMetric
from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _evaluate(tmp_path, gt, preds, metric=('bbox', )):
    ann = str(tmp_path / 'gt.json')
    with open(ann, 'w') as f:
        json.dump(gt, f)
    sizes = {im['id']: (im['height'], im['width']) for im in gt['images']}
    prefix = str(tmp_path / 'eval' / 'lvis')
    m = LVISMetric(ann_file=ann, metric=list(metric), outfile_prefix=prefix)
    for p in preds:
        inst = dict(
            bboxes=torch.from_numpy(p['bboxes']),
            scores=torch.from_numpy(p['scores']),
            labels=torch.from_numpy(p['labels']))
        if 'masks' in p:
            inst['masks'] = torch.from_numpy(p['masks'])
        m.process({}, [
            dict(img_id=p['img_id'], ori_shape=sizes[p['img_id']],
                 pred_instances=inst)
        ])
    res = m.evaluate(len(preds))
    return prefix + '.per_class.json', res


@pytest.fixture(scope='module')
def eval_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('run')
    gt = make_lvis_gt(
        30, 'lvis_v1', num_classes=40, seed=11, category_power=0.2,
        with_masks=True, image_size=(96, 128))
    preds = make_predictions(gt, 40, seed=12, with_masks=True)
    path, res = _evaluate(tmp, gt, preds, ('bbox', 'segm'))
    return path, res, gt


# --------------------------------------------------------- group table
def test_group_table_matches_evaluator_summary(eval_run):
    path, res, gt = eval_run
    r = load_per_class(path)
    assert r.iou_types == ['bbox', 'segm']
    for iou in ('bbox', 'segm'):
        t = group_table(r, iou)
        s = r.metrics[iou]['summary']
        # LVIS averages precision over the group's categories with GT, so
        # the mean of per-class APs is the evaluator's APr/APc/APf
        for g in ('r', 'c', 'f'):
            assert t[g]['AP'] == pytest.approx(s[f'AP{g}'], abs=1e-9)
            assert t[g]['num_classes'] > 0
        assert t['all']['AP'] == pytest.approx(s['AP'], abs=1e-9)
        assert t['all']['AR'] == pytest.approx(s['AR@300'], abs=1e-9)
        assert round(t['all']['AP'], 3) == res[f'lvis/{iou}_AP']


def test_group_table_hand_derived(tmp_path):
    """Per-class APs of the hand-derived federated case of
    tests/evaluation (a=1/3 rare, b=1/2 common, c=1 and e=0 frequent)."""
    path, _ = _evaluate(tmp_path, tiny_federated_gt(),
                        tiny_federated_predictions())
    r = load_per_class(path)
    t = group_table(r, 'bbox')
    assert t['r']['AP'] == pytest.approx(1 / 3)
    assert t['c']['AP'] == pytest.approx(1 / 2)
    assert t['f']['AP'] == pytest.approx(1 / 2)
    assert t['f']['num_classes'] == 2  # d has no ground truth
    assert t['all']['AP'] == pytest.approx((1 / 3 + 1 / 2 + 1 + 0) / 4)
    assert t['all']['AR'] == pytest.approx(3 / 4)
    np.testing.assert_array_equal(r.num_gt, [1, 1, 1, 0, 1])
    # counts recorded in the ground truth's categories
    np.testing.assert_array_equal(
        training_counts(r), [3, 40, 500, 200, 300])
    with pytest.raises(ValueError, match='lack category ids'):
        training_counts(r, load_category_stats({
            'num_images': 5,
            'categories': [dict(id=1, name='a', frequency='r',
                                image_count=1, instance_count=1)]}))


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    # ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4)
    x = np.array([1., 2.5, 2.5, 4])
    y = np.arange(1., 5)
    expect = np.corrcoef(x, y)[0, 1]
    assert spearman([0, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(expect)


# ---------------------------------------------------------- weight norms
C = 6
INSTANCES = np.array([3, 50, 5, 2000, 700, 12])  # bins 0, 1, 0, 3, 2, 1


def _head_cfg(loss_cls=None, num_classes=C):
    cfg = dict(
        type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=8,
        roi_feat_size=2, num_classes=num_classes)
    if loss_cls is not None:
        cfg['loss_cls'] = loss_cls
    return cfg


def _build_head(cfg):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    # whatever default scope an earlier test left behind
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def _run_cfg(bbox_head):
    """The part of a run's config the analysis reads (``bbox_head`` a dict
    or, for Cascade, a list)."""
    return dict(
        default_scope='mmdet',
        model=dict(type='MaskRCNN', roi_head=dict(bbox_head=bbox_head)))


class _Detector(nn.Module):
    """Holds ``roi_head.bbox_head`` like mmdet's two-stage detectors."""

    def __init__(self, bbox_head):
        super().__init__()
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = bbox_head


def _set_norms(fc, rows, scale):
    """Row rows[j] gets norm scale[j]; other rows norm 100."""
    with torch.no_grad():
        w = torch.randn_like(fc.weight)
        w = w / w.norm(dim=1, keepdim=True) * 100.
        for j, r in enumerate(rows):
            w[r] = w[r] / w[r].norm() * float(scale[j])
        fc.weight.copy_(w)


def _save(model, path, run_cfg=None):
    """A checkpoint as mmengine's Runner writes it: the config's text in
    ``meta['cfg']`` (``Runner.save_checkpoint`` stores
    ``cfg.pretty_text``)."""
    meta = {'epoch': 1}
    if run_cfg is not None:
        meta['cfg'] = Config(run_cfg).pretty_text
    torch.save({'meta': meta, 'state_dict': model.state_dict()}, path)
    return path


STATS = {
    'num_images': 5000,
    'categories': [
        dict(id=i + 1, name=f'k{i}', frequency='rcf'[min(i % 3, 2)],
             image_count=int(n // 2 + 1), instance_count=int(n))
        for i, n in enumerate(INSTANCES)
    ]
}
BAGS = dict(type='mmlongtail.GroupSoftmaxLoss', num_classes=C,
            category_stats=STATS)
# (10, 100, 1000): groups 0, 1, 0, 3, 2, 1 -> [o0 c0 c2 | o1 c1 c5 | o2 c4 |
#   o3 c3 | o_bg bg]; (10, 40, 100): groups 0, 2, 0, 3, 3, 1 -> [o0 c0 c2 |
#   o1 c5 | o2 c1 | o3 c3 c4 | o_bg bg]: both 12 rows wide, rows differ
BAGS_ROWS = [1, 4, 2, 9, 7, 5]
BAGS_10_40_100_ROWS = [1, 6, 2, 8, 9, 4]

LOSSES = {
    'ce': (None, C + 1, range(C)),
    'sigmoid_ce': (dict(type='CrossEntropyLoss', use_sigmoid=True), C + 1,
                   range(C)),
    'seesaw': (dict(type='mmlongtail.SeesawLoss', num_classes=C), C + 2,
               range(C)),
    'mmdet_seesaw': (dict(type='SeesawLoss', num_classes=C), C + 2,
                     range(C)),
    'eqlv2': (dict(type='mmlongtail.EQLv2Loss', num_classes=C), C + 1,
              range(C)),
    'eql': (dict(type='mmlongtail.EQLLoss', num_classes=C,
                 category_stats=STATS), C, range(C)),
    'focal': (dict(type='mmlongtail.FocalLoss', num_classes=C), C, range(C)),
    'bags': (BAGS, C + 1 + 5, BAGS_ROWS),
    'bags_10_40_100': (dict(BAGS, bin_split=(10, 40, 100)), C + 1 + 5,
                       BAGS_10_40_100_ROWS),
}


@pytest.mark.parametrize('kind', sorted(LOSSES))
def test_weight_norms_read_the_layout_from_the_stored_config(tmp_path, kind):
    """No layout argument: the checkpoint's config says which row is which
    class (hand-derived rows above)."""
    loss, width, rows = LOSSES[kind]
    rows = list(rows)
    head_cfg = _head_cfg(loss)
    head = _build_head(head_cfg)
    assert head.fc_cls.weight.shape[0] == width
    if kind.startswith('bags'):
        # the loss's own channel map agrees with the hand-derived rows
        assert head.loss_cls.label_channel[:C].tolist() == rows
    layouts = box_classifier_layouts(_run_cfg(head_cfg))
    assert list(layouts) == ['fc_cls']
    assert layouts['fc_cls'].foreground_rows().tolist() == rows
    scale = np.array([1., 2., 3., 4., 5., 6.])
    _set_norms(head.fc_cls, rows, scale)
    path = _save(_Detector(head), str(tmp_path / 'ckpt.pth'),
                 _run_cfg(head_cfg))
    norms = classifier_weight_norms(path)
    assert list(norms) == ['fc_cls']
    np.testing.assert_allclose(norms['fc_cls'], scale, rtol=1e-5)


def test_bags_split_that_fits_the_default_width_is_not_confused(tmp_path):
    """The same 12 rows under the default split would read other rows."""
    assert BAGS_ROWS != BAGS_10_40_100_ROWS
    head_cfg = _head_cfg(dict(BAGS, bin_split=(10, 40, 100)))
    head = _build_head(head_cfg)
    scale = np.arange(1., C + 1)
    _set_norms(head.fc_cls, BAGS_10_40_100_ROWS, scale)
    default_cfg = _run_cfg(_head_cfg(BAGS))
    path = _save(_Detector(head), str(tmp_path / 'ckpt.pth'),
                 _run_cfg(head_cfg))
    np.testing.assert_allclose(
        classifier_weight_norms(path)['fc_cls'], scale, rtol=1e-5)
    wrong = classifier_weight_norms(path, config=default_cfg)['fc_cls']
    assert not np.allclose(wrong, scale)


def test_weight_norms_cascade_and_errors(tmp_path):
    # Cascade stages, each with its own loss config (same layout)
    stage_cfgs = [
        _head_cfg(dict(type='mmlongtail.SeesawLoss', num_classes=C))
        for _ in range(3)
    ]
    heads = nn.ModuleList([_build_head(c) for c in stage_cfgs])
    for i, h in enumerate(heads):
        _set_norms(h.fc_cls, range(C), np.arange(1., C + 1) * (i + 1))
    model = _Detector(heads)
    path = _save(model, str(tmp_path / 'cascade.pth'), _run_cfg(stage_cfgs))
    norms = classifier_weight_norms(path, num_classes=C)
    assert list(norms) == ['stage0', 'stage1', 'stage2']
    for i in range(3):
        np.testing.assert_allclose(norms[f'stage{i}'],
                                   np.arange(1., C + 1) * (i + 1), rtol=1e-5)
    # DDP-wrapped keys, config given explicitly
    sd = {'module.' + k: v for k, v in model.state_dict().items()}
    assert list(classifier_weight_norms(
        {'state_dict': sd}, _run_cfg(stage_cfgs))) == [
            'stage0', 'stage1', 'stage2'
        ]
    with pytest.raises(ValueError, match='num_classes=6 but the evaluation '
                       'has 9 classes'):
        classifier_weight_norms(path, num_classes=9)
    # a config whose loss lays out other rows than the checkpoint has
    ce_cfgs = [_head_cfg() for _ in range(3)]
    with pytest.raises(ValueError, match=r'stage0 \(fc_cls.weight\) has 8 '
                       r'outputs, but CrossEntropyLoss \(softmax\) lays '
                       r'out 7'):
        classifier_weight_norms(path, _run_cfg(ce_cfgs))
    with pytest.raises(ValueError, match=r"box classifiers \['stage0', "
                       r"'stage1', 'stage2'\] but the config describes "
                       r"\['fc_cls'\]"):
        classifier_weight_norms(path, _run_cfg(stage_cfgs[0]))
    bare = _save(model, str(tmp_path / 'bare.pth'))
    with pytest.raises(ValueError, match=r"no config in meta\['cfg'\]"):
        classifier_weight_norms(bare)
    with pytest.raises(KeyError, match='no box classifier'):
        classifier_weight_norms({'backbone.w': torch.zeros(1)},
                                _run_cfg(stage_cfgs))


# ------------------------------------------------------------ the tool
def _run_tool(*argv):
    old = sys.argv
    sys.argv = ['analyze_longtail.py', *argv]
    try:
        runpy.run_path(osp.join(REPO, 'tools', 'analyze_longtail.py'),
                       run_name='__main__')
    finally:
        sys.argv = old


def _eval_stats(gt, path):
    """A stats JSON of the evaluated categories only, with LVIS v1's train
    counts (what a run trained on exactly these classes would give)."""
    full = load_category_stats('lvis_v1')
    ids = sorted(c['id'] for c in gt['categories'])
    pos = np.searchsorted(full.cat_ids, ids)
    stats = dict(num_images=full.num_images, categories=[
        dict(id=int(full.cat_ids[p]), name=full.names[p],
             frequency=full.frequency[p],
             image_count=int(full.image_count[p]),
             instance_count=int(full.instance_count[p])) for p in pos
    ])
    with open(path, 'w') as f:
        json.dump(stats, f)
    return path, full.instance_count[pos]


def _eval_checkpoint(gt, tmp_path, inst, predictor=None, classes=None):
    """A checkpoint of the evaluated classes whose norms grow with log
    frequency, as plain training gives (Kang et al. 2020)."""
    C_eval = len(gt['categories'])
    head_cfg = _head_cfg(num_classes=C_eval)
    if predictor is not None:
        head_cfg['cls_predictor_cfg'] = predictor
    model = _Detector(_build_head(head_cfg))
    _set_norms(model.roi_head.bbox_head.fc_cls, range(C_eval),
               1 + np.log1p(inst))
    path = _save(model, str(tmp_path / 'epoch_1.pth'), _run_cfg(head_cfg))
    if classes is not None:  # as mmengine's Runner stores the train metainfo
        ckpt = torch.load(path, weights_only=False)
        ckpt['meta']['dataset_meta'] = dict(classes=tuple(classes))
        torch.save(ckpt, path)
    return path


def _panel_titles(monkeypatch):
    """Collects the figures the report makes (their axes keep the titles)."""
    from mmlongtail.analysis import report
    plt = report.agg_pyplot()
    figures = []
    subplots = plt.subplots

    def recording(*args, **kwargs):
        fig, axes = subplots(*args, **kwargs)
        figures.append(fig)
        return fig, axes

    monkeypatch.setattr(plt, 'subplots', recording)
    return figures


def test_tool_writes_pngs_and_markdown(eval_run, tmp_path, monkeypatch):
    path, res, gt = eval_run
    stats, inst = _eval_stats(gt, str(tmp_path / 'stats.json'))
    names = [c['name'] for c in sorted(gt['categories'],
                                       key=lambda c: c['id'])]
    ckpt = _eval_checkpoint(gt, tmp_path, inst, classes=names)
    figures = _panel_titles(monkeypatch)
    out_dir = str(tmp_path / 'report')
    _run_tool(path, '--out-dir', out_dir, '--stats', stats, '--checkpoint',
              ckpt)
    for name in ('ap_vs_train_images_bbox.png',
                 'ap_vs_train_images_segm.png', 'weight_norms.png'):
        with open(osp.join(out_dir, name), 'rb') as f:
            data = f.read()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    with open(osp.join(out_dir, 'longtail_summary.md')) as f:
        md = f.read()
    r = load_per_class(path)
    t = group_table(r, 'bbox')
    assert f'| rare | {t["r"]["num_classes"]} | {100 * t["r"]["AP"]:.1f} |' \
        in md
    assert '## segm' in md and 'weight_norms.png' in md
    # norms increase with n_j by construction -> Spearman +1.00; a plain
    # linear classifier, whose norms do scale its scores
    assert '| fc_cls | no |' in md and '+1.00 |' in md
    assert 'does not affect' not in md
    assert [ax.get_title() for ax in figures[-1].axes] == [
        'fc_cls: Spearman +1.00'
    ]


def test_statistics_of_other_classes_than_the_checkpoint_are_refused(
        eval_run, tmp_path):
    """The 40-class demo with --stats lvis_v1 used LVIS's first 40 counts."""
    path, _, gt = eval_run
    stats, inst = _eval_stats(gt, str(tmp_path / 'stats.json'))
    ckpt = _eval_checkpoint(gt, tmp_path, inst)
    out_dir = str(tmp_path / 'report')
    with pytest.raises(ValueError) as e:
        _run_tool(path, '--out-dir', out_dir, '--stats', 'lvis_v1',
                  '--checkpoint', ckpt)
    full = load_category_stats('lvis_v1').source
    assert str(e.value).startswith(
        f'the training statistics {full} has 1203 classes but the '
        f'checkpoint {ckpt} (num_classes of its config) has 40. Pass the '
        'statistics of the dataset the checkpoint was trained on')
    assert not osp.exists(out_dir)  # refused before anything is written
    # as many classes, other names (the demo's synthetic classes): the
    # checkpoint's dataset_meta names them
    other = [f'shape_{i}' for i in range(40)]
    ckpt = _eval_checkpoint(gt, tmp_path, inst, classes=other)
    with pytest.raises(ValueError) as e:
        analyze_longtail(path, out_dir, stats=stats, checkpoint=ckpt)
    first = load_category_stats(stats).names[0]
    assert str(e.value).startswith(
        f'the training statistics {stats} and the checkpoint {ckpt} '
        "(meta['dataset_meta']['classes']) name their 40 classes "
        f"differently: 40 differ, the first at label 0: {first!r} vs "
        "'shape_0'")
    # statistics of the same ids under other names, without a checkpoint
    with open(stats) as f:
        renamed = json.load(f)
    renamed['categories'][3]['name'] = 'not_the_same'
    with pytest.raises(ValueError) as e:
        analyze_longtail(path, out_dir, stats=renamed)
    cat = renamed['categories'][3]
    assert (f'name their categories differently: 1 of 40 ids differ, the '
            f"first id {cat['id']}: 'not_the_same' vs ") in str(e.value)


def test_weight_norms_of_a_cosine_classifier_are_not_read_as_imbalance(
        eval_run, tmp_path, monkeypatch):
    path, _, gt = eval_run
    stats, inst = _eval_stats(gt, str(tmp_path / 'stats.json'))
    ckpt = _eval_checkpoint(
        gt, tmp_path, inst,
        predictor=dict(type='mmlongtail.NormedLinear', temperature=20))
    figures = _panel_titles(monkeypatch)
    out = analyze_longtail(path, str(tmp_path / 'report'), stats=stats,
                           checkpoint=ckpt)
    with open(out['summary']) as f:
        md = f.read()
    assert ('**fc_cls is a normalized (cosine) classifier: ||w_j|| does not '
            'affect its scores** (mmlongtail.NormedLinear divides each row '
            'by its norm in forward)') in md
    assert '| fc_cls | yes |' in md
    assert [ax.get_title() for ax in figures[-1].axes] == [
        'fc_cls: Spearman +1.00\ncosine classifier: ||w_j|| does not '
        'affect scores'
    ]


def test_which_classifiers_are_normalized():
    demo = osp.join(REPO, 'configs', 'demo')
    assert box_classifier_normalized(
        osp.join(demo, 'seesaw_mask_rcnn_r18_light_rfs_synthetic.py')) == {
            'fc_cls': 'mmlongtail.NormedLinear'
        }
    assert box_classifier_normalized(
        osp.join(demo, 'mask_rcnn_r18_light_synthetic.py')) == {}
    # mmdet's own NormedLinear, and per Cascade stage
    stages = [_head_cfg(), _head_cfg(), _head_cfg()]
    stages[2]['cls_predictor_cfg'] = dict(type='NormedLinear')
    assert box_classifier_normalized(_run_cfg(stages)) == {
        'stage2': 'NormedLinear'
    }
    stages[0]['cls_predictor_cfg'] = dict(type='NoSuchLinear')
    with pytest.raises(ValueError, match="'NoSuchLinear' of the box head is "
                       'not registered'):
        box_classifier_normalized(_run_cfg(stages))


def test_analyze_without_checkpoint_uses_gt_counts(tmp_path):
    path, _ = _evaluate(tmp_path, tiny_federated_gt(),
                        tiny_federated_predictions())
    out = analyze_longtail(path, str(tmp_path / 'rep'))
    assert set(out) == {'summary', 'ap_vs_images_bbox'}
    with open(out['summary']) as f:
        md = f.read()
    assert '| rare | 1 | 33.3 | 33.3 | 100.0 |' in md
    assert '| all | 4 | 45.8 |' in md
    with pytest.raises(ValueError, match='not a mmlongtail.lvis_per_class'):
        bad = str(tmp_path / 'bad.json')
        with open(bad, 'w') as f:
            json.dump({'format': 'x'}, f)
        load_per_class(bad)
