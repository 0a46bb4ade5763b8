"""Layers: normalized (cosine) predictors for Norm Mask."""
