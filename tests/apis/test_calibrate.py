"""The calibration sweep (mmlongtail.apis.calibrate, tools/calibrate.py):
parameters resolved from the config or refused, and a real sweep on a
briefly trained model whose rows equal tools/test.py with the value written
in the config."""
import copy
import glob
import json
import os
import os.path as osp
import re
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmlongtail.apis import build_runner_config, split_heldout, sweep
from mmlongtail.apis.calibration import (BASELINE, Progress, format_seconds,
                                         prepare_split, resolve_param)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs/demo/mask_rcnn_r18_light_synthetic.py')
NUM_CLASSES = 12  # tiny_lvis

NORCAL = dict(type='mmlongtail.NorCal', category_stats='lvis_v1', gamma=0.6)
LOGIT_ADJ = dict(type='mmlongtail.LogitAdjustment', category_stats='lvis_v1',
                 tau=1.0)
TAU_NORM = dict(type='mmlongtail.TauNormalizationHook', tau=1.0)


def _cfg(scorers=(), hooks=(), stage=None):
    rcnn = dict(score_calibration=list(scorers))
    if stage is not None:
        rcnn['stage_score_calibration'] = stage
    return Config(dict(model=dict(test_cfg=dict(rcnn=rcnn)),
                       custom_hooks=list(hooks)))


# ------------------------------------------------ resolving the parameter --
@pytest.mark.parametrize('param, cfg, name, where', [
    ('gamma', _cfg([NORCAL]), 'NorCal.gamma',
     'model.test_cfg.rcnn.score_calibration[0]'),
    ('tau', _cfg([LOGIT_ADJ]), 'LogitAdjustment.tau',
     'model.test_cfg.rcnn.score_calibration[0]'),
    ('tau', _cfg(hooks=[dict(type='CheckpointHook'), TAU_NORM]),
     'TauNormalizationHook.tau', 'custom_hooks[1]'),
    ('TauNormalizationHook.tau', _cfg([LOGIT_ADJ], [TAU_NORM]),
     'TauNormalizationHook.tau', 'custom_hooks[0]'),
    ('LogitAdjustment.tau', _cfg([LOGIT_ADJ], [TAU_NORM]),
     'LogitAdjustment.tau', 'model.test_cfg.rcnn.score_calibration[0]'),
    ('beta', _cfg([dict(NORCAL, gamma=None, beta=0.99)]), 'NorCal.beta',
     'model.test_cfg.rcnn.score_calibration[0]'),
    ('gamma', _cfg(stage=[[], [dict(NORCAL, type='NorCal')], None]),
     'NorCal.gamma', 'model.test_cfg.rcnn.stage_score_calibration[1][0]'),
])
def test_param_resolves_to_the_component(param, cfg, name, where):
    target = resolve_param(cfg, param)
    assert (target.name, target.where) == (name, where)


@pytest.mark.parametrize('param, cfg, match', [
    ('temperature', _cfg([NORCAL]), "unknown calibration parameter "
     "'temperature'"),
    ('gamma', _cfg([LOGIT_ADJ]), r'no NorCal.gamma to vary.*LogitAdjustment'
     r' at model.test_cfg.rcnn.score_calibration\[0\]'),
    ('tau', _cfg(), 'no LogitAdjustment.tau or TauNormalizationHook.tau'),
    ('gamma', _cfg([dict(NORCAL, gamma=None, beta=0.99)]),
     'no NorCal.gamma'),
    ('tau', _cfg([LOGIT_ADJ], [TAU_NORM]), 'ambiguous.*LogitAdjustment.tau.*'
     'TauNormalizationHook.tau'),
    ('gamma', _cfg([NORCAL, NORCAL]), 'ambiguous'),
])
def test_param_refused(param, cfg, match):
    with pytest.raises(ValueError, match=match):
        resolve_param(cfg, param)


# ------------------------------------------------------- a real sweep --
NORCAL_TEXT = ("score_calibration=[dict(type='mmlongtail.NorCal', "
               "category_stats=stats, gamma=0.6)]")


