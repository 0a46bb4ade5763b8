"""Layers: normalized (cosine) predictors for Norm Mask; classifier
rebalancing (tau-normalization, learnable weight scaling); the
nearest-class-mean classifier."""
from .classifier_rebalance import (LWSLinear,  # noqa: F401
                                   restore_weights, tau_normalize_,
                                   tau_normalized_weight)
from .normed_predictor import NormedConv2d, NormedLinear  # noqa: F401
from .ncm import NCMClassifier  # noqa: F401
