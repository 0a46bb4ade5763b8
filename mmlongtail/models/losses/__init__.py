"""Long-tail classification losses, one method per file, on the shared
protocol of :mod:`.protocol` (input checks, classifier protocol, layout) and
the one loss frame of :mod:`.frame`."""
# Each module registers its loss in mmlongtail.registry.MODELS on import.
from .protocol import (ClassifierLayout, ClassifierProtocol,  # noqa: F401
                       ScoringFamily,
                       SigmoidClassifierProtocol, head_layout, loss_layout)
from .frame import ClassificationLoss, GradientStatistics  # noqa: F401
from .seesaw_loss import SeesawLoss, seesaw_ce_loss, seesaw_loss  # noqa: F401
from .focal_loss import FocalLoss  # noqa: F401,E402
from .eql_loss import EQLLoss  # noqa: F401,E402
from .eqlv2_loss import EQLv2Loss  # noqa: F401,E402
from .group_softmax_loss import GroupSoftmaxLoss  # noqa: F401,E402
from .federated_loss import FederatedLoss  # noqa: F401,E402
from .ecm_loss import ECMLoss  # noqa: F401,E402
from .gumbel_loss import GumbelLoss  # noqa: F401,E402
from .balanced_softmax_loss import BalancedSoftmaxLoss  # noqa: F401,E402
from .class_balanced_loss import ClassBalancedLoss  # noqa: F401,E402
from .efl_loss import EqualizedFocalLoss  # noqa: F401,E402
from .apa_loss import APALoss  # noqa: F401,E402
from .ldam_loss import LDAMLoss  # noqa: F401,E402
from .pcb_loss import PCBLoss  # noqa: F401,E402
from .gap_loss import GAPLoss, gap_loss  # noqa: F401,E402
from .easy_anchor_triplet import EasyAnchorTriplet  # noqa: F401,E402
