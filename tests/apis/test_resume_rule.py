"""What a start resumes (resume_rule): --resume as given without restarts;
under torchrun's restarts, the newest checkpoint in the work dir on every
start, whatever the node's restart count."""
import pytest
from mmengine.config import Config

from mmlongtail.apis import build_runner_config
from mmlongtail.apis.runner_setup import (MAX_RESTARTS_ENV,
                                          RESTART_COUNT_ENV,
                                          elastic_restarts,
                                          resume_candidates_of, resume_rule)

CONFIG = """
default_hooks = dict(checkpoint=dict(type='{hook}', interval=1))
load_from = 'init.pth'
"""


def _cfg(tmp_path, hook='mmlongtail.CrashSafeCheckpointHook'):
    return Config(dict(
        work_dir=str(tmp_path / 'work'),
        default_hooks=dict(checkpoint=dict(type=hook, interval=1))))


def _touch(path, text=''):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_without_restarts_the_command_decides(tmp_path):
    cfg = _cfg(tmp_path)
    _touch(tmp_path / 'work' / 'epoch_1.pth')
    assert resume_rule(cfg, None) is None
    assert resume_rule(cfg, 'auto') == 'auto'
    assert resume_rule(cfg, 'x.pth') == 'x.pth'
    assert resume_rule(_cfg(tmp_path / 'empty'), 'auto') is None


@pytest.mark.parametrize('restart', [0, 1, 2])
def test_with_restarts_every_start_resumes_the_work_dir(tmp_path, restart):
    cfg = _cfg(tmp_path)
    # nothing saved yet: the start does what the command says
    assert resume_rule(cfg, None, restart, 2) is None
    assert resume_rule(cfg, 'auto', restart, 2) is None
    assert resume_rule(cfg, 'given.pth', restart, 2) == 'given.pth'
    # after a save, on every node (a healthy node keeps its count 0)
    _touch(tmp_path / 'work' / 'epoch_3.pth')
    for resume in (None, 'auto', 'given.pth'):
        assert resume_rule(cfg, resume, restart, 2) == 'auto'


def test_candidates_pointer_first_then_newest(tmp_path):
    work = tmp_path / 'work'
    old = _touch(work / 'epoch_1.pth')
    new = _touch(work / 'epoch_2.pth')
    assert resume_candidates_of(_cfg(tmp_path)) == [new, old]
    _touch(work / 'last_checkpoint', old)
    assert resume_candidates_of(_cfg(tmp_path)) == [old, new]
    # mmengine's own hook resumes only what last_checkpoint names
    assert resume_candidates_of(_cfg(tmp_path, 'CheckpointHook')) == [old]
    (work / 'last_checkpoint').unlink()
    assert resume_candidates_of(_cfg(tmp_path, 'CheckpointHook')) == []


def test_auto_with_nothing_to_resume_keeps_load_from(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text(CONFIG.format(hook='mmlongtail.CrashSafeCheckpointHook'))
    cfg = build_runner_config(str(path), work_dir=str(tmp_path / 'w'),
                              resume='auto')
    assert not cfg.get('resume') and cfg.load_from == 'init.pth'
    cfg = build_runner_config(str(path), work_dir=str(tmp_path / 'w'),
                              restart=1, max_restarts=1)
    assert not cfg.get('resume') and cfg.load_from == 'init.pth'
    _touch(tmp_path / 'w' / 'epoch_1.pth')
    cfg = build_runner_config(str(path), work_dir=str(tmp_path / 'w'),
                              restart=0, max_restarts=1)
    assert cfg.resume and cfg.load_from is None  # the hook picks the file


def test_elastic_restarts_reads_torchrun(monkeypatch):
    monkeypatch.delenv(RESTART_COUNT_ENV, raising=False)
    monkeypatch.delenv(MAX_RESTARTS_ENV, raising=False)
    assert elastic_restarts() == (0, 0)
    monkeypatch.setenv(RESTART_COUNT_ENV, '1')
    monkeypatch.setenv(MAX_RESTARTS_ENV, '3')
    assert elastic_restarts() == (1, 3)
    monkeypatch.setenv(MAX_RESTARTS_ENV, '-1')
    with pytest.raises(ValueError, match="TORCHELASTIC_MAX_RESTARTS='-1'"):
        elastic_restarts()


def test_process_group_timeout_reaches_init(monkeypatch):
    """The configs' process-group timeout (what a rank waits at most for a
    lost peer) is passed to init_process_group as a timedelta."""
    import datetime
    import os.path as osp

    import torch

    from mmlongtail.apis import init_cpu_distributed
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    base = Config.fromfile(
        osp.join(root, 'configs/_base_/default_runtime.py'))
    assert base.env_cfg.dist_cfg == dict(backend='nccl', timeout=1800)
    if torch.cuda.is_available():
        pytest.skip('the CPU path')
    seen = {}
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: False)
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kw: seen.update(kw))
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    cfg = Config(dict(launcher='pytorch',
                      env_cfg=dict(dist_cfg=dict(backend='gloo',
                                                 timeout=1800))))
    assert init_cpu_distributed(cfg)
    assert seen['timeout'] == datetime.timedelta(minutes=30)


def test_close_distributed_leaves_the_group(tmp_path):
    """tools/train.py and tools/test.py end with close_distributed: the
    group is destroyed (exiting with a live gloo group aborted about one
    exit in six here), and without a group it does nothing."""
    import torch

    from mmlongtail.apis import close_distributed
    close_distributed()  # no group: a no-op
    assert not torch.distributed.is_initialized()
    store = torch.distributed.FileStore(str(tmp_path / 'store'), 1)
    torch.distributed.init_process_group('gloo', store=store, rank=0,
                                         world_size=1)
    try:
        close_distributed()
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
