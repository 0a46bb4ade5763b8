"""LDS and FDS on the RoI box regression (Yang et al., ICML 2021): kernel
windows and LDS weights against the official code's values, histogram
accumulation, the head's weighted loss, two gloo ranks and resume."""
import copy

import pytest
import torch
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict

import mmlongtail  # noqa: F401
from mmlongtail.models.layers import LabelDistributionSmoothing, kernel_window
from mmlongtail.registry import MODELS
from tests.dist_utils import spawn_gloo

register_all_modules()

C = 5


# Printed from the official code (github:YyzHarry/imbalanced-regression,
# imdb-wiki-dir/utils.py get_lds_kernel_window, which calls scipy's
# gaussian_filter1d / triang); the FDS window (imdb-wiki-dir/fds.py) is the
# same divided by its sum instead of its maximum.
PINNED_WINDOWS = [
    (('gaussian', 5, 2.0),
     [0.8582852378, 0.9458276491, 1.0, 0.9458276491, 0.8582852378]),
    (('gaussian', 5, 1.0),
     [0.1464442798, 0.6068661223, 1.0, 0.6068661223, 0.1464442798]),
    (('gaussian', 9, 3.0), [
        0.6461092485, 0.7260695963, 0.8488109165, 0.9571254825, 1.0,
        0.9571254825, 0.8488109165, 0.7260695963, 0.6461092485
    ]),
    (('triang', 5, 2.0), [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]),
    (('laplace', 5, 2.0),
     [0.3678794412, 0.6065306597, 1.0, 0.6065306597, 0.3678794412]),
]


@pytest.mark.parametrize('args,expected', PINNED_WINDOWS)
def test_kernel_windows_match_the_official_code(args, expected):
    expected = torch.tensor(expected, dtype=torch.float64)
    assert torch.allclose(kernel_window(*args), expected, atol=1e-9)
    assert torch.allclose(
        kernel_window(*args, normalize='sum'),
        expected / expected.sum(),
        atol=1e-9)


@pytest.mark.parametrize('bad', [
    dict(kernel='box', size=5, sigma=1.0),
    dict(kernel='gaussian', size=4, sigma=1.0),
    dict(kernel='laplace', size=5, sigma=0.0),
])
def test_kernel_window_refuses_bad_arguments(bad):
    with pytest.raises(ValueError):
        kernel_window(**bad)


HIST = torch.tensor([[0, 3, 10, 40, 100, 40, 5, 1, 0, 2],
                     [7, 0, 0, 1, 50, 60, 2, 0, 0, 0]])
# The official _prepare_weights (imdb-wiki-dir/datasets.py) run on samples
# with these bin labels (per column), Gaussian window 5 / sigma 2.
PINNED_WEIGHTS = {
    'sqrt_inv': [[
        5.1046022897, 2.1885936747, 1.1472616456, 0.8648582267, 0.8353156103,
        0.918655203, 1.2518987406, 2.2770361577, 5.2864848124, 9.7764872185
    ], [
        4.7851771997, 3.7671768536, 1.3634388585, 0.8831026067, 0.764652748,
        0.7613043368, 0.8548796955, 1.5853524698, 10.4303865594, 0.0
    ]],
    'inverse': [[
        8.4556492747, 2.8931833315, 1.0852073808, 0.8476759209, 0.8212547333,
        0.8702053979, 1.1246172474, 2.9170408049, 8.2582520308, 11.0437615374
    ], [
        5.4382622677, 4.220847832, 1.3746181065, 0.7723141224, 0.7256607866,
        0.7224012799, 0.7663669397, 1.240255927, 4.6466886733, 6.2140173798
    ]],
}


def _lds(reweight='sqrt_inv', **kw):
    return LabelDistributionSmoothing(
        num_targets=2,
        value_range=(0.0, 10.0),
        num_bins=10,
        reweight=reweight,
        count_clip=(5, 1000) if reweight == 'inverse' else None,
        **kw)


