# Benchmark: APA (Alexandridis et al., ECCV 2024) on the box classifier with
# GOL's BCE and DropLoss: gumbel_droploss.py with the fixed Gumbel
# activation replaced by APA's learned (lambda, kappa), starting near the
# Gumbel limit (lambda 1e-3, kappa 1); no weight decay on them, as the
# official training scripts.
_base_ = './gumbel_droploss.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                type='mmlongtail.APALoss',
                init_lambda=1e-3,
                init_kappa=1.0))))
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'loss_cls.lambda_param': dict(decay_mult=0.0),
            'loss_cls.kappa_param': dict(decay_mult=0.0)
        }))
