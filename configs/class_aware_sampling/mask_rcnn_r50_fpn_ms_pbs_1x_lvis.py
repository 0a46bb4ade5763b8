# Progressively-balanced sampling (Kang et al., ICLR 2020) on the plain Mask
# R-CNN R50-FPN baseline, multi-scale 1x, LVIS v1: at epoch t of T = 12 the
# class probabilities are (1 - t/T) p^{q=1} + (t/T) p^{q=0}, instance-balanced
# at the start, moving towards class-balanced. mode='exponent' schedules the
# exponent instead (DCL, Wang et al., ICCV 2019).
_base_ = './mask_rcnn_r50_fpn_ms_cas_1x_lvis.py'

train_dataloader = dict(
    sampler=dict(q=0.0, progressive=dict(end={{_base_.train_cfg.max_epochs}},
                                         start_q=1.0, mode='mix')))
