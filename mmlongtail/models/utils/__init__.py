"""Model utilities: exact early-stopping multiclass NMS."""
from .multiclass_nms import (LazyDecodedBoxes, exact_multiclass_nms,  # noqa
                             supports_nms_cfg)
