"""Layers: normalized (cosine) predictors for Norm Mask; classifier
rebalancing (tau-normalization, learnable weight scaling); the
nearest-class-mean classifier; CAB, the class-agnostic branch for box
regressors; label and feature distribution smoothing for imbalanced box
regression."""
from .classifier_rebalance import (LWSLinear,  # noqa: F401
                                   restore_weights, tau_normalize_,
                                   tau_normalized_weight)
from .normed_predictor import NormedConv2d, NormedLinear  # noqa: F401
from .class_agnostic_branch import (CABLinear,  # noqa: F401
                                    fold_class_agnostic_branch)
from .imbalanced_regression import (  # noqa: F401
    FeatureDistributionSmoothing, LabelDistributionSmoothing, kernel_window)
from .ncm import NCMClassifier  # noqa: F401
