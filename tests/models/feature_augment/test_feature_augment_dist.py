"""Feature statistics and FASA rates across 2 gloo ranks: identical on both
ranks and equal to one process that sees both ranks' RoIs."""
import os

import torch
from dist_utils import spawn_gloo

C, D, ITERS = 4, 6, 3


def _batch(it, rank):
    g = torch.Generator().manual_seed(10 * it + rank)
    n = 5 + 3 * rank
    return torch.randn(n, D, generator=g) + rank, torch.randint(
        0, C, (n, ), generator=g)


def _val(rank, it):
    # differs per iteration, so the rates do adapt (equal losses every
    # pass would leave them at their initial values)
    g = torch.Generator().manual_seed(77 + rank + 10 * it)
    return torch.rand(12, generator=g), torch.randint(0, C + 1, (12, ),
                                                      generator=g)


def _stats_pair(use_distributed=True):
    from mmlongtail.models.feature_augment import ClassFeatureStatistics
    return (ClassFeatureStatistics(C, D, None, use_distributed),
            ClassFeatureStatistics(C, D, 0.2, use_distributed))


def _fasa():
    from helpers import STATS

    from mmlongtail.models.feature_augment import FASA
    return FASA(C, D, STATS, start_epoch=0)


def _worker(rank, world, out_dir):
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    exact, ema = _stats_pair()
    fasa = _fasa()
    for it in range(ITERS):
        f, y = _batch(it, rank)
        exact.update(f, y)
        ema.update(f, y)
        fasa.observe(f, y, None)
        fasa.accumulate_val_loss(*_val(rank, it))
        fasa.adapt(groups=torch.arange(C))
    state = {k: v.clone() for k, v in fasa.state_dict().items()}
    fasa.rates.fill_(1.)
    draws = fasa.generate(None, None, None, fasa.generator(
        torch.device('cpu')))[0]
    torch.save(
        dict(exact=exact.state_dict(), ema=ema.state_dict(),
             fasa=state, draws=draws),
        os.path.join(out_dir, f'{rank}.pth'))


def test_identical_on_ranks_and_equal_to_one_process(tmp_path):
    spawn_gloo(_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f'{r}.pth') for r in range(2))
    for key in ('exact', 'ema', 'fasa'):
        for k, v in r0[key].items():
            assert torch.equal(v, r1[key][k]), (key, k)
    # ranks draw differently from the same statistics
    assert not torch.equal(r0['draws'], r1['draws'])
    exact, ema = _stats_pair()
    fasa = _fasa()
    for it in range(ITERS):
        fs, ys = zip(*(_batch(it, r) for r in range(2)))
        exact.update(torch.cat(fs), torch.cat(ys))
        ema.update(torch.cat(fs), torch.cat(ys))
        for r in range(2):
            fasa.accumulate_val_loss(*_val(r, it))
        fasa.adapt(groups=torch.arange(C))
    for key, mod in (('exact', exact), ('ema', ema)):
        for k, v in mod.state_dict().items():
            torch.testing.assert_close(r0[key][k], v)
    torch.testing.assert_close(r0['fasa']['rates'], fasa.rates)
    assert not torch.equal(fasa.rates, _fasa().rates)  # they did adapt
