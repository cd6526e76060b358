"""Which epoch's model a run keeps as its best: the latest within one standard error of the highest validation AUROC.

Validation AUROC swings from epoch to epoch on a small split (0.90, 0.86, 0.88, 0.80 on 14 files), and the
highest of several such figures is as often an early, barely trained model that validation happened to favour
as a better one (docs/detection.md, twelfth round). So the run keeps the most trained model that validation
cannot tell from the highest: the latest epoch whose val_auroc is at least the highest minus that epoch's
standard error (`val_auroc_se`). Where an epoch has no standard error (a split too small to resample, or a
run from before it was measured), only epochs level with the highest qualify, which is the highest itself.

The choice is made while the run trains: an epoch that qualifies when it ends stays the latest that does
unless a later one qualifies, since a later highest raises the bar only when it qualifies itself. So each
epoch's `selection_score` (its number where it qualifies, 0 where not) ranks the checkpoints Ray Train keeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SELECTION_SCORE = "selection_score"


def _auroc(metrics: Mapping) -> float:
    return float(metrics.get("val_auroc", math.nan))


def kept_epoch(history: Sequence[Mapping]) -> int | None:
    """The epoch number whose model the run keeps as its best, from its per-epoch metrics; None where no epoch
    has a validation AUROC."""
    scored = [metrics for metrics in history if math.isfinite(_auroc(metrics))]
    if not scored:
        return None
    highest = max(scored, key=_auroc)  # the first of equals
    margin = float(highest.get("val_auroc_se", math.nan))
    bar = _auroc(highest) - (margin if math.isfinite(margin) else 0.0)
    return int([metrics for metrics in scored if _auroc(metrics) >= bar][-1]["epoch"])


def selection_score(history: Sequence[Mapping]) -> float:
    """The last epoch's rank among the checkpoints to keep: its number if it is the epoch kept so far, else 0."""
    epoch = int(history[-1]["epoch"])
    return float(epoch) if kept_epoch(history) == epoch else 0.0


def describe_kept_epoch(history: Sequence[Mapping]) -> str:
    """One line saying which epoch a run keeps and why, e.g. "epoch 6 (val_auroc 0.796), the latest within one
    standard error (0.108) of the highest, 0.878 at epoch 1"; empty where no epoch is kept."""
    epoch = kept_epoch(history)
    if epoch is None:
        return ""
    kept = next(metrics for metrics in history if metrics["epoch"] == epoch)
    highest = max((metrics for metrics in history if math.isfinite(_auroc(metrics))), key=_auroc)
    line = f"epoch {epoch} (val_auroc {_auroc(kept):.3f})"
    if highest is kept:
        return line + ", the highest"
    margin = float(highest.get("val_auroc_se", math.nan))
    if not math.isfinite(margin):  # the latest of several epochs level with the highest
        return line + f", level with the highest at epoch {highest['epoch']}"
    return (
        line + f", the latest within one standard error ({margin:.3f}) of the highest, "
        f"{_auroc(highest):.3f} at epoch {highest['epoch']}"
    )
