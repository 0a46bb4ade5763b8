"""Data transforms: image loading that refuses or skips corrupt images."""
from .loading import BadImageCount, BadImageError, LoadImageChecked

__all__ = ['BadImageCount', 'BadImageError', 'LoadImageChecked']
