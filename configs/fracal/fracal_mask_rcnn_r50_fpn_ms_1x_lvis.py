# FRACAL (Alexandridis et al., CVPR 2025), post-hoc on a trained plain Mask
# R-CNN R50-FPN (configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py): the class
# logits shifted by a frequency term (base10 of the LVIS v1 train image
# frequency) and the class probabilities divided by the fractal dimension of
# the class's box locations to the power fractal_l, background untouched,
# renormalized per proposal. A test-time delta: no training.
#
#   tools/test.py configs/fracal/fracal_mask_rcnn_r50_fpn_ms_1x_lvis.py <ckpt>
#
# variant='base10' and fractal_l=2 are the official LVIS configs' values
# (tuned there for an RFS + cosine-classifier model); choose fractal_l for
# yours on a held-out part of the training set (tools/calibrate.py --param
# fractal_l), never on val.
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

fracal = dict(
    type='mmlongtail.FRACAL', category_stats='lvis_v1', variant='base10',
    fractal_l=2.0)
model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[fracal])))
