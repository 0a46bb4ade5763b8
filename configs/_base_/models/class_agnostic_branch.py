# CAB, the class-agnostic branch for class-specific box regressors (Zhu et
# al., "Rectify the Regression Bias in Long-Tailed Object Detection", ECCV
# 2024; no official code): each class regresses with
# W_i' = alpha * W_0 + (1 - alpha) * W_i, W_0 shared by all classes.
# Defined once here; configs/cab/ and configs/benchmark/cab_*.py put it in
# their bbox head as reg_predictor_cfg={{_base_.cab_reg_predictor}} (the
# head must be class-specific: reg_class_agnostic=False).
cab_reg_predictor = dict(type='mmlongtail.CABLinear', alpha=0.5)
