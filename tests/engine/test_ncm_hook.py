"""The nearest-class-mean classifier, post hoc (Kang et al., ICLR 2020):
cosine NCM scores against a hand computation, class means against a hand
accumulation through a real model pass, two gloo ranks, a checkpoint
rescored from a config delta (and its cached means), the temperature sweep,
and the refusals."""
import math
import os
import os.path as osp
from unittest import mock

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner

import mmlongtail  # noqa: F401
from mmlongtail.apis import build_runner_config, sweep
from mmlongtail.engine import NCMClassifierHook
from mmlongtail.engine.hooks.ncm_hook import (_all_ranks, _pass_dataloader,
                                              compute_class_means,
                                              ncm_box_head)
from mmlongtail.models.layers.ncm import (ClassMeanAccumulator,
                                          NCMClassifier, load_class_means,
                                          ncm_log_probs, ncm_logits,
                                          save_class_means)
from tests.dist_utils import spawn_gloo

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs/demo/mask_rcnn_r18_light_synthetic.py')
NUM_CLASSES = 12  # tiny_lvis


# ------------------------------------------------------------- numerics --
def test_ncm_scores_equal_hand_computation():
    # 2 proposals, 3 classes (class 2 has no mean), D = 2
    feats = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    means = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    counts = torch.tensor([5, 1, 0])
    trained = torch.tensor([[0.3, -0.2, 1.0, 0.5], [2.0, 0.0, 0.0, -1.0]])
    T = 0.5
    fc = nn.Linear(2, 4)
    ncm = NCMClassifier(fc, means, counts, T)
    with mock.patch.object(fc, 'forward', return_value=trained):
        probs = ncm(feats).softmax(dim=1)
    for i, (x, z) in enumerate(zip(feats.tolist(), trained.tolist())):
        norm = math.hypot(*x)
        cos = [x[0] / norm, x[1] / norm]  # means normalize to e1, e2
        e = [math.exp(c / T) for c in cos]
        q = [e[0] / sum(e), e[1] / sum(e), 0.0]
        ez = [math.exp(v) for v in z]
        p_bg = ez[3] / sum(ez)
        want = [(1 - p_bg) * qc for qc in q] + [p_bg]
        assert probs[i].tolist() == pytest.approx(want, abs=1e-6)
    # the layout the softmax head expects: C + 1 finite-or--inf logits
    out = ncm_logits(feats, trained, means, counts > 0, T)
    assert out.shape == (2, 4) and torch.isneginf(out[:, 2]).all()


def test_against_the_official_centroids_and_cosine():
    """facebookresearch/classifier-balancing (run_networks.py,
    get_knncentroids; models/KNNClassifier.py), written out: the ``l2n``
    centroid of a class is the mean of its L2-normalized features, and the
    official ``dist_type='cos'`` logit is ``x_hat . c / D``. Ours: the same
    centroids, and a true cosine, ``= official logit * D / ||c||``."""
    feats = torch.tensor([[3., 4., 0.], [1., 0., 0.], [0., 2., 2.],
                          [1., 1., 1.]])
    labels = torch.tensor([0, 0, 1, 1])
    acc = ClassMeanAccumulator(2, 3)
    acc.update(torch.nn.functional.normalize(feats, dim=1), labels)
    means, counts = acc.means()
    r2, r3 = math.sqrt(2), math.sqrt(3)
    official = torch.tensor([[(0.6 + 1) / 2, 0.8 / 2, 0.],
                             [1 / r3 / 2, (1 / r2 + 1 / r3) / 2,
                              (1 / r2 + 1 / r3) / 2]])
    assert torch.allclose(means, official, atol=1e-7)
    x = torch.tensor([[2., 1., 0.5]])
    x_hat = x / x.norm()
    official_logit = x_hat @ official.t() / 3
    ours = ncm_log_probs(x, means, counts > 0, 1.0).exp()
    cos = official_logit * 3 / official.norm(dim=1)
    assert torch.allclose(ours, cos.softmax(dim=1), atol=1e-6)


