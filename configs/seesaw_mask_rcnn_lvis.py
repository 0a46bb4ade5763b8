# Seesaw Loss (Wang et al., CVPR 2021) with Norm Mask on Mask R-CNN R50-FPN,
# LVIS v1: repeat-factor sampling (t = 1e-3), multi-scale training, 2x.
# Published (mmdetection seesaw_loss model zoo): 27.6 box AP / 26.8 mask AP.
#
# Seesaw's classifier has C + 2 outputs (classes, then objectness), a
# normalized (cosine) linear layer; the mask predictor is a normalized 1x1
# convolution ("Norm Mask"). Test-time settings (300 detections per image,
# score_thr 1e-4) come from the model base.
_base_ = [
    './_base_/models/mask_rcnn_r50_fpn_lvis.py',
    './_base_/datasets/lvis_v1_instance_ms_rfs.py',
    './_base_/schedules/schedule_2x.py', './_base_/default_runtime.py'
]

num_classes = 1203
seesaw_loss = dict(
    type='mmlongtail.SeesawLoss',
    num_classes=num_classes,
    p=0.8,
    q=2.0,
    eps=1e-2,
    loss_weight=1.0)

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=20),
            loss_cls=dict(_delete_=True, **seesaw_loss)),
        mask_head=dict(
            predictor_cfg=dict(
                type='mmlongtail.NormedConv2d', temperature=20))))
