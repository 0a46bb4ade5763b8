"""Bad input is refused at build time or first use, with a message naming the
problem.

Elsewhere already: each loss's own constructor checks
(``tests/models/losses/``), the stats loader on bad files
(``tests/datasets/test_category_stats.py``), each malformed annotation
file case and the LVIS v1 category check
(``tests/datasets/test_lvis_format.py``) and unsatisfiable synthetic
dataset requests (``tests/datasets/test_synthetic.py``). Here: the same
problems as a user meets them, through configs, heads, the Runner and the
consistency hook.
"""
import copy
import json
import os.path as osp

import pytest
import torch
from mmdet.registry import DATASETS, MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from longtail_probe import tiny_config
from mmlongtail.engine import check_longtail_consistency

register_all_modules()


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """Build in mmdet's scope whatever Runner an earlier test made current
    (a plain mmengine Runner leaves the scope at 'mmengine')."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield

C = 4
STATS = dict(
    num_images=100,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency='r', image_count=ic,
             instance_count=nc)
        for i, (ic, nc) in enumerate([(1, 3), (5, 40), (60, 400), (90, 5000)])
    ])
LOSSES = {
    'SeesawLoss': dict(type='mmlongtail.SeesawLoss', num_classes=C),
    'EQLLoss': dict(type='mmlongtail.EQLLoss', num_classes=C,
                    category_stats=STATS),
    'EQLv2Loss': dict(type='mmlongtail.EQLv2Loss', num_classes=C),
    'FocalLoss': dict(type='mmlongtail.FocalLoss', num_classes=C),
    'GroupSoftmaxLoss': dict(type='mmlongtail.GroupSoftmaxLoss',
                             num_classes=C, category_stats=STATS),
}


def _head(loss_cls, type='Shared2FCBBoxHead', num_classes=C, **kw):
    cfg = dict(type=type, in_channels=4, fc_out_channels=16,
               roi_feat_size=3, num_classes=num_classes,
               loss_cls=copy.deepcopy(loss_cls), **kw)
    if type == 'DoubleConvFCBBoxHead':
        cfg.update(num_convs=1, num_fcs=1, conv_out_channels=8)
    return MODELS.build(cfg)


# ---------------------------------------------------------------- classes --
def test_head_and_loss_num_classes_disagree_at_build():
    for name, loss in LOSSES.items():
        if name in ('EQLLoss', 'GroupSoftmaxLoss'):
            continue  # their num_classes must match the stats (below)
        with pytest.raises(ValueError, match=r'\b4\b.*\b7\b|\b7\b.*\b4\b'):
            _head(loss, num_classes=7)


@pytest.mark.parametrize('name', ['EQLLoss', 'GroupSoftmaxLoss'])
def test_loss_and_category_stats_disagree_at_build(name):
    loss = dict(LOSSES[name], num_classes=7)
    with pytest.raises(ValueError, match=r'num_classes=7.*4 classes'):
        _head(loss, num_classes=7)


def _mask_rcnn(tiny_lvis, tmp_path, bbox=12, loss=12, mask=12):
    cfg = tiny_config(tiny_lvis['root'], 12, str(tmp_path))
    head = cfg.model.roi_head
    head.bbox_head.num_classes = bbox
    head.bbox_head.loss_cls.num_classes = loss
    head.mask_head.num_classes = mask
    return cfg


def test_mask_head_disagrees_with_bbox_head(tiny_lvis, tmp_path):
    cfg = _mask_rcnn(tiny_lvis, tmp_path, mask=11)
    model = MODELS.build(cfg.model)
    classes = [f'c{i}' for i in range(12)]
    with pytest.raises(ValueError) as e:
        check_longtail_consistency(model, classes)
    msg = str(e.value)
    assert 'roi_head.bbox_head.num_classes (Shared2FCBBoxHead) = 12' in msg
    assert 'roi_head.bbox_head.loss_cls.num_classes (SeesawLoss) = 12' in msg
    assert ('roi_head.mask_head.num_classes (LabelGatheredFCNMaskHead) = '
            '11') in msg
    assert 'dataset classes (len(metainfo["classes"])) = 12' in msg
    assert 'rpn' not in msg  # the class-agnostic RPN is not counted
    cfg = _mask_rcnn(tiny_lvis, tmp_path)
    check_longtail_consistency(MODELS.build(cfg.model), classes)  # agrees


def test_runner_refuses_model_and_dataset_that_disagree(tiny_lvis, tmp_path):
    """The default runtime enables the hook: training stops before the first
    iteration, naming the model's 40 and the dataset's 12 classes."""
    cfg = _mask_rcnn(tiny_lvis, tmp_path, bbox=40, loss=40, mask=40)
    assert dict(type='mmlongtail.LongTailConsistencyHook') in cfg.custom_hooks
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as e:
        runner.train()
    msg = str(e.value)
    assert 'num_classes disagree' in msg
    assert 'SeesawLoss) = 40' in msg and 'FCNMaskHead) = 40' in msg
    assert 'train dataset (LVISFormatDataset) classes' in msg
    assert '= 12' in msg
    assert runner.iter == 0


# ----------------------------------------------------------------- labels --
@pytest.mark.parametrize('name', sorted(LOSSES))
@pytest.mark.parametrize('bad', [C + 3, -2])
def test_label_out_of_range_names_label_and_num_classes(name, bad):
    loss = MODELS.build(LOSSES[name])
    head = _head(LOSSES[name])
    channels = head.fc_cls.out_features
    labels = torch.tensor([0, 1, bad, C])
    with pytest.raises((ValueError, RuntimeError)) as e:
        loss(torch.randn(4, channels), labels)
    msg = str(e.value)
    assert f'[0, {C}]' in msg  # the valid range: num_classes is background
    assert str(bad) in msg  # the offending label
    if hasattr(loss, 'cum_samples'):
        assert loss.cum_samples.sum() == 0  # nothing counted


# ------------------------------------------------------------ bad files --
def test_missing_or_malformed_stats_file_through_config(tmp_path):
    missing = str(tmp_path / 'nope.json')
    with pytest.raises(FileNotFoundError, match='nope.json'):
        _head(dict(LOSSES['EQLLoss'], category_stats=missing))
    bad_json = tmp_path / 'bad.json'
    bad_json.write_text('{"categories": [')
    with pytest.raises(ValueError, match='not valid JSON'):
        _head(dict(LOSSES['GroupSoftmaxLoss'], category_stats=str(bad_json)))
    no_counts = tmp_path / 'no_counts.json'
    no_counts.write_text(json.dumps(
        dict(categories=[dict(id=1, name='a')])))
    with pytest.raises(ValueError, match='malformed category statistics'):
        _head(dict(LOSSES['EQLLoss'], category_stats=str(no_counts)))


def test_missing_or_malformed_annotation_file(tiny_lvis, tmp_path):
    cfg = tiny_config(tiny_lvis['root'], 12, str(tmp_path))
    ds = copy.deepcopy(cfg.train_dataloader.dataset)
    ds.pop('indices')
    ds.ann_file = 'annotations/missing.json'
    with pytest.raises(FileNotFoundError, match='missing.json'):
        DATASETS.build(ds).full_init()
    bad = tmp_path / 'bad_ann.json'
    bad.write_text(json.dumps(dict(images=[], annotations=[])))
    ds.ann_file = str(bad)
    with pytest.raises(ValueError, match='malformed annotation file'):
        DATASETS.build(ds).full_init()


def test_truncated_or_incomplete_annotation_file(tiny_lvis, tmp_path):
    """A cut-short download and an annotation without its box: the file and
    the problem named, not a bare JSONDecodeError or KeyError: 'bbox'."""
    cfg = tiny_config(tiny_lvis['root'], 12, str(tmp_path))
    ds = copy.deepcopy(cfg.train_dataloader.dataset)
    ds.pop('indices')
    with open(tiny_lvis['train']) as f:
        text = f.read()
    cut = tmp_path / 'cut.json'
    cut.write_text(text[:len(text) * 2 // 3])
    ds.ann_file = str(cut)
    with pytest.raises(ValueError, match=rf'annotation file {cut} is '
                       'truncated.*download or unpack it again'):
        DATASETS.build(ds).full_init()
    data = json.loads(text)
    ann = data['annotations'][3]
    del ann['bbox']
    no_box = tmp_path / 'no_box.json'
    no_box.write_text(json.dumps(data))
    ds.ann_file = str(no_box)
    with pytest.raises(ValueError) as e:
        DATASETS.build(ds).full_init()
    assert str(e.value).startswith(f'bad annotations in {no_box}:')
    assert (f"missing_key: 1 of {len(data['annotations'])} (first: "
            f"annotation id {ann['id']}, image id {ann['image_id']}: no "
            "'bbox')") in str(e.value)


def _lvis_v05_like(tiny_lvis, tmp_path):
    """The tiny set relabelled with 1230 LVIS v0.5-like categories, its
    annotations on ids past LVIS v1's 1203 (as lvis-api's v0.5 example has)."""
    from mmlongtail.datasets import load_category_stats
    names = ['acorn'] + list(load_category_stats('lvis_v1').names)
    names += [f'v05_extra_{i}' for i in range(1230 - len(names))]
    with open(tiny_lvis['train']) as f:
        data = json.load(f)
    data['categories'] = [dict(id=i + 1, name=n) for i, n in enumerate(names)]
    for ann in data['annotations']:
        ann['category_id'] += 1210
    path = tmp_path / 'lvis_v0.5_val.json'
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize('config', ['lvis_v1_instance_rfs.py',
                                    'lvis_v1_instance.py'])
def test_lvis_v05_file_in_an_lvis_v1_config(tiny_lvis, tmp_path, config):
    """With RFS this stopped in the sampler ('labels must lie in [0,
    num_classes=1203)'); without, it trained under the wrong class names.
    Now the dataset refuses it, naming the file and the fix."""
    from mmengine.config import Config
    path = _lvis_v05_like(tiny_lvis, tmp_path)
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(root, 'configs/_base_/datasets', config))
    loader = copy.deepcopy(cfg.train_dataloader)
    loader.update(num_workers=0, persistent_workers=False)
    loader.dataset.update(data_root=str(tmp_path), ann_file=path.name)
    with pytest.raises(ValueError) as e:
        Runner.build_dataloader(loader)
    msg = str(e.value)
    assert msg.startswith(f'{path} is not an LVIS v1 annotation file: it has '
                          '1230 categories, which looks like LVIS v0.5')
    assert "type='mmlongtail.LVISFormatDataset'" in msg
    assert 'num_classes = 1230' in msg
    # what the message proposes works: the file's own 1230 classes
    loader.dataset.type = 'mmlongtail.LVISFormatDataset'
    ds = Runner.build_dataloader(loader).dataset
    assert len(ds.metainfo['classes']) == 1230


# -------------------------------------------------- channel layout ignored --
@pytest.mark.parametrize('name', ['SeesawLoss', 'GroupSoftmaxLoss'])
def test_custom_layout_in_a_head_that_ignores_it(name):
    """DoubleConvFCBBoxHead sizes fc_cls as C + 1 itself."""
    head = _head(LOSSES[name], type='DoubleConvFCBBoxHead')
    expected = _head(LOSSES[name]).fc_cls.out_features
    with pytest.raises(ValueError) as e:
        check_longtail_consistency(head)
    msg = str(e.value)
    assert f'has a classifier with {C + 1} outputs' in msg
    assert f'{name} lays out {expected} channels' in msg
    assert 'DoubleConvFCBBoxHead sizes its classifier itself' in msg
    # without the check, the loss refuses it only at the first batch
    with pytest.raises(ValueError, match='channels'):
        head.loss_cls(torch.randn(3, C + 1), torch.tensor([0, 1, C]))


def test_layout_that_happens_to_fit_is_accepted():
    """EQLv2's C + 1 sigmoid channels are as wide as the head's softmax
    classifier, and the head scores with the loss's activation: it works."""
    head = _head(LOSSES['EQLv2Loss'], type='DoubleConvFCBBoxHead')
    check_longtail_consistency(head)


