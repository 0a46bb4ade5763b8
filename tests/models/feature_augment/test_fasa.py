"""FASA (Zang et al., ICCV 2021) against the official code's per-class
loops (github.com/yuhangzang/FASA, fasa/fasa_bbox_head.py: fa_update_push,
fa_generate, dynamic_sampling), written out below; its statistics, rates,
resume and a few training steps through a real RoI head."""
import pytest
import torch
from helpers import C, COUNTS, STATS, roi_head
from mmdet.models.losses import CrossEntropyLoss
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmengine.logging import MessageHub

from mmlongtail.models.feature_augment import (FASA, ClassFeatureStatistics,
                                               affinity_propagation,
                                               fasa_initial_rates)

D = 16


class OfficialLoops:
    """The official per-class loops (re-typed: no .cuda(), no mmcv)."""

    def __init__(self, rates):
        self.mean = torch.zeros(C, D)
        self.var = torch.zeros(C, D)
        self.used = torch.zeros(C)
        self.rates = rates.clone()
        self.loss_t0 = torch.zeros(C + 1)

    def update(self, feats, labels, decay=0.1):
        for c in torch.unique(labels).tolist():
            e = feats[labels == c]
            mean, var, n = e.mean(0), e.var(0, unbiased=False), len(e)
            if n > 1:
                var = var * n / (n - 1)
            if self.used[c] > 0:
                self.mean[c] = decay * mean + (1 - decay) * self.mean[c]
                self.var[c] = decay * var + (1 - decay) * self.var[c]
            else:
                self.mean[c], self.var[c] = mean, var
                self.used[c] += 1

    def generate(self):  # global RNG, as officially
        uniform = torch.rand(C)
        out, labels = [], []
        for c in torch.where(uniform < self.rates)[0].tolist():
            if self.used[c] == 0:
                continue
            std = self.var[c].sqrt()
            out.append(self.mean[c] + std * torch.normal(0, 1, size=(D, )))
            labels.append(c)
        return torch.stack(out), torch.tensor(labels)

    def adapt(self, cum_losses, cum_labels, group_lists, up=1.1, down=0.9):
        t1 = cum_losses / cum_labels.sum()
        if self.loss_t0.sum() == 0:
            self.loss_t0[:] = t1
        for g in group_lists:
            delta = t1[g].sum() - self.loss_t0[g].sum()
            if delta > 0:
                self.rates[g] = (self.rates[g] * down).clamp(0, 1)
            if delta < 0:
                self.rates[g] = (self.rates[g] * up).clamp(0, 1)
        self.loss_t0[:] = t1


def _batches(n_iter, seed=0):
    g = torch.Generator().manual_seed(seed)
    for it in range(n_iter):
        feats = torch.randn(24, D, generator=g) * 2 + 1
        labels = torch.randint(0, C - 1, (24, ), generator=g)  # C-1 unseen
        if it == 0:
            labels[labels == 0] = 1
            labels[0] = 0  # class 0: a single sample in its first step
        yield feats, labels


def _fasa(**kw):
    kw.setdefault('start_epoch', 0)
    return FASA(C, D, STATS, **kw)


def test_initial_rates_from_instance_counts():
    q = 1 / torch.tensor(COUNTS, dtype=torch.float64)
    torch.testing.assert_close(_fasa().rates, (q / q.sum()).float())
    torch.testing.assert_close(
        fasa_initial_rates(torch.tensor(COUNTS), power=0.5, scale=3),
        (3 * (q / q.sum()).sqrt()).clamp(0, 1).float())
    with pytest.raises(ValueError, match=r'classes \[1\] have none'):
        fasa_initial_rates(torch.tensor([3, 0, 5]))
    with pytest.raises(ValueError, match='num_classes'):
        FASA(C + 1, D, STATS)


