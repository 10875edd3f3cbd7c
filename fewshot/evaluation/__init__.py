"""Evaluation: the eval harness (settings, cells, resume), its run folder, the metrics, the report
(summaries, paired comparisons, plots, the results page) and the statistics they share."""

from .stats import PairedDifference, holm, macro_f1, paired_difference

__all__ = ["PairedDifference", "holm", "macro_f1", "paired_difference"]
