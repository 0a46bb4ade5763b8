"""A killed test keeps its predictions and a rerun continues from them
(``tools/test.py``, ``tools/dist_test.sh``); ``tools/evaluate_predictions.py``
evaluates them later. Fault injection on real processes of the tools.

The model is ``oracle_detector.EvalsafeOracleDetector`` (ground truth plus
seeded noise: non-trivial AP, no network to run), on a 9-image synthetic
LVIS val split, evaluated on boxes and masks under the standard and fixed
protocols, batch size 1, a chunk every 2 images:

1. ``tools/test.py`` killed (SIGKILL) by a test hook after its 5th image:
   2 chunks (4 images) are kept, the 5th image is lost;
2. the same command killed half-way through writing its 2nd chunk (the
   atomic writer's test-only fault point): 6 images kept, a temporary left;
3. ``tools/dist_test.sh`` with 2 processes finishes the 3 images left and
   evaluates all 9.

The result equals a test run once without saving predictions: the same
rounded metrics, the same per-class AP (unrounded) and the same detections
in the results files; the offline tool gives the same numbers again and
adds the pooled protocol and the boundary metric.
"""
import glob
import json
import os
import os.path as osp
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import save_checkpoint

from dist_utils import free_port
from oracle_detector import (KILL_AFTER_ENV, EvalsafeOracleDetector,
                             oracle_config)
from mmlongtail.evaluation import prediction_store as store
from mmlongtail.evaluation.prediction_store import PredictionStoreError
from mmlongtail.utils.atomic_io import KILL_DURING_WRITE_ENV, is_temporary

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
NUM_IMAGES = 9


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    from mmlongtail_bench.synthetic import (SyntheticLVISConfig,
                                            generate_synthetic_lvis)
    tmp = tmp_path_factory.mktemp('streamed')
    data = str(tmp / 'data')
    generate_synthetic_lvis(data, SyntheticLVISConfig(
        num_rare=4, num_common=4, num_frequent=4, num_train_images=48,
        val_images_per_class=3, image_size=64, min_size=10, max_size=24,
        rare_max=3, common_max=8, frequent_max_fraction=0.5, seed=3),
        show_progress=False)
    cfg_file = str(tmp / 'oracle.py')
    Config(oracle_config(data, 'annotations/lvis_v1_val.json',
                         12)).dump(cfg_file)
    ckpts = {}
    for name, noise in (('a', 0.7), ('b', 1.5)):
        model = EvalsafeOracleDetector(12)
        model.noise.data.fill_(noise)
        os.makedirs(tmp / name)
        ckpts[name] = str(tmp / name / 'epoch_1.pth')  # the same file name
        save_checkpoint(
            dict(meta=dict(epoch=1), state_dict=model.state_dict()),
            ckpts[name])
    return dict(tmp=tmp, cfg=cfg_file, ckpt=ckpts)


def _env(extra=None):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONPATH=f'{ROOT}:{HERE}:{osp.dirname(HERE)}')
    env.pop(KILL_AFTER_ENV, None)
    env.pop(KILL_DURING_WRITE_ENV, None)
    env.update(extra or {})
    return env


def _run(cmd, log, extra_env=None):
    with open(log, 'w') as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(extra_env), stdout=out,
                              stderr=subprocess.STDOUT, timeout=300)
    with open(log) as f:
        return proc.returncode, f.read()


def _prefix(work_dir):
    return ['--cfg-options',
            f'test_evaluator.outfile_prefix={osp.join(work_dir, "lvis")}']


def _in_process(tool, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [tool] + argv)
    monkeypatch.syspath_prepend(HERE)
    runpy.run_path(osp.join(ROOT, 'tools', tool), run_name='__main__')


def _logged_metrics(work_dir):
    """The metrics mmengine's LoggerHook dumped after the test."""
    (path, ) = glob.glob(osp.join(work_dir, '*', '*.json'))
    with open(path) as f:
        last = json.loads(f.read().splitlines()[-1])
    return {k: v for k, v in last.items() if k.startswith('lvis/')}


def _sorted_results(path):
    """A results file's detections ordered by image (their order within an
    image kept): the file lists images in the order they were evaluated."""
    with open(path) as f:
        anns = json.load(f)
    return sorted(anns, key=lambda a: a['image_id'])


