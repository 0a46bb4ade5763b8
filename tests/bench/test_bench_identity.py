"""The benchmark's third-edition machinery: reuse by content (a run's
identity: settings, resolved config, dataset, start checkpoint, pretrained
backbone), the held-out file's ``info.heldout_split`` record written by the
library, and the pretrained start (deterministic, cached, loaded by every
config that reads it); a real run reproduced from its recorded seed, rerun
when its config is edited, reused when only a comment changed or the out
dir moved."""
import dataclasses
import json
import logging
import os
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmlongtail.datasets import split_info
from mmlongtail.datasets.heldout_split import GIVEN_RULE
from mmlongtail_bench.benchmark import (DATA_ROOT_VAR, INIT_CHECKPOINT_VAR,
                                        PRETRAINED_VAR, Method,
                                        PretrainSettings, config_digest,
                                        dataset_digest, default_methods,
                                        heldout_file, identity_changes,
                                        pretrain_backbone, run_benchmark)
from mmlongtail_bench.synthetic import write_heldout_split

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(ROOT, 'configs', 'benchmark')
#: A pretraining of a few seconds on synthetic40's world (objects <= 24 px).
TINY = PretrainSettings(crops_per_class=2, epochs=1, crop_size=28,
                        batch_size=41, threads=1, eval_crops_per_class=1)


@pytest.fixture(scope='module')
def bench_root(synthetic40, tmp_path_factory):
    """A copy of synthetic40 with its held-out split (which rewrites the
    training file with the split's record)."""
    root = str(tmp_path_factory.mktemp('bench_identity') / 'data')
    shutil.copytree(synthetic40['root'], root)
    write_heldout_split(root, show_progress=False)
    return dict(synthetic40, root=root,
                train=osp.join(root, 'annotations', 'lvis_v1_train.json'))


@pytest.fixture
def bench_data(bench_root, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_VAR, bench_root['root'])
    for var in (INIT_CHECKPOINT_VAR, PRETRAINED_VAR):
        monkeypatch.delenv(var, raising=False)
    return bench_root


def test_config_digest_ignores_seed_and_moved_paths(monkeypatch):
    def digest(root, work_dir, seed, **options):
        monkeypatch.setenv(DATA_ROOT_VAR, root)
        cfg = Config.fromfile(osp.join(BENCH, 'baseline_ce.py'))
        cfg.merge_from_dict(options)
        cfg.work_dir, cfg.randomness = work_dir, dict(seed=seed)
        cfg.val_evaluator.outfile_prefix = osp.join(work_dir, 'lvis')
        return config_digest(cfg, {work_dir: '<work_dir>',
                                   root: '<data_root>'})

    first = digest('/data/a/', '/out/a/baseline_ce_seed0', 0)
    # another seed, data dir or out dir: the same config
    assert digest('/elsewhere/b', 'out2/baseline_ce_seed1', 1) == first
    # a changed setting: another config
    assert digest('/data/a/', '/out/a/baseline_ce_seed0', 0, **{
        'optim_wrapper.optimizer.lr': 0.02}) != first
    assert identity_changes(None, dict(config='x')) == [
        'no recorded identity']
    assert identity_changes(
        dict(version=1, config='a', dataset='d', pretrained='p'),
        dict(version=1, config='b', dataset='d', pretrained='q')) == [
            'config', 'pretrained']


def test_dataset_digest_hashes_annotations_and_lists_images(tmp_path):
    root = tmp_path / 'a'
    (root / 'img').mkdir(parents=True)
    for name, data in (('1.png', b'xx'), ('2.png', b'yyy')):
        (root / 'img' / name).write_bytes(data)
    ann = root / 'ann.json'
    ann.write_text(json.dumps(dict(images=[
        dict(id=1, file_name='img/1.png'), dict(id=2, file_name='img/2.png')
    ])))
    first = dataset_digest([str(ann)], str(root))
    # the same bytes with a new mtime, or the whole dataset moved: same
    os.utime(root / 'img' / '1.png', (1, 1))
    shutil.move(str(root), str(tmp_path / 'b'))
    root, ann = tmp_path / 'b', tmp_path / 'b' / 'ann.json'
    assert dataset_digest([str(ann)], str(root)) == first
    # an image of another size: another dataset (its bytes are not read)
    (root / 'img' / '2.png').write_bytes(b'yyyy')
    second = dataset_digest([str(ann)], str(root))
    assert second != first
    # an edited annotation file: another dataset
    ann.write_text(ann.read_text() + ' ')
    assert dataset_digest([str(ann)], str(root)) != second
    (root / 'img' / '2.png').unlink()
    with pytest.raises(FileNotFoundError, match='2.png .*is missing'):
        dataset_digest([str(ann)], str(root))


