"""Every config in configs/ loads and builds its model (no weights fetched)."""
import glob
import os
import os.path as osp
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import DefaultScope

from mmlongtail.apis import build_runner_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)

register_all_modules(init_default_scope=False)


def _no_pretrained(model_cfg):
    """Drop torchvision:// init so no download is attempted."""
    backbone = model_cfg.get('backbone', {})
    if backbone.get('init_cfg', {}) and backbone['init_cfg'].get(
            'type') == 'Pretrained':
        backbone['init_cfg'] = None


def test_configs_found():
    names = {osp.relpath(p, ROOT) for p in CONFIGS}
    assert 'configs/seesaw_mask_rcnn_lvis.py' in names
    assert 'configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py' in names
    assert 'configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py' in names
    assert 'configs/crt/crt_mask_rcnn_r50_fpn_ms_cas_1x_lvis.py' in names


# configs/ folders that are not a method's: shared bases, demo, benchmark
NOT_METHODS = ('_base_', 'demo', 'benchmark')
# the one method config kept flat in configs/: users run it by this name
FLAT = ('seesaw_mask_rcnn_lvis.py', )


def _method_folders():
    top = osp.join(ROOT, 'configs')
    return sorted(d for d in os.listdir(top)
                  if osp.isdir(osp.join(top, d)) and d not in NOT_METHODS)


def test_method_configs_live_in_method_folders():
    """MMDetection's layout: configs/<method>/*.py beside a README.md; only
    configs/seesaw_mask_rcnn_lvis.py stays flat."""
    top = osp.join(ROOT, 'configs')
    flat = sorted(f for f in os.listdir(top) if f.endswith('.py'))
    assert flat == list(FLAT), (
        f'method configs flat in configs/: {sorted(set(flat) - set(FLAT))}; '
        'move each into configs/<method>/ beside its README.md')
    folders = _method_folders()
    assert len(folders) >= 19
    for d in folders:
        assert glob.glob(osp.join(top, d, '*.py')), f'configs/{d}/ is empty'
        assert osp.isfile(osp.join(top, d, 'README.md')), (
            f'configs/{d}/ has no README.md')