def _per_class(work_dir):
    with open(osp.join(work_dir, 'lvis.per_class.json')) as f:
        return json.load(f)


def test_killed_test_continues_and_equals_uninterrupted(
        setup, tmp_path, monkeypatch, capsys):
    cfg, ckpt = setup['cfg'], setup['ckpt']['a']
    ref_dir, work = str(tmp_path / 'ref'), str(tmp_path / 'work')
    folder = osp.join(work, 'predictions', 'epoch_1')
    test = [sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir', work,
            '--predictions-chunk', '2'] + _prefix(work)

    # 1. killed after its 5th image: the 2 chunks written are kept
    code, log = _run(test, str(tmp_path / 'kill1.log'),
                     {KILL_AFTER_ENV: '5'})
    assert code == -9, log
    assert [osp.basename(p) for p in store.chunk_paths(folder)] == [
        'rank000-000000.npz', 'rank000-000001.npz'], log
    assert store.image_ids(folder).shape == (4, )
    assert store.read_manifest(folder)['num_images'] == NUM_IMAGES

    # 2. the same command, killed half-way through writing a chunk
    code, log = _run(test, str(tmp_path / 'kill2.log'),
                     {KILL_DURING_WRITE_ENV: 'rank000-000003.npz'})
    assert code == -9, log
    assert 'Continuing: 4 of 9 images were predicted before' in log, log
    assert store.image_ids(folder).shape == (6, )
    assert any(is_temporary(n) for n in os.listdir(folder))

    # 3. finished by two processes: 3 images left, all 9 evaluated
    code, log = _run(['bash', 'tools/dist_test.sh', cfg, ckpt, '2',
                      '--work-dir', work, '--predictions-chunk', '2'] +
                     _prefix(work), str(tmp_path / 'finish.log'),
                     {'PORT': str(free_port())})
    assert code == 0, log
    assert 'Continuing: 6 of 9 images were predicted before' in log, log
    assert not any(is_temporary(n) for n in os.listdir(folder))
    assert store.image_ids(folder).shape == (NUM_IMAGES, )
    # each image predicted once: the reruns skipped what was saved (the
    # image lost with the first kill's buffer was predicted again)
    ids = store.image_ids(folder).tolist()  # dataset order here
    chunks = {osp.basename(p): [r['img_id'] for r in store.read_chunk(p)]
              for p in store.chunk_paths(folder)}
    assert chunks == {
        'rank000-000000.npz': ids[0:2], 'rank000-000001.npz': ids[2:4],
        'rank000-000002.npz': ids[4:6],
        'rank000-000003.npz': [ids[6], ids[8]],  # rank 0's share of 6, 7, 8
        'rank001-000000.npz': [ids[7]]}, chunks

    # the reference: the same test in one go, predictions kept in memory
    _in_process('test.py', [cfg, ckpt, '--work-dir', ref_dir,
                            '--no-save-predictions'] + _prefix(ref_dir),
                monkeypatch)
    assert not osp.exists(osp.join(ref_dir, 'predictions'))
    ref = _logged_metrics(ref_dir)
    assert 0.05 < ref['lvis/bbox_AP'] < 0.95 and ref['lvis/segm_AP'] > 0
    assert len(ref) == 36  # bbox and segm x standard and fixed x 9 items
    assert _logged_metrics(work) == ref
    ref_pc, pc = _per_class(ref_dir), _per_class(work)
    for section in ('metrics', 'fixed'):
        assert pc[section] == ref_pc[section]
    for name in ('bbox', 'segm', 'bbox.fixed', 'segm.fixed'):
        assert _sorted_results(osp.join(work, f'lvis.{name}.json')) == \
            _sorted_results(osp.join(ref_dir, f'lvis.{name}.json'))

    # offline: every protocol, the same numbers where the test had them
    capsys.readouterr()
    off_dir = str(tmp_path / 'offline')
    _in_process('evaluate_predictions.py',
                [cfg, folder, '--out-prefix', osp.join(off_dir, 'lvis')],
                monkeypatch)
    out = capsys.readouterr().out
    offline = json.loads(out[out.index('{\n "lvis/'):])
    assert {k: offline[k] for k in ref} == ref
    for key in ('lvis/bbox_APpool_r', 'lvis/segm_APpool',
                'lvis/boundary_AP', 'lvis/boundary_APfixed_r'):
        assert key in offline
    off_pc = _per_class(off_dir)
    for section in ('metrics', 'fixed'):
        for metric in ('bbox', 'segm'):
            assert off_pc[section][metric] == ref_pc[section][metric]


