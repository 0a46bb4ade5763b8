"""The demo and the benchmark ask the owners of file names: the checkpoint
hook's pointer for the trained checkpoint, the per-class file module for
the per-class file."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmlongtail_bench.demo import per_class_path, trained_checkpoint


def test_trained_checkpoint_is_what_the_hook_recorded(tmp_path):
    ckpt = tmp_path / 'iter_7.pth'  # any name the hook's template gives
    ckpt.write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(ckpt))
    assert trained_checkpoint(str(tmp_path)) == str(ckpt)
    ckpt.unlink()
    with pytest.raises(FileNotFoundError, match='left no checkpoint'):
        trained_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='names nothing'):
        trained_checkpoint(str(tmp_path / 'empty'))


def test_per_class_path_follows_the_metric_prefix():
    cfg = Config(dict(val_evaluator=dict(outfile_prefix='/w/run/pfx')))
    assert per_class_path(cfg) == osp.join('/w/run', 'pfx.per_class.json')
