"""Model utilities: exact early-stopping multiclass NMS."""
from .multiclass_nms import (EARLY_STOP_KEY, TOPK_PER_CLASS_KEY,  # noqa: F401
                             LazyDecodedBoxes, exact_multiclass_nms,
                             lazy_decode_and_nms, supports_nms_cfg,
                             uses_exact_nms)
