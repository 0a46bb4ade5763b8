# NorCal on the Seesaw Mask R-CNN (configs/seesaw_mask_rcnn_lvis.py): the
# class softmax (C of the C + 2 outputs) is calibrated and multiplied by the
# unchanged objectness probability. gamma: see the plain NorCal config.
_base_ = '../seesaw_mask_rcnn_lvis.py'

norcal = dict(
    type='mmlongtail.NorCal', category_stats='lvis_v1', gamma=0.6,
    mode='exps')
model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[norcal])))
