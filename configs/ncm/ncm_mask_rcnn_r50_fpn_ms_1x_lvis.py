# Nearest-class-mean (NCM) classifier (Kang et al., ICLR 2020), post hoc, on
# a trained plain Mask R-CNN R50-FPN (configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py):
# before testing, one pass over the training images computes the mean
# L2-normalized RoI feature (fc_cls's input) of each class over the box
# head's positives; fc_cls then scores classes by cosine to the means
# (softmax at temperature T) under the trained background probability. No
# training. The means are cached next to the checkpoint
# (<ckpt>.ncm_means.pt). Choose T with tools/calibrate.py on a held-out
# training split (--param NCMClassifierHook.temperature).
#
#   tools/test.py configs/ncm/ncm_mask_rcnn_r50_fpn_ms_1x_lvis.py <ckpt>
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.NCMClassifierHook', temperature=0.1)
]
