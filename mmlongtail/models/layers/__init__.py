"""Layers: normalized (cosine) predictors for Norm Mask."""
from .normed_predictor import NormedConv2d, NormedLinear  # noqa: F401