@pytest.mark.parametrize('folder', _method_folders())
def test_method_readme_links_its_configs(folder):
    """Each folder's README names every config in it, and every relative
    link in it resolves."""
    d = osp.join(ROOT, 'configs', folder)
    with open(osp.join(d, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    links = re.findall(r'\]\(([^)#\s]+)[^)]*\)', text)
    local = [u for u in links if '://' not in u]
    missing = [u for u in local if not osp.exists(osp.join(d, u))]
    assert not missing, f'configs/{folder}/README.md: broken links {missing}'
    linked = {osp.normpath(osp.join(d, u)) for u in local}
    for cfg in glob.glob(osp.join(d, '*.py')):
        assert osp.normpath(cfg) in linked, (
            f'configs/{folder}/README.md does not link {osp.basename(cfg)}')


def _stage1_checkpoint(cfg):
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] in ('mmlongtail.ClassifierRetrainingHook',
                            'mmlongtail.LearnableWeightScalingHook'):
            return hook['checkpoint']
    return None


@pytest.mark.parametrize('path', [
    p for p in CONFIGS if not osp.relpath(p, ROOT).startswith(
        ('configs/benchmark/', 'configs/demo/'))
], ids=lambda p: osp.relpath(p, ROOT))
def test_stage2_default_checkpoint_is_where_stage1_writes(path):
    """A decoupled config's default stage-1 checkpoint is the last epoch
    that tools/train.py writes for an existing LVIS config (work_dirs/<config
    name>/epoch_<max_epochs>.pth), so stage 2 runs after stage 1 as is."""
    from mmengine.config import Config
    ckpt = _stage1_checkpoint(Config.fromfile(path))
    if ckpt is None:
        return
    m = re.fullmatch(r'work_dirs/(\w+)/epoch_(\d+)\.pth', ckpt)
    assert m, ckpt
    stage1 = [p for p in CONFIGS if osp.basename(p) == m.group(1) + '.py']
    assert len(stage1) == 1, f'{ckpt}: no single config {m.group(1)}.py'
    cfg1 = build_runner_config(stage1[0])
    assert cfg1.work_dir == f'./work_dirs/{m.group(1)}'
    assert cfg1.train_cfg.max_epochs == int(m.group(2))


def test_crt_config():
    """cRT: the baseline's softmax CE classifier, re-initialized and
    retrained alone on class-balanced sampling (q = 0)."""
    path = osp.join(ROOT, 'configs', 'crt',
                    'crt_mask_rcnn_r50_fpn_ms_cas_1x_lvis.py')
    cfg = build_runner_config(path, work_dir='/tmp/unused')
    base = build_runner_config(
        osp.join(ROOT, 'configs', 'lvis', 'mask_rcnn_r50_fpn_ms_1x_lvis.py'),
        work_dir='/tmp/unused')
    assert cfg.model == base.model  # same classifier and loss as stage 1
    assert cfg.model.roi_head.bbox_head.loss_cls.type == 'CrossEntropyLoss'
    assert not cfg.model.roi_head.bbox_head.loss_cls.use_sigmoid
    assert cfg.train_dataloader.sampler == dict(
        type='mmlongtail.ClassAwareSampler', q=0.0)
    assert cfg.train_cfg == base.train_cfg
    hook = cfg.custom_hooks[0]
    assert hook.type == 'mmlongtail.ClassifierRetrainingHook'
    assert hook.trainable == ('*bbox_head*.fc_cls', )
    assert hook.reinit_trainable
    assert cfg.custom_hooks[1].type == 'mmlongtail.LongTailConsistencyHook'


def _v3det_stand_in_stats(num_classes=13204):
    return dict(
        num_images=1000,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='rcf'[i % 3],
                 image_count=1 + i % 500, instance_count=1 + i % 900)
            for i in range(num_classes)
        ])


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_model(path, request):
    cfg = build_runner_config(path, work_dir='/tmp/unused')
    bench = osp.relpath(path, ROOT).startswith('configs/benchmark/')
    loss = cfg.model.get('roi_head', {}).get('bbox_head', {})
    loss = loss.get('loss_cls', {}) if isinstance(loss, dict) else {}
    if 'roi_head' not in cfg.model:  # one-stage and query heads
        loss = cfg.model.bbox_head.get('loss_cls', {})
    if bench and 'category_stats' in loss:
        # the benchmark's dataset is made by its command; a 40-class stand-in
        assert loss.category_stats == ('data/synthetic_lvis_bench/annotations/'
                                       'lvis_v1_train.json')
        loss.category_stats = request.getfixturevalue('synthetic40')['train']
    aug = cfg.model.get('roi_head', {}).get('feature_augment', {})
    if bench and 'category_stats' in aug:  # FASA etc.: the same stand-in
        aug.category_stats = request.getfixturevalue('synthetic40')['train']
    if osp.relpath(path, ROOT).startswith('configs/v3det/') and \
            'category_stats' in loss:
        # V3Det's statistics are extracted by the user (configs/v3det
        # README); a 13,204-class stand-in
        assert loss.category_stats == cfg.category_stats == (
            'data/V3Det/annotations/v3det_2023_v1_train_category_stats.json')
        loss.category_stats = _v3det_stand_in_stats()
    assert cfg.default_scope == 'mmdet'
    assert 'mmlongtail' in cfg.custom_imports['imports']
    _no_pretrained(cfg.model)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    assert cfg.val_evaluator.type == 'mmlongtail.LVISMetric'
    if 'roi_head' not in cfg.model and hasattr(model.bbox_head,
                                               'cls_branches'):
        _check_query_head(cfg, model, bench)
        return
    if 'roi_head' not in cfg.model:
        _check_one_stage(cfg, model, bench)
        return
    heads = model.roi_head.bbox_head
    heads = list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]
    for head in heads:
        # the classifier is sized by the loss's channel protocol
        cls_out = head.fc_cls.out_features if hasattr(
            head.fc_cls, 'out_features') else head.fc_cls.weight.shape[0]
        if getattr(head.loss_cls, 'custom_cls_channels', False):
            expected = head.loss_cls.get_cls_channels(head.num_classes)
        else:
            expected = head.num_classes + 1
        assert cls_out == expected
    # LVIS evaluation protocol everywhere: 300 detections, low threshold
    # (the synthetic benchmark's 40 classes keep 100, see baseline_ce.py)
    rcnn_test = cfg.model.test_cfg.rcnn
    rcnn_test = rcnn_test[-1] if isinstance(rcnn_test, list) else rcnn_test
    if rcnn_test.get('topk_per_class', -1) > 0:
        # the Fixed AP test-time mode (the demo): no per-image cap, 300 per
        # class, which the metric's standard protocol caps at 300 per image
        assert not bench
        assert rcnn_test.max_per_img == -1
        assert rcnn_test.topk_per_class == 300
        assert cfg.val_evaluator.get('max_dets', 300) == 300
        assert 'fixed' in cfg.val_evaluator.protocol
    else:
        assert rcnn_test.max_per_img == (100 if bench else 300)
    if bench:
        # the benchmark's second val pass: boxes only in the Fixed AP mode
        # with 100 per class, for AP^fixed and AP^pool
        assert cfg.val_evaluator.protocol == 'standard'
        assert cfg.val_evaluator.max_dets == 100
        assert cfg.fixed_ap_eval == dict(
            rcnn=dict(max_per_img=-1, topk_per_class=100),
            protocol=['standard', 'fixed', 'pooled'])
    assert rcnn_test.score_thr == pytest.approx(1e-4)
    assert cfg.val_evaluator.type == 'mmlongtail.LVISMetric'


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_saves_checkpoints_crash_safe(path):
    """Every config writes checkpoints atomically and with RNG state
    (README: Resume and failures); its own options still apply."""
    from mmengine.registry import HOOKS

    from mmlongtail.engine import CrashSafeCheckpointHook
    cfg = build_runner_config(path, work_dir='/tmp/unused')
    hook_cfg = cfg.default_hooks.checkpoint
    assert hook_cfg.type == 'mmlongtail.CrashSafeCheckpointHook'
    with DefaultScope.overwrite_default_scope('mmdet'):
        hook = HOOKS.build(hook_cfg)
    assert isinstance(hook, CrashSafeCheckpointHook) and hook.atomic
    assert hook.interval == hook_cfg.interval
    assert hook.max_keep_ckpts == hook_cfg.get('max_keep_ckpts', -1)
