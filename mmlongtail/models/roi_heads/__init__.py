"""RoI heads whose box predictions go through :mod:`.bbox_predict`, the home
of test-time scoring."""
from .bbox_predict import (SCORERS_KEY, apply_scorers,  # noqa: F401
                           classifier_scores, decode_and_nms,
                           predict_by_feat, predict_by_feat_single)
from .cascade_roi_head import CascadeRoIHead  # noqa: F401
from .standard_roi_head import StandardRoIHead  # noqa: F401
from .dcl_roi_head import DCLRoIHead  # noqa: F401,E402
from .lds_fds_bbox_head import LDSFDSShared2FCBBoxHead  # noqa: F401
from .feature_aug_roi_head import FeatureAugRoIHead  # noqa: F401
from .bbn import (BBNBBoxHead, BBNRoIHead, cumulative_alpha,  # noqa: F401
                  cumulative_mix)
