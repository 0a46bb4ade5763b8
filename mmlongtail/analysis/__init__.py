"""Long-tail analysis of LVIS evaluations: per-class AP, r/c/f group tables,
plots and classifier weight norms (used by ``tools/analyze_longtail.py``)."""
from .per_class import (PerClassResult, check_same_classes, group_table,
                        load_per_class, training_counts)
from .report import analyze_longtail, plot_ap_vs_count, plot_weight_norms
from .weight_norms import (box_classifier_layouts, box_classifier_normalized,
                           checkpoint_classes, classifier_weight_norms,
                           config_from_checkpoint, find_box_classifiers,
                           load_checkpoint, load_state_dict, spearman)

__all__ = [
    'PerClassResult', 'load_per_class', 'group_table', 'training_counts',
    'check_same_classes', 'analyze_longtail', 'plot_ap_vs_count',
    'plot_weight_norms', 'box_classifier_layouts',
    'box_classifier_normalized', 'checkpoint_classes',
    'classifier_weight_norms',
    'config_from_checkpoint', 'find_box_classifiers', 'load_checkpoint',
    'load_state_dict', 'spearman'
]
