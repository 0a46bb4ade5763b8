# tau-normalized classifier (Kang et al., ICLR 2020), post-hoc, on a trained
# plain Mask R-CNN R50-FPN (configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py): the
# class rows of fc_cls become w_c / ||w_c||^tau before evaluation; no
# training. Choose tau with tools/calibrate.py on a held-out training split.
#
#   tools/test.py \
#     configs/tau_norm/tau_norm_mask_rcnn_r50_fpn_ms_1x_lvis.py <ckpt>
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

custom_hooks = [dict(type='mmlongtail.TauNormalizationHook', tau=1.0)]
