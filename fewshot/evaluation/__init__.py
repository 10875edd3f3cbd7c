"""Evaluation: statistics for comparing selection methods over seeds (the harness builds on these)."""

from .stats import mean_interval, win_rate

__all__ = ["mean_interval", "win_rate"]
