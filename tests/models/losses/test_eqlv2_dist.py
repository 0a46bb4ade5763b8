"""EQLv2 gradient statistics across 2 gloo ranks: identical on both ranks
and equal to one process that sees both ranks' batches."""
import os

import torch
from dist_utils import spawn_gloo

C = 5
ITERS = 4


def _batch(it, rank):
    g = torch.Generator().manual_seed(100 * it + rank)
    x = torch.randn(16 + 4 * rank, C + 1, generator=g) * 2
    y = torch.multinomial(
        torch.tensor([6., 3, 1, 1, 0, 8]), len(x), True, generator=g)
    return x, y


def _worker(rank, world, out_dir):
    from mmlongtail.models.losses import EQLv2Loss
    synced = EQLv2Loss(C)
    local = EQLv2Loss(C, use_distributed=False)
    for it in range(ITERS):
        x, y = _batch(it, rank)
        synced(x.requires_grad_(True), y).backward()
        local(x, y)
    torch.save(
        dict(synced=synced.state_dict(), local=local.state_dict()),
        os.path.join(out_dir, f'{rank}.pth'))


def _run(tmp_path):
    spawn_gloo(_worker, str(tmp_path))
    return [torch.load(tmp_path / f'{r}.pth') for r in range(2)]


def test_statistics_are_global_and_identical(tmp_path):
    from mmlongtail.models.losses import EQLv2Loss
    r0, r1 = _run(tmp_path)
    s0, s1 = r0['synced'], r1['synced']
    for k in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert torch.equal(s0[k], s1[k])
    # one process seeing both ranks' batches (weights are per class, so the
    # concatenated batch gets the same weights as each rank's half)
    single = EQLv2Loss(C)
    for it in range(ITERS):
        xs, ys = zip(*(_batch(it, r) for r in range(2)))
        single(torch.cat(xs), torch.cat(ys))
    for k in ('pos_grad', 'neg_grad', 'pos_neg'):
        torch.testing.assert_close(s0[k], single.state_dict()[k])
    # turned off: each rank keeps its own statistics
    l0, l1 = r0['local'], r1['local']
    assert not torch.equal(l0['pos_grad'], l1['pos_grad'])
    local = EQLv2Loss(C)
    for it in range(ITERS):
        local(*_batch(it, 0))
    torch.testing.assert_close(l0['pos_grad'], local.pos_grad)


def _query_loss(use_distributed=True):
    """EQLv2 as the loss_cls of a DETRHead: the query-head mode."""
    from mmdet.models.dense_heads import DETRHead
    from mmengine.registry import DefaultScope

    import mmlongtail  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = DETRHead(num_classes=C, embed_dims=8, train_cfg=None,
                        loss_cls=dict(type='mmlongtail.EQLv2Loss',
                                      num_classes=C,
                                      use_distributed=use_distributed))
    assert head.loss_cls.query_head
    return head.loss_cls


def _query_batch(it, call, rank):
    g = torch.Generator().manual_seed(1000 * it + 10 * call + rank)
    x = torch.randn(12 + 4 * rank, C, generator=g) * 2
    y = torch.multinomial(
        torch.tensor([6., 3, 1, 1, 0, 8]), len(x), True, generator=g)
    return x, y


def _query_worker(rank, world, out_dir):
    loss = _query_loss()
    for it in range(ITERS):
        # three calls per step (decoder layers, encoder, denoising), one
        # backward: every call's sums reach the statistics
        total = sum(loss(x.requires_grad_(True), y, avg_factor=4.0)
                    for x, y in (_query_batch(it, c, rank)
                                 for c in range(3)))
        total.backward()
    torch.save(loss.state_dict(), os.path.join(out_dir, f'q{rank}.pth'))


def test_query_head_statistics_are_global_over_every_call(tmp_path):
    """In a query head (C outputs): every call of a step feeds the sums,
    each call all-reduced, equal on both ranks and to one process that
    sees both ranks' calls."""
    spawn_gloo(_query_worker, str(tmp_path))
    s0, s1 = [torch.load(tmp_path / f'q{r}.pth') for r in range(2)]
    single = _query_loss(use_distributed=False)
    for it in range(ITERS):
        total = 0
        for c in range(3):
            xs, ys = zip(*(_query_batch(it, c, r) for r in range(2)))
            total = total + single(torch.cat(xs).requires_grad_(True),
                                   torch.cat(ys), avg_factor=4.0)
        total.backward()
    for k in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert torch.equal(s0[k], s1[k])
        torch.testing.assert_close(s0[k], single.state_dict()[k])
    assert (s0['pos_grad'][:4] > 0).all()
