"""Virtual RoI features for the classifier of a two-stage detector, from
per-class feature statistics: FASA, the feature cloud and SMOTE-style
interpolation (used through ``mmlongtail.FeatureAugRoIHead``)."""
from .affinity_propagation import affinity_propagation  # noqa: F401
from .base import FeatureAugmentation, is_cosine_classifier  # noqa: F401
from .fasa import FASA, fasa_adapt_rates, fasa_initial_rates  # noqa: F401
from .statistics import ClassFeatureStatistics  # noqa: F401
from .feature_cloud import FeatureCloud, rotate_by  # noqa: F401
from .smote import SMOTE  # noqa: F401
