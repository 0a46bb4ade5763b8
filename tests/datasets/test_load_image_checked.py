"""LoadImageChecked: good images load exactly as mmcv's LoadImageFromFile;
missing, empty, truncated, non-image and wrongly sized files are refused
with BadImageError naming the path, image id and what was found, or skipped,
counted and logged; through DataLoader workers too."""
import glob
import json
import logging
import os
import os.path as osp
import re

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from PIL import ImageFile
from torch.utils.data import DataLoader

from mmlongtail.datasets import (BadImageError, LoadImageChecked,
                                 LVISFormatDataset)
from mmlongtail.datasets.transforms.loading import KINDS, truncation
from tests.datasets.lvis_toy import write_lvis


def _picture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (7, 7), 0)


def _encode(img, ext='.jpg', progressive=False):
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    ok, buf = cv2.imencode(ext, img, params)
    assert ok
    return buf.tobytes()


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


def _info(path, img_id=7, h=48, w=64):
    return dict(img_path=str(path), img_id=img_id, height=h, width=w)


def _refused(path, kind, **info):
    with pytest.raises(BadImageError) as e:
        LoadImageChecked()(_info(path, **info))
    msg = str(e.value)
    assert str(path) in msg and f'(image id {info.get("img_id", 7)}, ' \
        f'{kind})' in msg, msg
    assert e.value.kind == kind and e.value.path == str(path)
    return msg


def _same_dicts(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize('ext,progressive,kwargs', [
    ('.jpg', False, {}),
    ('.jpg', True, {}),
    ('.png', False, {}),
    ('.jpg', False, dict(to_float32=True)),
    ('.png', False, dict(color_type='grayscale')),
    ('.png', False, dict(color_type='unchanged')),
    ('.jpg', False, dict(imdecode_backend='pillow')),
])
def test_good_image_gives_what_load_image_from_file_gives(
        tmp_path, ext, progressive, kwargs):
    path = _write(tmp_path / f'a{ext}',
                  _encode(_picture(48, 64), ext, progressive))
    ours = LoadImageChecked(**kwargs)(_info(path))
    mmcv_out = LoadImageFromFile(**kwargs)(_info(path))
    _same_dicts(ours, mmcv_out)
    assert ours['img_shape'] == (48, 64)


def test_missing_empty_and_non_image_files(tmp_path):
    assert 'no such file' in _refused(tmp_path / 'gone.jpg', 'missing')
    assert '0 bytes' in _refused(_write(tmp_path / 'e.jpg', b''), 'empty')
    text = _write(tmp_path / 't.jpg', b'<html>404 Not Found</html>')
    assert "b'<html>40'" in _refused(text, 'undecodable')
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)
    _refused(_write(tmp_path / 'n.jpg', noise.tobytes()), 'undecodable')


@pytest.mark.parametrize('ext,progressive', [('.jpg', False),
                                             ('.jpg', True),
                                             ('.png', False)])