def _write_config(tmp_path, name, tiny_lvis, rcnn='', extra='',
                  roi_head='mmlongtail.StandardRoIHead'):
    text = (f"_base_ = {DEMO!r}\n"
            f"stats = {tiny_lvis['train']!r}\n"
            "model = dict(\n"
            f"    roi_head=dict(type={roi_head!r},\n"
            f"        bbox_head=dict(num_classes={NUM_CLASSES}),\n"
            f"        mask_head=dict(num_classes={NUM_CLASSES})),\n"
            # few detections per image keep the mask head cheap (capped
            # inference and the standard protocol, not the demo's Fixed-AP
            # mode)
            "    test_cfg=dict(rcnn=dict(max_per_img=20, topk_per_class=-1, "
            f"{rcnn})))\n"
            "val_evaluator = dict(protocol='standard')\n"
            "test_evaluator = dict(protocol='standard')\n"
            "log_level = 'WARNING'\n" + extra)
    path = tmp_path / f'{name}.py'
    path.write_text(text)
    return str(path)


@pytest.fixture(scope='module')
def checkpoint(tiny_lvis, tmp_path_factory):
    """The demo model (12 classes) as initialized, saved as a checkpoint:
    its near-uniform class scores are what calibration reorders most."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    tmp = tmp_path_factory.mktemp('calib_ckpt')
    with mock.patch.dict(os.environ, {'SYNTHETIC_LVIS_ROOT':
                                      tiny_lvis['root']}):
        cfg = Config.fromfile(_write_config(tmp, 'plain', tiny_lvis))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp / 'init.pth')
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def _reference(config, checkpoint, work_dir, edit, ann_file=None):
    """What tools/test.py reports with the config edited by ``edit``; its
    detections go to ``{work_dir}/lvis.{bbox,segm}.json``."""
    cfg = build_runner_config(
        config, work_dir=work_dir,
        cfg_options={'test_evaluator.outfile_prefix': f'{work_dir}/lvis'})
    edit(cfg)
    if ann_file is not None:  # the held-out images, from the train folder
        ds = cfg.test_dataloader.dataset
        ds.ann_file = ann_file
        ds.data_prefix = copy.deepcopy(cfg.train_dataloader.dataset
                                       .data_prefix)
        cfg.test_evaluator.ann_file = ann_file
    cfg.load_from = checkpoint
    return Runner.from_cfg(cfg).test()


def _lvis(metrics):
    return {k: v for k, v in metrics.items() if k.startswith('lvis/')}


def _detections(prefix):
    out = {}
    for task in ('bbox', 'segm'):
        with open(f'{prefix}.{task}.json') as f:
            out[task] = json.load(f)
    return out


def test_norcal_sweep_on_heldout_equals_test_tool(tiny_lvis, checkpoint,
                                                  tmp_path, monkeypatch):
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    config = _write_config(tmp_path, 'norcal', tiny_lvis, NORCAL_TEXT)
    out = str(tmp_path / 'sweep')
    result = sweep(config, checkpoint, 'gamma', [0.5, 2.0],
                   work_dir=out, heldout_num_images=8, log_interval=1,
                   cfg_options={'test_evaluator.outfile_prefix':
                                f'{out}/dets/lvis'})
    # the table, its split and its files
    assert [r['label'] for r in result.rows] == [BASELINE, '0.5', '2']
    assert result.param == 'NorCal.gamma' and result.task == 'segm'
    split = result.split
    assert split.name == 'heldout' and split.num_images == 8
    assert split.seen_in_training is True
    assert osp.basename(split.ann_file) == \
        'lvis_v1_train_heldout_seed0_n8.json'
    assert osp.isfile(osp.join(out, 'splits',
                               'lvis_v1_train_remaining_seed0_n8.json'))
    files = result.files
    assert sorted(files) == ['json', 'markdown', 'png']
    assert osp.basename(files['markdown']) == \
        'calibration_NorCal.gamma_heldout.md'
    with open(files['png'], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(files['json']) as f:
        saved = json.load(f)
    assert saved['best'] == result.best
    assert saved['split']['ann_file'] == split.ann_file
    assert [r['metrics'] for r in saved['rows']] == [
        r['metrics'] for r in result.rows]
    with open(files['markdown']) as f:
        md = f.read()
    assert '**heldout**' in md and 'images seen in training: yes' in md
    assert md.count('\n| ') == 4  # header and three rows
    best = max(result.rows[1:], key=lambda r: r['metrics']['lvis/segm_AP'])
    assert result.best == best['value']

    # the row of gamma = 2 is tools/test.py with gamma = 2 in the config:
    # the same metrics from the same detections
    def gamma_2(cfg):
        cfg.model.test_cfg.rcnn.score_calibration[0].gamma = 2.0

    ref = str(tmp_path / 'ref')
    want = _reference(config, checkpoint, ref, gamma_2, split.ann_file)
    assert _lvis(result.rows[2]['metrics']) == _lvis(want)
    assert len(_lvis(want)) == 18
    dets = _detections(f'{out}/dets/gamma_2/lvis')
    assert dets == _detections(f'{ref}/lvis')
    assert len(dets['bbox']) == 8 * 20  # max_per_img on every image
    # and the rows differ where they should: NorCal moves the scores
    none = _detections(f'{out}/dets/gamma_none/lvis')
    assert [d['score'] for d in none['bbox']] != [
        d['score'] for d in dets['bbox']]


def test_tau_norm_sweep_equals_test_tool(tiny_lvis, checkpoint, tmp_path,
                                         monkeypatch):
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    extra = ("custom_hooks = [dict(type='mmlongtail.TauNormalizationHook', "
             "tau=1.0)]\n")
    config = _write_config(tmp_path, 'tau_norm', tiny_lvis, extra=extra)
    out = str(tmp_path / 'sweep')
    result = sweep(config, checkpoint, 'tau', [0.5, 1.5],
                   work_dir=out, heldout_num_images=8, baseline=False,
                   criterion='APr', task='bbox',
                   cfg_options={'test_evaluator.outfile_prefix':
                                f'{out}/dets/lvis'})
    assert result.param == 'TauNormalizationHook.tau'
    assert [r['value'] for r in result.rows] == [0.5, 1.5]
    assert result.best == max(
        result.rows, key=lambda r: r['metrics']['lvis/bbox_APr'])['value']

    def tau_15(cfg):
        cfg.custom_hooks[0].tau = 1.5

    ref = str(tmp_path / 'ref')
    want = _reference(config, checkpoint, ref, tau_15, result.split.ann_file)
    assert _lvis(result.rows[1]['metrics']) == _lvis(want)
    dets = _detections(f'{out}/dets/tau_1.5/lvis')
    assert dets == _detections(f'{ref}/lvis')
    other = _detections(f'{out}/dets/tau_0.5/lvis')
    assert [d['score'] for d in other['bbox']] != [
        d['score'] for d in dets['bbox']]


def test_values_refused_before_any_image(tiny_lvis, tmp_path, monkeypatch):
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    config = _write_config(tmp_path, 'norcal', tiny_lvis, NORCAL_TEXT)
    ckpt = tmp_path / 'never_read.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(ValueError, match='gamma must be a number > 0'):
        sweep(config, str(ckpt), 'gamma', [0.5, 0.0], work_dir=str(tmp_path))
    with pytest.raises(ValueError, match='repeated values'):
        sweep(config, str(ckpt), 'gamma', [0.5, 0.5], work_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown calibration parameter"):
        sweep(config, str(ckpt), 'alpha', [0.5], work_dir=str(tmp_path))
    with pytest.raises(ValueError, match="criterion must be one of"):
        sweep(config, str(ckpt), 'gamma', [0.5], criterion='AP50',
              work_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r'fraction must lie in \(0, 1\)'):
        sweep(config, str(ckpt), 'gamma', [0.5], heldout_fraction=1.5,
              work_dir=str(tmp_path))


def test_scorer_needs_a_scoring_roi_head(tiny_lvis, tmp_path, monkeypatch):
    """mmdet's RoI head would ignore the scorer: refused before building."""
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    config = _write_config(tmp_path, 'mmdet_head', tiny_lvis, NORCAL_TEXT,
                           roi_head='StandardRoIHead')
    ckpt = tmp_path / 'never_read.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(ValueError, match='StandardRoIHead does not run '
                       'scorers'):
        sweep(config, str(ckpt), 'gamma', [0.5], split='val',
              work_dir=str(tmp_path))


