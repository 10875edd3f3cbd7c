"""Evaluation: the eval harness (settings, cells, resume), its report (scores, paired comparisons,
plots) and the statistics they share."""

from .stats import PairedDifference, holm, macro_f1, mean_interval, paired_difference, win_rate

__all__ = ["PairedDifference", "holm", "macro_f1", "mean_interval", "paired_difference", "win_rate"]
