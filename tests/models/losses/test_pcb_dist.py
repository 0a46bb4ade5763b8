"""PCBLoss's confusion matrix across 2 gloo ranks with different batches:
identical on both ranks and equal to one process that sees both ranks'
batches at each step (the matrix update is one all-reduce of the batch
sums)."""
import os

import torch
from dist_utils import spawn_gloo

C = 4
ITERS = 3
BASES = {
    'softmax': (dict(type='CrossEntropyLoss', use_sigmoid=False), C + 1),
    'seesaw': (dict(type='mmlongtail.SeesawLoss', num_classes=C), C + 2),
}


def _batch(it, rank, width):
    """Different sizes and label mixes: rank 0 never has class 3, rank 1
    never class 0."""
    g = torch.Generator().manual_seed(10 * it + rank)
    n = 9 + 4 * rank
    mix = torch.tensor([4., 1, 2, 0, 5]) if rank == 0 else torch.tensor(
        [0., 3, 2, 2, 5])
    return (torch.randn(n, width, generator=g) * 2,
            torch.multinomial(mix, n, True, generator=g))


def _build(kind, **over):
    from mmlongtail.registry import MODELS
    base, _ = BASES[kind]
    return MODELS.build(
        dict(type='mmlongtail.PCBLoss', num_classes=C, alpha=0.3,
             start_epoch=0, loss=base, **over))


def _worker(rank, world, out_dir):
    import mmlongtail  # noqa: F401
    out = {}
    for kind, (_, width) in BASES.items():
        loss = _build(kind)
        for it in range(ITERS):
            x, y = _batch(it, rank, width)
            x.requires_grad_(True)
            res = loss(x, y, avg_factor=float(len(y)))
            (sum(res.values()) if isinstance(res, dict) else res).backward()
        out[kind] = loss.state_dict()
        local = _build(kind, use_distributed=False)
        for it in range(ITERS):
            local(*_batch(it, rank, width))
        out[kind + '_local'] = local.state_dict()
    torch.save(out, os.path.join(out_dir, f'{rank}.pth'))


def test_matrix_is_global_and_identical_on_every_rank(tmp_path):
    import mmlongtail  # noqa: F401
    spawn_gloo(_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f'{r}.pth') for r in range(2))
    for kind, (_, width) in BASES.items():
        one = _build(kind)
        for it in range(ITERS):
            (x0, y0), (x1, y1) = (_batch(it, r, width) for r in range(2))
            one(torch.cat([x0, x1]), torch.cat([y0, y1]))
        for key in ('confusion_matrix', 'instance_count'):
            assert torch.equal(r0[kind][key], r1[kind][key]), (kind, key)
            torch.testing.assert_close(r0[kind][key], one.state_dict()[key],
                                       rtol=0, atol=1e-6)
        assert (r0[kind]['instance_count'] > 0).all()
        # without the sync each rank keeps only its own classes
        assert r0[kind + '_local']['instance_count'][3] == 0
        assert r1[kind + '_local']['instance_count'][0] == 0
        assert not torch.equal(r0[kind + '_local']['confusion_matrix'],
                               r1[kind + '_local']['confusion_matrix'])
