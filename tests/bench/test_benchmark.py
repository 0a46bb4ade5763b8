"""The long-tail benchmark's machinery: methods and their kinds, configs
that own their paths, one run's config (trained, stage 2, post-hoc), the
post-hoc choice, the cost model and schedule simulation, the tables with
the seed-range marks (hand-made records), the plots' frequency bands, and a
real end-to-end run of one method of each kind (trained, stage 2, post-hoc,
one-stage) for 1 epoch on a few images, with reuse and failure reporting."""
import dataclasses
import json
import logging
import os
import os.path as osp
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmlongtail.apis.calibration import resolve_param

from mmlongtail_bench.benchmark import (
    DATA_ROOT_VAR, INIT_CHECKPOINT_VAR, PRETRAINED_VAR, RECORDED_RATES,
    TABLE_KEYS, TRACKS, Method, PretrainSettings, RunSpec, beyond_seed_range,
    dataset_files, default_methods, estimate_seconds, fixed_ap_config,
    frequency_bands, heldout_file, measured_rates, pick_best, plan_seconds,
    results_markdown, run_benchmark, run_config, set_epochs, simulate,
    summarize, track_baselines)
from mmlongtail_bench.benchmark.cost import epoch_scale
from mmlongtail_bench.benchmark.run import base_dataset
from mmlongtail_bench.synthetic import (HELDOUT_ANN_FILE, read_frequency_rule,
                                        write_heldout_split)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(ROOT, 'configs', 'benchmark')


def _methods():
    return default_methods(BENCH)


def test_default_methods_are_those_of_the_issues():
    ms = _methods()
    assert [m.label for m in ms] == [
        'CE baseline', 'CE baseline (from scratch)', 'RFS',
        'Seesaw + Norm Mask', 'EQL', 'EQLv2', 'Focal',
        'Federated loss', 'ECM + Norm Mask', 'GOL (Gumbel + DropLoss)',
        'Balanced softmax', 'Class-balanced focal', 'Class-balanced sampling',
        'Progressively-balanced sampling', 'CAB', 'RFS + CAB', 'EQLv2 + CAB',
        'ECM + Norm Mask + CAB', 'Seesaw + PCB', 'GAP + CE', 'APA + GOL',
        'LDAM + DRW', 'FASA', 'Feature cloud (cosine classifier)',
        'SMOTE (RoI features)', 'BBN-style cumulative learning',
        'DCL (scheduler + triplet)',
        'LDS (box regression)', 'FDS (box regression)',
        'EQLv2, LR 0.02', 'EQLv2, LR 0.01', 'ECM + Norm Mask, LR 0.02',
        'ECM + Norm Mask, LR 0.01',
        'BAGS (decoupled)', 'cRT',
        'LWS', 'NorCal', 'Logit adjustment (post-hoc)', 'τ-norm', 'FRACAL',
        'NCM',
        'RetinaNet focal', 'RetinaNet EFL', 'RetinaNet EFL + RFS',
        'DINO focal', 'DINO federated', 'DINO EQLv2', 'DINO focal + RFS'
    ]
    assert all(osp.isfile(m.config) for m in ms)
    assert [(m.kind, m.init_from) for m in ms] == [('train', None)] * 33 + [
        ('stage2', 'baseline_ce')] * 3 + [('posthoc', 'baseline_ce')] * 5 + [
            ('train', None)] * 7
    assert [m.track for m in ms] == ['two_stage'] * 41 + [
        'one_stage'] * 3 + ['query'] * 4
    # each track's baseline is its first row
    assert track_baselines(ms) == dict(two_stage='baseline_ce',
                                       one_stage='retinanet_focal',
                                       query='dino_focal')
    # every post-hoc parameter names the one component of its config that
    # the calibration sweep varies, at a value among the candidates
    params = {m.key: m.param for m in ms if m.kind == 'posthoc'}
    assert params == dict(norcal='NorCal.gamma',
                          logit_adjustment='LogitAdjustment.tau',
                          tau_norm='TauNormalizationHook.tau',
                          fracal='FRACAL.fractal_l',
                          ncm='NCMClassifierHook.temperature')
    for m in ms:
        if m.kind == 'posthoc':
            target = resolve_param(Config.fromfile(m.config), m.param)
            assert target.name == m.param
            assert target.component[target.key] in m.values, m.key
            assert m.criterion == 'AP'


def test_methods_refuse_what_their_kind_cannot_do():
    with pytest.raises(ValueError, match='kind must be one of'):
        Method('x', 'X', 'x.py', kind='decoupled')
    with pytest.raises(ValueError, match='track must be one of'):
        Method('x', 'X', 'x.py', track='dense')
    assert TRACKS == ('two_stage', 'one_stage', 'query')
    assert Method('x', 'X', 'x.py', track='query').kind == 'train'
    with pytest.raises(ValueError, match="'stage2' method needs init_from"):
        Method('x', 'X', 'x.py', kind='stage2')
    with pytest.raises(ValueError, match="'train' method takes no init_"):
        Method('x', 'X', 'x.py', init_from='base')
    with pytest.raises(ValueError, match='needs param and values'):
        Method('x', 'X', 'x.py', init_from='base', kind='posthoc', param='a')
    with pytest.raises(ValueError, match='only post-hoc methods choose'):
        Method('x', 'X', 'x.py', param='a', values=(1, ))
    m = Method('x', 'X', 'x.py', init_from='b', kind='posthoc', param='a.b',
               values=[1, 0.5])
    assert m.values == (1.0, 0.5)


