# Gumbel Optimized Loss (GOL; Alexandridis et al., ECCV 2022): Gumbel
# activation with DropLoss on Mask R-CNN R50-FPN, LVIS v1, following the
# official recipe (kostas1515/GOL, configs/gol/
# droploss_normed_mask_r50_rfs_4x4_2x_gumbel.py): DropLoss lambda 1.1e-3 on
# image frequencies, Norm Mask (temperature 20; the box classifier stays a
# plain linear layer), RFS 1e-3, multi-scale training, mmdet's 2x schedule,
# test-time NMS at IoU 0.3. Published: 27.5 box AP / 27.7 mask AP / 21.4
# mask AP_r.
#
# fc_cls is initialized as in the official config: weights 0.001, bias -2.
# As there, giving the head an init_cfg replaces its default initialization
# (Xavier for the shared FCs, Normal for fc_reg), which then keep PyTorch's
# default.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]

num_classes = 1203
model = dict(
    roi_head=dict(
        bbox_head=dict(
            init_cfg=dict(
                type='Constant',
                val=0.001,
                bias=-2,
                override=dict(name='fc_cls')),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.GumbelLoss',
                num_classes=num_classes,
                category_stats='lvis_v1',
                drop_loss=True,
                lambda_=1.1e-3,
                loss_weight=1.0)),
        mask_head=dict(
            predictor_cfg=dict(
                type='mmlongtail.NormedConv2d', temperature=20))),
    test_cfg=dict(rcnn=dict(nms=dict(type='nms', iou_threshold=0.3))))
