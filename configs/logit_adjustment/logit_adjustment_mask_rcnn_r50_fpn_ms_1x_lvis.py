# Post-hoc logit adjustment (Menon et al., ICLR 2021) on a trained plain Mask
# R-CNN R50-FPN: z_c - tau log pi_c for the class logits (pi from LVIS v1
# train image counts), background unadjusted. tau = 1 is Menon et al.'s.
#
#   tools/test.py <this file, in configs/logit_adjustment/> <ckpt>
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[
        dict(type='mmlongtail.LogitAdjustment', category_stats='lvis_v1',
             tau=1.0)
    ])))