def test_predictions_of_another_checkpoint_are_refused(setup, tmp_path,
                                                       monkeypatch):
    cfg, ckpts = setup['cfg'], setup['ckpt']
    work = str(tmp_path / 'work')
    folder = osp.join(work, 'predictions', 'epoch_1')
    args = ['--work-dir', work, '--predictions-chunk', '4']
    _in_process('test.py', [cfg, ckpts['a']] + args, monkeypatch)
    assert store.image_ids(folder).shape == (NUM_IMAGES, )
    before = {p: os.stat(p).st_mtime_ns for p in store.chunk_paths(folder)}
    # b has a.pth's name: it would share the folder
    with pytest.raises(PredictionStoreError) as e:
        _in_process('test.py', [cfg, ckpts['b']] + args, monkeypatch)
    msg = str(e.value)
    assert 'holds predictions of another test' in msg
    assert f'checkpoint: saved for {ckpts["a"]}' in msg
    assert f'now {ckpts["b"]}' in msg and '--fresh-predictions' in msg
    assert 'config:' not in msg and 'dataset:' not in msg
    assert {p: os.stat(p).st_mtime_ns
            for p in store.chunk_paths(folder)} == before  # untouched
    # rerunning a finished test predicts nothing and evaluates again
    _in_process('test.py', [cfg, ckpts['a']] + args, monkeypatch)
    assert {p: os.stat(p).st_mtime_ns
            for p in store.chunk_paths(folder)} == before
    # --fresh-predictions starts over with b
    _in_process('test.py', [cfg, ckpts['b'], '--fresh-predictions'] + args,
                monkeypatch)
    manifest = store.read_manifest(folder)
    assert manifest['identity']['checkpoint']['sha256'] == \
        store.file_identity(ckpts['b'])['sha256']
    assert store.image_ids(folder).shape == (NUM_IMAGES, )


# ---------------------------------------------------------------- units
def _sample(img_id, n, masks=True, mask_scores=False, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 20, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 9, (n, 2))], 1)
    sample = {'img_id': img_id, 'pred_instances': {
        'bboxes': torch.from_numpy(boxes.astype(np.float32)),
        'scores': torch.from_numpy(rng.random(n).astype(np.float32)),
        'labels': torch.from_numpy(rng.integers(0, 5, n))}}
    if masks:
        sample['pred_instances']['masks'] = torch.from_numpy(
            rng.random((n, 30, 40)) > 0.5)
    if mask_scores:
        sample['pred_instances']['mask_scores'] = torch.rand(n)
    return sample


def _record(img_id, n, **kw):
    return store.image_record(_sample(img_id, n, **kw))


@pytest.mark.parametrize('masks,mask_scores', [(True, True), (True, False),
                                               (False, False)])
def test_chunk_round_trip(tmp_path, masks, mask_scores):
    samples = [_sample(i, n, masks=masks, mask_scores=mask_scores, seed=i)
               for i, n in ((3, 4), (1, 0), (7, 2))]
    recs = [store.image_record(s) for s in samples]
    path = store.write_chunk(str(tmp_path), 2, 5, recs)
    assert osp.basename(path) == 'rank002-000005.npz'
    with np.load(path, allow_pickle=False) as z:  # no pickled objects
        assert ('mask_counts' in z.files) == masks
    back = store.read_chunk(path)
    assert [r['img_id'] for r in back] == [3, 1, 7]
    for a, b in zip(recs, back):
        for k in ('bboxes', 'scores', 'labels', 'mask_scores'):
            if a[k] is None:
                assert b[k] is None
            else:
                assert a[k].dtype == b[k].dtype
                np.testing.assert_array_equal(a[k], b[k])
        assert a['masks'] == b['masks']
    if masks:  # the saved RLE decodes to the model's mask
        import pycocotools.mask as mask_util
        np.testing.assert_array_equal(
            mask_util.decode(back[0]['masks'][1]),
            samples[0]['pred_instances']['masks'][1].numpy())
    assert store.next_chunk_index(str(tmp_path), 2) == 6
    assert store.next_chunk_index(str(tmp_path), 0) == 0