def test_remaining_part_as_training_file_uses_its_twin(tiny_lvis, tmp_path):
    """A config trained on the remaining part is calibrated on its
    held-out twin, recorded as unseen by the model."""
    paths = split_heldout(tiny_lvis['train'], str(tmp_path), seed=0,
                          num_images=10)
    cfg = Config(dict(
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2, dataset=dict(
                data_root=tiny_lvis['root'], ann_file=paths['remaining'],
                data_prefix=dict(img='')))),
        test_dataloader=dict(dataset=dict(
            data_root=tiny_lvis['root'],
            ann_file='annotations/lvis_v1_val.json',
            data_prefix=dict(img='val'))),
        test_evaluator=dict(type='mmlongtail.LVISMetric',
                            ann_file='x.json')))
    split = prepare_split(cfg, 'heldout')
    assert split.ann_file == paths['heldout']
    assert split.seen_in_training is False and split.num_images == 10
    assert cfg.test_dataloader.dataset.ann_file == paths['heldout']
    assert cfg.test_dataloader.dataset.data_prefix == dict(img='')
    assert cfg.test_evaluator.ann_file == paths['heldout']
    with pytest.raises(ValueError, match='do not give a held-out size'):
        prepare_split(cfg, 'heldout', num_images=5)
    with pytest.raises(ValueError, match='split must be one of'):
        prepare_split(cfg, 'train')


