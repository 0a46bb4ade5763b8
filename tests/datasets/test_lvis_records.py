"""Compact LVIS records: items equal mmdet's LVISV1Dataset's (polygons,
crowd and ignore flags, RLE masks, federated image fields, filters,
subsets), one decode and one open of the file, the bad-annotation policy,
and a seeded fuzz test of corrupted files (issue 28, item 4)."""
import builtins
import copy
import json
import logging
from collections import Counter, defaultdict
from unittest import mock

import numpy as np
import pytest
from lvis_toy import write_lvis
from mmdet.datasets import LVISV1Dataset as MMDetLVISV1Dataset
from mmengine.logging import MMLogger

from mmlongtail.datasets import LVISFormatDataset
from mmlongtail.datasets.annotation_file import AnnotationFileError
from mmlongtail.datasets.image_categories import dataset_img_ids
from mmlongtail.datasets.lvis_records import BAD_KINDS, DEGENERATE, IGNORED


def _build(cls, path, **kw):
    return cls(ann_file=str(path), data_prefix=dict(img=''), pipeline=[],
               **kw)


def _pair(path, **kw):
    ours = _build(LVISFormatDataset, path, **kw)
    kw.pop('bad_annotation', None)
    kw.pop('degenerate_box', None)
    ref = _build(MMDetLVISV1Dataset, path,
                 metainfo=dict(classes=ours.metainfo['classes']), **kw)
    return ours, ref


def _items(ds):
    return [ds.get_data_info(i) for i in range(len(ds))]


def _img(iid, w=64, h=48, **extra):
    return dict(id=iid, width=w, height=h,
                coco_url=f'http://images.cocodataset.org/val2017/'
                f'{iid:012d}.jpg', **extra)


def _rich_file(path):
    """Every shape of record mmdet's parser meets."""
    images = [
        _img(7, neg_category_ids=[2], not_exhaustive_category_ids=[5]),
        _img(3), _img(11, w=20, h=20), _img(20), _img(4)
    ]
    anns = [
        # two polygons, integer coordinates
        dict(id=1, image_id=7, category_id=5, bbox=[1, 2, 10, 8], area=60,
             segmentation=[[1, 2, 11, 2, 11, 10], [3, 3, 5, 3, 5, 5, 3, 5]]),
        # crowd with an RLE mask
        dict(id=2, image_id=7, category_id=2, bbox=[0.5, 0.25, 20.5, 9.75],
             area=100.5, iscrowd=1,
             segmentation=dict(size=[48, 64], counts='abc')),
        # crowd polygon, then no segmentation, then an empty one
        dict(id=3, image_id=3, category_id=9, bbox=[4.4, 5.5, 6.6, 7.7],
             area=30.1, iscrowd=1,
             segmentation=[[4.4, 5.5, 11.0, 5.5, 11.0, 13.2]]),
        dict(id=4, image_id=3, category_id=5, bbox=[1.1, 1.2, 3.3, 4.4],
             area=9.9),
        dict(id=5, image_id=20, category_id=2, bbox=[1, 1, 5, 5], area=25,
             segmentation=[]),
        # ignore set: mmdet drops it (counted here)
        dict(id=6, image_id=20, category_id=9, bbox=[1, 1, 5, 5], area=25,
             ignore=1, segmentation=[[1, 1, 6, 1, 6, 6]]),
        # degenerate: width under 1, zero area, outside the image
        dict(id=7, image_id=11, category_id=9, bbox=[1, 1, 0.5, 5], area=2,
             segmentation=[[1, 1, 1.5, 1, 1.5, 6]]),
        dict(id=8, image_id=20, category_id=5, bbox=[1, 1, 5, 5], area=0,
             segmentation=[[1, 1, 6, 1, 6, 6]]),
        dict(id=9, image_id=4, category_id=5, bbox=[70, 1, 5, 5], area=25,
             segmentation=[[70, 1, 75, 1, 75, 6]]),
        # annotations of image 7 after others: file order within an image
        dict(id=10, image_id=7, category_id=9, bbox=[30, 20, 12, 9.5],
             area=80, segmentation=[[30, 20, 42, 20, 42, 29.5, 30, 29.5]]),
    ]
    cats = [dict(id=c, name=f'c{c}') for c in (2, 5, 9)]
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=cats)))
    return path


