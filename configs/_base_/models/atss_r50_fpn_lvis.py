# ATSS R50-FPN (Zhang et al., CVPR 2020) sized for LVIS v1, set up as close
# to the Equalized Focal Loss "improved baseline" as mmdet's ATSSHead allows:
# GN head, two square anchors per position (scales 6 and 8, as the official
# configs) with the ATSS top-k doubled to 18 to keep 9 positions per level,
# classifier bias prior 0.001, GIoU box loss. It keeps mmdet's centerness
# branch where the official head has an IoU branch (see the EFL configs'
# header). Backbone, focal loss (dense_head=True) and the LVIS test protocol
# as in the RetinaNet base.
_base_ = './retinanet_r50_fpn_lvis.py'

model = dict(
    type='ATSS',
    neck=dict(add_extra_convs='on_output'),
    bbox_head=dict(
        type='ATSSHead',
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        anchor_generator=dict(
            _delete_=True,
            type='AnchorGenerator',
            ratios=[1.0],
            scales=[6, 8],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        init_cfg=dict(override=dict(name='atss_cls'))),
    train_cfg=dict(
        _delete_=True,
        assigner=dict(type='ATSSAssigner', topk=18),
        allowed_border=-1,
        pos_weight=-1,
        debug=False))
