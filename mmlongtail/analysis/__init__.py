"""Long-tail analysis of LVIS evaluations: per-class AP, r/c/f group tables,
plots and classifier weight norms (used by ``tools/analyze_longtail.py``)."""
from .per_class import (PerClassResult, group_table, load_per_class,
                        training_counts)
from .report import analyze_longtail, plot_ap_vs_count, plot_weight_norms
from .weight_norms import (classifier_weight_norms, find_box_classifiers,
                           foreground_rows, load_state_dict, spearman)

__all__ = [
    'PerClassResult', 'load_per_class', 'group_table', 'training_counts',
    'analyze_longtail', 'plot_ap_vs_count', 'plot_weight_norms',
    'classifier_weight_norms', 'find_box_classifiers', 'foreground_rows',
    'load_state_dict', 'spearman'
]