#: Methods of the third wave: ``key -> the config paths its one change may
#: touch``. The change is the method; everything else (schedule, data,
#: evaluation, the rest of the model) is the row it is built on's
#: (``Method.built_on``, else the track's baseline).
CHANGES = {
    # the pretrained start off
    'baseline_ce_scratch': ('model.backbone.init_cfg', ),
    'cab_ce': ('model.roi_head.bbox_head.reg_predictor_cfg', ),
    'cab_rfs': ('model.roi_head.bbox_head.reg_predictor_cfg', ),
    'cab_eqlv2': ('model.roi_head.bbox_head.reg_predictor_cfg', ),
    'cab_ecm': ('model.roi_head.bbox_head.reg_predictor_cfg', ),
    # PCB wraps the Seesaw row's loss
    'seesaw_pcb': ('model.roi_head.bbox_head.loss_cls', ),
    'gap_ce': ('model.roi_head.bbox_head.loss_cls', ),
    # APA's lambda and kappa, as the official scripts: no weight decay
    'apa_gol': ('model.roi_head.bbox_head.loss_cls',
                'optim_wrapper.paramwise_cfg'),
    # LDAM's scale is the cosine classifier's; DRW switches by a hook
    'ldam_drw': ('model.roi_head.bbox_head.loss_cls',
                 'model.roi_head.bbox_head.cls_predictor_cfg',
                 'custom_hooks'),
    # feature augmentation: the RoI head that generates (FASA adapts its
    # rates on the held-out split by a hook; the cloud needs a cosine
    # classifier)
    'fasa': ('model.roi_head.type', 'model.roi_head.feature_augment',
             'custom_hooks'),
    'feature_cloud': ('model.roi_head.type', 'model.roi_head.feature_augment',
                      'model.roi_head.bbox_head.cls_predictor_cfg'),
    'smote': ('model.roi_head.type', 'model.roi_head.feature_augment'),
    # BBN: two branches in the box head, fed by paired uniform / reversed
    # images (8 + 8 per batch), alpha(t) set by a hook
    'bbn': ('model.roi_head.type', 'model.roi_head.bbox_head.type',
            'train_dataloader.batch_size', 'train_dataloader.batch_sampler',
            'train_dataloader.sampler', 'train_dataloader.dataset',
            'custom_hooks'),
    # DCL: the progressive sampler's row plus the easy-anchor triplet loss
    # with its loss schedule, in the RoI head
    'dcl': ('model.roi_head.type', 'model.roi_head.triplet_loss',
            'model.roi_head.loss_schedule'),
    # LDS / FDS: the box head that smooths (FDS folds by a hook)
    'lds': ('model.roi_head.bbox_head.type', 'model.roi_head.bbox_head.lds'),
    'fds': ('model.roi_head.bbox_head.type', 'model.roi_head.bbox_head.fds',
            'custom_hooks'),
    # query track: on dino_focal, the classification loss (its query-head
    # mode; the class match cost asks it) or the sampler
    'dino_federated': ('model.bbox_head.loss_cls', ),
    'dino_eqlv2': ('model.bbox_head.loss_cls', ),
    'dino_rfs': ('train_dataloader.sampler', ),
    # the learning-rate sweep: the LR alone
    'eqlv2_lr0p02': ('optim_wrapper.optimizer.lr', ),
    'eqlv2_lr0p01': ('optim_wrapper.optimizer.lr', ),
    'ecm_lr0p02': ('optim_wrapper.optimizer.lr', ),
    'ecm_lr0p01': ('optim_wrapper.optimizer.lr', ),
}


#: The config keys mmengine's Runner reads.
SETTINGS = ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader',
            'train_cfg', 'val_cfg', 'test_cfg', 'optim_wrapper',
            'param_scheduler', 'default_hooks', 'custom_hooks',
            'val_evaluator', 'test_evaluator', 'fixed_ap_eval', 'env_cfg',
            'randomness', 'load_from', 'resume', 'heldout_ann_file')


