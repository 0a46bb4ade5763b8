# Benchmark: Gumbel loss with DropLoss (GOL; Alexandridis et al., ECCV 2022)
# with Norm Mask and the official fc_cls init (bias -2). lambda_ plays EQL's
# freq_thr role; 0.051 makes rare and common classes "rare" as in eql.py.
_base_ = './baseline_ce.py'

num_classes = 40

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
                category_stats={{_base_.train_stats}},
                drop_loss=True,
                lambda_=0.051,
                loss_weight=1.0)),
        mask_head=dict(
            predictor_cfg=dict(type='mmlongtail.NormedConv2d',
                               temperature=20))))
