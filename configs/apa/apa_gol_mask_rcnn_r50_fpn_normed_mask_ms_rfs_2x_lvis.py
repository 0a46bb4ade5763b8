# Adaptive Parametric Activation (APA; Alexandridis et al., ECCV 2024) on the
# box classifier, with GOL's BCE and DropLoss (APA+GOL), Mask R-CNN R50-FPN,
# LVIS v1. The GOL config plus one change: the classifier's fixed Gumbel
# activation becomes APA with learned lambda and kappa (mmlongtail.APALoss,
# starting near the Gumbel limit, lambda 1e-3, kappa 1). Schedule as in the
# official kostas1515/AGLU config
# (configs/activations/mask_rcnn_r50_fpn_8x2_sample1e-3_mstrain_lvis_2x.py):
# RFS 1e-3, multi-scale training, mmdet's 2x, 8 GPUs x 2 images, DropLoss
# lambda 1.1e-3, fc_cls init weights 0.001 / bias -2, test NMS at IoU 0.3.
#
# Not the official model: the official one keeps GOL's Gumbel on the
# classifier and puts APA in its SE-ResNet-50 backbone (AGLU, APA in the SE
# attention; their ImageNet-pretrained weights), with a CARAFE mask head
# and a learnable Norm Mask temperature. Here: plain ImageNet R50, Norm Mask
# at temperature 20 (as the GOL config). See README.md.
_base_ = ('../gol/'
          'gumbel_droploss_mask_rcnn_r50_fpn_normed_mask_ms_rfs_2x_lvis.py')

num_classes = 1203
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.APALoss',
                num_classes=num_classes,
                category_stats='lvis_v1',
                drop_loss=True,
                lambda_=1.1e-3,
                init_lambda=1e-3,
                init_kappa=1.0,
                loss_weight=1.0))))
# As the official training scripts: no weight decay on APA's parameters.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'loss_cls.lambda_param': dict(decay_mult=0.0),
            'loss_cls.kappa_param': dict(decay_mult=0.0)
        }))