def _flatten(obj, prefix=''):
    """``{dotted path: leaf}`` of a config's dicts (lists are leaves)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f'{prefix}.{k}' if prefix else str(k)))
        return out
    return {prefix: obj}


def _check_one_change(m, cfg):
    """``cfg`` equals its base row's config (``Method.built_on``, else its
    track's baseline) but under the paths its change may touch, and touches
    one of them at least."""
    base_key = m.built_on or track_baselines(_methods())[m.track]
    allowed = CHANGES[m.key]
    ref = Config.fromfile(osp.join(BENCH, f'{base_key}.py'))
    a, b = _flatten(cfg.to_dict()), _flatten(ref.to_dict())
    changed = {k for k in set(a) | set(b) if a.get(k, KeyError) != b.get(
        k, KeyError)}
    outside = {k for k in changed
               if not any(k == p or k.startswith(p + '.') for p in allowed)}
    # the config's own variables (num_classes = 40, ...) are not settings
    outside = {k for k in outside if k.split('.')[0] in SETTINGS}
    assert not outside, (m.key, sorted(outside))
    assert changed, m.key


def test_every_method_is_its_track_baseline_plus_one_change(monkeypatch):
    # with a pretrained start: every track starts from it, but the
    # from-scratch row
    monkeypatch.setenv(PRETRAINED_VAR, '/cache/pretrained.pth')
    base = Config.fromfile(osp.join(BENCH, 'baseline_ce.py'))
    retina = Config.fromfile(osp.join(BENCH, 'retinanet_focal.py'))
    dino = Config.fromfile(osp.join(BENCH, 'dino_focal.py'))
    # the one-stage and query baselines: the same but for the model (and
    # no masks) and the optimizer
    for key in ('train_cfg', 'param_scheduler', 'train_dataloader',
                'heldout_ann_file'):
        assert retina[key] == base[key], key
        assert dino[key] == base[key], key
    # (the query track from scratch: DINO's own optimizer, see its config)
    assert dino.model.backbone.init_cfg is None
    assert dino.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4,
                                                weight_decay=1e-4)
    # ... but for its learning rate (a quarter: see retinanet_focal.py)
    assert retina.optim_wrapper.optimizer.lr == 0.01
    assert base.optim_wrapper.optimizer.lr == 0.04
    assert retina.optim_wrapper == dict(
        base.optim_wrapper, optimizer=dict(base.optim_wrapper.optimizer,
                                           lr=0.01))
    # (standard protocol only: no per-class top-k in a dense head)
    assert retina.val_evaluator == dict(base.val_evaluator, metric=['bbox'],
                                        protocol=['standard'])
    assert retina.model.backbone == base.model.backbone
    assert base.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='/cache/pretrained.pth')
    for m in _methods()[1:]:
        cfg = Config.fromfile(m.config)
        if m.key in CHANGES:
            _check_one_change(m, cfg)
            continue
        if m.key in ('retinanet_focal', 'dino_focal'):
            continue  # the tracks' baselines, checked above
        assert m.track != 'query', m.key  # its rows: CHANGES
        ref = retina if m.track == 'one_stage' else base
        # same schedule, optimizer, data and evaluation
        for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                    'val_evaluator', 'fixed_ap_eval'):
            assert cfg[key] == ref[key], (m.key, key)
        if m.track == 'one_stage':
            continue
        assert cfg.model.backbone == base.model.backbone
        same_sampler = cfg.train_dataloader.sampler == \
            base.train_dataloader.sampler
        same_loss = cfg.model.roi_head.bbox_head.loss_cls == \
            base.model.roi_head.bbox_head.loss_cls
        # stage 2 reads the checkpoint the runner names
        reads = INIT_CHECKPOINT_VAR in open(m.config).read()
        assert reads == (m.kind == 'stage2'), m.key
        if m.kind == 'posthoc':
            # test time only: training is the baseline's
            assert same_sampler and same_loss, m.key
            continue
        assert cfg.model.test_cfg == base.model.test_cfg
        # exactly one of sampler / classification loss changes (LWS: the
        # sampler, and the scales it trains)
        assert same_sampler != same_loss, m.key
    # val in two passes: boxes and masks, standard protocol, 100 per image
    # (the first edition's); then boxes only in the Fixed-AP test-time mode
    # (each class's top 100 per image, uncapped) for AP^fixed / AP^pool
    assert base.val_evaluator.protocol == 'standard'
    assert base.val_evaluator.max_dets == 100
    assert base.model.test_cfg.rcnn.max_per_img == 100
    assert base.model.test_cfg.rcnn.topk_per_class == -1
    fixed = fixed_ap_config(base, '/tmp/unused/fixed_ap')
    assert fixed.model.test_cfg.rcnn.max_per_img == -1
    assert fixed.model.test_cfg.rcnn.topk_per_class == 100
    assert fixed.model.test_cfg.rcnn.score_thr == \
        base.model.test_cfg.rcnn.score_thr
    assert fixed.model.roi_head.mask_head is None
    assert fixed.test_evaluator.metric == ['bbox']
    assert fixed.test_evaluator.protocol == ['standard', 'fixed', 'pooled']
    assert fixed.test_evaluator.outfile_prefix == '/tmp/unused/fixed_ap/lvis'
    assert retina.val_evaluator.metric == ['bbox']
    assert retina.model.test_cfg.max_per_img == 100
    assert retina.fixed_ap_eval is None
    # the query track: the same two passes, boxes only; the first keeps
    # each image's best 100 across queries x classes, the second is the
    # query head's Fixed-AP mode (each class's best 100 queries, uncapped),
    # put in the head's own test_cfg
    assert dino.val_evaluator == dict(base.val_evaluator, metric=['bbox'],
                                      protocol=['standard'])
    assert dino.model.test_cfg == dict(max_per_img=100)
    fixed = fixed_ap_config(dino, '/tmp/unused/fixed_ap')
    assert fixed.model.test_cfg == dict(max_per_img=-1, topk_per_class=100)
    assert fixed.model.bbox_head == dino.model.bbox_head
    assert fixed.test_evaluator == dict(
        dino.val_evaluator, protocol=['standard', 'fixed', 'pooled'],
        outfile_prefix='/tmp/unused/fixed_ap/lvis')
    assert dino.model.test_cfg == dict(max_per_img=100)  # not changed


def test_fixed_ap_config_refuses_a_mode_the_model_cannot_take():
    """``fixed_ap_eval`` names where its mode goes: ``rcnn`` (an R-CNN
    test config) or ``test_cfg`` (a query head's own); a head that would
    ignore ``topk_per_class`` (RetinaNet's) is refused, not evaluated in
    the capped mode again."""
    base = Config.fromfile(osp.join(BENCH, 'baseline_ce.py'))
    retina = Config.fromfile(osp.join(BENCH, 'retinanet_focal.py'))
    dino = Config.fromfile(osp.join(BENCH, 'dino_focal.py'))
    query_mode = dict(dino.fixed_ap_eval)
    retina.fixed_ap_eval = query_mode
    with pytest.raises(ValueError, match="query head .*LongTailDINOHead.*"
                       "bbox_head is 'RetinaHead'"):
        fixed_ap_config(retina, '/tmp/unused')
    dino.fixed_ap_eval = dict(base.fixed_ap_eval)
    with pytest.raises(ValueError, match='no test_cfg.rcnn'):
        fixed_ap_config(dino, '/tmp/unused')
    dino.fixed_ap_eval = dict(query_mode, rcnn=dict(max_per_img=-1))
    with pytest.raises(ValueError, match='needs protocol and one of rcnn'):
        fixed_ap_config(dino, '/tmp/unused')
    base.fixed_ap_eval = query_mode  # an R-CNN: its test_cfg holds rcnn
    with pytest.raises(ValueError, match='test config of a query head'):
        fixed_ap_config(base, '/tmp/unused')


def test_set_epochs_keeps_the_last_fifth_at_low_lr():
    cfg = Config.fromfile(osp.join(BENCH, 'baseline_ce.py'))
    assert cfg.train_cfg.max_epochs == 5
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0]
    assert step.milestones == [4]
    for epochs, milestones in ((5, [4]), (10, [8]), (2, [1]), (1, [])):
        set_epochs(cfg, epochs)
        step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0]
        assert cfg.train_cfg.max_epochs == epochs
        assert cfg.train_cfg.val_interval == epochs
        assert step.milestones == milestones and step.end == epochs
        assert cfg.default_hooks.checkpoint.interval == epochs
    with pytest.raises(ValueError, match='epochs must be >= 1'):
        set_epochs(cfg, 0)
    # a progressively balanced sampler ends with the schedule
    cfg = Config.fromfile(osp.join(BENCH, 'progressive.py'))
    assert cfg.train_dataloader.sampler.progressive.end == 5
    set_epochs(cfg, 2)
    assert cfg.train_dataloader.sampler.progressive == dict(end=2,
                                                            start_q=1.0)


def _text(cfg):
    return json.dumps(cfg.to_dict(), sort_keys=True, default=repr)


@pytest.fixture
def no_bench_env(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VAR, raising=False)
    monkeypatch.delenv(INIT_CHECKPOINT_VAR, raising=False)
    monkeypatch.delenv(PRETRAINED_VAR, raising=False)
    return monkeypatch


def test_configs_own_their_paths(no_bench_env):
    """Every path of every method follows the one variable the configs
    read; nothing else moves (same config otherwise)."""
    default = {m.key: Config.fromfile(m.config) for m in _methods()}
    no_bench_env.setenv(DATA_ROOT_VAR, '/data/x')  # no trailing slash
    for m in _methods():
        cfg = Config.fromfile(m.config)
        assert dataset_files(cfg) == ('/data/x/annotations/lvis_v1_train.json',
                                      '/data/x/annotations/lvis_v1_val.json')
        # the held-out split where the generator writes it
        assert heldout_file(cfg) == '/data/x/' + HELDOUT_ANN_FILE
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            assert base_dataset(cfg[loader].dataset).data_root == '/data/x/'
        assert cfg.test_evaluator.ann_file == cfg.val_evaluator.ann_file
        head = cfg.model.get('roi_head', cfg.model).get('bbox_head')
        if 'category_stats' in head.loss_cls:
            assert head.loss_cls.category_stats == dataset_files(cfg)[0]
        # the same config once the default root is put back
        moved = _text(cfg).replace('/data/x/', 'data/synthetic_lvis_bench/')
        assert moved == _text(default[m.key]), m.key
    with pytest.raises(ValueError, match='names no held-out split'):
        heldout_file(Config(dict(a=1)))


def _datasets(obj):
    """Every dict of a config that has both ``data_root`` and
    ``ann_file`` (datasets, also those inside hooks)."""
    if isinstance(obj, dict):
        if 'data_root' in obj and 'ann_file' in obj:
            yield obj
        for v in obj.values():
            yield from _datasets(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _datasets(v)


def test_dataset_files_resolve_under_a_relative_root(no_bench_env):
    """With a relative data root (``--data-root data/...``), every dataset
    of every method (hook datasets included: FASA's held-out loader) joins
    its ``ann_file`` under the root once; an ``ann_file`` that already
    carries the root would be joined twice (the path FASA's first benchmark
    run failed on)."""
    no_bench_env.setenv(DATA_ROOT_VAR, 'rel/x')
    for m in _methods():
        cfg = Config.fromfile(m.config)
        found = list(_datasets(cfg.to_dict()))
        assert len(found) >= 3, m.key
        for ds in found:
            path = osp.join(ds['data_root'], ds['ann_file'])
            assert path.startswith('rel/x/annotations/'), (m.key, path)


def _spec(key, tmp_path, **kw):
    cfg = Config.fromfile(osp.join(BENCH, f'{key}.py'))
    train, val = dataset_files(cfg)
    return RunSpec(key=key, seed=3, config=osp.join(BENCH, f'{key}.py'),
                   work_dir=str(tmp_path / key), train_ann_file=train,
                   val_ann_file=val, **kw)


def test_run_config_applies_the_run_settings(tmp_path, no_bench_env):
    cfg = run_config(_spec('eql', tmp_path, epochs=2, train_images=7,
                           val_images=3))
    assert cfg.randomness.seed == 3
    assert cfg.train_dataloader.dataset.indices == 7
    assert cfg.val_dataloader.dataset.indices == 3
    assert cfg.train_cfg.max_epochs == 2
    assert cfg.work_dir == str(tmp_path / 'eql')
    assert cfg.val_evaluator.outfile_prefix == osp.join(
        str(tmp_path / 'eql'), 'lvis')

    # the stage-1 checkpoint reaches the config through its variable
    spec = _spec('bags_decoupled', tmp_path, init_checkpoint='/ckpt/b.pth')
    with pytest.raises(ValueError, match='does not read '
                       r'\$LONGTAIL_BENCH_INIT_CHECKPOINT'):
        run_config(spec)  # the runner did not set it
    no_bench_env.setenv(INIT_CHECKPOINT_VAR, '/ckpt/b.pth')
    hooks = [h for h in run_config(spec).custom_hooks
             if h.type == 'mmlongtail.ClassifierRetrainingHook']
    assert len(hooks) == 1 and hooks[0].checkpoint == '/ckpt/b.pth'
    # a config that starts from nothing refuses a checkpoint
    with pytest.raises(ValueError, match='rfs.py should start from'):
        run_config(_spec('rfs', tmp_path, init_checkpoint='/ckpt/b.pth'))
    # the dataset is the one the run was planned with
    no_bench_env.setenv(DATA_ROOT_VAR, '/elsewhere/')
    with pytest.raises(ValueError, match='resolves to the dataset files'):
        run_config(spec)


def test_posthoc_run_config_loads_the_checkpoint_and_checks_its_param(
        tmp_path, no_bench_env):
    cfg = Config.fromfile(osp.join(BENCH, 'norcal.py'))
    train, val = dataset_files(cfg)
    spec = RunSpec(key='norcal', seed=1, config=osp.join(BENCH, 'norcal.py'),
                   work_dir=str(tmp_path / 'p'), train_ann_file=train,
                   val_ann_file=val, init_checkpoint='/ckpt/base.pth',
                   kind='posthoc', param='NorCal.gamma', values=[1.0, 0.5],
                   criterion='AP', heldout_ann_file=heldout_file(cfg),
                   val_images=3)
    cfg = run_config(spec)
    assert cfg.load_from == '/ckpt/base.pth'
    # the test loop evaluates val, writing the per-class file
    assert cfg.test_dataloader == cfg.val_dataloader
    assert cfg.test_dataloader.dataset.indices == 3
    assert cfg.test_evaluator.outfile_prefix == osp.join(spec.work_dir,
                                                         'lvis')
    # a parameter whose component the config does not use is refused
    # (by the sweep's resolver), not added
    spec.param = 'TauNormalizationHook.tau'
    with pytest.raises(ValueError, match='the config has no '
                       'TauNormalizationHook.tau to vary'):
        run_config(spec)
    spec.param = 'model.test_cfg.rcnn.score_calibration.0.gamma'
    with pytest.raises(ValueError, match='unknown calibration parameter'):
        run_config(spec)
    spec.param, spec.init_checkpoint = 'NorCal.gamma', None
    with pytest.raises(ValueError, match='names no checkpoint'):
        run_config(spec)


def test_frequency_bands_follow_the_rule():
    # the synthetic set's rule (10, 30): the bands the README plot shows
    np.testing.assert_array_equal(
        frequency_bands(10, 30),
        [0, 2.5, 5.5, 10.5, 20.5, 30.5, 60.5, 120.5, np.inf])
    # LVIS's rule (10, 100)
    np.testing.assert_array_equal(
        frequency_bands(10, 100),
        [0, 2.5, 5.5, 10.5, 55.5, 100.5, 200.5, 400.5, np.inf])
    # a tiny rule: no empty band, edges increase
    np.testing.assert_array_equal(frequency_bands(1, 2),
                                  [0, 1.5, 2.5, 4.5, 8.5, np.inf])
    with pytest.raises(ValueError, match='rare_max < common_max'):
        frequency_bands(10, 10)


def test_frequency_rule_is_read_from_the_dataset(synthetic40, tmp_path):
    # 120 training images: common_max = max(2 * 10, 120 // 20) = 20 (the
    # benchmark's 600 images give 30)
    cfg = synthetic40['cfg']
    assert read_frequency_rule(synthetic40['train']) == (
        cfg.rare_max, cfg.resolved_common_max()) == (10, 20)
    with open(synthetic40['train']) as f:
        data = json.load(f)
    del data['info']['frequency_rule']
    bad = tmp_path / 'no_rule.json'
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='records no frequency rule'):
        read_frequency_rule(str(bad))


def _record(key, seed, values, **kw):
    metrics = {f'lvis/{k}': v for k, v in zip(TABLE_KEYS, values)
               if v is not None}
    return dict(spec=dict(key=key, seed=seed), metrics=metrics, **kw)


def test_seed_range_marks():
    assert beyond_seed_range([0.30, 0.32], [0.20, 0.29]) == '▲'
    assert beyond_seed_range([0.10, 0.12], [0.20, 0.29]) == '▼'
    assert beyond_seed_range([0.25, 0.32], [0.20, 0.29]) == ''  # overlap
    assert beyond_seed_range([0.30], [0.20, 0.29]) is None  # no range
    assert beyond_seed_range([0.30, 0.31], [0.2]) is None


def test_summary_tables_marks_and_best_methods():
    ms = [Method('base', 'CE', 'x'), Method('a', 'A', 'x'),
          Method('b', 'B', 'x', init_from='base', kind='stage2'),
          Method('p', 'P', 'x', init_from='base', kind='posthoc',
                 param='NorCal.gamma', values=(0.5, 1.0)),
          Method('r', 'Retina', 'x', track='one_stage'),
          Method('r2', 'Retina 2', 'x', track='one_stage'),
          Method('d', 'DINO', 'x', track='query'),
          Method('d2', 'DINO 2', 'x', track='query')]
    box = [None] * 4  # no masks
    recs = [
        _record('base', 0, [0.10] * 10),
        _record('base', 1, [0.14] * 10),
        # A: above the baseline's range on bbox AP only
        _record('a', 0, [0.20, 0.1, 0.2, 0.3, 0.2, 0.1, 0.2, 0.30, 0.2, 0.3]),
        _record('a', 1, [0.22, 0.1, 0.2, 0.3, 0.2, 0.1, 0.2, 0.12, 0.2, 0.3]),
        _record('b', 0, [0.05] * 10),
        _record('p', 0, [0.12] * 10, selection=dict(chosen=0.5)),
        _record('p', 1, [0.16] * 10, selection=dict(chosen=1.0)),
        _record('r', 0, [0.3] * 6 + box),
        _record('r', 1, [0.4] * 6 + box),
        _record('r2', 0, [0.5] * 6 + box),
        _record('r2', 1, [0.6] * 6 + box),
        # the query track: boxes with AP^fixed / AP^pool, no masks
        _record('d', 0, [0.2] * 6 + box),
        _record('d', 1, [0.3] * 6 + box),
        _record('d2', 0, [0.1] * 6 + box),
        _record('d2', 1, [0.25] * 6 + box),
    ]
    summary = summarize(recs, ms)
    assert list(summary) == ['base', 'a', 'b', 'p', 'r', 'r2', 'd', 'd2']
    base = summary['base']
    assert base['seeds'] == [0, 1] and base['vs_baseline'] == {}
    assert base['mean']['segm_APr'] == pytest.approx(0.12)
    assert base['spread']['segm_APr'] == pytest.approx(0.02)
    a = summary['a']
    assert a['mean']['bbox_AP'] == pytest.approx(0.21)
    assert a['vs_baseline']['bbox_AP'] == '▲'
    assert a['vs_baseline']['segm_APr'] == ''  # 0.12-0.30 overlaps 0.10-0.14
    assert a['vs_baseline']['bbox_APfixed'] == '▲'
    assert summary['b']['spread']['bbox_AP'] is None
    assert summary['b']['vs_baseline']['bbox_AP'] is None  # one seed
    assert summary['p']['chosen'] == [0.5, 1.0]
    assert summary['p']['vs_baseline']['bbox_AP'] == ''
    # the one-stage track compares with its own baseline
    assert summary['r2']['vs_baseline']['bbox_AP'] == '▲'
    assert summary['r2']['mean']['segm_AP'] is None
    assert summary['r2']['vs_baseline']['segm_AP'] is None
    # the query track compares with its own baseline (ranges overlap)
    assert summary['d2']['vs_baseline']['bbox_AP'] == ''
    assert summary['d2']['vs_baseline']['segm_AP'] is None
    assert pick_best(summary, ms, 'bbox_AP') == dict(
        two_stage='a', one_stage='r2', query='d2')
    # segm AP_r: A's mean 0.21 beats P's 0.14; no one-stage method has masks
    assert pick_best(summary, ms, 'segm_APr') == dict(two_stage='a')
    with pytest.raises(ValueError, match='best_by must be one of'):
        pick_best(summary, ms, 'segm_AP50')
    md = results_markdown(summary)
    two, one = md.split('\n\n**One-stage track')
    one, query = one.split('\n\n**Query-based track')
    assert query.splitlines()[0] == ' (small DINO, boxes only)**'
    assert query.splitlines()[4:] == [
        '| DINO | trained | 0,1 | ' + ' | '.join(['25.0 ± 5.0'] * 6) +
        ' | - | - | - | - |',
        '| DINO 2 | trained | 0,1 | ' + ' | '.join(['17.5 ± 7.5'] * 6) +
        ' | - | - | - | - |']
    lines = two.splitlines()
    assert lines[0] == '**Two-stage track (light Mask R-CNN)**'
    assert lines[2] == ('| method | how | seeds | bbox AP | AP_r | AP_c | '
                        'AP_f | AP^fixed | AP^pool | segm AP | AP_r | AP_c '
                        '| AP_f |')
    assert lines[4] == ('| CE | trained | 0,1 | ' +
                        ' | '.join(['12.0 ± 2.0'] * 10) + ' |')
    assert lines[5].startswith('| A | trained | 0,1 | 21.0 ± 1.0▲ | '
                               '10.0 ± 0.0 | 20.0 ± 0.0▲ |')
    assert lines[6].startswith('| B | stage 2 on CE | 0 | 5.0 | ')
    assert lines[7].startswith('| P | post-hoc on CE, gamma = 0.5, 1 | 0,1 '
                               '| 14.0 ± 2.0 |')
    assert one.splitlines()[5] == (
        '| Retina 2 | trained | 0,1 | ' + ' | '.join(['55.0 ± 5.0▲'] * 6) +
        ' | - | - | - | - |')


def _timed(key, seed, kind='train', track='two_stage', **kw):
    rec = _record(key, seed, [0.1] * 10)
    rec['spec'].update(kind=kind, track=track,
                       config=osp.join(BENCH, 'baseline_ce.py'))
    rec.update(kw)
    return rec


def test_cost_model_from_measured_and_recorded_rates():
    rates, source = measured_rates([])
    assert source.startswith('recorded estimate')
    assert rates == RECORDED_RATES
    recs = [
        _timed('base', 0, seconds=130, train_seconds=100, eval_seconds=20,
               epochs=2),
        _timed('base', 1, seconds=150, train_seconds=120, eval_seconds=24,
               epochs=2),
        _timed('p', 0, kind='posthoc', seconds=40, eval_seconds=20,
               heldout_eval_seconds=5),
        dict(_record('old', 0, [0.1] * 10), seconds=500),  # no phase times
    ]
    recs[2]['spec']['values'] = [0.5, 1.0, 1.5]
    rates, source = measured_rates(recs)
    assert source == 'from 3 measured run(s)'
    # overhead: 130 - 100 - 20 and 150 - 120 - 24
    assert rates['train', 'two_stage'] == dict(epoch=55.0, eval=22.0,
                                               overhead=8.0)
    assert rates['posthoc', 'two_stage'] == dict(heldout_eval=5.0,
                                                 eval=20.0, overhead=5.0)
    assert rates['train', 'one_stage'] == RECORDED_RATES['train',
                                                         'one_stage']
    assert rates['train', 'query'] == RECORDED_RATES['train', 'query']
    base = Method('baseline_ce', 'CE', osp.join(BENCH, 'baseline_ce.py'))
    post = Method('p', 'P', 'x.py', init_from='baseline_ce', kind='posthoc',
                  param='a', values=(1, 2, 3, 4))
    # the config's 5 epochs, or the override
    assert estimate_seconds(base, None, rates) == 5 * 55 + 22 + 8
    assert estimate_seconds(base, 1, rates) == 55 + 22 + 8
    assert estimate_seconds(post, None, rates) == 4 * 5 + 20 + 5
    # two seeds on two workers: both baselines, then both post-hoc runs
    assert plan_seconds([base, post], (0, 1), 2, rates, epochs=1) == \
        85 + 45


def test_epoch_scale_is_the_samplers_epoch_over_the_dataset(bench_data):
    assert epoch_scale(osp.join(BENCH, 'baseline_ce.py')) == 1.0
    rfs = epoch_scale(osp.join(BENCH, 'rfs.py'))
    with open(bench_data['train']) as f:
        images = len(json.load(f)['images'])
    # repeat-factor sampling repeats the images of rare classes
    assert 1.05 < rfs < 2.0 and (rfs * images) % 1 == pytest.approx(0)
    assert epoch_scale(osp.join(BENCH, 'class_aware.py')) == 1.0


def test_simulate_follows_the_schedule():
    jobs = [('a', 10, None), ('b', 10, None), ('c', 5, 'a'), ('d', 1, None)]
    assert simulate(jobs, 2) == 15  # a, b; then c, d
    assert simulate(jobs, 1) == 26
    # c waits for a although a worker is free: d runs meanwhile
    assert simulate([('a', 10, None), ('c', 5, 'a'), ('d', 1, None)],
                    2) == 15
    # a run already going holds a worker; its dependents wait for it
    assert simulate([('c', 5, 'x'), ('d', 4, None)], 2, dict(x=20)) == 25
    assert simulate([], 2, dict(x=3)) == 3
    with pytest.raises(ValueError, match='3 runs going on 2 workers'):
        simulate([], 2, dict(x=1, y=1, z=1))


def test_schedule_settles_reusable_runs_without_waiting_for_a_worker(
        monkeypatch):
    """With the one worker busy on a run that cannot be reused, the
    reusable runs (and a run built on a reused one) finish at once, so the
    count and the time left see them; the next new run waits for the
    worker; each run's reuse is checked once."""
    from mmlongtail_bench.benchmark import runner

    by_key = {m.key: m for m in _methods()}
    methods = [by_key[k] for k in ('baseline_ce_scratch', 'baseline_ce',
                                   'crt', 'eqlv2')]
    reusable = {'baseline_ce_seed0', 'crt_seed0'}
    checked, launched = [], []

    def fake_reusable(spec):
        checked.append(spec.name)
        if spec.name in reusable:
            return dict(metrics={}, seconds=60.0,
                        checkpoint=spec.name), 'same identity'
        return None, 'not run yet'

    class _Proc:

        def poll(self):
            return None

    def fake_launch(job):
        launched.append(job.name)
        job.proc = _Proc()

    def make_spec(method, seed, init):
        return SimpleNamespace(name=f'{method.key}_seed{seed}', init=init,
                               work_dir=f'/x/{method.key}_seed{seed}')

    monkeypatch.setattr(runner, '_reusable', fake_reusable)
    monkeypatch.setattr(runner._Job, 'launch', fake_launch)
    # (no dataset here: an epoch's length is not what this test is about)
    monkeypatch.setattr(runner, 'estimate_seconds', lambda m, e, r: 60.0)
    sched = runner._Schedule(methods, [0], 1, make_spec, reuse=True,
                             epochs=1)
    sched._start_ready()
    assert launched == ['baseline_ce_scratch_seed0']
    assert sched.reused == ['baseline_ce_seed0', 'crt_seed0']
    assert sched.done['crt_seed0'].spec.init == 'baseline_ce_seed0'
    assert [j.name for j in sched.pending] == ['eqlv2_seed0']
    sched._start_ready()  # the worker is still busy: nothing rechecked
    assert checked == ['baseline_ce_scratch_seed0', 'baseline_ce_seed0',
                       'crt_seed0', 'eqlv2_seed0']
    assert launched == ['baseline_ce_scratch_seed0']


@pytest.fixture(scope='module')
def bench_root(synthetic40, tmp_path_factory):
    """A copy of synthetic40 with its held-out split (which rewrites the
    training file with the split's record: the session's synthetic40 stays
    as other tests expect it)."""
    root = str(tmp_path_factory.mktemp('bench') / 'data')
    shutil.copytree(synthetic40['root'], root)
    write_heldout_split(root, show_progress=False)
    ann = osp.join(root, 'annotations')
    return dict(synthetic40, root=root,
                train=osp.join(ann, 'lvis_v1_train.json'),
                val=osp.join(ann, 'lvis_v1_val.json'))


@pytest.fixture
def bench_data(bench_root, no_bench_env):
    """``bench_root`` as the benchmark's root."""
    no_bench_env.setenv(DATA_ROOT_VAR, bench_root['root'])
    return bench_root


class _Messages(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _few_per_class(method, out_dir, k=5):
    """``method`` with each class's top ``k`` per image at test time, in both
    val passes (the benchmark keeps 100): a model trained for one iteration
    scores every class near 1/41, far above score_thr, so the Fixed-AP pass
    would keep 40 x 100 boxes per image and the evaluation would dominate
    the test's time."""
    path = osp.join(out_dir, f'{method.key}_top{k}.py')
    with open(path, 'w') as f:
        f.write(f'_base_ = {osp.abspath(method.config)!r}\n'
                f'model = dict(test_cfg=dict(rcnn=dict(topk_per_class={k})))'
                f'\nfixed_ap_eval = dict(rcnn=dict(topk_per_class={k}))\n')
    return dataclasses.replace(method, config=path)


def test_run_benchmark_end_to_end(bench_data, tmp_path):
    """One method of each kind, 1 epoch on 8 images, val on 4: trained
    (CE), stage 2 (cRT from it), post-hoc (NorCal on it, its gamma chosen
    on the held-out split by the calibration sweep) and one-stage
    (RetinaNet focal)."""
    out_dir = str(tmp_path / 'bench')
    by_key = {m.key: m for m in _methods()}
    ms = [by_key['baseline_ce'], by_key['crt'],
          dataclasses.replace(by_key['norcal'], values=(0.4, 1.0)),
          by_key['retinanet_focal']]
    ms[:3] = [_few_per_class(m, str(tmp_path)) for m in ms[:3]]
    # the tiny pretrained start of test_bench_identity.py
    kw = dict(out_dir=out_dir, methods=ms, seeds=(0, ), epochs=1,
              train_images=8, val_images=4, pretrain=PretrainSettings(
                  crops_per_class=2, epochs=1, crop_size=28, batch_size=41,
                  threads=1, eval_crops_per_class=1))
    handler = _Messages()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        out = run_benchmark(**kw)
    finally:
        logger.removeHandler(handler)
    logged = handler.messages
    with open(out['files']['json']) as f:
        res = json.load(f)
    runs = {r['spec']['key']: r for r in res['runs']}
    assert set(runs) == {'baseline_ce', 'crt', 'norcal',
                         'retinanet_focal'}
    base, crt = runs['baseline_ce'], runs['crt']
    post, retina = runs['norcal'], runs['retinanet_focal']
    for r in runs.values():
        assert r['spec']['seed'] == 0
        assert r['spec']['train_ann_file'] == bench_data['train']
        assert r['seconds'] > 0 and r['eval_seconds'] > 0
    # every number of the table, AP^fixed and AP^pool included; no masks
    # in the one-stage track
    for r in (base, crt, post):
        assert set(f'lvis/{k}' for k in TABLE_KEYS) <= set(r['metrics'])
    assert not any('segm' in k or 'fixed' in k or 'pool' in k
                   for k in retina['metrics'])
    assert base['epochs'] == 1 and base['train_iters'] == 1  # 8 images
    # val's two passes (boxes and masks capped at 100 per image; boxes in
    # the Fixed-AP mode) give the same standard box AP
    for r in (base, crt, post):
        assert r['fixed_ap_pass_bbox_AP'] == r['metrics']['lvis/bbox_AP']
        assert 'lvis/bbox_APpool_r' in r['metrics']
    # stage 2: only the classifier changed, the rest is the baseline's
    assert crt['spec']['init_checkpoint'] == base['checkpoint']
    # every run of the pretrained start names it; the results too
    assert {r['pretrained']['sha256'] for r in runs.values()} == {
        res['pretrained']['sha256']}
    sb = torch.load(base['checkpoint'], map_location='cpu')['state_dict']
    sc = torch.load(crt['checkpoint'], map_location='cpu')['state_dict']
    cls = 'roi_head.bbox_head.fc_cls.weight'
    assert not torch.equal(sb[cls], sc[cls])
    for k in ('backbone.conv1.weight', 'roi_head.bbox_head.fc_reg.weight',
              'roi_head.mask_head.conv_logits.weight'):
        assert torch.equal(sb[k], sc[k]), k
    # post-hoc: the baseline's checkpoint, no training; the value chosen
    # on the held-out split (every candidate evaluated there), then val
    assert post['checkpoint'] == base['checkpoint']
    assert not osp.exists(osp.join(out_dir, 'norcal_seed0',
                                   'epoch_1.pth'))
    sel = post['selection']
    assert sel['param'] == 'NorCal.gamma' and sel['values'] == [0.4, 1.0]
    assert sel['criterion'] == 'bbox_AP'
    scores = [h['lvis/bbox_AP'] for h in sel['heldout']]
    assert len(scores) == 2 and sel['chosen'] == sel['values'][
        scores.index(max(scores))]  # ties: the first value
    # the held-out file, standard protocol only; val never seen there
    assert post['spec']['heldout_ann_file'] == osp.join(
        bench_data['root'], HELDOUT_ANN_FILE)
    assert sel['heldout_split']['ann_file'] == osp.abspath(
        post['spec']['heldout_ann_file'])
    assert not any('fixed' in k or 'pool' in k for k in sel['heldout'][0])
    assert osp.isfile(sel['files']['markdown'])
    with open(post['per_class']) as f:  # the val evaluation's file
        assert json.load(f)['ann_file'] == bench_data['val']
    assert 'lvis/bbox_APfixed' in post['metrics']
    # progress with the time left, from the runs measured so far
    assert any(m.startswith('[4/4] RetinaNet focal') or m.startswith(
        '[4/4] cRT') or m.startswith('[4/4] NorCal') for m in logged)
    assert all(' left (from ' in m for m in logged if m.startswith('[2/4]'))
    with open(out['files']['markdown']) as f:
        md = f.read()
    assert '| CE baseline | trained | 0 |' in md
    assert '| cRT | stage 2 on CE baseline | 0 |' in md
    assert ('| NorCal | post-hoc on CE baseline, gamma '
            f'= {sel["chosen"]:g} | 0 |') in md
    # one-stage: no AP^fixed / AP^pool (standard protocol only), no masks
    assert '**One-stage track' in md and md.rstrip().count(
        '| - | - | - | - | - | - |') == 1
    for name in ('plot', 'summary_plot'):
        with open(out['files'][name], 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        assert osp.getsize(out['files'][name]) > 20_000

    # a second call reuses the finished runs instead of running them again
    stamps = {k: os.stat(osp.join(out_dir, f'{k}_seed0',
                                  'metrics.json')).st_mtime_ns
              for k in runs}
    again = run_benchmark(**kw)
    assert again['table'] == out['table']
    for k, t in stamps.items():
        assert os.stat(osp.join(out_dir, f'{k}_seed0',
                                'metrics.json')).st_mtime_ns == t


def test_pretrained_start_is_made_for_the_methods_that_read_it(
        no_bench_env):
    """The benchmark pretrains the backbone of the first method that starts
    from it; a part none of whose methods does (the query track, from
    scratch) gets the full benchmark's start (the two-stage baseline's
    backbone), not one pretrained for its own backbone, so its runs record
    the same start as in a full call."""
    from mmlongtail_bench.benchmark.runner import pretrain_source

    by_key = {m.key: m for m in _methods()}
    dino, retina = by_key['dino_focal'], by_key['retinanet_focal']
    assert pretrain_source([dino, retina]) == retina.config
    assert pretrain_source([by_key['baseline_ce_scratch'], dino]) == \
        default_methods()[0].config == 'configs/benchmark/baseline_ce.py'


def _detections_per_image(path):
    with open(path) as f:
        dets = json.load(f)
    counts = {}
    for d in dets:
        counts[d['image_id']] = counts.get(d['image_id'], 0) + 1
    return sorted(set(counts.values()))


def test_query_track_end_to_end(bench_data, tmp_path):
    """The query track's machinery on a tiny setting: the small DINO
    (dino_focal, from scratch) trained for 2 iterations (16 images), val on
    4 images in both passes: the first keeps each image's best 100 across
    queries x classes, the second is the query head's Fixed-AP mode (each
    class's best 100 queries, uncapped: all 100 x 40) for AP^fixed and
    AP^pool; the track's own table."""
    out_dir = str(tmp_path / 'bench')
    dino = {m.key: m for m in _methods()}['dino_focal']
    out = run_benchmark(out_dir=out_dir, methods=[dino], seeds=(0, ),
                        epochs=1, train_images=16, val_images=4,
                        pretrain=None)
    with open(out['files']['json']) as f:
        run, = json.load(f)['runs']
    assert run['spec']['track'] == 'query' and run['train_iters'] == 2
    assert run['fixed_ap_eval_seconds'] > 0
    # the table's box numbers, AP^fixed and AP^pool included; no masks
    assert {f'lvis/{k}' for k in TABLE_KEYS if 'segm' not in k} <= set(
        run['metrics'])
    assert 'lvis/bbox_APpool_r' in run['metrics']
    assert not any('segm' in k for k in run['metrics'])
    # both passes give the standard protocol's box AP (the same best 100
    # of each image: the model's cap, then the metric's)
    assert run['fixed_ap_pass_bbox_AP'] == run['metrics']['lvis/bbox_AP']
    # the detections each pass's metric saw: 100 per image in the first;
    # in the second, the fixed protocol's file keeps every (query, class)
    # candidate (the top 10,000 of a class over the split are all 4 x 100)
    work = run['spec']['work_dir']
    assert _detections_per_image(osp.join(work, 'lvis.bbox.json')) == [100]
    assert _detections_per_image(
        osp.join(work, 'fixed_ap', 'lvis.bbox.fixed.json')) == [100 * 40]
    with open(out['files']['markdown']) as f:
        md = f.read()
    assert md.startswith('**Query-based track (small DINO, boxes only)**')
    row = next(line for line in md.splitlines()
               if line.startswith('| DINO focal |'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[:3] == ['DINO focal', 'trained', '0']
    assert '-' not in cells[3:9] and cells[9:] == ['-'] * 4


def test_run_benchmark_reports_a_failed_run(bench_data, tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text(f"_base_ = '{osp.join(BENCH, 'baseline_ce.py')}'\n"
                   "model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict("
                   "_delete_=True, type='NoSuchLoss'))))\n")
    ms = [Method('broken', 'Broken', str(bad))]
    with pytest.raises(RuntimeError, match=r'benchmark run broken_seed0 '
                       r'failed \(exit 1\)(.|\n)*NoSuchLoss'):
        run_benchmark(out_dir=str(tmp_path / 'b'), methods=ms, seeds=(0, ),
                      epochs=1, train_images=8, val_images=4, pretrain=None)


def test_run_benchmark_checks_its_inputs(tmp_path, bench_data,
                                         no_bench_env):
    by_key = {m.key: m for m in _methods()}
    no_bench_env.setenv(DATA_ROOT_VAR, str(tmp_path / 'no'))
    with pytest.raises(FileNotFoundError, match='make the benchmark dataset'
                       '.*benchmark_longtail.py --data-root .*/no '
                       '--make-data-only'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1])
    no_bench_env.setenv(DATA_ROOT_VAR, bench_data['root'])
    with pytest.raises(ValueError, match='not among the methods'):
        run_benchmark(out_dir=str(tmp_path), methods=[by_key['crt']])
    probe = by_key['norcal']
    on_probe = Method('p2', 'P2', probe.config, init_from='norcal',
                      kind='posthoc', param='NorCal.gamma', values=(1, ))
    with pytest.raises(ValueError, match="needs a trained checkpoint of "
                       "the 'two_stage' track"):
        run_benchmark(out_dir=str(tmp_path),
                      methods=[by_key['baseline_ce'], probe, on_probe])
    on_retina = Method('p3', 'P3', probe.config, init_from='retinanet_focal',
                       kind='posthoc', param='NorCal.gamma', values=(1, ))
    with pytest.raises(ValueError, match="RetinaNet focal, a 'train' method "
                       "of the 'one_stage' track"):
        run_benchmark(out_dir=str(tmp_path),
                      methods=[by_key['retinanet_focal'], on_retina])
    with pytest.raises(FileNotFoundError, match='config /nope.py not found'):
        run_benchmark(out_dir=str(tmp_path),
                      methods=[Method('x', 'X', '/nope.py')])
    with pytest.raises(ValueError, match='best_by must be one of'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1],
                      best_by='segm_AP50')
    with pytest.raises(ValueError, match='seeds must name at least one'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1],
                      seeds=())
    with pytest.raises(ValueError, match=r'seeds repeat: \[0, 0\]'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1],
                      seeds=(0, 0))


def test_paired_table_compares_a_method_with_the_row_it_is_built_on(
        tmp_path):
    """Seed means of the row and the method, their difference in points,
    and the last epoch's mean loss_bbox read from each run's scalars."""
    from mmlongtail_bench.benchmark.results import paired_markdown

    def run(key, seed, ap75, losses):
        work = tmp_path / f'{key}_{seed}'
        (work / '20260101_000000' / 'vis_data').mkdir(parents=True)
        with open(work / '20260101_000000' / 'vis_data' / 'scalars.json',
                  'w') as f:
            for epoch, loss in losses:
                f.write(json.dumps(dict(epoch=epoch, loss_bbox=loss)) + '\n')
            f.write(json.dumps(dict(step=9, lvis_bbox_AP=0.1)) + '\n')
        metrics = {f'lvis/{k}': 0.1 for k in (
            'bbox_AP', 'bbox_APr', 'bbox_APc', 'bbox_APf', 'bbox_APpool',
            'segm_AP')}
        metrics['lvis/bbox_AP75'] = ap75
        return dict(spec=dict(key=key, seed=seed, work_dir=str(work)),
                    metrics=metrics)

    records = [run('rfs', 0, 0.10, [(1, 0.9), (2, 0.5), (2, 0.3)]),
               run('rfs', 1, 0.12, [(2, 0.6)]),
               run('cab_rfs', 0, 0.15, [(2, 0.2)]),
               run('cab_rfs', 1, 0.17, [(1, 5.0), (2, 0.4)])]
    methods = [Method('rfs', 'RFS', 'rfs.py'),
               Method('cab_rfs', 'RFS + CAB', 'cab_rfs.py', built_on='rfs')]
    table = paired_markdown(records, methods)
    row = table.splitlines()[2]
    # AP75: 11.0 -> 16.0 (+5.0); loss_bbox: mean(0.4, 0.6) -> mean(0.2, 0.4)
    assert '| RFS + CAB | RFS | 10.0 → 10.0 (+0.0) | 11.0 → 16.0 (+5.0) |' \
        in row
    assert row.endswith('| 0.500 → 0.300 |')
    # without the row it is built on, no table
    assert paired_markdown(records[2:], methods) == ''
    with pytest.raises(ValueError, match='built_on names the row'):
        Method('x', 'X', 'x.py', kind='posthoc', init_from='a', param='p',
               values=(1, ), built_on='a')
