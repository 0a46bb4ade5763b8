# Benchmark: CAB, the class-agnostic branch for the box regressors (Zhu et
# al., ECCV 2024; no official code), on ./ecm.py: each class regresses with
# alpha * W_0 + (1 - alpha) * W_i (configs/_base_/models/
# class_agnostic_branch.py, alpha 0.5). Row kind 'train'.
_base_ = ['./ecm.py', '../_base_/models/class_agnostic_branch.py']

model = dict(
    roi_head=dict(
        bbox_head=dict(reg_predictor_cfg={{_base_.cab_reg_predictor}})))
