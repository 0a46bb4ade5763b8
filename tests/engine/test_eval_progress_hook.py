"""EvalProgressHook through a real mmengine Runner: an 8-iteration val loader
with the logger's interval at 25 (mmengine's LoggerHook prints no iteration
line) logs every iteration's progress with elapsed time and ETA; a
41-iteration test loader logs every 5th and the last; the runtime base and
the demo configs turn it on."""
import glob
import logging
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmlongtail  # noqa: F401
from mmlongtail.engine.hooks import EvalProgressHook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class _Items(Dataset):

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([float(i)]))


class _Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return [dict(out=float(x)) for x in inputs]


class _Metric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(s['out'] for s in data_samples)

    def compute_metrics(self, results):
        return dict(n=len(results))


class _Lines(logging.Handler):

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _run(tmp_path, n, mode, hook):
    loader = dict(dataset=_Items(n), batch_size=1, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False))
    kwargs = {f'{mode}_dataloader': loader, f'{mode}_cfg': dict(),
              f'{mode}_evaluator': [_Metric()]}
    default_hooks = dict(logger=dict(type='LoggerHook', interval=25))
    if hook is not None:
        default_hooks['eval_progress'] = hook
    # default_scope: a Runner leaves its scope as the current one, and later
    # tests build mmdet modules by unscoped names (mmengine's default,
    # 'mmengine', sent them to mmengine's root registry; 'mmlongtail' made
    # 'SeesawLoss' mean ours); 'mmdet' is the scope our configs run in
    runner = Runner(model=_Model(), work_dir=str(tmp_path),
                    default_scope='mmdet',
                    default_hooks=default_hooks, log_level='INFO',
                    experiment_name=f'progress_{mode}_{n}', **kwargs)
    lines = _Lines()
    runner.logger.addHandler(lines)
    try:
        getattr(runner, mode)()
    finally:
        runner.logger.removeHandler(lines)
    return [m for m in lines.lines if 'progress [' in m]


def test_logs_every_iteration_of_an_8_iteration_val_loader(tmp_path):
    assert _run(tmp_path, 8, 'val', None) == []  # mmengine alone: nothing
    lines = _run(tmp_path, 8, 'val',
                 dict(type='mmlongtail.EvalProgressHook'))
    assert len(lines) == 8
    pattern = (r'^Epoch\(val\) progress \[(\d+)/8\] (\d+)%, elapsed '
               r'\d+:\d\d:\d\d, ETA \d+:\d\d:\d\d$')
    done = [int(re.match(pattern, m).group(1)) for m in lines]
    assert done == list(range(1, 9))
    assert lines[-1].startswith('Epoch(val) progress [8/8] 100%')
    assert lines[-1].endswith('ETA 0:00:00')


def test_logs_every_tenth_and_the_end_of_a_test_loader(tmp_path):
    lines = _run(tmp_path, 41, 'test', EvalProgressHook(fraction=0.1))
    done = [int(re.search(r'\[(\d+)/41\]', m).group(1)) for m in lines]
    assert done == [5, 10, 15, 20, 25, 30, 35, 40, 41]
    assert all(m.startswith('Epoch(test)') for m in lines)


def test_bad_fraction_raises():
    for bad in (0, -0.1, 1.5, True, '0.1'):
        with pytest.raises(ValueError, match='fraction'):
            EvalProgressHook(fraction=bad)


def test_on_in_the_runtime_base_and_the_demo_configs():
    paths = [osp.join(ROOT, 'configs', '_base_', 'default_runtime.py')]
    paths += sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))
    assert len(paths) >= 3
    for path in paths:
        hooks = Config.fromfile(path).default_hooks
        assert hooks.eval_progress.type == 'mmlongtail.EvalProgressHook', \
            path


def test_training_iterations_pass_through():
    """mmengine's Hook routes every after_*_iter through ``_after_iter``;
    the hook must not shadow it (a train iteration would raise)."""
    hook = EvalProgressHook()
    for name in ('after_train_iter', 'before_train_iter'):
        getattr(hook, name)(None, 0, data_batch={}, **(
            dict(outputs={}) if name.startswith('after') else {}))
