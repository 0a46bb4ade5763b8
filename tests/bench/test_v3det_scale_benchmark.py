"""``tools/benchmark_v3det_scale.py`` end to end at a tiny size, and its
per-loss configs cover every registered loss."""
import os.path as osp
import runpy

import pytest

from mmlongtail_bench.v3det import (LOSS_CONFIGS, rcnn_loss_configs,
                                    registered_losses, v3det_like_stats)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_every_registered_loss_has_a_v3det_config():
    missing = [n for n in registered_losses() if n not in LOSS_CONFIGS]
    assert not missing, ('add them to mmlongtail_bench.v3det.LOSS_CONFIGS: '
                         f'{missing}')


def test_missing_config_is_reported(monkeypatch):
    monkeypatch.delitem(LOSS_CONFIGS, 'FocalLoss')
    with pytest.raises(KeyError, match='FocalLoss'):
        rcnn_loss_configs(10, v3det_like_stats(10, 100))


def test_v3det_like_stats():
    s = v3det_like_stats()
    assert len(s['categories']) == 13204
    counts = [c['image_count'] for c in s['categories']]
    assert min(counts) >= 1 and max(counts) == round(0.1 * 183354)
    assert {c['frequency'] for c in s['categories']} == {'r', 'c', 'f'}


def test_tool_end_to_end(capsys):
    tool = runpy.run_path(
        osp.join(ROOT, 'tools', 'benchmark_v3det_scale.py'))
    tool['main']([
        '--num-classes', '40', '--rois', '16', '--iters', '1',
        '--proposals', '30', '--nms-repeats', '1', '--images', '24',
        '--stock-images', '12', '--dets', '10'
    ])
    out = capsys.readouterr().out
    for name in registered_losses():
        assert f'\n{name} ' in out, name
    assert 'mmdet CrossEntropyLoss (sigmoid, C)' in out
    # the early-stopping NMS equals mmdet's at every candidate count
    assert out.count('identical (') == 3 and 'DIFFERENT' not in out
    assert '24 / fast' in out and '12 / lvis (lvis-api)' in out
    assert 'metrics identical: True' in out
