"""LDS and FDS on the RoI box regression (Yang et al., ICML 2021): kernel
windows and LDS weights against the official code's values, histogram
accumulation, the head's weighted loss, two gloo ranks and resume."""
import copy

import pytest
import torch
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict

import mmlongtail  # noqa: F401
from mmlongtail.models.layers import (FeatureDistributionSmoothing,
                                      LabelDistributionSmoothing,
                                      kernel_window)
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



# -- FDS ---------------------------------------------------------------------

# Two epochs of features in 6 bins (epoch 0: bin 2 empty, bin 3 one sample,
# bin 5 constant in dimension 1), then the features X of bins 0..5.
F0 = torch.tensor([[1., 2.], [3., 0.], [0., 1.], [2., 5.], [4., 4.],
                   [6., 1.], [7., 7.], [5., 3.], [9., 2.], [8., 2.]])
L0 = torch.tensor([0, 0, 1, 1, 1, 4, 3, 4, 5, 5])
F1 = torch.tensor([[2., 2.], [1., 3.], [4., 0.], [3., 3.], [6., 6.],
                   [5., 2.], [8., 1.], [7., 4.]])
L1 = torch.tensor([0, 1, 1, 2, 2, 3, 4, 4])
X = torch.arange(1., 7.)[:, None].repeat(1, 2)
# Printed from the official FDS (imdb-wiki-dir/fds.py, Gaussian 5 / sigma 2,
# momentum 0.9) fed the same features, its update_running_stats(F, L, e)
# then update_last_epoch_stats(e + 1) per epoch, then smooth(X, bins, e + 1)
# (the order in which its statistics are those folded up to epoch e).
PINNED_FDS = {
    1: dict(
        smoothed_mean=[[1.2549972534, 1.5853210688],
                       [2.5207581520, 2.8531823158],
                       [3.2441093922, 2.6796448231],
                       [4.6035175323, 2.9228551388],
                       [5.3992357254, 2.6537370682],
                       [6.7097620964, 3.8625068665]],
        calibrated=[[0.1485413313, 1.5853210688],
                    [2.5207581520, 1.8685462475],
                    [6.9227762222, 6.7616434097], [4.0, 4.0],
                    [4.9040079117, 4.7673625946],
                    [4.7293920517, 6.0]]),
    2: dict(
        smoothed_mean=[[1.4431476593, 1.6993895769],
                       [2.5960319042, 2.7990131378],
                       [3.3482236862, 2.6649813652],
                       [4.7028398514, 2.8828313351],
                       [5.5226497650, 2.6550886631],
                       [6.7173604965, 3.6967809200]],
        calibrated=[[0.2515127659, 1.5773891211],
                    [2.5585188866, 1.9446928501],
                    [6.0828676224, 5.7219076157], [4.0, 4.0],
                    [4.7846965790, 4.7721209526],
                    [4.7369899750, 6.0]]),
}


def _bin_values(labels):
    return labels.double() + 0.5  # bins of width 1 over [0, 6)


def test_fds_matches_the_official_code():
    fds = FeatureDistributionSmoothing(2, value_range=(0, 6), num_bins=6)
    assert torch.allclose(fds.calibrate(X, _bin_values(torch.arange(6))), X)
    for epoch, (feats, labels) in enumerate([(F0, L0), (F1, L1)]):
        # in two steps: the accumulation is exact
        fds.accumulate(feats[:5], _bin_values(labels[:5]))
        fds.accumulate(feats[5:], _bin_values(labels[5:]))
        fds.end_epoch(epoch)
        pinned = PINNED_FDS[epoch + 1]
        assert torch.allclose(fds.smoothed_mean,
                              torch.tensor(pinned['smoothed_mean']),
                              atol=1e-6)
        out = fds.calibrate(X, _bin_values(torch.arange(6)))
        assert torch.allclose(out, torch.tensor(pinned['calibrated']),
                              atol=1e-6)
    assert torch.equal(fds.num_samples_tracked,
                       torch.bincount(torch.cat([L0, L1]), minlength=6))


def test_fds_statistics_equal_a_hand_accumulation():
    gen = torch.Generator().manual_seed(4)
    fds = FeatureDistributionSmoothing(
        3, value_range=(0.5, 1.0), num_bins=5, kernel='laplace', sigma=1.0,
        momentum=0.8, start_update=1, start_smooth=2)
    window = kernel_window('laplace', 5, 1.0, normalize='sum').float()
    mean, var = torch.zeros(5, 3), torch.ones(5, 3)
    for epoch in range(4):
        feats, values = [], []
        for _ in range(3):  # three steps per epoch
            f = torch.randn(9, 3, generator=gen) * 2 + 1
            v = torch.rand(9, generator=gen) * 0.6 + 0.45  # some off range
            out = fds(f, v)
            assert torch.equal(out, f) == (epoch < 2)
            feats.append(f)
            values.append(v)
        fds.end_epoch(epoch)
        if epoch < 1:  # before start_update nothing is collected
            assert torch.equal(fds.running_mean, mean)
            continue
        f, b = torch.cat(feats), fds.bins(torch.cat(values))
        factor = 0.0 if epoch == 1 else 0.8
        for k in range(5):
            if (b == k).sum() > 0:
                rows = f[b == k]
                v = rows.var(0) if len(rows) > 1 else torch.zeros(3)
                mean[k] = (1 - factor) * rows.mean(0) + factor * mean[k]
                var[k] = (1 - factor) * v + factor * var[k]
        assert torch.allclose(fds.running_mean, mean, atol=1e-5)
        assert torch.allclose(fds.running_var, var, atol=1e-5)
        # smoothing over bins, ends mirrored (d c | b c d e | d c)
        padded = torch.cat([mean[[2, 1]], mean, mean[[3, 2]]])
        smooth = torch.stack(
            [(window[:, None] * padded[i:i + 5]).sum(0) for i in range(5)])
        assert torch.allclose(fds.smoothed_mean, smooth, atol=1e-5)
    assert int(fds.epoch) == 4
    assert fds.acc_count.sum() == 0
    with pytest.raises(ValueError, match='epoch 3'):
        fds.end_epoch(3)
    with pytest.raises(ValueError, match='features'):
        fds.accumulate(torch.zeros(2, 4), torch.zeros(2))