def test_custom_layout_in_a_dense_head():
    """RetinaHead sizes its classifier from use_sigmoid, not from the loss."""
    from mmdet.models.dense_heads import RetinaHead

    def retina(loss_cls):
        anchors = dict(type='AnchorGenerator', octave_base_scale=4,
                       scales_per_octave=1, ratios=[1.0], strides=[8])
        return RetinaHead(num_classes=C, in_channels=8, feat_channels=8,
                          stacked_convs=1, anchor_generator=anchors,
                          loss_cls=loss_cls)

    check_longtail_consistency(retina(dict(
        LOSSES['FocalLoss'], use_sigmoid=True, dense_head=True)))  # C
    # our FocalLoss is sigmoid by default, but RetinaHead reads use_sigmoid
    # from the config dict: without it the head has C + 1 channels
    with pytest.raises(ValueError, match=rf'{C + 1} classifier outputs per '
                       rf'anchor.*FocalLoss lays out {C} .*'
                       'set use_sigmoid=True'):
        check_longtail_consistency(
            retina(dict(LOSSES['FocalLoss'], dense_head=True)))
    with pytest.raises(ValueError, match=rf'C = {C} sigmoid outputs per '
                       rf'anchor.*EQLv2Loss lays out C \+ 1 .*'
                       'EqualizedFocalLoss'):
        check_longtail_consistency(
            retina(dict(LOSSES['EQLv2Loss'], use_sigmoid=True)))