@pytest.mark.parametrize('reweight', ['sqrt_inv', 'inverse'])
def test_lds_weights_equal_the_formula(reweight):
    lds = _lds(reweight)
    lds.counts.copy_(HIST)
    table = lds.bin_weights()
    # the formula written out: smoothed = zero-padded convolution of
    # g(counts) with the max-normalised window, w = 1 / smoothed, scaled so
    # the mean weight over the histogram's samples is one
    window = kernel_window('gaussian', 5, 2.0)
    for k in range(2):
        counts = HIST[k].double()
        g = counts.sqrt() if reweight == 'sqrt_inv' else counts.clamp(
            5, 1000)
        smoothed = torch.tensor([
            sum(window[j + 2] * g[b + j] for j in range(-2, 3)
                if 0 <= b + j < 10) for b in range(10)
        ])
        seen = counts > 0
        inv = 1.0 / smoothed
        scale = counts.sum() / (counts * inv)[seen].sum()
        assert torch.allclose(table[k][seen], (scale * inv)[seen])
        assert (counts * table[k]).sum() == pytest.approx(counts.sum())
        pinned = torch.tensor(PINNED_WEIGHTS[reweight][k], dtype=torch.float64)
        assert torch.allclose(table[k][seen], pinned[seen], atol=1e-8)


