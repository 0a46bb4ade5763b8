# DINO R50 4-scale with the federated loss (Zhou et al., "Probabilistic
# two-stage detection", 2021), LVIS v1, 12 epochs, RFS t = 1e-3: the LVIS
# recipe of detectron2's ViTDet configs (RFS + sigmoid CE with the federated
# loss, 50 classes drawn with weight image_count^0.5) and of Co-DETR, whose
# authors state the federated loss is used when fine-tuning on LVIS, in
# mmdet's DINO. Each call of the loss (six decoder layers, the encoder's
# proposals, the denoising queries) draws over the positive classes of the
# batch, denoising labels included (docs/query_based.md).
_base_ = './dino_4scale_r50_rfs_focal_12e_lvis.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.FederatedLoss',
            num_classes={{_base_.num_classes}},
            category_stats='lvis_v1',
            num_classes_sampled=50,
            freq_weight_power=0.5,
            loss_weight=1.0)))
