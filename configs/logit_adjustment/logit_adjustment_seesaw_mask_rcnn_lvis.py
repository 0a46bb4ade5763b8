# Post-hoc logit adjustment on the Seesaw Mask R-CNN: the class logits are
# adjusted, the objectness probability is kept.
_base_ = '../seesaw_mask_rcnn_lvis.py'

model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[
        dict(type='mmlongtail.LogitAdjustment', category_stats='lvis_v1',
             tau=1.0)
    ])))