@pytest.mark.parametrize('kw', [
    dict(),
    dict(filter_cfg=dict(filter_empty_gt=True, min_size=32)),
    dict(test_mode=True, filter_cfg=dict(filter_empty_gt=True)),
    dict(indices=[3, 0, 1]),
    dict(indices=-2, data_prefix=dict(img='imgs/', seg='segs/')),
])
def test_items_equal_mmdet(tmp_path, kw):
    path = _rich_file(tmp_path / 'rich.json')
    if 'data_prefix' in kw:
        ours = LVISFormatDataset(ann_file=str(path), pipeline=[], **kw)
        ref = MMDetLVISV1Dataset(
            ann_file=str(path), pipeline=[],
            metainfo=dict(classes=ours.metainfo['classes']), **kw)
    else:
        ours, ref = _pair(path, **kw)
    assert len(ours) == len(ref) > 0
    assert _items(ours) == _items(ref)
    assert ours.cat_ids == ref.cat_ids and ours.cat2label == ref.cat2label
    assert dict(ours.cat_img_map) == dict(ref.cat_img_map)
    assert [ours.get_cat_ids(i) for i in range(len(ours))] == \
        [ref.get_cat_ids(i) for i in range(len(ref))]
    assert dataset_img_ids(ours).tolist() == \
        [d['img_id'] for d in _items(ref)]
    assert ours.get_data_info(-1) == ref.get_data_info(-1)


def test_rich_items_by_hand(tmp_path):
    ours = _build(LVISFormatDataset, _rich_file(tmp_path / 'rich.json'))
    first = ours.get_data_info(0)
    assert first['img_path'] == 'val2017/000000000007.jpg'
    assert [i['bbox'] for i in first['instances']] == \
        [[1, 2, 11, 10], [0.5, 0.25, 21.0, 10.0], [30, 20, 42, 29.5]]
    assert first['instances'][0]['mask'] == [[1, 2, 11, 2, 11, 10],
                                             [3, 3, 5, 3, 5, 5, 3, 5]]
    assert first['instances'][1] == dict(
        ignore_flag=1, bbox=[0.5, 0.25, 21.0, 10.0], bbox_label=0,
        mask=dict(size=[48, 64], counts='abc'))
    assert 'mask' not in ours.get_data_info(1)['instances'][1]
    assert ours.records.counts == {IGNORED: 1, DEGENERATE: 3}


def test_subsets_equal_mmdet(tmp_path):
    ours, ref = _pair(_rich_file(tmp_path / 'rich.json'))
    assert _items(ours.get_subset([4, 1])) == _items(ref.get_subset([4, 1]))
    assert len(ours) == 5
    ours.get_subset_(2)
    ref.get_subset_(2)
    assert _items(ours) == _items(ref)


def test_one_decode_and_one_open_give_classes_and_records(tmp_path):
    """The class list and the records come from one read of the file:
    mmdet's loader (lvis-api) would open and decode it again."""
    path = tmp_path / 'toy.json'
    write_lvis(str(path))
    size = path.stat().st_size
    decode = json.JSONDecoder.decode
    real_open = builtins.open
    decoded, opened = [], []

    def counting_decode(self, s, *args, **kwargs):
        decoded.append(len(s))
        return decode(self, s, *args, **kwargs)

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    with mock.patch.object(json.JSONDecoder, 'decode', counting_decode), \
            mock.patch.object(builtins, 'open', counting_open):
        ds = _build(LVISFormatDataset, path)
        items = _items(ds)
    assert decoded.count(size) == 1
    assert opened.count(str(path)) == 1
    assert ds.metainfo['classes'] == tuple(f'cat_{c}'
                                           for c in (3, 7, 11, 20, 21, 40))
    assert len(items) == 60
    # mmdet's loader reads it twice over (to compare: the test can fail)
    decoded.clear()
    opened.clear()
    with mock.patch.object(json.JSONDecoder, 'decode', counting_decode), \
            mock.patch.object(builtins, 'open', counting_open):
        _build(MMDetLVISV1Dataset, path,
               metainfo=dict(classes=ds.metainfo['classes']))
    assert decoded.count(size) + opened.count(str(path)) >= 2