def _check_one_stage(cfg, model, bench):
    """A one-stage detector: C sigmoid outputs per anchor, mmlongtail's
    losses declared for a dense head, box AP only, the LVIS protocol."""
    from mmlongtail.engine.hooks.longtail_consistency_hook import \
        check_longtail_consistency
    head = model.bbox_head
    assert head.cls_out_channels == head.num_classes
    if type(head.loss_cls).__module__.startswith('mmlongtail'):
        assert head.loss_cls.dense_head
    check_longtail_consistency(model)  # the hook accepts it
    assert cfg.model.test_cfg.max_per_img == (100 if bench else 300)
    assert cfg.model.test_cfg.score_thr == pytest.approx(1e-4)
    assert list(cfg.val_evaluator.metric) == ['bbox']
    if bench:
        # no per-class top-k in mmdet's dense heads: no Fixed AP pass
        assert cfg.fixed_ap_eval is None
        assert list(cfg.val_evaluator.protocol) == ['standard']


def _check_query_head(cfg, model, bench):
    """A query-based detector (DINO, Deformable DETR): mmlongtail's query
    head, C sigmoid outputs per query in every classification branch, the
    class match cost asking the loss, box AP only, the LVIS protocol."""
    from mmlongtail.engine.hooks.longtail_consistency_hook import \
        check_longtail_consistency
    head = model.bbox_head
    assert cfg.model.bbox_head.type in ('mmlongtail.LongTailDINOHead',
                                        'mmlongtail.LongTailDeformableDETRHead')
    assert {b.out_features for b in head.cls_branches} == {head.num_classes}
    costs = [c.type for c in cfg.model.train_cfg.assigner.match_costs]
    assert 'mmlongtail.LossActivationCost' in costs
    assert 'FocalLossCost' not in costs
    check_longtail_consistency(model)  # the hook accepts it
    test_cfg = cfg.model.test_cfg
    if test_cfg.get('topk_per_class', -1) > 0:  # the Fixed AP mode
        assert not bench and test_cfg.max_per_img == -1
    else:
        assert test_cfg.max_per_img == (100 if bench else 300)
    assert list(cfg.val_evaluator.metric) == ['bbox']
    if bench:
        # the benchmark's second val pass: the query head's Fixed AP mode
        # with 100 per class, for AP^fixed and AP^pool
        assert cfg.fixed_ap_eval == dict(
            test_cfg=dict(max_per_img=-1, topk_per_class=100),
            protocol=['standard', 'fixed', 'pooled'])
        assert list(cfg.val_evaluator.protocol) == ['standard']
        assert cfg.val_evaluator.max_dets == 100


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_guards_against_non_finite_steps(path):
    """Every config checks each step for a non-finite loss or gradient and
    stops there (policy 'stop'), before any checkpoint can take it."""
    from mmengine.registry import HOOKS

    from mmlongtail.engine import NonFiniteGuardHook
    cfg = build_runner_config(path, work_dir='/tmp/unused')
    hook_cfg = cfg.default_hooks.nonfinite_guard
    assert hook_cfg.type == 'mmlongtail.NonFiniteGuardHook'
    with DefaultScope.overwrite_default_scope('mmdet'):
        hook = HOOKS.build(hook_cfg)
    assert isinstance(hook, NonFiniteGuardHook)
    assert hook.policy == 'stop' and hook.check_grads
