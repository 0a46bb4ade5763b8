"""Mask heads: the label-gathered FCN mask head and box-local RLE results."""
from .label_gathered_mask_head import LabelGatheredFCNMaskHead  # noqa: F401
from .mask_rle import (decode_rles, encode_region_rle,  # noqa: F401
                       paste_masks_rle, region_counts)