def test_records_are_flat_arrays(tmp_path):
    """What workers share: numpy arrays, no per-record Python objects."""
    path = tmp_path / 'toy.json'
    write_lvis(str(path))
    rec = _build(LVISFormatDataset, path).records
    arrays = {k: v for k, v in vars(rec).items() if isinstance(v, np.ndarray)}
    assert {'boxes', 'labels', 'coords', 'ring_offsets', 'ann_offsets',
            'name_bytes'} <= set(arrays)
    assert rec.coords.dtype == np.float64 and rec.boxes.shape[1] == 4
    assert len(rec.ring_offsets) == rec.num_rings.sum() + 1 or \
        rec.first_ring.max() + 1 <= len(rec.ring_offsets)
    assert not any(isinstance(v, list) and len(v) > 100
                   for v in vars(rec).values())


# ------------------------------------------------------------- policies --
def test_degenerate_boxes_policy(tmp_path):
    path = _rich_file(tmp_path / 'rich.json')
    logger = MMLogger.get_instance('test_degenerate_policy')
    with mock.patch.object(logger, 'warning') as warn, \
            mock.patch.object(MMLogger, 'get_current_instance',
                              return_value=logger):
        ds = _build(LVISFormatDataset, path)
    assert ds.records.counts[DEGENERATE] == 3
    msg = warn.call_args[0][0]
    assert f'4 of 10 annotations in {path} dropped' in msg
    assert 'degenerate_box: 3 of 10 (first: annotation id 7, image id 11' \
        in msg
    assert 'ignored: 1 of 10 (first: annotation id 6, image id 20' in msg
    with pytest.raises(AnnotationFileError) as e:
        _build(LVISFormatDataset, path, degenerate_box='error')
    assert str(path) in str(e.value)
    assert 'annotation id 7, image id 11: bbox [1.0, 1.0, 0.5, 5.0]' in \
        str(e.value)
    assert e.value.counts == {DEGENERATE: 3}
    with pytest.raises(ValueError, match="bad_annotation must be one of"):
        _build(LVISFormatDataset, path, bad_annotation='drop')


def test_bad_annotation_skip_is_counted_and_equals_mmdet_without_it(
        tmp_path):
    path = tmp_path / 'toy.json'
    write_lvis(str(path), num_images=20)
    data = json.loads(path.read_text())
    data['annotations'][3]['segmentation'] = [[1, 2, 3, 4]]
    data['annotations'][5]['category_id'] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationFileError) as e:
        _build(LVISFormatDataset, path)
    assert e.value.counts == dict(invalid_polygon=1, unknown_category=1)
    ours = _build(LVISFormatDataset, path, bad_annotation='skip')
    assert ours.records.counts['invalid_polygon'] == 1
    clean = tmp_path / 'clean.json'
    del data['annotations'][5], data['annotations'][3]
    clean.write_text(json.dumps(data))
    ref = _build(MMDetLVISV1Dataset, clean,
                 metainfo=dict(classes=ours.metainfo['classes']))
    assert _items(ours) == _items(ref)


# ------------------------------------------------------------ fuzz test --
ANN_FIELDS = ('id', 'image_id', 'category_id', 'bbox', 'area')
WRONG = ('7', None, True, [1], {'a': 1}, 1.5)


