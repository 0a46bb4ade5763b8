"""Mask heads: the label-gathered FCN mask head, box-local RLE results and
the RoI-head mixins that feed the head its labels."""
from .label_gathered_mask_head import LabelGatheredFCNMaskHead  # noqa: F401
from .mask_rle import (decode_rles, encode_region_rle,  # noqa: F401
                       paste_masks_rle, paste_region, region_counts)
from .roi_head_mixins import (GatheredMaskCascadeMixin,  # noqa: F401
                              GatheredMaskStandardMixin)