def test_lds_histogram_accumulates_over_iterations():
    gen = torch.Generator().manual_seed(0)
    lds = _lds()
    hand = torch.zeros(2, 10, dtype=torch.long)
    for _ in range(4):
        targets = torch.rand(7, 2, generator=gen) * 14 - 2  # beyond range
        weights = lds(targets)
        for row in targets.tolist():
            for k, v in enumerate(row):
                hand[k, min(max(int(v // 1), 0), 9)] += 1
        assert torch.equal(lds.counts, hand)
        table = lds.bin_weights()
        expected = torch.stack([
            table[k][lds.bins(targets)[:, k]] for k in range(2)
        ], 1).float()
        assert torch.equal(weights, expected)
        assert weights.dtype == targets.dtype and not weights.requires_grad
    with pytest.raises(ValueError, match='shape'):
        lds(torch.zeros(3, 4))
    with pytest.raises(ValueError, match='non-finite'):
        lds(torch.tensor([[float('nan'), 0.0]]))


# -- the head ---------------------------------------------------------------

def head_cfg(**kw):
    cfg = dict(
        type='mmlongtail.LDSFDSShared2FCBBoxHead',
        in_channels=4,
        fc_out_channels=16,
        roi_feat_size=7,
        num_classes=C,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=False,
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        lds=dict(value_range=(-4.0, 4.0), num_bins=16))
    cfg.update(kw)
    return cfg


def sampling_results(gen, num_images=2, num_pos=6, num_neg=5):
    """Hand-made sampling results: positives are jittered ground truths."""
    results = []
    for _ in range(num_images):
        xy = torch.rand(3, 2, generator=gen) * 50
        wh = torch.rand(3, 2, generator=gen) * 30 + 10
        gts = torch.cat([xy, xy + wh], 1)
        gt_of_pos = torch.randint(0, 3, (num_pos, ), generator=gen)
        jitter = (torch.rand(num_pos, 4, generator=gen) - 0.5) * 8
        pos = gts[gt_of_pos] + jitter
        neg = torch.cat([torch.full((num_neg, 2), 150.0),
                         torch.full((num_neg, 2), 170.0)], 1)
        priors = torch.cat([pos, neg])
        gt_inds = torch.cat([gt_of_pos + 1, torch.zeros(num_neg).long()])
        gt_labels = torch.randint(0, C, (3, ), generator=gen)
        labels = torch.cat([gt_labels[gt_of_pos], torch.full((num_neg, ),
                                                              -1)])
        assign = AssignResult(3, gt_inds, torch.ones(len(priors)), labels)
        results.append(
            SamplingResult(
                torch.arange(num_pos), torch.arange(num_pos, len(priors)),
                priors, gts, assign, torch.zeros(len(priors)).bool()))
    return results


def rois_of(results):
    return torch.cat([
        torch.cat([torch.full((len(r.priors), 1), float(i)), r.priors], 1)
        for i, r in enumerate(results)
    ])


RCNN = ConfigDict(pos_weight=-1)


def test_head_weights_loss_bbox_elementwise():
    gen = torch.Generator().manual_seed(1)
    head = MODELS.build(head_cfg())
    head.train()
    results = sampling_results(gen)
    rois = rois_of(results)
    feats = torch.randn(len(rois), 4, 7, 7, generator=gen)
    cls_score, bbox_pred = head(feats)
    out = head.loss_and_target(cls_score, bbox_pred, rois, results, RCNN)
    labels, _, targets, bbox_weights = out['bbox_targets']
    pos = labels < C
    weights = head.lds.weights(targets[pos])
    assert torch.equal(head.lds.counts.sum(1),
                       torch.full((4, ), int(pos.sum())))
    pred = bbox_pred.view(len(rois), C, 4)[pos, labels[pos]]
    expected = ((pred - targets[pos]).abs() * weights).sum() / len(rois)
    assert torch.allclose(out['loss_bbox']['loss_bbox'], expected)
    assert not torch.allclose(weights, torch.ones_like(weights))
    assert torch.equal(bbox_weights[pos], torch.ones_like(weights))
    out['loss_bbox']['loss_bbox'].backward()
    assert head.fc_reg.weight.grad.abs().sum() > 0


def test_head_without_lds_is_mmdet_head():
    gen = torch.Generator().manual_seed(2)
    head = MODELS.build(head_cfg(lds=None))
    plain_cfg = head_cfg(type='Shared2FCBBoxHead')
    plain_cfg.pop('lds')
    plain = MODELS.build(plain_cfg)
    plain.load_state_dict(head.state_dict())
    results = sampling_results(gen)
    rois = rois_of(results)
    feats = torch.randn(len(rois), 4, 7, 7, generator=gen)
    a = head.loss_and_target(*head(feats), rois, results, RCNN)['loss_bbox']
    b = plain.loss_and_target(*plain(feats), rois, results, RCNN)['loss_bbox']
    for key in b:
        assert torch.equal(a[key], b[key])


def test_lds_refuses_decoded_box_losses():
    with pytest.raises(ValueError, match='reg_decoded_bbox'):
        MODELS.build(
            head_cfg(
                reg_decoded_bbox=True, loss_bbox=dict(type='GIoULoss')))


# -- two ranks ---------------------------------------------------------------

def _two_rank_worker(rank, world, out_dir):
    gen = torch.Generator().manual_seed(10 + rank)  # different data per rank
    torch.manual_seed(0)
    head = MODELS.build(head_cfg())
    head.train()
    for _ in range(3):
        results = sampling_results(gen, num_pos=4 + rank)
        rois = rois_of(results)
        feats = torch.randn(len(rois), 4, 7, 7, generator=gen)
        head.loss_and_target(*head(feats), rois, results, RCNN)
    torch.save({k: v for k, v in head.state_dict().items()
                if not k.startswith(('fc_', 'shared'))},
               f'{out_dir}/rank{rank}.pth')


def test_two_gloo_ranks_hold_identical_state(tmp_path):
    spawn_gloo(_two_rank_worker, str(tmp_path))
    states = [torch.load(tmp_path / f'rank{r}.pth') for r in range(2)]
    assert states[0].keys() == states[1].keys() and states[0]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # both ranks' positives: 3 steps x 2 images x (4 + 5) positives
    assert int(states[0]['lds.counts'][0].sum()) == 3 * 2 * 9


def test_state_resumes_exactly():
    gen = torch.Generator().manual_seed(3)
    steps = [sampling_results(gen) for _ in range(4)]
    feats = [torch.randn(len(rois_of(r)), 4, 7, 7, generator=gen)
             for r in steps]

    def run(head, indices):
        losses = []
        for i in indices:
            rois = rois_of(steps[i])
            out = head.loss_and_target(*head(feats[i]), rois, steps[i], RCNN)
            losses.append(out['loss_bbox']['loss_bbox'].detach())
        return losses

    torch.manual_seed(0)
    straight = MODELS.build(head_cfg()).train()
    expected = run(straight, range(4))
    torch.manual_seed(0)
    first = MODELS.build(head_cfg()).train()
    run(first, range(2))
    state = copy.deepcopy(first.state_dict())
    resumed = MODELS.build(head_cfg()).train()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.lds.counts, first.lds.counts)
    assert run(resumed, range(2, 4)) == expected[2:]
