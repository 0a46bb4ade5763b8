# NorCal (Pan et al., NeurIPS 2021), post-hoc on a trained plain Mask R-CNN
# R50-FPN (configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py): class scores
# weighted by N_c^-gamma (LVIS v1 train image counts), background unweighted,
# renormalized per proposal. A test-time delta: no training.
#
#   tools/test.py configs/norcal/norcal_mask_rcnn_r50_fpn_ms_1x_lvis.py <ckpt>
#
# gamma = 0.6 is a starting point, not a tuned or published value: choose it
# on a held-out part of the training set, never on val.
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

norcal = dict(
    type='mmlongtail.NorCal', category_stats='lvis_v1', gamma=0.6,
    mode='exps')
model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[norcal])))
