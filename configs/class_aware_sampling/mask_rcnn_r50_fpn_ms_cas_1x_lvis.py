# Class-balanced sampling (Kang et al., ICLR 2020; q = 0 of
# mmlongtail.ClassAwareSampler: a class uniformly, then one of its images) on
# the plain Mask R-CNN R50-FPN baseline, multi-scale 1x, LVIS v1.
# q = 0.5 gives square-root sampling, q = 1 instance-balanced sampling.
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='mmlongtail.ClassAwareSampler', q=0.0))
