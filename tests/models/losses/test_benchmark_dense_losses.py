"""tools/benchmark_dense_losses.py end to end at a tiny size: every case is
built from the RetinaNet LVIS configs, the old and lean paths give the same
loss, the table has the ratios, and a case runs in its own process."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
TOOL = os.path.join(ROOT, 'tools', 'benchmark_dense_losses.py')
TINY = ['--levels', '2', '--scale', '0.03', '--repeats', '1']


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_dense_losses',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the default config paths are relative
    tool = load_tool()
    out = tmp_path / 'r.json'
    tool.main(TINY + ['--isolate', 'none', '--json', str(out)])
    text = capsys.readouterr().out
    assert 'mem/old' in text and 'time/mmdet' in text
    results = {r['case']: r for r in json.loads(out.read_text())['results']}
    assert set(results) == set(tool.CASES)
    # 800 x 1333 times 0.03: 24 x 40 -> levels of 3 x 5 and 2 x 3 positions
    assert results['focal']['anchors'] == (3 * 5 + 2 * 3) * 9
    assert results['focal']['num_classes'] == 1203
    assert results['efl']['loss'] == 'EqualizedFocalLoss'
    for lean, old in (('focal', 'focal_old'), ('efl', 'efl_old'),
                      ('focal', 'mmdet_focal')):
        assert results[lean]['value'] == pytest.approx(
            results[old]['value'], rel=1e-5)
    # in one process a tiny case may reuse freed memory: peak >= 0
    assert all(r['peak_bytes'] >= 0 and r['time_s'] > 0
               for r in results.values())


def test_memory_sees_a_transient_allocation():
    import torch
    memory = load_tool().Memory('cpu')
    memory.start()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del x
    assert 56 * 2**20 < memory.peak() < 128 * 2**20


def test_one_case_in_a_fresh_process():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, TOOL] + TINY + ['--cases', 'efl', '--levels', '1'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[2].startswith('efl ')


def test_bad_arguments_are_refused():
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(['--levels', '6'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--scale', '0'])
