"""SeesawLoss counts across 2 gloo ranks: after every call both ranks hold
the global label histogram (background included); with sync_counts=False
each rank keeps its own."""
import os

import torch
from dist_utils import spawn_gloo

C = 4
ITERS = 3


def _labels(it, rank):
    """Different batch sizes and label mixes per rank."""
    g = torch.Generator().manual_seed(10 * it + rank)
    n = 8 + 5 * rank
    weights = torch.tensor([4., 1, 0, 2, 6]) if rank == 0 else torch.tensor(
        [0., 3, 2, 0, 5])
    return torch.multinomial(weights, n, True, generator=g)


def _worker(rank, world, out_dir):
    from mmlongtail.models.losses import SeesawLoss
    synced = SeesawLoss(num_classes=C)
    local = SeesawLoss(num_classes=C, sync_counts=False)
    history = []
    for it in range(ITERS):
        y = _labels(it, rank)
        x = torch.randn(len(y), C + 2, requires_grad=True)
        sum(synced(x, y).values()).backward()
        local(x.detach(), y)
        history.append(synced.cum_samples.clone())
    torch.save(
        dict(history=history, local=local.cum_samples.clone()),
        os.path.join(out_dir, f'{rank}.pth'))


def test_counts_are_the_global_histogram_on_every_rank(tmp_path):
    spawn_gloo(_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f'{r}.pth') for r in range(2))
    expected = torch.zeros(C + 1)
    for it in range(ITERS):
        for rank in range(2):
            expected += torch.bincount(_labels(it, rank), minlength=C + 1)
        assert torch.equal(r0['history'][it], expected)
        assert torch.equal(r1['history'][it], expected)
    # rank 0 never sees class 2, rank 1 never class 0: only the sync fills
    # them in
    assert expected[0] > 0 and expected[2] > 0
    for rank, res in enumerate((r0, r1)):
        own = sum(
            torch.bincount(_labels(it, rank), minlength=C + 1).float()
            for it in range(ITERS))
        assert torch.equal(res['local'], own)
    assert r0['local'][2] == 0 and r1['local'][0] == 0