def test_heldout_file_carries_the_library_record(bench_data, synthetic40):
    """The held-out file and the training file are the two parts the
    library's split_heldout writes, so the calibration sweep knows the
    model never saw the held-out images (not "not recorded")."""
    from mmlongtail.apis.calibration.split import prepare_split

    cfg = Config.fromfile(osp.join(BENCH, 'norcal.py'))
    held = heldout_file(cfg)
    info = split_info(held)
    assert info['part'] == 'heldout' and info['rule'] == GIVEN_RULE
    assert info['files'] == dict(heldout='lvis_v1_train_heldout.json',
                                 remaining='lvis_v1_train.json')
    assert info['source'] == osp.join(bench_data['root'], 'annotations',
                                      'lvis_v1_train_and_heldout.json')
    train = split_info(bench_data['train'])
    assert train['part'] == 'remaining'
    assert train['num_part_images'] == 120
    # the training file keeps its images, annotations and categories
    with open(synthetic40['train']) as f:
        before = json.load(f)
    with open(bench_data['train']) as f:
        after = json.load(f)
    for key in ('images', 'annotations', 'categories'):
        assert after[key] == before[key], key
    with open(held) as f:
        assert {c['frequency'] for c in json.load(f)['categories']} == {
            'r', 'c', 'f'}  # the training groups
    split = prepare_split(cfg, 'heldout', heldout_ann_file=held)
    assert split.seen_in_training is False
    assert 'not recorded' not in split.note
    assert 'not in the training set of the config' in split.note
    # made again: the same files
    stamp = os.stat(held).st_mtime_ns
    write_heldout_split(bench_data['root'], show_progress=False)
    assert split_info(held) == info
    assert os.stat(held).st_mtime_ns == stamp  # the library kept them


def _sd(path, prefix=''):
    sd = torch.load(path, map_location='cpu', weights_only=False)
    return {k[len(prefix):]: v for k, v in sd['state_dict'].items()
            if k.startswith(prefix)}


def test_pretrained_start_is_reproducible_cached_and_loaded(
        bench_data, tmp_path, monkeypatch):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    config = osp.join(BENCH, 'baseline_ce.py')
    a = pretrain_backbone(TINY, config, bench_data['train'],
                          str(tmp_path / 'a'))
    b = pretrain_backbone(TINY, config, bench_data['train'],
                          str(tmp_path / 'b'))
    # the same weights, bit for bit, from the recorded seed
    assert not a['reused'] and a['sha256'] == b['sha256']
    assert a['identity'] == b['identity'] and a['classes'] == 41
    assert a['steps'] == 2 and 0 <= a['accuracy'] <= 1
    # found again by its identity; another seed is another pretraining
    again = pretrain_backbone(TINY, config, bench_data['train'],
                              str(tmp_path / 'a'))
    assert again['reused'] and again['checkpoint'] == a['checkpoint']
    other = dataclasses.replace(TINY, seed=1)
    c = pretrain_backbone(other, config, bench_data['train'],
                          str(tmp_path / 'a'))
    assert c['identity'] != a['identity'] and c['sha256'] != a['sha256']
    with pytest.raises(ValueError, match='crop_size 20 cannot hold'):
        pretrain_backbone(dataclasses.replace(TINY, crop_size=20), config,
                          bench_data['train'], str(tmp_path / 'a'))
    # a config that reads $LONGTAIL_BENCH_PRETRAINED starts from it
    monkeypatch.setenv(PRETRAINED_VAR, a['checkpoint'])
    register_all_modules()
    for key in ('baseline_ce', 'retinanet_focal', 'baseline_ce_scratch'):
        model = MODELS.build(Config.fromfile(
            osp.join(BENCH, f'{key}.py')).model)
        model.init_weights()
        same = torch.equal(model.backbone.conv1.weight,
                           _sd(a['checkpoint'])['conv1.weight'])
        assert same == (key != 'baseline_ce_scratch'), key


