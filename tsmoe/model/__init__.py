"""Time-MoE model: config, model and reference-format checkpoints."""

from tsmoe.model.config import PRESETS, TimeMoEConfig, preset
from tsmoe.model.timemoe import TimeMoE, TimeMoEOutput

__all__ = ["PRESETS", "TimeMoE", "TimeMoEConfig", "TimeMoEOutput", "preset"]
