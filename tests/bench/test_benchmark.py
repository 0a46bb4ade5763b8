"""The long-tail benchmark's machinery: configs that own their paths, the
schedule, the table, the choice of the best method (hand-made records), the
plot's frequency bands, and a real end-to-end run of two methods (one
decoupled from the other) for 1 epoch on a few images, with reuse and
failure reporting."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmlongtail_bench.benchmark import (DATA_ROOT_VAR, INIT_CHECKPOINT_VAR,
                                        TABLE_KEYS, Method, RunSpec,
                                        dataset_files, default_methods,
                                        frequency_bands, pick_best,
                                        results_markdown, run_benchmark,
                                        run_config, set_epochs, summarize)
from mmlongtail_bench.synthetic import read_frequency_rule

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(ROOT, 'configs', 'benchmark')


def _methods():
    return default_methods(BENCH)


def test_default_methods_are_those_of_the_issues():
    ms = _methods()
    assert [m.label for m in ms] == [
        'CE baseline', 'RFS', 'Seesaw + Norm Mask', 'EQL', 'EQLv2', 'Focal',
        'BAGS (decoupled)', 'Federated loss', 'ECM + Norm Mask',
        'GOL (Gumbel + DropLoss)', 'Balanced softmax', 'Class-balanced focal'
    ]
    assert all(osp.isfile(m.config) for m in ms)
    assert [m.init_from for m in ms] == [None] * 6 + ['baseline_ce'] + \
        [None] * 5


def test_every_method_is_the_baseline_plus_one_change():
    base = Config.fromfile(osp.join(BENCH, 'baseline_ce.py'))
    for m in _methods()[1:]:
        cfg = Config.fromfile(m.config)
        # same schedule, optimizer, data and evaluation
        for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                    'val_evaluator'):
            assert cfg[key] == base[key], (m.key, key)
        assert cfg.model.backbone == base.model.backbone
        assert cfg.model.test_cfg == base.model.test_cfg
        same_sampler = cfg.train_dataloader.sampler == \
            base.train_dataloader.sampler
        same_loss = cfg.model.roi_head.bbox_head.loss_cls == \
            base.model.roi_head.bbox_head.loss_cls
        # exactly one of sampler / classification loss changes
        assert same_sampler != same_loss, m.key


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


def _text(cfg):
    return json.dumps(cfg.to_dict(), sort_keys=True, default=repr)


@pytest.fixture
def no_bench_env(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VAR, raising=False)
    monkeypatch.delenv(INIT_CHECKPOINT_VAR, raising=False)
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
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            assert cfg[loader].dataset.data_root == '/data/x/'
        assert cfg.test_evaluator.ann_file == cfg.val_evaluator.ann_file
        loss = cfg.model.roi_head.bbox_head.loss_cls
        if 'category_stats' in loss:
            assert loss.category_stats == dataset_files(cfg)[0]
        # the same config once the default root is put back
        moved = _text(cfg).replace('/data/x/', 'data/synthetic_lvis_bench/')
        assert moved == _text(default[m.key]), m.key


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


def _record(key, seed, values):
    metrics = {f'lvis/{k}': v for k, v in zip(TABLE_KEYS, values)}
    return dict(spec=dict(key=key, seed=seed), metrics=metrics)


def test_summary_table_and_best_method():
    ms = [Method('base', 'CE', 'x'), Method('a', 'A', 'x'),
          Method('b', 'B', 'x')]
    recs = [
        _record('base', 0, [0.10] * 8),
        _record('base', 1, [0.14] * 8),
        # A: best mask AP_r (index 5 of TABLE_KEYS)
        _record('a', 0, [0.2, 0.1, 0.2, 0.3, 0.2, 0.30, 0.2, 0.3]),
        _record('b', 0, [0.3, 0.1, 0.2, 0.3, 0.3, 0.20, 0.2, 0.3]),
    ]
    summary = summarize(recs, ms)
    assert list(summary) == ['base', 'a', 'b']
    base = summary['base']
    assert base['seeds'] == [0, 1]
    assert base['mean']['segm_APr'] == pytest.approx(0.12)
    assert base['spread']['segm_APr'] == pytest.approx(0.02)
    assert summary['a']['spread']['bbox_AP'] is None
    assert pick_best(summary, 'base', 'segm_APr') == 'a'
    assert pick_best(summary, 'base', 'bbox_AP') == 'b'
    # a tie on AP_r goes to the higher mask AP
    recs[3] = _record('b', 0, [0.3, 0.1, 0.2, 0.3, 0.3, 0.30, 0.2, 0.3])
    assert pick_best(summarize(recs, ms), 'base', 'segm_APr') == 'b'
    with pytest.raises(ValueError, match='best_by must be one of'):
        pick_best(summary, 'base', 'segm_AP50')
    table = results_markdown(summary).splitlines()
    assert table[0].startswith('| method | seeds | bbox AP | bbox APr')
    assert table[2] == ('| CE | 0,1 | ' + ' | '.join(['12.0 ± 2.0'] * 8) +
                        ' |')
    assert table[3].startswith('| A | 0 | 20.0 | 10.0 | 20.0 | 30.0 | 20.0 '
                               '| 30.0 |')


def test_run_benchmark_end_to_end(synthetic40, tmp_path, no_bench_env):
    ms = [m for m in _methods() if m.key in ('baseline_ce', 'bags_decoupled')]
    out_dir = str(tmp_path / 'bench')
    no_bench_env.setenv(DATA_ROOT_VAR, synthetic40['root'])
    kw = dict(out_dir=out_dir, methods=ms, seeds=(0, 1), epochs=1,
              train_images=8, val_images=4)
    out = run_benchmark(**kw)
    # BAGS is the only candidate, so it gets the second seed too
    assert out['best'] == 'bags_decoupled'
    with open(out['files']['json']) as f:
        res = json.load(f)
    runs = {(r['spec']['key'], r['spec']['seed']): r for r in res['runs']}
    assert set(runs) == {('baseline_ce', 0), ('baseline_ce', 1),
                         ('bags_decoupled', 0), ('bags_decoupled', 1)}
    for seed in (0, 1):
        base, bags = runs['baseline_ce', seed], runs['bags_decoupled', seed]
        assert bags['spec']['init_checkpoint'] == base['checkpoint']
        for r in (base, bags):
            assert r['spec']['seed'] == seed
            assert r['spec']['train_ann_file'] == osp.join(
                synthetic40['root'], 'annotations', 'lvis_v1_train.json')
            assert set(f'lvis/{k}' for k in TABLE_KEYS) <= set(r['metrics'])
        # decoupled: only the classifier changed, everything else is the
        # baseline's trained weights
        sb = torch.load(base['checkpoint'], map_location='cpu')['state_dict']
        sg = torch.load(bags['checkpoint'], map_location='cpu')['state_dict']
        cls = 'roi_head.bbox_head.fc_cls.weight'
        assert sg[cls].shape[0] > sb[cls].shape[0]  # group "others" outputs
        for k in ('backbone.conv1.weight', 'roi_head.bbox_head.fc_reg.weight',
                  'roi_head.mask_head.conv_logits.weight'):
            assert torch.equal(sb[k], sg[k]), k
    # the two seeds really differ
    s0 = torch.load(runs['baseline_ce', 0]['checkpoint'], map_location='cpu')
    s1 = torch.load(runs['baseline_ce', 1]['checkpoint'], map_location='cpu')
    assert not torch.equal(s0['state_dict']['backbone.conv1.weight'],
                           s1['state_dict']['backbone.conv1.weight'])
    with open(out['files']['markdown']) as f:
        md = f.read()
    assert '| CE baseline | 0,1 |' in md and '| BAGS (decoupled) | 0,1 |' in md
    with open(out['files']['plot'], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert osp.getsize(out['files']['plot']) > 20_000

    # a second call reuses the finished runs instead of training again
    stamps = {k: os.stat(osp.join(out_dir, f'{k[0]}_seed{k[1]}',
                                  'metrics.json')).st_mtime_ns
              for k in runs}
    again = run_benchmark(**kw)
    assert again['table'] == out['table']
    for k, t in stamps.items():
        assert os.stat(osp.join(out_dir, f'{k[0]}_seed{k[1]}',
                                'metrics.json')).st_mtime_ns == t


def test_run_benchmark_reports_a_failed_run(synthetic40, tmp_path,
                                            no_bench_env):
    bad = tmp_path / 'bad.py'
    bad.write_text(f"_base_ = '{osp.join(BENCH, 'baseline_ce.py')}'\n"
                   "model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict("
                   "_delete_=True, type='NoSuchLoss'))))\n")
    ms = [Method('broken', 'Broken', str(bad))]
    no_bench_env.setenv(DATA_ROOT_VAR, synthetic40['root'])
    with pytest.raises(RuntimeError, match=r'benchmark run broken_seed0 '
                       r'failed \(exit 1\)(.|\n)*NoSuchLoss'):
        run_benchmark(out_dir=str(tmp_path / 'b'), methods=ms, seeds=(0, ),
                      epochs=1, train_images=8, val_images=4)


def test_run_benchmark_checks_its_inputs(tmp_path, synthetic40,
                                         no_bench_env):
    no_bench_env.setenv(DATA_ROOT_VAR, str(tmp_path / 'no'))
    with pytest.raises(FileNotFoundError, match='make the benchmark dataset'
                       '.*make_synthetic_lvis.py .*/no --val-images'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1])
    no_bench_env.setenv(DATA_ROOT_VAR, synthetic40['root'])
    with pytest.raises(ValueError, match='not among the methods'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[-1:])
    with pytest.raises(FileNotFoundError, match='config /nope.py not found'):
        run_benchmark(out_dir=str(tmp_path),
                      methods=[Method('x', 'X', '/nope.py')])
    with pytest.raises(ValueError, match='best_by must be one of'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1],
                      best_by='segm_AP50')
    with pytest.raises(ValueError, match='seeds must name at least one'):
        run_benchmark(out_dir=str(tmp_path), methods=_methods()[:1],
                      seeds=())