def test_cascade_stages_with_different_layouts(tiny_lvis, tmp_path):
    cfg = tiny_config(tiny_lvis['root'], 12, str(tmp_path),
                      cascade_eqlv2=True)
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=r'stage 0: SeesawLoss with 14 '
                       r'outputs; stage 1: EQLv2Loss with 13 outputs'):
        check_longtail_consistency(model)


def test_cascade_stages_as_wide_but_on_other_rows():
    """Two BAGS stages with different bin_split have the same C + 1 + G
    channels but put the classes on other rows: refused, from the losses'
    layouts."""

    class _Cascade(torch.nn.Module):

        def __init__(self, *losses):
            super().__init__()
            self.bbox_head = torch.nn.ModuleList(
                _head(loss) for loss in losses)

    bags = LOSSES['GroupSoftmaxLoss']
    check_longtail_consistency(_Cascade(bags, bags))  # same layout: fine
    other = dict(bags, bin_split=(10, 100, 10000))
    with pytest.raises(ValueError, match=r'stage 0: GroupSoftmaxLoss with 10 '
                       r'outputs; stage 1: GroupSoftmaxLoss with 10 outputs '
                       r'\(as wide, but the losses put the classes on other '
                       r'rows'):
        check_longtail_consistency(_Cascade(bags, other))


# ---------------------------------------------------- invalid parameters --
@pytest.mark.parametrize('loss, match', [
    (dict(LOSSES['GroupSoftmaxLoss'], bin_split=(100, 10)),
     'strictly increasing'),
    (dict(LOSSES['GroupSoftmaxLoss'], bin_split=(0, 10)), 'positive'),
    (dict(LOSSES['EQLLoss'], freq_thr=-1e-3), 'freq_thr must be >= 0'),
])
def test_invalid_parameters_fail_when_the_head_is_built(loss, match):
    with pytest.raises(ValueError, match=match):
        _head(loss)
