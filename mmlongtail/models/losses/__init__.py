"""Long-tail classification losses, one method per file."""
# Each module registers its loss in mmlongtail.registry.MODELS on import.
from .seesaw_loss import SeesawLoss, seesaw_ce_loss  # noqa: F401
from .focal_loss import FocalLoss  # noqa: F401,E402
from .eql_loss import EQLLoss  # noqa: F401,E402
from .eqlv2_loss import EQLv2Loss  # noqa: F401,E402
from .group_softmax_loss import GroupSoftmaxLoss  # noqa: F401,E402
