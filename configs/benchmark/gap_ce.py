# Benchmark: ROG's generalized-AP (GAP) ranking loss added to the softmax
# cross-entropy (Zhang et al., ICCV 2023): loss_cls = CE + GAP, GAP ranking
# the foreground logits of the batch's RoIs across classes, with ROG's
# official hyper-parameters (gamma 1.0, lam 0.1, delta 0.5). Scores stay
# softmax over C + 1, as the baseline's.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.GAPLoss',
                num_classes=num_classes,
                gamma=1.0,
                lam=0.1,
                delta=0.5,
                loss_weight=1.0))))