class _Messages(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _run(**kw):
    handler = _Messages()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        out = run_benchmark(**kw)
    finally:
        logger.removeHandler(handler)
    with open(out['files']['json']) as f:
        runs = json.load(f)['runs']
    return runs[0], [m for m in handler.messages if 'started' in m]


def test_an_edited_config_reruns_a_comment_or_a_moved_out_dir_does_not(
        bench_data, tmp_path):
    """The CE baseline (1 iteration on 8 images, val on 4) from the tiny
    pretrained start: its record names the start (path, hash) and its
    identity; a comment added to its config or its out dir moved, it is
    reused; a setting edited, it runs again, and since that setting
    does not change the training (the logging interval), the weights come
    out the same: the run is reproducible from its recorded seed."""
    path = tmp_path / 'base.py'
    # (each class's top 5 per image, one val pass: a short evaluation)
    path.write_text(f'_base_ = {osp.join(BENCH, "baseline_ce.py")!r}\n'
                    'model = dict(test_cfg=dict(rcnn=dict(topk_per_class=5'
                    ')))\nfixed_ap_eval = None\n')
    base = default_methods(BENCH)[0]
    ms = [Method(base.key, base.label, str(path))]
    kw = dict(methods=ms, seeds=(0, ), epochs=1, train_images=8,
              val_images=4, pretrain=TINY,
              pretrain_dir=str(tmp_path / 'cache'))
    first, started = _run(out_dir=str(tmp_path / 'a'), **kw)
    assert len(started) == 1 and '(not run yet)' in started[0]
    pre = first['pretrained']
    assert pre['path'] == first['spec']['pretrained']
    assert pre['sha256'] == first['identity']['pretrained']
    assert pre['settings'] == dataclasses.asdict(TINY)
    assert set(first['identity']) == {
        'version', 'settings', 'config', 'dataset', 'init_checkpoint',
        'pretrained'}
    weights = _sd(first['checkpoint'])
    # a comment: the resolved config is the same, the run is reused
    path.write_text(path.read_text() + '# a comment\n')
    shutil.move(str(tmp_path / 'a'), str(tmp_path / 'moved'))
    moved, started = _run(out_dir=str(tmp_path / 'moved'), **kw)
    assert started == []
    assert moved['checkpoint'] == osp.join(
        str(tmp_path / 'moved'), 'baseline_ce_seed0',
        osp.basename(first['checkpoint']))
    assert osp.isfile(moved['per_class'])
    # an edited setting: run again, and the log says what changed
    path.write_text(path.read_text() +
                    'default_hooks = dict(logger=dict(interval=7))\n')
    redone, started = _run(out_dir=str(tmp_path / 'moved'), **kw)
    assert len(started) == 1 and '(changed: config)' in started[0]
    assert redone['identity']['config'] != first['identity']['config']
    assert redone['identity']['dataset'] == first['identity']['dataset']
    again = _sd(redone['checkpoint'])
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_config_with_another_backbone_is_refused(tmp_path, monkeypatch):
    """The Pretrained init would load what matches and leave the rest
    random: a config that starts from the pretrained checkpoint with
    another backbone is refused before anything runs."""
    from mmlongtail_bench.benchmark.pretrain import backbone_config
    from mmlongtail_bench.benchmark.runner import check_pretrained_backbones

    monkeypatch.delenv(PRETRAINED_VAR, raising=False)
    base = default_methods(BENCH)[:2]  # CE and CE from scratch
    backbone, _, _ = backbone_config(base[0].config)
    check_pretrained_backbones(base, '/cache/b.pth', backbone)
    wide = tmp_path / 'wide.py'
    wide.write_text(f'_base_ = {base[0].config!r}\n'
                    'model = dict(backbone=dict(base_channels=64))\n')
    with pytest.raises(ValueError, match="Wide .* starts from the pretrained"
                       " backbone /cache/b.pth, but its backbone .*'base_"
                       "channels': 64"):
        check_pretrained_backbones([Method('w', 'Wide', str(wide))],
                                   '/cache/b.pth', backbone)


def test_a_from_scratch_config_does_not_depend_on_the_start_offered(
        monkeypatch):
    """Every benchmark config either starts its model from the pretrained
    backbone offered, or carries no trace of it, so a from-scratch run (the
    query track, the from-scratch CE row) is reused whatever start a call
    offers: same config digest offered or not, no pretrained part."""
    from types import SimpleNamespace

    from mmlongtail_bench.benchmark.run import pretrained_start

    monkeypatch.setenv(DATA_ROOT_VAR, '/data/bench/')
    offered = '/cache/pretrain/abc/backbone.pth'

    def load(key, start):
        if start is None:
            monkeypatch.delenv(PRETRAINED_VAR, raising=False)
        else:
            monkeypatch.setenv(PRETRAINED_VAR, start)
        return Config.fromfile(osp.join(BENCH, f'{key}.py'))

    scratch = set()
    for m in default_methods(BENCH):
        cfg = load(m.key, offered)
        spec = SimpleNamespace(pretrained=offered)
        if pretrained_start(spec, cfg) == offered:
            continue
        scratch.add(m.key)
        assert offered not in json.dumps(cfg.to_dict(), default=repr), m.key
        assert config_digest(cfg, {}) == config_digest(load(m.key, None),
                                                       {}), m.key
    assert scratch == {'baseline_ce_scratch', 'dino_focal', 'dino_federated',
                       'dino_eqlv2', 'dino_rfs'}