def test_fds_calibration_passes_gradients_and_skips_flat_bins():
    fds = FeatureDistributionSmoothing(2, value_range=(0, 6), num_bins=6)
    for epoch, (feats, labels) in enumerate([(F0, L0), (F1, L1)]):
        fds.accumulate(feats, _bin_values(labels))
        fds.end_epoch(epoch)
    x = X.clone().requires_grad_()
    out = fds.calibrate(x, _bin_values(torch.arange(6)))
    out.sum().backward()
    scale = (fds.smoothed_var / fds.running_var).clamp(0.1, 10).sqrt()
    expected = torch.where(fds.running_var == 0, 1.0, scale)
    expected[3] = 1.0  # a single sample: zero variance, unchanged
    assert torch.allclose(x.grad, expected)
    assert torch.equal(out[3], X[3]) and out[5, 1] == X[5, 1]


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


FDS = dict(value_range=(0.5, 1.0), num_bins=10)


def test_head_fds_calibrates_the_regression_features_only():
    gen = torch.Generator().manual_seed(5)
    head = MODELS.build(head_cfg(lds=None, fds=FDS)).train()
    assert head.fds.feature_dim == 16
    results = sampling_results(gen)
    rois = rois_of(results)
    feats = torch.randn(len(rois), 4, 7, 7, generator=gen)
    plain = Shared2FCBBoxHead.loss_and_target
    # epoch 0: collected, not calibrated: mmdet's loss
    cls_score, bbox_pred = head(feats)
    out = head.loss_and_target(cls_score, bbox_pred, rois, results, RCNN)
    ref = plain(head, cls_score, bbox_pred, rois, results, RCNN)
    assert torch.equal(out['loss_bbox']['loss_bbox'],
                       ref['loss_bbox']['loss_bbox'])
    assert head._reg_input is None
    pos = out['bbox_targets'][0] < C
    assert int(head.fds.acc_count.sum()) == int(pos.sum())
    head.fds.end_epoch(0)
    # epoch 1: the positives' fc_reg input is calibrated by IoU bin
    cls_score, bbox_pred = head(feats)
    reg_input = head._reg_input.detach().clone()
    ious = torch.cat([
        bbox_overlaps(r.pos_priors, r.pos_gt_bboxes, is_aligned=True)
        for r in results
    ])
    out = head.loss_and_target(cls_score, bbox_pred, rois, results, RCNN)
    labels, _, targets, _ = out['bbox_targets']
    calibrated = reg_input.clone()
    calibrated[pos] = head.fds.calibrate(reg_input[pos], ious)
    assert not torch.allclose(calibrated[pos], reg_input[pos])
    pred = head.fc_reg(calibrated).view(len(rois), C, 4)[pos, labels[pos]]
    expected = (pred - targets[pos]).abs().sum() / len(rois)
    assert torch.allclose(out['loss_bbox']['loss_bbox'], expected)
    # the classifier reads the uncalibrated features
    ref = plain(head, cls_score, bbox_pred, rois, results, RCNN)
    assert torch.equal(out['loss_bbox']['loss_cls'],
                       ref['loss_bbox']['loss_cls'])
    out['loss_bbox']['loss_bbox'].backward()
    assert head.shared_fcs[0].weight.grad.abs().sum() > 0
    # test time: nothing kept, nothing calibrated
    head.eval()
    with torch.no_grad():
        _, test_pred = head(feats)
    assert head._reg_input is None
    assert torch.allclose(test_pred, bbox_pred.detach())
    with pytest.raises(ValueError, match='feature_dim'):
        MODELS.build(head_cfg(fds=dict(FDS, feature_dim=16)))


def test_lds_refuses_decoded_box_losses():
    with pytest.raises(ValueError, match='reg_decoded_bbox'):
        MODELS.build(
            head_cfg(
                reg_decoded_bbox=True, loss_bbox=dict(type='GIoULoss')))


# -- two ranks ---------------------------------------------------------------

def _two_rank_worker(rank, world, out_dir):
    gen = torch.Generator().manual_seed(10 + rank)  # different data per rank
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(fds=FDS))
    head.train()
    for step in range(3):
        results = sampling_results(gen, num_pos=4 + rank)
        rois = rois_of(results)
        feats = torch.randn(len(rois), 4, 7, 7, generator=gen)
        head.loss_and_target(*head(feats), rois, results, RCNN)
        if step == 1:
            head.fds.end_epoch(0)
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
    assert int(states[0]['fds.num_samples_tracked'].sum()) == 2 * 2 * 9
    assert int(states[0]['fds.acc_count'].sum()) == 2 * 9


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
            if i in (0, 2):  # two-step epochs; resumed after step 1
                head.fds.end_epoch(i // 2)
        return losses

    cfg = head_cfg(fds=FDS)
    torch.manual_seed(0)
    straight = MODELS.build(cfg).train()
    expected = run(straight, range(4))
    torch.manual_seed(0)
    first = MODELS.build(cfg).train()
    run(first, range(2))
    state = copy.deepcopy(first.state_dict())
    assert state['fds.acc_count'].sum() > 0  # mid-epoch
    resumed = MODELS.build(cfg).train()
    resumed.load_state_dict(state)
    assert run(resumed, range(2, 4)) == expected[2:]
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
