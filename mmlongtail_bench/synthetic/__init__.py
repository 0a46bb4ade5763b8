"""Generated long-tailed data in LVIS v1 format.

* :mod:`.rendered_dataset`: a trainable dataset, images rendered with their
  instance masks and LVIS annotation files (``tools/make_synthetic_lvis.py``,
  the demo and the benchmark train on it), and its held-out part of the
  training distribution (:func:`write_heldout_split`, where the benchmark's
  post-hoc methods choose their parameter);
* :mod:`.gt_and_predictions`: annotation-only ground truth with LVIS's
  categories and federated fields, and detector-like predictions for it, with
  no images (the LVIS metric's tests and ``tools/benchmark_lvis_eval.py``).
"""
from .gt_and_predictions import make_lvis_gt, make_predictions
from .rendered_dataset import (HELDOUT_ANN_FILE, SyntheticLVISConfig,
                               generate_synthetic_lvis, heldout_image_counts,
                               read_frequency_rule, target_image_counts,
                               write_heldout_split)

__all__ = [
    'HELDOUT_ANN_FILE', 'SyntheticLVISConfig', 'generate_synthetic_lvis',
    'heldout_image_counts', 'read_frequency_rule', 'target_image_counts',
    'write_heldout_split', 'make_lvis_gt', 'make_predictions'
]