def _fuzz_case(kind, data, rng):
    """Corrupt ``data`` in place. Returns (position of the corrupted
    annotation or None, the expected outcome): a kind of BAD_KINDS /
    DEGENERATE (dropped under 'skip' or refused under 'error'), 'file' (a
    file-level error under both policies) or 'load' (loads unchanged)."""
    anns = data['annotations']
    pos = int(rng.integers(len(anns)))
    ann = anns[pos]
    if kind == 'missing_key':
        del ann[ANN_FIELDS[rng.integers(len(ANN_FIELDS))]]
        return pos, 'missing_key'
    if kind == 'wrong_type':
        field = ('id', 'image_id', 'category_id', 'area', 'bbox', 'bbox_el',
                 'poly', 'poly_el', 'iscrowd')[rng.integers(9)]
        value = WRONG[rng.integers(len(WRONG))]
        if field == 'bbox_el':
            ann['bbox'][rng.integers(4)] = value if value != 1.5 else '1'
        elif field == 'poly':
            ann['segmentation'] = value if value != [1] else 'poly'
        elif field == 'poly_el':
            ring = ann['segmentation'][0]
            ring[rng.integers(len(ring))] = value if value != 1.5 else 'x'
        elif field == 'iscrowd':
            ann['iscrowd'] = value if value is not True else 2
        elif field in ('area', 'bbox') and value == 1.5:
            ann[field] = 'big'
        else:
            ann[field] = value
        return pos, 'wrong_type'
    if kind == 'non_finite':
        bad = (float('nan'), float('inf'), -float('inf'))[rng.integers(3)]
        where = rng.integers(3)
        if where == 0:
            ann['bbox'][rng.integers(4)] = bad
        elif where == 1:
            ann['area'] = bad
        else:
            ann['segmentation'][0][rng.integers(8)] = bad
        return pos, 'non_finite'
    if kind == 'unknown_image':
        ann['image_id'] = 10**9 + int(rng.integers(100))
        return pos, 'unknown_image'
    if kind == 'unknown_category':
        ann['category_id'] = (999, -1, 0)[rng.integers(3)]
        return pos, 'unknown_category'
    if kind == 'invalid_polygon':
        n = (0, 2, 4, 5, 7)[rng.integers(5)]
        ann['segmentation'].append([float(v) for v in range(n)])
        return pos, 'invalid_polygon'
    if kind == 'not_an_object':
        anns[pos] = (5, 'ann', [ann], None)[rng.integers(4)]
        return pos, 'not_an_object'
    if kind == DEGENERATE:
        x, y, w, h = ann['bbox']
        how = rng.integers(4)
        if how == 0:
            ann['bbox'][2] = (0, -3.0, 0.5)[rng.integers(3)]
        elif how == 1:
            ann['bbox'][3] = (0, -1, 0.9)[rng.integers(3)]
        elif how == 2:
            ann['area'] = (0, -5.0)[rng.integers(2)]
        else:
            ann['bbox'][0] = 500.0  # right of the image
        return pos, DEGENERATE
    if kind == 'duplicate_id':
        key = ('annotations', 'images', 'categories')[rng.integers(3)]
        recs = data[key]
        i, j = rng.choice(len(recs), 2, replace=False)
        recs[i]['id'] = recs[j]['id']
        return None, 'file'
    if kind == 'bad_image':
        img = data['images'][rng.integers(len(data['images']))]
        field = ('id', 'height', 'width', 'coco_url')[rng.integers(4)]
        if rng.integers(2):
            del img[field]
        else:
            img[field] = (('64' if field != 'coco_url' else [1]), None,
                          -3, 2.5)[rng.integers(4)]
        return None, 'file'
    if kind == 'bad_category':
        cat = data['categories'][rng.integers(len(data['categories']))]
        if rng.integers(2):
            del cat[('id', 'name')[rng.integers(2)]]
        else:
            cat['id'] = ('3', None, [3])[rng.integers(3)]
        return None, 'file'
    if kind == 'bad_list':
        key = ('images', 'annotations', 'categories')[rng.integers(3)]
        if rng.integers(2):
            del data[key]
        else:
            data[key] = {'0': 1} if key != 'categories' else []
        return None, 'file'
    if kind == 'empty_annotations':
        if rng.integers(2):
            data['annotations'] = []
        else:  # one image loses its annotations
            iid = ann['image_id']
            data['annotations'] = [a for a in anns if a['image_id'] != iid]
        return None, 'load'
    raise AssertionError(kind)


FUZZ_KINDS = BAD_KINDS + (DEGENERATE, 'duplicate_id', 'bad_image',
                          'bad_category', 'bad_list', 'empty_annotations')


def _toy_with_octagons(path):
    write_lvis(str(path), num_images=16)
    data = json.loads(path.read_text())
    for a in data['annotations']:  # 8-coordinate rings, some integers
        x, y, w, h = a['bbox']
        a['segmentation'] = [[x, y, x + w, y, x + w, y + h, int(x), y + h]]
    return data