def test_truncated_files_are_refused_at_any_offset(tmp_path, ext,
                                                   progressive):
    data = _encode(_picture(48, 64), ext, progressive)
    fmt = 'JPEG' if ext == '.jpg' else 'PNG'
    for cut in (1, 3, 20, 200, len(data) // 2, len(data) - 2, len(data) - 1):
        path = _write(tmp_path / f'cut{cut}{ext}', data[:cut])
        msg = _refused(path, 'truncated')
        assert f'truncated {fmt}' in msg and f'({cut} bytes)' in msg


def _with_thumbnail(main):
    """``main`` with an APP1 (EXIF) segment holding a whole small JPEG, as
    cameras store thumbnails: an end-of-image marker before the image."""
    thumb = _encode(_picture(8, 8, seed=1))
    payload = b'Exif\x00\x00' + thumb
    app1 = b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload
    return main[:2] + app1 + main[2:]


def test_truncation_check_reads_jpeg_structure():
    main = _encode(_picture(48, 64))
    full = _with_thumbnail(main)
    assert truncation(full) is None
    # the thumbnail's end marker does not hide a cut in the main image
    assert 'no end-of-image marker' in truncation(full[:-300])
    # bytes after the end-of-image marker (some cameras append data)
    assert truncation(main + b'\x00' * 16 + b'trailer') is None
    png = _encode(_picture(48, 64), '.png')
    assert truncation(png) is None and 'IEND' in truncation(png[:-12])
    assert truncation(b'GIF89a...') is None  # other formats: the decoder's


def test_decoder_that_returns_partial_images_is_caught(tmp_path,
                                                       monkeypatch):
    # Pillow with LOAD_TRUNCATED_IMAGES (like OpenCV 4 builds whose libjpeg
    # only warns) decodes a truncated JPEG to a partial image silently
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
    data = _encode(_picture(48, 64))
    path = _write(tmp_path / 'cut.jpg', data[:len(data) * 2 // 3])
    partial = LoadImageFromFile(imdecode_backend='pillow')(_info(path))
    assert partial['img'].shape == (48, 64, 3)  # loaded, no error
    with pytest.raises(BadImageError, match='truncated JPEG'):
        LoadImageChecked(imdecode_backend='pillow')(_info(path))


def test_size_other_than_the_annotation_is_refused(tmp_path):
    path = _write(tmp_path / 'a.jpg', _encode(_picture(48, 64)))
    msg = _refused(path, 'size_mismatch', h=48, w=80)
    assert 'decoded 48x64 (height x width)' in msg
    assert 'height=48, width=80' in msg and 'swapped' not in msg
    assert 'EXIF orientation' in _refused(path, 'size_mismatch', h=64, w=48)
    # without the annotation's size, or with the check off, it loads
    assert LoadImageChecked()(dict(img_path=path))['img_shape'] == (48, 64)
    out = LoadImageChecked(check_size=False)(_info(path, h=1, w=1))
    assert out['img_shape'] == (48, 64)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='bad_image must be one of'):
        LoadImageChecked(bad_image='ignore')
    with pytest.raises(ValueError, match="use bad_image='skip'"):
        LoadImageChecked(ignore_empty=True)
    with pytest.raises(ValueError, match='imdecode_backend'):
        LoadImageChecked(imdecode_backend='magic')


def test_skip_counts_and_logs_each_bad_image(tmp_path):
    good = _write(tmp_path / 'good.jpg', _encode(_picture(48, 64)))
    empty = _write(tmp_path / 'empty.jpg', b'')
    t = LoadImageChecked(bad_image='skip')
    logger = MMLogger.get_instance(
        'load_image_checked_skip', log_file=str(tmp_path / 'skip.log'),
        log_level=logging.WARNING)
    assert t(_info(tmp_path / 'none.jpg', img_id=3)) is None
    assert t(_info(empty, img_id=4)) is None
    assert t(_info(good, h=10, w=10)) is None
    assert t(_info(good)) is not None
    assert t.skipped.total == 3
    assert t.skipped.by_kind() == dict(
        {k: 0 for k in KINDS}, missing=1, empty=1, size_mismatch=1)
    for h in logger.handlers:
        h.flush()
    lines = open(tmp_path / 'skip.log').read().splitlines()
    assert len(lines) == 3
    assert f'{tmp_path / "none.jpg"} (image id 3, missing)' in lines[0]
    assert f'{empty} (image id 4, empty)' in lines[1]
    assert '3 bad image(s) skipped so far' in lines[2]


# --- through a real DataLoader with two workers ----------------------------


@pytest.fixture(scope='module')
def toy_images(tmp_path_factory):
    """An LVIS-format file of 40 images (64 px, one 20 px) and their JPEG
    files (every third progressive), with each image's decoded pixels."""
    root = tmp_path_factory.mktemp('toy_images')
    ann = str(root / 'ann.json')
    write_lvis(ann, num_images=40, seed=1)
    with open(ann) as f:
        images = json.load(f)['images']
    originals = {}
    for i, img in enumerate(images):
        path = str(root / img['coco_url'].split('images.cocodataset.org/')[1])
        os.makedirs(osp.dirname(path), exist_ok=True)
        data = _encode(_picture(img['height'], img['width'], seed=i),
                       progressive=i % 3 == 0)
        _write(path, data)
        originals[path] = (data, mmcv.imfrombytes(data))
    return dict(root=str(root), ann=ann, images=images, originals=originals)


def _dataset(toy, **load):
    return LVISFormatDataset(
        data_root=toy['root'], ann_file=toy['ann'], data_prefix=dict(img=''),
        filter_cfg=None,
        pipeline=[dict(type='mmlongtail.LoadImageChecked', **load)])


def _loader(dataset):
    return DataLoader(dataset, batch_size=2, num_workers=2,
                      collate_fn=list)


def _restore(toy):
    for path, (data, _) in toy['originals'].items():
        _write(path, data)


def test_error_reaches_the_user_from_a_worker(toy_images):
    ds = _dataset(toy_images)
    bad = ds.get_data_info(5)
    data = toy_images['originals'][bad['img_path']][0]
    try:
        _write(bad['img_path'], data[:len(data) // 2])
        batches = iter(_loader(ds))
        with pytest.raises(BadImageError) as e:
            for _ in batches:
                pass
        # the traceback keeps the iterator and its workers alive until a
        # later collection, which then waits seconds for them: end them now
        batches._shutdown_workers()
    finally:
        _restore(toy_images)
    msg = str(e.value)
    assert 'DataLoader worker process' in msg
    assert f'{bad["img_path"]} (image id {bad["img_id"]}, truncated)' in msg


def test_skips_in_workers_are_counted_in_the_main_process(
        toy_images, tmp_path):
    ds = _dataset(toy_images, bad_image='skip')
    bad = [ds.get_data_info(i)['img_path'] for i in (0, 9, 31)]
    log_file = tmp_path / 'workers.log'
    logger = MMLogger.get_instance(
        'load_image_checked_workers', log_file=str(log_file),
        log_level=logging.WARNING)
    try:
        for p in bad:
            os.remove(p)
        seen = [p for batch in _loader(ds) for p in
                (d['img_path'] for d in batch)]
    finally:
        _restore(toy_images)
    for h in logger.handlers:
        h.flush()
    counted = ds.pipeline.transforms[0].skipped
    skipped = [line for line in log_file.read_text().splitlines()
               if 'LoadImageChecked skipped' in line]
    # each bad image met once in order, and again if redrawn at random
    assert len(seen) == len(ds) and not set(bad) & set(seen)
    assert counted.total == len(skipped) >= 3
    assert counted.by_kind()['missing'] == counted.total
    assert {p for p in bad if any(p in line for line in skipped)} == set(bad)


def test_skips_in_spawned_workers_are_counted(toy_images):
    # a worker started by spawn (or a fork server, Python 3.14's default)
    # gets the dataset pickled; its counts still reach this process
    ds = _dataset(toy_images, bad_image='skip')
    bad = [ds.get_data_info(i)['img_path'] for i in (4, 30)]
    try:
        for p in bad:
            os.remove(p)
        seen = [d['img_path'] for batch in DataLoader(
            ds, batch_size=8, num_workers=1, collate_fn=list,
            multiprocessing_context='spawn') for d in batch]
    finally:
        _restore(toy_images)
    assert len(seen) == len(ds) and not set(bad) & set(seen)
    assert ds.pipeline.transforms[0].skipped.by_kind()['missing'] >= 2


# --- fuzz: random corruptions through a DataLoader with two workers ---------


def _corrupt(rng, path, data, height, width):
    """Corrupt one image file; returns (what was done, the expected outcome:
    'loaded' or the BadImageError kind)."""
    how = rng.choice(['truncate', 'zero', 'random', 'text', 'resize',
                      'delete', 'trailer', 'intact'])
    if how == 'truncate':
        cut = int(rng.integers(1, len(data)))
        _write(path, data[:cut])
        return f'truncated at {cut}/{len(data)}', 'truncated'
    if how == 'zero':
        _write(path, b'')
        return 'zero length', 'empty'
    if how == 'random':
        n = int(rng.integers(16, 4 * len(data)))
        _write(path, rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        return f'{n} random bytes', 'undecodable'
    if how == 'text':
        _write(path, b'<?xml version="1.0"?><Error>NoSuchKey</Error>')
        return 'text', 'undecodable'
    if how == 'resize':
        dh, dw = rng.integers(-8, 9, size=2)
        h, w = max(1, height + int(dh)), max(1, width + int(dw))
        if (h, w) == (height, width):
            w += 1
        _write(path, _encode(_picture(h, w)))
        return f'resized to {h}x{w}', 'size_mismatch'
    if how == 'delete':
        os.remove(path)
        return 'deleted', 'missing'
    if how == 'trailer':
        _write(path, data + rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
        return 'bytes appended after the image', 'loaded'
    return 'intact', 'loaded'


class _Outcomes:
    """Each index's outcome through ``dataset[i]`` inside the worker: the
    loaded pixels or the exception's type and message."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        path = self.dataset.get_data_info(i)['img_path']
        try:
            return path, 'loaded', self.dataset[i]['img']
        except Exception as e:  # the test counts every type that comes out
            return path, type(e).__name__, str(e)


@pytest.mark.parametrize('seed', [0, 1])
def test_fuzz_corrupt_images_through_workers(toy_images, seed):
    rng = np.random.default_rng(seed)
    ds = _dataset(toy_images)
    expected = {}
    try:
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            data = toy_images['originals'][info['img_path']][0]
            expected[info['img_path']] = _corrupt(
                rng, info['img_path'], data, info['height'], info['width'])
        results = [r for batch in _loader(_Outcomes(ds)) for r in batch]
    finally:
        _restore(toy_images)
    counts, wrong = {}, []
    for path, outcome, value in results:
        what, want = expected[path]
        if outcome == 'loaded':
            same = np.array_equal(value, toy_images['originals'][path][1])
            got = 'loaded' if same else 'silent change'
        elif outcome == 'BadImageError' and f'{path} (image id ' in value:
            got = value.split(f'{path} (image id ')[1].split(')')[0]
            got = got.split(', ')[1]
        else:
            got = f'{outcome}: {value[:200]}'
        key = got.split(':')[0]  # the exception type, not its message
        counts[key] = counts.get(key, 0) + 1
        if got != want:
            wrong.append(f'{path} ({what}): expected {want}, got {got}')
    print(f'\nfuzz seed {seed}: {len(results)} corrupted files, outcomes '
          f'{dict(sorted(counts.items()))}; other exception types and '
          f'silent changes: {len(wrong)}')
    assert len(results) == len(ds) and not wrong, '\n'.join(wrong)


# --- the epoch report through a real Runner ---------------------------------


class _MeanModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.w * torch.stack(inputs).mean())


def _mean_pixel(results):
    return dict(inputs=torch.tensor(float(results['img'].mean())))


def test_report_hook_sums_worker_skips_each_epoch(toy_images, tmp_path):
    ds = LVISFormatDataset(
        data_root=toy_images['root'], ann_file=toy_images['ann'],
        data_prefix=dict(img=''), filter_cfg=None,
        pipeline=[dict(type='mmlongtail.LoadImageChecked', bad_image='skip'),
                  _mean_pixel])
    bad = [ds.get_data_info(i)['img_path'] for i in (2, 17)]
    try:
        _write(bad[0], b'')
        os.remove(bad[1])
        runner = Runner(
            model=_MeanModel(), work_dir=str(tmp_path),
            default_scope='mmdet',
            train_dataloader=dict(
                dataset=ds, batch_size=4, num_workers=2,
                sampler=dict(type='DefaultSampler', shuffle=False)),
            train_cfg=dict(by_epoch=True, max_epochs=2),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
            default_hooks=dict(checkpoint=None),
            custom_hooks=[dict(type='mmlongtail.BadImageReportHook')])
        runner.train()
    finally:
        _restore(toy_images)
    lines = open(glob.glob(str(tmp_path / '*' / '*.log'))[0]).readlines()
    skips = [line for line in lines if 'LoadImageChecked skipped' in line]
    epochs = [re.search(r'Epoch (\d): (\d+) bad image\(s\) skipped .* '
                        r'(\d+) since the start', line).groups()
              for line in lines if 'since the start' in line]
    total = runner.message_hub.get_info('bad_images_skipped')
    # every bad image met at least once an epoch, each skip logged by the
    # worker that met it and counted in the main process's report
    assert total == len(skips) >= 4
    assert [e[0] for e in epochs] == ['1', '2']
    assert int(epochs[0][1]) + int(epochs[1][1]) == int(epochs[1][2]) == total
    assert all(any(p in line for line in skips) for p in bad)


# --- the configs ------------------------------------------------------------

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_configs_train_through_the_checked_loader_and_test_through_mmcvs():
    # training pipelines load through the checked loader; test pipelines keep
    # mmcv's LoadImageFromFile because mmdet's DetInferencer looks it up by
    # name (demo/image_demo.py on one of our configs would fail otherwise)
    from mmdet.apis import DetInferencer
    from mmengine.registry import DefaultScope
    inferencer = object.__new__(DetInferencer)  # only its pipeline logic
    for name in ('_base_/datasets/lvis_v1_instance.py',
                 '_base_/datasets/lvis_v1_instance_ms_rfs.py',
                 '_base_/datasets/lvis_v1_detection_ms_rfs.py',
                 'demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py',
                 'benchmark/retinanet_efl_rfs.py'):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
        train = cfg.train_dataloader.dataset.pipeline[0]
        assert train.type == 'mmlongtail.LoadImageChecked', name
        assert train.bad_image == 'error', name
        for loader in (cfg.val_dataloader, cfg.test_dataloader):
            assert loader.dataset.pipeline[0].type == 'LoadImageFromFile'
        with DefaultScope.overwrite_default_scope('mmdet'):
            pipeline = inferencer._init_pipeline(cfg)  # raises if missing
        assert pipeline.transforms[0].__class__.__name__ == (
            'InferencerLoader'), name