def test_statistics_and_draws_equal_official():
    ours = _fasa()
    official = OfficialLoops(ours.rates)
    for it, (feats, labels) in enumerate(_batches(5)):
        official.update(feats, labels)
        ours.observe(feats, labels, None)
        torch.testing.assert_close(ours.stats.mean, official.mean)
        torch.testing.assert_close(ours.stats.var, official.var)
        ours.rates.fill_(0.7)
        official.rates.fill_(0.7)
        torch.manual_seed(it)
        want_f, want_l = official.generate()
        got_f, got_l = ours.generate(
            None, None, None, torch.Generator().manual_seed(it))
        assert torch.equal(got_l, want_l)
        torch.testing.assert_close(got_f, want_f)
    assert not ours.stats.seen[C - 1]
    # pinned: printed from the loops above (official formulas)
    pinned = dict(mean=[-0.389574, -0.419860, 0.671348],
                  var=[0.890856, 1.043085, 1.327767],
                  feat=[-0.288108, -0.703818, -2.327060])
    torch.testing.assert_close(
        ours.stats.mean[0, :3], torch.tensor(pinned['mean']), atol=1e-5,
        rtol=0)
    torch.testing.assert_close(
        ours.stats.var[0, :3], torch.tensor(pinned['var']), atol=1e-5,
        rtol=0)
    assert got_l.tolist() == [0, 1, 2]
    torch.testing.assert_close(
        got_f[0, :3], torch.tensor(pinned['feat']), atol=1e-5, rtol=0)


def test_rates_adapt_as_official():
    ours = _fasa()
    ours.rates.copy_(torch.tensor([0.2, 0.5, 0.95, 0.1]))
    official = OfficialLoops(ours.rates)
    groups = torch.tensor([0, 1, 0, 2])
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        loss = torch.rand(C + 1, generator=g) * 10
        count = torch.randint(1, 20, (C + 1, ), generator=g).double()
        official.adapt(loss, count, [[0, 2], [1], [3]])
        ours.val_loss.copy_(loss)
        ours.val_count.copy_(count)
        ours.adapt(groups)
        torch.testing.assert_close(ours.rates, official.rates)
        torch.testing.assert_close(ours.loss_prev, official.loss_t0)
    assert ours.val_count.sum() == 0  # reset after each adaptation


def test_affinity_propagation_finds_blobs():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0., 0], [10, 0], [0, 10]])
    x = (centers[:, None] + 0.5 * torch.randn(3, 6, 2, generator=g))
    x = x.reshape(18, 2)
    sim = -torch.cdist(x, x).square()
    labels, converged = affinity_propagation(sim)
    assert converged
    truth = torch.arange(3).repeat_interleave(6)
    for k in range(3):  # one cluster per blob
        assert len(labels[truth == k].unique()) == 1
    assert len(labels.unique()) == 3
    labels, converged = affinity_propagation(sim, max_iter=5)
    assert not converged and (labels == -1).all()
    # FASA keeps its rates when the clustering does not converge
    fasa = _fasa(ap_max_iter=5)
    fasa.stats.mean[:, :2] = x[:C]
    before = fasa.rates.clone()
    for scale in (1., 2.):
        fasa.val_loss.copy_(torch.arange(C + 1.) * scale)
        fasa.val_count.fill_(1)
        fasa.adapt()
    assert torch.equal(fasa.rates, before)


def test_hand_accumulated_statistics():
    """Exact mode equals mean/var of everything seen; momentum mode
    equals the EMA written out."""
    exact = ClassFeatureStatistics(C, D)
    ema = ClassFeatureStatistics(C, D, momentum=0.3)
    seen_f, seen_l = [], []
    mean = torch.zeros(C, D)
    var = torch.zeros(C, D)
    first = torch.ones(C, dtype=torch.bool)
    for feats, labels in _batches(4, seed=1):
        exact.update(feats, labels)
        ema.update(feats, labels)
        seen_f.append(feats)
        seen_l.append(labels)
        for c in labels.unique().tolist():
            e = feats[labels == c]
            v = e.var(0) if len(e) > 1 else torch.zeros(D)
            if first[c]:
                mean[c], var[c], first[c] = e.mean(0), v, False
            else:
                mean[c] = 0.3 * e.mean(0) + 0.7 * mean[c]
                var[c] = 0.3 * v + 0.7 * var[c]
    f, lab = torch.cat(seen_f), torch.cat(seen_l)
    for c in range(C - 1):
        torch.testing.assert_close(exact.mean[c], f[lab == c].mean(0))
        torch.testing.assert_close(exact.var[c], f[lab == c].var(0))
        assert exact.count[c] == (lab == c).sum()
    torch.testing.assert_close(ema.mean, mean)
    torch.testing.assert_close(ema.var, var)
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        exact.update(torch.zeros(1, D), torch.tensor([C]))


