"""Scorer quality metrics; they live in :mod:`cascade.learn.metrics` (re-exported here)."""

from cascade.learn.metrics import AcceptRow, Bin, accept_table, auroc, brier, ece, reliability

__all__ = ["AcceptRow", "Bin", "accept_table", "auroc", "brier", "ece", "reliability"]
