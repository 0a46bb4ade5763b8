"""GAPLoss counts across 2 gloo ranks: after every call both ranks hold the
global histogram of the nonzero-weight labels (background included), so
both weight the classes alike; with use_distributed=False each rank keeps
its own."""
import os

import torch
from dist_utils import spawn_gloo

C = 4
ITERS = 2


def _batch(it, rank):
    """Different batch sizes, label mixes and zero weights per rank."""
    g = torch.Generator().manual_seed(10 * it + rank)
    n = 8 + 5 * rank
    mix = torch.tensor([4., 1, 0, 2, 6]) if rank == 0 else torch.tensor(
        [0., 3, 2, 0, 5])
    labels = torch.multinomial(mix, n, True, generator=g)
    weights = torch.ones(n)
    weights[-2:] = 0
    return labels, weights


def _worker(rank, world, out_dir):
    from mmlongtail.models.losses import GAPLoss
    synced = GAPLoss(num_classes=C)
    local = GAPLoss(num_classes=C, use_distributed=False)
    history = []
    for it in range(ITERS):
        y, w = _batch(it, rank)
        x = torch.randn(len(y), C + 1, requires_grad=True)
        sum(synced(x, y, label_weights=w).values()).backward()
        local(x.detach(), y, label_weights=w)
        history.append(synced.num_samples.clone())
    torch.save(dict(history=history, local=local.num_samples.clone()),
               os.path.join(out_dir, f'{rank}.pth'))


def _hist(it, rank):
    y, w = _batch(it, rank)
    return torch.bincount(y[w > 0], minlength=C + 1)


def test_counts_are_the_global_histogram_on_every_rank(tmp_path):
    spawn_gloo(_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f'{r}.pth') for r in range(2))
    expected = torch.zeros(C + 1, dtype=torch.long)
    for it in range(ITERS):
        expected += _hist(it, 0) + _hist(it, 1)
        assert torch.equal(r0['history'][it], expected)
        assert torch.equal(r1['history'][it], expected)
    for rank, res in enumerate((r0, r1)):
        own = sum(_hist(it, rank) for it in range(ITERS))
        assert torch.equal(res['local'], own)
