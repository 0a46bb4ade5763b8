"""build_test_config (tools/test.py): the checkpoint to evaluate is checked as
a resume checks it, so a truncated or damaged file is refused naming the file
and the problem instead of torch's zip error."""
import os.path as osp
import runpy
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import save_checkpoint

import mmlongtail  # noqa: F401  (allow-lists mmengine's checkpoint globals)
from mmlongtail.apis import build_runner_config
from mmlongtail.apis.runner_setup import build_test_config
from mmlongtail.engine import CheckpointError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_r18_light_synthetic.py')

register_all_modules(init_default_scope=False)


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    """A checkpoint of the demo config's model as the runner saves it
    (``meta`` and ``state_dict``, through mmengine's ``save_checkpoint``)."""
    cfg = build_runner_config(CONFIG, work_dir='/tmp/unused')
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'epoch_1.pth')
    save_checkpoint(
        dict(meta=dict(epoch=1, iter=4, dataset_meta=dict(classes=('a', ))),
             state_dict=model.state_dict()), path)
    return path


def _refused(path):
    with pytest.raises(CheckpointError) as info:
        build_test_config(CONFIG, path, work_dir='/tmp/unused')
    assert info.value.path == path and path in str(info.value)
    return info.value.reason


def test_intact_checkpoint_is_loaded(demo_checkpoint):
    cfg = build_test_config(CONFIG, demo_checkpoint, work_dir='/tmp/unused')
    assert cfg.load_from == demo_checkpoint
    assert not cfg.get('resume', False)


def test_truncated_checkpoint_is_named(demo_checkpoint, tmp_path):
    data = open(demo_checkpoint, 'rb').read()
    for name, content in (('half.pth', data[:len(data) // 2]),
                          ('tail_cut.pth', data[:-10])):
        path = str(tmp_path / name)
        with open(path, 'wb') as f:
            f.write(content)
        reason = _refused(path)
        assert reason.startswith(
            f'not a complete checkpoint archive ({len(content)} bytes, no '
            'zip central directory): the file is truncated'), reason
    # torch's own error for the same file, which the check replaces
    with pytest.raises(RuntimeError, match='central directory'):
        torch.load(str(tmp_path / 'half.pth'), map_location='cpu')
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path = str(tmp_path / 'flipped.pth')
    with open(path, 'wb') as f:
        f.write(bytes(flipped))
    assert 'fails its CRC-32 check' in _refused(path)
    assert _refused(str(tmp_path / 'missing.pth')) == 'the file does not exist'


def test_weights_without_runner_state_are_evaluated(tmp_path):
    # evaluating needs model weights, not the runner state a resume needs:
    # a bare state dict, or torch's format before 1.6
    weights = dict(w=torch.arange(6.).reshape(2, 3))
    bare = str(tmp_path / 'bare.pth')
    torch.save(weights, bare)
    assert build_test_config(CONFIG, bare).load_from == bare
    legacy = str(tmp_path / 'legacy.pth')
    torch.save(dict(state_dict=weights), legacy,
               _use_new_zipfile_serialization=False)
    assert build_test_config(CONFIG, legacy).load_from == legacy
    # ... but a truncated old-format file, or one without tensors, is refused
    data = open(legacy, 'rb').read()
    cut = str(tmp_path / 'legacy_cut.pth')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    reason = _refused(cut)
    assert 'the file is truncated' in reason
    assert 'loading it as an old-format torch file fails too' in reason
    empty = str(tmp_path / 'no_weights.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict={}), empty)
    assert _refused(empty) == ('holds no model weights (a dict of tensors, '
                               'or one under state_dict)')


def test_tools_test_uses_the_check(demo_checkpoint, tmp_path, monkeypatch):
    data = open(demo_checkpoint, 'rb').read()
    path = str(tmp_path / 'cut.pth')
    with open(path, 'wb') as f:
        f.write(data[:-10])
    monkeypatch.setattr(sys, 'argv', ['tools/test.py', CONFIG, path])
    with pytest.raises(CheckpointError, match='the file is truncated') as e:
        runpy.run_path(osp.join(ROOT, 'tools', 'test.py'),
                       run_name='__main__')
    assert e.value.path == path