# ------------------------------------------------------------ progress --
def test_progress_lines_give_time_left():
    """Each step's line: steps done, elapsed time, and the time left at the
    mean pace so far (10 s for 2 of 5 steps: 15 s left)."""
    logger = mock.Mock()
    clock = iter([100.0, 104.0, 110.0, 200.0, 300.0])  # read when due
    with mock.patch('time.perf_counter', lambda: next(clock)):
        progress = Progress('batch', 5, logger, interval=2)
        progress.step('a')  # 4 s: the first step is always logged
        progress.step()  # 10 s
        progress.step()  # not due
        progress.step()  # 100 s
        progress.step()  # the last step is always logged
    lines = [c.args[0] for c in logger.info.call_args_list]
    assert lines == [
        'batch 1/5 a, 4.0 s elapsed, about 16.0 s left',
        'batch 2/5, 10.0 s elapsed, about 15.0 s left',
        'batch 4/5, 1 min 40 s elapsed, about 25.0 s left',
        'batch 5/5, 3 min 20 s elapsed, about 0.0 s left',
    ]
    assert format_seconds(3725) == '1 h 02 min'
    with pytest.raises(ValueError, match='log_interval must be >= 1'):
        Progress('batch', 5, logger, interval=0)


def test_sweep_logs_progress_per_batch_and_value(tiny_lvis, checkpoint,
                                                 tmp_path, monkeypatch):
    """The sweep's log (the Runner's log file) has a line per batch and per
    evaluated value, each with the time left."""
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    config = _write_config(tmp_path, 'norcal', tiny_lvis, NORCAL_TEXT,
                           extra="log_level = 'INFO'\n")
    out = str(tmp_path / 'sweep')
    result = sweep(config, checkpoint, 'gamma', [0.5], work_dir=out,
                   heldout_num_images=4, write=False,
                   cfg_options={'test_dataloader.batch_size': 1,
                                'test_evaluator.outfile_prefix':
                                f'{out}/dets/lvis'})
    logs = glob.glob(osp.join(out, '*', '*.log'))
    assert len(logs) == 1
    with open(logs[0]) as f:
        text = f.read()
    batches = re.findall(r'calibration sweep: batch (\d)/4 \(2 values '
                         r'each\), [\d.]+ s elapsed, about [\d.]+ s left',
                         text)
    assert batches == ['1', '2', '3', '4']
    values = re.findall(r'calibration sweep: evaluated value (\d)/2 '
                        r'gamma=(\S+): bbox AP .*, about [\d.]+ s left',
                        text)
    assert values == [('1', 'none'), ('2', '0.5')]
    # each row returns the files its evaluation wrote (the one place the
    # benchmark finds them)
    for row in result.rows:
        assert sorted(row['files']) == ['bbox', 'per_class', 'segm']
        assert all(osp.isfile(p) for p in row['files'].values())
    assert len({r['files']['per_class'] for r in result.rows}) == 2