def test_resume_is_exact():
    a = _fasa()
    for feats, labels in _batches(3):
        a.loss(feats, labels, _Head(), epoch=0)
    b = _fasa()
    b.load_state_dict(a.state_dict())
    for feats, labels in _batches(2, seed=9):
        la = a.loss(feats, labels, _Head(), epoch=0)['loss_cls_aug']
        lb = b.loss(feats, labels, _Head(), epoch=0)['loss_cls_aug']
        assert torch.equal(la, lb)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc_cls = torch.nn.Linear(D, C + 1)
        self.loss_cls = CrossEntropyLoss()

    def __call__(self, *a, **k):
        raise AssertionError


def _real_head_losses(head, seed):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(
        batch_size=1, image_shapes=[(3, 64, 64)], num_classes=C,
        num_items=[6])
    feats = (torch.randn(1, 8, 16, 16), )
    proposals = demo_mm_proposals([(3, 64, 64)], 60)
    torch.manual_seed(seed)
    return head.loss(feats, proposals, packed['data_samples'])


def test_training_through_roi_head_leaves_boxes_alone():
    MessageHub.get_current_instance().update_info('epoch', 1)
    head = roi_head(
        dict(type='mmlongtail.FASA', category_stats=STATS,
             instance_prob_scale=4 * 1e3))  # rates 1: every seen class
    plain = roi_head()
    plain.load_state_dict(head.state_dict(), strict=False)
    assert head.feature_augment.feat_dim == 16
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    for it in range(3):
        losses = _real_head_losses(head, it)
        ref = _real_head_losses(plain, it)
        torch.testing.assert_close(losses['loss_bbox'], ref['loss_bbox'])
        torch.testing.assert_close(losses['loss_cls'], ref['loss_cls'])
        aug = losses['loss_cls_aug']
        assert torch.isfinite(aug) and aug > 0
        opt.zero_grad()
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        opt.step()
        plain.load_state_dict(head.state_dict(), strict=False)
    assert int(head.feature_augment.step) == 3
    assert head.feature_augment.stats.seen.any()
    # before start_epoch only statistics are gathered
    MessageHub.get_current_instance().update_info('epoch', 0)
    assert _real_head_losses(head, 5)['loss_cls_aug'] == 0


def test_sampling_hook_adapts_from_a_loss_pass():
    from types import SimpleNamespace

    from mmlongtail.engine.hooks import FASASamplingHook

    head = roi_head(dict(type='mmlongtail.FASA', category_stats=STATS,
                         clustering=False))

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.roi_head = head

        def data_preprocessor(self, batch, training):
            assert not training
            return batch

        def _run_forward(self, seed, mode):
            assert mode == 'loss' and not self.training
            return _real_head_losses(self.roi_head, seed)

    runner = SimpleNamespace(model=Detector(), epoch=0, val_dataloader=[0])
    hook = FASASamplingHook()
    hook.before_train(runner)
    before = head.feature_augment.rates.clone()
    hook.after_train_epoch(runner)  # first pass: the reference losses
    assert runner.model.training and not head.collect_val_loss
    torch.testing.assert_close(head.feature_augment.rates, before)
    assert head.feature_augment.loss_prev.sum() > 0
    with torch.no_grad():
        head.bbox_head.fc_cls.weight.mul_(3)  # the loss changes
    hook.after_train_epoch(runner)
    ratio = head.feature_augment.rates / before
    assert (((ratio - 1.1).abs() < 1e-5) | ((ratio - 0.9).abs() < 1e-5)
            | ((ratio - 1).abs() < 1e-6)).all()
    assert not torch.equal(head.feature_augment.rates, before)
    with pytest.raises(TypeError, match='FeatureAugRoIHead'):
        FASASamplingHook().before_train(SimpleNamespace(
            model=SimpleNamespace(roi_head=roi_head())))


