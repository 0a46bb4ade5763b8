"""Helpers of the sampler tests: a dataset from category lists, what one
rank's sampler serves (for the two-rank tests) and a tiny mmengine Runner
that records the indices it is served."""
import json
import os.path as osp

import torch

#: The category lists of the two-rank sampler tests (23 images, 5 classes,
#: and one image without annotations).
DIST_CATS = [[i % 5] * (1 + i % 3) for i in range(23)] + [[]]


class CatListDataset:
    """Minimal dataset: ``get_cat_ids`` from a list (the fallback path)."""

    def __init__(self, cats):
        self.cats = cats

    def __len__(self):
        return len(self.cats)

    def __getitem__(self, idx):
        return dict(inputs=torch.tensor([float(idx)]), idx=idx)

    def get_cat_ids(self, idx):
        return self.cats[idx]


def record_rank_streams(rank, out_dir, make_sampler, make_infinite,
                        infinite_draws):
    """Write what this rank's samplers serve to ``rank{rank}.json``: the
    seed (``seed=None`` is synchronized across ranks), epochs 0 and 1 with
    their lengths, and the first ``infinite_draws`` indices in infinite mode.

    Args:
        make_sampler: ``dataset -> sampler`` (epoch mode, seed left None).
        make_infinite: ``(dataset, seed) -> sampler`` (infinite mode).
    """
    s = make_sampler(CatListDataset(DIST_CATS))
    res = dict(seed=s.seed, epochs={}, lens={})
    for e in (0, 1):
        s.set_epoch(e)
        res['epochs'][e] = list(s)
        res['lens'][e] = len(s)
    it = iter(make_infinite(CatListDataset(DIST_CATS), s.seed))
    res['infinite'] = [next(it) for _ in range(infinite_draws)]
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(res, f)


def tiny_runner(tmp_path, train_cfg, sampler, seen, cats, **kwargs):
    """A Runner over :class:`CatListDataset` whose model appends every index
    it is served to ``seen``; ``kwargs`` go to the Runner."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Tiny(BaseModel):

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, inputs, idx=None, mode='tensor'):
            seen.extend(int(i) for i in idx)
            x = torch.stack(inputs)
            return dict(loss=((x * self.w)**2).mean() + self.w.sum() * 0)

    cfg = dict(
        model=Tiny(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=CatListDataset(cats),
            sampler=sampler,
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type='pseudo_collate')),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1000),
            logger=dict(type='LoggerHook', interval=1000)),
        randomness=dict(seed=11),
        default_scope='mmdet')
    cfg.update(kwargs)
    return Runner(**cfg)
