"""Time-MoE model: config (`config.py`, no torch), model (`timemoe.py`) and reference-format checkpoints.

The package itself imports no torch: processes that only read configs (a sweep's trial driver, Ray Train's
controller) start seconds sooner without it. Import the model from `tsmoe.model.timemoe`.
"""

from tsmoe.model.config import PRESETS, TimeMoEConfig, preset

__all__ = ["PRESETS", "TimeMoEConfig", "preset"]