def test_accumulator_sums_counts_and_refuses_bad_input():
    acc = ClassMeanAccumulator(3, 2)
    acc.update(torch.tensor([[1., 2.], [3., 4.], [5., 6.]]),
               torch.tensor([0, 0, 2]))
    acc.update(torch.tensor([[1., 1.]]), torch.tensor([2]))
    means, counts = acc.means()
    assert counts.tolist() == [2, 0, 2]
    assert means.tolist() == [[2., 3.], [0., 0.], [3., 3.5]]
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\), '
                       r'got \[0, 3\]'):
        acc.update(torch.ones(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='features'):
        acc.update(torch.ones(2, 5), torch.tensor([0, 1]))
    # the means survive a state_dict round trip (checkpointable buffers)
    other = ClassMeanAccumulator(3, 2)
    other.load_state_dict(acc.state_dict())
    assert other.means()[0].tolist() == means.tolist()


@pytest.mark.parametrize('t', [None, 0, -1.0, float('inf'), True, '0.1'])
def test_temperature_refused(t):
    with pytest.raises(ValueError, match='temperature must be a finite'):
        NCMClassifierHook(temperature=t)


def test_bad_input_refused(tmp_path):
    with pytest.raises(ValueError, match='phases must be some of'):
        NCMClassifierHook(temperature=0.1, phases=('train', ))
    with pytest.raises(ValueError, match='no class has a mean'):
        ncm_logits(torch.ones(1, 2), torch.zeros(1, 3), torch.ones(2, 2),
                   torch.zeros(2, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match=r'\(N, C \+ 1\) = \(1, 3\)'):
        ncm_logits(torch.ones(1, 2), torch.zeros(1, 4), torch.ones(2, 2),
                   torch.ones(2, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match='share D'):
        ncm_logits(torch.ones(1, 5), torch.zeros(1, 3), torch.ones(2, 2),
                   torch.ones(2, dtype=torch.bool), 0.1)
    bad = tmp_path / 'x.pt'
    torch.save({'means': 1}, bad)
    with pytest.raises(ValueError, match='not an NCM class-means file'):
        load_class_means(str(bad))
    with pytest.raises(FileNotFoundError, match='class means file not'):
        load_class_means(str(tmp_path / 'none.pt'))
    good = str(tmp_path / 'm.pt')
    save_class_means(good, torch.ones(2, 3), torch.tensor([1, 0]),
                     dict(num_classes=2))
    assert load_class_means(good, dict(num_classes=3)) is None  # stale
    means, counts = load_class_means(good, dict(num_classes=2))
    assert means.shape == (2, 3) and counts.tolist() == [1, 0]


def _build(cfg_model):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg_model)


@pytest.mark.parametrize('edit, match', [
    (lambda m: m.roi_head.bbox_head.update(loss_cls=dict(
        type='mmlongtail.EQLv2Loss', use_sigmoid=True,
        num_classes=NUM_CLASSES)),
     'needs a softmax classifier over C \\+ 1 rows'),
    (lambda m: m.update(train_cfg=None), 'no bbox_assigner'),
])
def test_heads_refused(tiny_lvis, tmp_path, edit, match):
    cfg = Config.fromfile(_write_config(tmp_path, tiny_lvis))
    edit(cfg.model)
    with pytest.raises(ValueError, match=match):
        ncm_box_head(_build(cfg.model))


def test_cascade_refused():
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead

    class Cascade(nn.Module):
        def __init__(self):
            super().__init__()
            self.rpn_head = nn.Identity()
            self.roi_head = nn.Module()
            self.roi_head.bbox_head = nn.ModuleList(
                Shared2FCBBoxHead(num_classes=3) for _ in range(2))

    with pytest.raises(ValueError, match='Cascade stages are refused'):
        ncm_box_head(Cascade())


# ------------------------------------------------------------ two ranks --
def _two_ranks(rank, world, out):
    g = torch.Generator().manual_seed(rank)
    acc = ClassMeanAccumulator(4, 3)
    n = 5 + rank  # the ranks see different numbers of features
    acc.update(torch.randn(n, 3, generator=g),
               torch.randint(0, 3, (n, ), generator=g))  # class 3: none
    acc.all_reduce()
    means, counts = acc.means()
    # a cache file seen by one rank only is used by none
    agree = (_all_ranks(rank == 0), _all_ranks(True))
    torch.save(dict(means=means, counts=counts, agree=agree),
               f'{out}/rank{rank}.pt')


def test_two_gloo_ranks_give_identical_global_means(tmp_path):
    spawn_gloo(_two_ranks, str(tmp_path))
    r0, r1 = (torch.load(f'{tmp_path}/rank{r}.pt') for r in (0, 1))
    assert torch.equal(r0['means'], r1['means'])
    assert torch.equal(r0['counts'], r1['counts'])
    assert r0['agree'] == r1['agree'] == (False, True)
    # and they are the means over both ranks' features
    whole = ClassMeanAccumulator(4, 3)
    for rank in (0, 1):
        g = torch.Generator().manual_seed(rank)
        n = 5 + rank
        whole.update(torch.randn(n, 3, generator=g),
                     torch.randint(0, 3, (n, ), generator=g))
    means, counts = whole.means()
    assert torch.allclose(r0['means'], means, atol=1e-6)
    assert r0['counts'].tolist() == counts.tolist() and counts[3] == 0


# -------------------------------------------------- a real model pass --
def _write_config(tmp_path, tiny_lvis, extra=''):
    text = (f"_base_ = {DEMO!r}\n"
            "model = dict(\n"
            "    roi_head=dict(type='mmlongtail.StandardRoIHead',\n"
            f"        bbox_head=dict(num_classes={NUM_CLASSES}),\n"
            f"        mask_head=dict(num_classes={NUM_CLASSES})),\n"
            "    test_cfg=dict(rcnn=dict(max_per_img=20, "
            "topk_per_class=-1)))\n"
            "train_dataloader = dict(batch_size=2, num_workers=0, "
            "persistent_workers=False, dataset=dict(indices=6))\n"
            "test_dataloader = dict(num_workers=0, persistent_workers=False,"
            " dataset=dict(indices=4))\n"
            "test_evaluator = dict(protocol='standard')\n"
            "log_level = 'WARNING'\n" + extra)
    path = tmp_path / 'ncm.py'
    path.write_text(text)
    return str(path)


@pytest.fixture(scope='module')
def checkpoint(tiny_lvis, tmp_path_factory):
    """The demo model (12 classes) as initialized, saved."""
    tmp = tmp_path_factory.mktemp('ncm_ckpt')
    with mock.patch.dict(os.environ, {'SYNTHETIC_LVIS_ROOT':
                                      tiny_lvis['root']}):
        cfg = Config.fromfile(_write_config(tmp, tiny_lvis))
    torch.manual_seed(0)
    model = _build(cfg.model)
    model.init_weights()
    path = str(tmp / 'init.pth')
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def _hand_means(model, loader):
    """The means accumulated by hand: proposals as in training, the
    assigner's positives plus the gt boxes, the Shared2FC layers written
    out, each feature L2-normalized, one Python loop over the features."""
    from mmengine.structures import InstanceData
    head, roi_head = model.roi_head.bbox_head, model.roi_head
    sums = [None] * NUM_CLASSES
    counts = [0] * NUM_CLASSES
    num_gt = [0] * NUM_CLASSES
    with torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            x = model.extract_feat(data['inputs'])
            samples = data['data_samples']
            props = model.rpn_head.predict_by_feat(
                *model.rpn_head(x), batch_img_metas=[
                    s.metainfo for s in samples],
                cfg=model.train_cfg.rpn_proposal)
            for i, (s, p) in enumerate(zip(samples, props)):
                gt = s.gt_instances
                a = roi_head.bbox_assigner.assign(
                    InstanceData(priors=p.bboxes), gt)
                pos = (a.gt_inds > 0).nonzero().view(-1)
                boxes = torch.cat([gt.bboxes, p.bboxes[pos]])
                labels = gt.labels.tolist() + a.labels[pos].tolist()
                for c in gt.labels.tolist():
                    num_gt[c] += 1
                f = roi_head.bbox_roi_extractor(
                    x[:roi_head.bbox_roi_extractor.num_inputs],
                    torch.cat([boxes.new_full((len(boxes), 1), i), boxes],
                              dim=1)).flatten(1)
                for fc in head.shared_fcs:
                    f = torch.relu(fc(f))
                f = f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)
                for row, c in zip(f, labels):
                    sums[c] = row.double() if sums[c] is None else \
                        sums[c] + row.double()
                    counts[c] += 1
    return sums, counts, num_gt


def test_class_means_equal_hand_accumulation(tiny_lvis, checkpoint,
                                             tmp_path, monkeypatch):
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    cfg = build_runner_config(_write_config(tmp_path, tiny_lvis),
                              work_dir=str(tmp_path / 'w'))
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    model = runner.model.eval()
    means, counts = compute_class_means(model, _pass_dataloader(runner))
    sums, want_counts, num_gt = _hand_means(model, _pass_dataloader(runner))
    assert counts.tolist() == want_counts
    assert all(c >= g for c, g in zip(want_counts, num_gt))  # gt included
    assert sum(want_counts) > sum(num_gt)  # and assigned proposals
    for c in range(NUM_CLASSES):
        if want_counts[c]:
            want = (sums[c] / want_counts[c]).float()
            assert torch.allclose(means[c], want, rtol=1e-5, atol=1e-6)
        else:
            assert not means[c].any()
    assert model.training is False


def _rescore(config, checkpoint, work_dir, edit=None):
    cfg = build_runner_config(config, work_dir=work_dir, cfg_options={
        'test_evaluator.outfile_prefix': f'{work_dir}/lvis'})
    if edit:
        edit(cfg)
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    return runner, runner.test()


def _scores(prefix):
    import json
    with open(f'{prefix}.bbox.json') as f:
        return [d['score'] for d in json.load(f)]


@pytest.fixture(scope='module')
def runs(tiny_lvis, checkpoint, tmp_path_factory):
    """tools/test.py on the checkpoint: plain, and with the NCM hook at
    T = 0.1 from a config delta (means cached next to the checkpoint)."""
    tmp = tmp_path_factory.mktemp('ncm_runs')
    ckpt = str(tmp / 'epoch_1.pth')
    os.symlink(checkpoint, ckpt)
    hook = ("custom_hooks = [dict(type='mmlongtail.NCMClassifierHook', "
            "temperature=0.1)]\n")
    with mock.patch.dict(os.environ, {'SYNTHETIC_LVIS_ROOT':
                                      tiny_lvis['root']}):
        config = _write_config(tmp, tiny_lvis, hook)
        seen = {}
        real_apply = NCMClassifierHook._apply

        def spy(self, runner, phase):
            real_apply(self, runner, phase)
            if self._saved is not None:
                seen['fc_cls'] = self._saved[0].fc_cls

        with mock.patch.object(NCMClassifierHook, '_apply', spy):
            runner, metrics = _rescore(config, ckpt, str(tmp / 'ncm'))
        _rescore(config, ckpt, str(tmp / 'plain'),
                 lambda cfg: cfg.__setattr__('custom_hooks', []))
    return dict(config=config, ckpt=ckpt, runner=runner, metrics=metrics,
                fc_cls=seen['fc_cls'], ncm=_scores(f'{tmp}/ncm/lvis'),
                plain=_scores(f'{tmp}/plain/lvis'))


def test_checkpoint_rescored_from_a_config_delta(runs, tmp_path,
                                                 monkeypatch, tiny_lvis):
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    assert 'lvis/bbox_AP' in runs['metrics']
    # the means were cached next to the checkpoint, and are the model's
    means, counts = load_class_means(f"{runs['ckpt']}.ncm_means.pt")
    ncm = runs['fc_cls']
    assert isinstance(ncm, NCMClassifier) and ncm.temperature == 0.1
    assert torch.equal(ncm.means, means) and torch.equal(ncm.counts, counts)
    head = runs['runner'].model.roi_head.bbox_head
    assert isinstance(head.fc_cls, nn.Linear)  # put back after the epoch
    # the scores are the NCM ones: they differ from the plain model's
    assert runs['ncm'] != runs['plain']
    # a second run reads the cache instead of a training pass
    with mock.patch('mmlongtail.engine.hooks.ncm_hook.compute_class_means',
                    side_effect=AssertionError('recomputed')):
        _, again = _rescore(runs['config'], runs['ckpt'], str(tmp_path))
    assert _scores(f'{tmp_path}/lvis') == runs['ncm']
    assert again == runs['metrics']


def test_temperature_sweep_equals_test_tool(runs, tmp_path, monkeypatch,
                                            tiny_lvis):
    monkeypatch.setenv('SYNTHETIC_LVIS_ROOT', tiny_lvis['root'])
    out = str(tmp_path / 'sweep')
    result = sweep(runs['config'], runs['ckpt'],
                   'NCMClassifierHook.temperature', [0.1, 0.5],
                   split='val', work_dir=out, task='bbox', write=False,
                   cfg_options={'test_evaluator.outfile_prefix':
                                f'{out}/dets/lvis'})
    assert result.param == 'NCMClassifierHook.temperature'
    assert [r['label'] for r in result.rows] == ['none', '0.1', '0.5']
    # each row is tools/test.py with that value (none: without the hook)
    assert _scores(f'{out}/dets/temperature_0.1/lvis') == runs['ncm']
    assert _scores(f'{out}/dets/temperature_none/lvis') == runs['plain']
    assert _scores(f'{out}/dets/temperature_0.5/lvis') != runs['ncm']
    assert _lvis_equal(result.rows[1]['metrics'], runs['metrics'])


def _lvis_equal(a, b):
    return {k: v for k, v in a.items() if k.startswith('lvis/')} == {
        k: v for k, v in b.items() if k.startswith('lvis/')}
