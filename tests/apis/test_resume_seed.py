"""tools/train.py --resume with a config that sets no seed takes the seed of
the checkpoint it resumes (mmengine builds the sampler with the run's seed
before it reads the checkpoint)."""
import torch

from mmlongtail.apis import build_runner_config

CONFIG = """
default_hooks = dict(
    checkpoint=dict(type='{hook}', interval=1))
{extra}
"""


def _config(tmp_path, hook='mmlongtail.CrashSafeCheckpointHook', extra=''):
    path = tmp_path / 'cfg.py'
    path.write_text(CONFIG.format(hook=hook, extra=extra))
    return str(path)


def _checkpoint(path, seed):
    torch.save(dict(meta=dict(epoch=1, iter=4, seed=seed), state_dict={}),
               path)
    return str(path)


def test_auto_resume_takes_the_checkpoint_seed(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    _checkpoint(work / 'epoch_1.pth', 1234)
    second = _checkpoint(work / 'epoch_2.pth', 98765)
    (work / 'last_checkpoint').write_text(second)
    cfg = build_runner_config(_config(tmp_path), work_dir=str(work),
                              resume='auto')
    assert cfg.randomness == dict(seed=98765)
    # a path given to --resume: that file's seed
    cfg = build_runner_config(_config(tmp_path), work_dir=str(work),
                              resume=str(work / 'epoch_1.pth'))
    assert cfg.randomness == dict(seed=1234)


def test_seed_kept_when_set_or_nothing_to_read(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    path = _checkpoint(work / 'epoch_1.pth', 55)
    (work / 'last_checkpoint').write_text(path)
    cfg = build_runner_config(
        _config(tmp_path, extra='randomness = dict(seed=3, '
                'deterministic=True)'), work_dir=str(work), resume='auto')
    assert cfg.randomness == dict(seed=3, deterministic=True)
    cfg = build_runner_config(_config(tmp_path), work_dir=str(work))
    assert 'randomness' not in cfg  # not resuming
    cfg = build_runner_config(_config(tmp_path, hook='CheckpointHook'),
                              work_dir=str(work), resume='auto')
    assert 'randomness' not in cfg  # mmengine's hook: its own behaviour
    (work / 'epoch_1.pth').write_bytes(b'PK\x03\x04')  # damaged: the hook
    cfg = build_runner_config(_config(tmp_path), work_dir=str(work),
                              resume='auto')  # reports it at the start
    assert 'randomness' not in cfg
    cfg = build_runner_config(_config(tmp_path),
                              work_dir=str(tmp_path / 'fresh'), resume='auto')
    assert 'randomness' not in cfg  # nothing to resume yet
