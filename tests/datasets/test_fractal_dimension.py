"""FRACAL's statistics: the fractal dimension of box locations and the listed
image count, pinned against the official scripts (kostas1515/FRACAL
stat_files/get_statistics.py + calculate_fractality.py --variant box_dim,
get_frequency.py, commit 3543fe4) run on the tiny LVIS-format file below;
the tool's option; the stats JSON round trip; errors."""
import copy
import json
import math

import numpy as np
import pytest

from mmlongtail.datasets.category_stats import (dump_category_stats,
                                                load_category_stats)
from mmlongtail.datasets.fractal_dimension import (box_count_dimension,
                                                   occupied_cells)


def tiny_lvis():
    """12 images (2 without boxes), 4 classes with 2, 5, 17, 40 boxes: one
    clustered class, a centre on cell edges, a centre beyond its image."""
    sizes = [(640, 480), (500, 375), (97, 61)]
    images = [dict(id=i + 1, width=sizes[i % 3][0], height=sizes[i % 3][1])
              for i in range(12)]
    anns = []
    for c, n in enumerate((2, 5, 17, 40)):
        for k in range(n):
            img = (3 * k + c) % 10  # images 11 and 12 have no boxes
            w, h = sizes[img % 3]
            fx = (k * 0.618034 + c * 0.25) % 1.0
            fy = (k * 0.414214 + c * 0.5) % 1.0
            if c == 1:  # a clustered class
                fx, fy = 0.3 + 0.01 * k, 0.6
            if c == 3 and k == 0:  # on cell edges
                fx, fy = 0.5, 0.25
            if c == 3 and k == 1:  # centre beyond the image
                fx = 1.02
            bw, bh = w / 8, h / 6
            anns.append(dict(id=len(anns) + 1, image_id=img + 1,
                             category_id=c + 1, area=bw * bh,
                             bbox=[fx * w - bw / 2, fy * h - bh / 2, bw, bh]))
    cats = [dict(id=c + 1, name=f'c{c}', frequency='r') for c in range(4)]
    return dict(images=images, annotations=anns, categories=cats)


#: calculate_fractality.py's fractal_dimension column on tiny_lvis()
OFFICIAL_FD = [1.0, 1.0, 1.7724889554727086, 1.877473159810656]
#: get_frequency.py's img_freq / instance_freq columns and its image count
OFFICIAL_IMG = [2, 5, 10, 10]
OFFICIAL_INST = [2, 5, 17, 40]


def test_equals_official_scripts():
    stats = load_category_stats(tiny_lvis(), fractal_dimension=True)
    np.testing.assert_allclose(stats.fractal_dimension, OFFICIAL_FD,
                               rtol=0, atol=1e-8)
    assert stats.image_count.tolist() == OFFICIAL_IMG
    assert stats.instance_count.tolist() == OFFICIAL_INST
    # get_frequency.py divides by every listed image; num_images counts
    # those with annotations
    assert (stats.num_images_listed, stats.num_images) == (12, 10)


def test_box_count_by_hand():
    # 4 centres in the 4 quadrants: N(1) = 1, N(2) = 4 -> slope 2
    cx = np.array([.1, .6, .1, .6])
    cy = np.array([.1, .1, .6, .6])
    label = np.zeros(4, np.int64)
    assert occupied_cells(cx, cy, label, 1, 2).tolist() == [4]
    # half-open cells: 0.5 lies in the upper one, 1.0 in none
    assert occupied_cells(np.array([.5, 1.]), np.array([.2, .2]),
                          np.zeros(2, np.int64), 1, 2).tolist() == [1]
    fd = box_count_dimension(cx, cy, label, 2, max_grid=4)
    assert fd[0] == pytest.approx(2.0) and fd[1] == 1.0  # class 1: none
    # all at one place: slope 0, raised to 1
    same = np.full(9, .3)
    assert box_count_dimension(same, same, np.zeros(9, np.int64), 1,
                               max_grid=3)[0] == 1.0
    # slope over d = 1, 2 only when 4 <= instances < 9
    assert math.isclose(
        box_count_dimension(cx, cy, label, 1, max_grid=64)[0], 2.0)


