"""The faster-coco-eval internals the fast backend uses: present in the
installed version (this test fails loudly, naming the version and what is
missing, when an upgrade moves them), and a clear error at use time when
they are not."""
import json

import pytest
from tiny_federated import tiny_federated_gt, tiny_federated_predictions

from mmlongtail.evaluation import LVISMetric, faster_coco


def test_installed_faster_coco_eval_has_every_internal():
    missing = faster_coco.missing_internals()
    assert not missing, (
        f'faster-coco-eval {faster_coco.installed_version()} lacks internals '
        f'the fast LVIS backend uses: {missing}. Adapt '
        'mmlongtail/evaluation/faster_coco.py or pin '
        f'{faster_coco.window_text()}')
    assert faster_coco.in_tested_window(faster_coco.installed_version()), (
        f'faster-coco-eval {faster_coco.installed_version()} is installed '
        f'but the tested window is {faster_coco.window_text()}')


def test_window_is_the_one_declared_in_version_py():
    from mmlongtail.version import FASTER_COCO_EVAL_REQUIREMENT
    assert faster_coco.window_text() == FASTER_COCO_EVAL_REQUIREMENT
    assert faster_coco.in_tested_window('1.8.0')
    assert not faster_coco.in_tested_window('1.7.1')
    assert not faster_coco.in_tested_window('9.0.0')


def test_missing_internal_is_a_clear_error_at_use_time(tmp_path,
                                                       monkeypatch):
    """Without ``COCOeval_faster._prepare`` (as if a new release renamed
    it), evaluating with backend='fast' raises FasterCocoEvalUnsupported
    naming the version, the internal and the window, not an
    AttributeError."""
    from faster_coco_eval.core.cocoeval import COCOeval  # defines it
    monkeypatch.delattr(COCOeval, '_prepare')
    monkeypatch.setattr(faster_coco, '_CHECKED', None)
    gt = tiny_federated_gt()
    path = str(tmp_path / 'gt.json')
    with open(path, 'w') as f:
        json.dump(gt, f)
    m = LVISMetric(ann_file=path)
    p = tiny_federated_predictions()[1]
    import torch
    m.process({}, [dict(img_id=p['img_id'], ori_shape=(100, 100),
                        pred_instances={k: torch.from_numpy(v)
                                        for k, v in p.items()
                                        if k != 'img_id'})])
    version = faster_coco.installed_version()
    with pytest.raises(faster_coco.FasterCocoEvalUnsupported) as e:
        m.evaluate(1)
    msg = str(e.value)
    assert f'faster-coco-eval {version}' in msg
    assert 'COCOeval_faster._prepare' in msg
    assert faster_coco.window_text() in msg and "backend='lvis'" in msg
    monkeypatch.setattr(faster_coco, '_CHECKED', None)


def test_probe_reports_a_changed_state_layout(monkeypatch):
    """The run-time probe catches what static checks cannot: here, an
    ImageEvaluation state with a different layout."""
    import faster_coco_eval.faster_eval_api_cpp as _C

    def _state(self):
        return ([], [], [], [], [])  # one field fewer

    monkeypatch.setattr(_C.ImageEvaluation, '__getstate__', _state)
    missing = faster_coco.missing_internals()
    assert missing and 'one-image evaluation failed' in missing[0]
