"""mmlongtail: long-tailed detection and instance segmentation for MMDetection.

Importing the package registers its components in the ``mmlongtail`` scope and
allow-lists the types mmengine writes into checkpoints with torch's
``weights_only`` unpickler (see :mod:`mmlongtail.compat`). Nothing else happens
at import time.
"""
from .compat import register_checkpoint_safe_globals
from .version import __version__

register_checkpoint_safe_globals()

from . import datasets, engine, evaluation, models  # noqa: E402,F401

__all__ = ['__version__']