def test_consistency_hook_knows_feature_augment():
    from mmlongtail.engine.hooks import check_longtail_consistency
    head = roi_head(dict(type='mmlongtail.FASA', category_stats=STATS))
    check_longtail_consistency(torch.nn.ModuleDict(dict(roi_head=head)))
    head.feature_augment.requires_cosine_classifier = True
    with pytest.raises(ValueError, match='needs a cosine classifier'):
        check_longtail_consistency(torch.nn.ModuleDict(dict(roi_head=head)))


def test_head_checkpoint_resumes_exactly():
    """Every generator's state is in the RoI head's state dict: a head
    loaded from it continues exactly as the original."""
    MessageHub.get_current_instance().update_info('epoch', 1)
    cfg = dict(type='mmlongtail.FASA', category_stats=STATS,
               instance_prob_scale=4e3)
    a = roi_head(cfg)
    for it in range(2):
        _real_head_losses(a, it)
    state = a.state_dict()
    for k in ('stats.mean', 'stats.var', 'stats.count', 'rates',
              'loss_prev', 'step'):
        assert 'feature_augment.' + k in state
    b = roi_head(cfg)
    b.load_state_dict(state)
    for it in range(2, 4):
        la, lb = _real_head_losses(a, it), _real_head_losses(b, it)
        assert la['loss_cls_aug'] > 0
        for k in la:
            assert torch.equal(la[k], lb[k]), k


def test_sampling_hook_pass_leaves_loss_statistics_alone():
    """The loss pass runs loss_cls; a loss that counts the labels it sees
    in any mode (as Seesaw's cum_samples) must not count the scored
    (held-out) images."""
    from types import SimpleNamespace

    from mmlongtail.engine.hooks import FASASamplingHook

    class CountingCE(CrossEntropyLoss):
        def __init__(self):
            super().__init__()
            self.register_buffer('seen', torch.zeros(C + 1))

        def forward(self, cls_score, label, *args, **kwargs):
            self.seen.index_add_(0, label, torch.ones(len(label)))
            return super().forward(cls_score, label, *args, **kwargs)

    head = roi_head(dict(type='mmlongtail.FASA', category_stats=STATS,
                         clustering=False))
    head.bbox_head.loss_cls = CountingCE()

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.roi_head = head

        def data_preprocessor(self, batch, training):
            return batch

        def _run_forward(self, seed, mode):
            return _real_head_losses(self.roi_head, seed)

    runner = SimpleNamespace(model=Detector(), epoch=0,
                             val_dataloader=[0, 1])
    hook = FASASamplingHook()
    hook.before_train(runner)
    hook.after_train_epoch(runner)
    assert head.bbox_head.loss_cls.seen.sum() == 0
    assert head.feature_augment.loss_prev.sum() > 0  # the pass did run


def test_refuses_a_loop_that_never_reaches_start_epoch():
    """FASA starts at epoch 1; an IterBasedTrainLoop stays at epoch 0 and
    never runs after_train_epoch, so nothing would be generated or adapted
    without a word."""
    from types import SimpleNamespace

    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    from mmlongtail.engine.hooks import FASASamplingHook
    from mmlongtail.engine.hooks.longtail_consistency_hook import \
        check_train_loop_fit

    head = roi_head(dict(type='mmlongtail.FASA', category_stats=STATS))
    assert head.feature_augment.start_epoch == 1
    model = torch.nn.ModuleDict(dict(roi_head=head))
    iters = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    iters._max_epochs, iters._max_iters = 1, 100
    with pytest.raises(ValueError, match='IterBasedTrainLoop'):
        check_train_loop_fit(model, iters)
    epochs = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    epochs._max_epochs = 1
    with pytest.raises(ValueError, match='runs 1 epoch'):
        check_train_loop_fit(model, epochs)
    epochs._max_epochs = 2
    check_train_loop_fit(model, epochs)
    head.feature_augment.start_epoch = 0
    check_train_loop_fit(model, iters)
    runner = SimpleNamespace(model=SimpleNamespace(roi_head=head),
                             train_loop=iters, val_dataloader=[0])
    with pytest.raises(ValueError, match='IterBasedTrainLoop'):
        FASASamplingHook().before_train(runner)