def test_stats_json_round_trip_and_tool(tmp_path):
    from tools.extract_category_stats import main
    ann = tmp_path / 'train.json'
    ann.write_text(json.dumps(tiny_lvis()))
    out = tmp_path / 'stats.json'
    main([str(ann), str(out), '--fractal-dimension'])
    back = load_category_stats(str(out), fractal_dimension=True)
    np.testing.assert_allclose(back.fractal_dimension, OFFICIAL_FD,
                               atol=1e-8)
    assert back.num_images_listed == 12
    plain = tmp_path / 'plain.json'
    main([str(ann), str(plain)])
    assert 'fractal_dimension' not in plain.read_text()
    with pytest.raises(ValueError, match=r'plain\.json has none.*'
                       r'extract_category_stats\.py.*--fractal-dimension'):
        load_category_stats(str(plain), owner='FRACAL',
                            fractal_dimension=True)
    # dump keeps them
    again = tmp_path / 'again.json'
    dump_category_stats(back, str(again))
    assert load_category_stats(
        str(again), fractal_dimension=True).num_images_listed == 12


def test_packaged_lvis_v1_has_official_values():
    stats = load_category_stats('lvis_v1', fractal_dimension=True)
    # stat_files/lvis_v1_train_fractal_dim.csv rows 0, 1 and 1202
    assert stats.fractal_dimension[0] == 1.8077216824171134
    assert stats.fractal_dimension[1] == 1.841003908586994
    assert stats.fractal_dimension[-1] == 1.8173157615495343
    assert stats.num_images_listed == 100170
    assert (stats.image_count[0], stats.instance_count[0]) == (64, 109)
    # FRACAL's frequency term from these statistics minus the official
    # get_fracal_weights' prior (written out) is the official
    # stat_files/freq_lvis_v1_train.csv column, rows of classes 1 and 1203
    # (the _obj columns divide by all 1270141 training instances)
    from mmlongtail.models.scorers.fracal import frequency_term
    num = 1203
    prior = {
        'base10': -math.log10(num),
        'smooth': -math.log((300 * num + 1) / 301) + 1,
        'gombit': math.log(-math.log(1 - 1 / num)),
        'raw_obj': -math.log(num),
        'base10_obj': -math.log10(num),
    }
    csv = {
        'base10': (3.194557699790146, 3.0922526548953835),
        'smooth': (8.340246734689194, 8.107914757320579),
        'gombit': (7.355421396246417, 7.119770417974774),
        'raw_obj': (9.363290593665011, 7.372529878444347),
        'base10_obj': (4.0664254372853375, 3.2018490438752316),
    }
    for variant, (first, last) in csv.items():
        w = frequency_term(stats, variant) - prior[variant]
        assert (w[0].item(), w[-1].item()) == (
            pytest.approx(first, abs=1e-9), pytest.approx(last, abs=1e-9)
        ), variant


def test_errors():
    bad = tiny_lvis()
    del bad['images'][0]['width']
    with pytest.raises(ValueError, match='image 1 has no positive width'):
        load_category_stats(bad, fractal_dimension=True)
    compact = load_category_stats(tiny_lvis(),
                                  fractal_dimension=True).to_dict()
    partial = copy.deepcopy(compact)
    del partial['categories'][2]['fractal_dimension']
    with pytest.raises(ValueError, match="3 of 4 categories have a "
                       "'fractal_dimension'"):
        load_category_stats(partial)
    negative = copy.deepcopy(compact)
    negative['categories'][0]['fractal_dimension'] = -1.0
    with pytest.raises(ValueError, match='finite and > 0'):
        load_category_stats(negative)
    with pytest.raises(ValueError, match='max_grid must be an int >= 2'):
        box_count_dimension(np.zeros(1), np.zeros(1), np.zeros(1, int), 1,
                            max_grid=1)
