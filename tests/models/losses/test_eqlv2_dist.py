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
