"""tools/benchmark_dataset_load.py end to end at a tiny scale: the file is
generated and cached, both sides load it in fresh processes, the samplers
are built, one worker passes over every item, and the ratios are printed."""
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_benchmark_dataset_load_tiny(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    cmd = [sys.executable, osp.join(ROOT, 'tools/benchmark_dataset_load.py'),
           '--scale', '0.001', '--workers', '1', '--data-dir',
           str(tmp_path)]
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE,
                         text=True, timeout=600).stdout
    files = os.listdir(tmp_path)
    assert files == ['lvis_v1_train_like_scale0.001_12pt_seed0.json']
    data = json.loads((tmp_path / files[0]).read_text())
    assert len(data['images']) == 100
    # every LVIS v1 category keeps at least one image
    assert len({a['category_id'] for a in data['annotations']}) == 1203
    assert all(len(a['segmentation'][0]) == 24 for a in data['annotations'])
    sides = {}
    for line in out.splitlines():
        for side in ('mmdet', 'mmlongtail'):
            if line.startswith(f'{side}: '):
                sides[side] = json.loads(line[len(side) + 2:])
    assert set(sides) == {'mmdet', 'mmlongtail'}
    assert sides['mmdet']['images'] == sides['mmlongtail']['images'] > 90
    assert sides['mmlongtail']['workers'] == 1
    assert 'goal: load time <= 0.6x mmdet' in out
    assert 'goal: peak RSS <= 0.6x mmdet' in out