def test_duplicates_counted_and_damage_named(tmp_path):
    folder = str(tmp_path)
    store.write_chunk(folder, 0, 0, [_record(1, 2), _record(2, 1)])
    store.write_chunk(folder, 1, 0, [_record(3, 1), _record(1, 2)])  # pad
    stats = {}
    ids = [r['img_id'] for c in store.iter_chunks(folder, stats) for r in c]
    assert ids == [1, 2, 3]
    assert stats == {'images': 3, 'duplicates': 1, 'chunks': 2}
    path = store.chunk_paths(folder)[1]
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(PredictionStoreError, match=(
            f'prediction chunk {path} is unreadable.*delete it and rerun')):
        list(store.iter_chunks(folder))
    with open(osp.join(folder, store.MANIFEST), 'w') as f:
        json.dump({'format': store.FORMAT, 'version': 99}, f)
    with pytest.raises(PredictionStoreError, match='format version 99'):
        store.read_manifest(folder)


def test_sampler_skips_predicted_images_of_every_rank(monkeypatch):
    from mmengine.dataset import sampler as mm_sampler

    from mmlongtail.evaluation import SkipPredictedSampler

    class Images:
        def __len__(self):
            return 7

        def get_data_info(self, i):
            return {'img_id': 100 + i}

    done = np.array([100, 103, 104, 199])  # 199: not in the dataset
    shares = []
    for rank in range(2):
        monkeypatch.setattr(mm_sampler, 'get_dist_info', lambda r=rank:
                            (r, 2))
        s = SkipPredictedSampler(Images(), dict(type='DefaultSampler',
                                                shuffle=False))
        full = list(s)
        skipped = s.skip_images(done)
        shares.append(list(s))
        assert len(s) == len(shares[-1]) == len(full) - skipped
        assert shares[-1] == [i for i in full if i not in (0, 3, 4)]
    # DefaultSampler pads rank 1 with index 0, predicted already
    assert shares == [[2, 6], [1, 5]]


def test_streamed_metric_equals_lvis_metric_and_serves_one_test(tmp_path):
    """In one process: the wrapper's results from its chunks equal
    LVISMetric's on the same samples, under all three protocols."""
    from tiny_federated import tiny_federated_gt, tiny_federated_predictions

    from mmlongtail.evaluation import LVISMetric, StreamedLVISMetric
    ann_file = str(tmp_path / 'gt.json')
    with open(ann_file, 'w') as f:
        json.dump(tiny_federated_gt(), f)
    samples = [{'img_id': p['img_id'], 'pred_instances': {
        k: torch.from_numpy(p[k]) for k in ('bboxes', 'scores', 'labels')}}
        for p in tiny_federated_predictions()]
    cfg = dict(type='mmlongtail.LVISMetric', ann_file=ann_file,
               protocol=['standard', 'fixed', 'pooled'])
    direct = LVISMetric(**{k: v for k, v in cfg.items() if k != 'type'})
    direct.process({}, samples)
    folder = str(tmp_path / 'pred')
    store.write_manifest(folder, {}, len(samples))
    streamed = StreamedLVISMetric(cfg, folder, chunk_images=3)
    streamed.process({}, samples[:2])
    assert store.chunk_paths(folder) == []  # 2 buffered
    streamed.process({}, samples[2:])
    assert len(store.chunk_paths(folder)) == 1  # 3 written, 1 buffered
    got = streamed.evaluate(len(samples))
    assert len(store.chunk_paths(folder)) == 2
    assert got == direct.evaluate(len(samples))
    assert got['lvis/bbox_AP'] == round((1 / 3 + 1 / 2 + 1 + 0) / 4, 3)
    with pytest.raises(RuntimeError, match='one test'):
        streamed.process({}, samples[:1])
