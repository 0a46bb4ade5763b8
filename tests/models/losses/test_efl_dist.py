"""EqualizedFocalLoss statistics across 2 gloo ranks: identical on both
ranks and equal to one process that sees both ranks' batches, with two
calls per step (two FPN levels) as in RetinaNet and ATSS heads."""
import os

import torch
from dist_utils import spawn_gloo

C = 5
ITERS = 4


def _level(it, rank, level):
    g = torch.Generator().manual_seed(1000 * it + 10 * rank + level)
    n = 24 + 8 * rank - 6 * level
    x = torch.randn(n, C, generator=g) * 2 - 1.5
    y = torch.multinomial(
        torch.tensor([6., 3, 1, 1, 0, 20]), n, True, generator=g)
    return x, y


def _step(loss, it, rank):
    outs = [loss(x.requires_grad_(True), y, reduction_override='sum')
            for x, y in (_level(it, rank, lvl) for lvl in range(2))]
    sum(outs).backward()


def _worker(rank, world, out_dir):
    from mmlongtail.models.losses import EqualizedFocalLoss
    synced = EqualizedFocalLoss(C)
    local = EqualizedFocalLoss(C, use_distributed=False)
    for it in range(ITERS):
        _step(synced, it, rank)
        _step(local, it, rank)
    torch.save(
        dict(synced=synced.state_dict(), local=local.state_dict()),
        os.path.join(out_dir, f'{rank}.pth'))


def test_statistics_are_global_and_identical(tmp_path):
    from mmlongtail.models.losses import EqualizedFocalLoss
    spawn_gloo(_worker, str(tmp_path))
    r0, r1 = [torch.load(tmp_path / f'{r}.pth') for r in range(2)]
    keys = ('pos_grad', 'neg_grad', 'pos_neg')
    for k in keys:
        assert torch.equal(r0['synced'][k], r1['synced'][k]), k
    # one process seeing both ranks' levels in one step ('sum': the
    # factors are per class, so each sample's gradient is the same)
    single = EqualizedFocalLoss(C)
    for it in range(ITERS):
        outs = []
        for rank in range(2):
            for lvl in range(2):
                x, y = _level(it, rank, lvl)
                outs.append(single(x.requires_grad_(True), y,
                                   reduction_override='sum'))
        sum(outs).backward()
    for k in keys:
        torch.testing.assert_close(r0['synced'][k], single.state_dict()[k])
    # the ratios moved away from the initial 1 and differ between classes
    assert single.pos_neg.max() < 1 and single.pos_neg.std() > 0
    # turned off: each rank keeps its own statistics
    assert not torch.equal(r0['local']['pos_grad'], r1['local']['pos_grad'])
    local = EqualizedFocalLoss(C)
    for it in range(ITERS):
        _step(local, it, 0)
    torch.testing.assert_close(r0['local']['pos_grad'], local.pos_grad)