def test_fuzz_corrupted_files(tmp_path):
    """Every corruption either loads as documented or raises
    AnnotationFileError naming the file (and, for an annotation, its
    annotation and image ids); never another exception, never a silent
    change: a loaded file's items equal mmdet's on the file without the
    annotations the policy drops, with those drops counted."""
    logging.getLogger('mmengine').setLevel(logging.ERROR)
    rng = np.random.default_rng(2028)
    base = _toy_with_octagons(tmp_path / 'base.json')
    base_path = tmp_path / 'base_clean.json'
    base_path.write_text(json.dumps(base))
    base_counts = _build(LVISFormatDataset, base_path).records.counts
    outcomes = defaultdict(Counter)
    n_cases = 4 * len(FUZZ_KINDS)
    for case in range(n_cases):
        kind = FUZZ_KINDS[case % len(FUZZ_KINDS)]
        data = copy.deepcopy(base)
        pos, expect = _fuzz_case(kind, data, rng)
        path = tmp_path / f'case{case}.json'
        path.write_text(json.dumps(data))
        orig = base['annotations'][pos] if pos is not None else None
        for policy in ('error', 'skip'):
            kw = (dict(bad_annotation=policy) if expect != DEGENERATE else
                  dict(degenerate_box=policy))
            try:
                ds = _build(LVISFormatDataset, path, **kw)
            except AnnotationFileError as e:
                msg = str(e)
                ok = str(path) in msg
                if orig is not None:
                    ok &= (f"annotation id {data['annotations'][pos]['id']}"
                           in msg if isinstance(data['annotations'][pos],
                                                dict)
                           and type(data['annotations'][pos].get('id'))
                           is int else f'annotation #{pos}' in msg)
                    ok &= 'image id' in msg or 'no image_id' in msg
                    ok &= e.counts.get(expect) == (
                        1 if expect != DEGENERATE else
                        base_counts[DEGENERATE] +
                        (not _already_degenerate(orig)))
                    ok &= expect != 'file' and policy == 'error'
                else:
                    ok &= expect == 'file'
                outcomes[kind]['error' if ok else 'wrong_error'] += 1
                continue
            except Exception as e:  # noqa: BLE001 -- counted, asserted 0
                outcomes[kind][f'other:{type(e).__name__}'] += 1
                continue
            # loaded: compare with mmdet on the file minus what is dropped
            if expect == 'file' or (expect != 'load' and policy == 'error'):
                outcomes[kind]['silent'] += 1
                continue
            clean = copy.deepcopy(data)
            if expect not in ('load', DEGENERATE):
                del clean['annotations'][pos]
            clean_path = tmp_path / f'case{case}_clean.json'
            clean_path.write_text(json.dumps(clean))
            ref = _build(MMDetLVISV1Dataset, clean_path,
                         metainfo=dict(classes=ds.metainfo['classes']))
            if expect == DEGENERATE:
                want = Counter(base_counts)
                want[expect] += not _already_degenerate(orig)
            else:  # what the clean file drops, and the corrupted record
                want = Counter(_build(LVISFormatDataset, clean_path)
                               .records.counts)
                want[expect] += expect in BAD_KINDS
            same = (_items(ds) == _items(ref)
                    and dict(ds.cat_img_map) == dict(ref.cat_img_map)
                    and Counter(ds.records.counts) == want)
            outcomes[kind]['loaded' if same else 'silent'] += 1
    table = '\n'.join(f'  {k:<18} {dict(v)}' for k, v in outcomes.items())
    print(f'\nfuzz outcomes over {n_cases} corrupted files x 2 policies:\n'
          f'{table}')
    bad = {k: {o: n for o, n in v.items()
               if o not in ('error', 'loaded')}
           for k, v in outcomes.items()}
    assert not any(bad.values()), bad
    assert sum(sum(v.values()) for v in outcomes.values()) == 2 * n_cases
    assert all(outcomes[k]['error'] for k in FUZZ_KINDS
               if k != 'empty_annotations')
    assert all(outcomes[k]['loaded'] for k in BAD_KINDS + (DEGENERATE, ))


def _already_degenerate(ann) -> bool:
    x, y, w, h = ann['bbox']
    return w < 1 or h < 1 or ann['area'] <= 0


@pytest.mark.parametrize('where', ['bbox', 'polygon', 'area'])
def test_json_booleans_are_not_numbers(tmp_path, where):
    """``true`` converts to 1.0 in an array; the file is then checked record
    by record, so a boolean is refused as a wrong type, not read as 1."""
    path = tmp_path / 'toy.json'
    write_lvis(str(path), num_images=8)
    data = json.loads(path.read_text())
    ann = data['annotations'][2]
    if where == 'bbox':
        ann['bbox'][0] = True
    elif where == 'polygon':
        ann['segmentation'][0][3] = False
    else:
        ann['area'] = True
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationFileError) as e:
        _build(LVISFormatDataset, path)
    assert e.value.counts == {'wrong_type': 1}
    assert (f"wrong_type: 1 of {len(data['annotations'])} (first: annotation "
            f"id {ann['id']}, image id {ann['image_id']}: ") in str(e.value)
