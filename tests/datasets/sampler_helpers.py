"""Helpers of the sampler tests: a dataset from category lists and a tiny
mmengine Runner that records the indices it is served."""
import torch


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
