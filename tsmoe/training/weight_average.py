"""An exponential moving average of the model's weights, for validation, selection and export.

Validation AUROC of a small detector can swing from epoch to epoch as the last few hundred steps move the
weights; the average over the recent steps moves less. torch's `AveragedModel` keeps the copy: after every
applied optimizer step, average = decay * average + (1 - decay) * weights, buffers included (the routing
balance bias is a buffer, and the average must route as its own weights do).
"""

from __future__ import annotations

import copy
from typing import Any

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tsmoe.model.timemoe import TimeMoE


class WeightAverage:
    """An exponential moving average of a TimeMoE's parameters and buffers."""

    def __init__(self, model: TimeMoE, decay: float):
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.eval()

    @property
    def model(self) -> TimeMoE:
        """The averaged TimeMoE (its own module: evaluating it leaves the trained one untouched)."""
        module = self.averaged.module
        assert isinstance(module, TimeMoE)
        return module

    def update(self, model: TimeMoE) -> None:
        """Fold the model's current weights into the average (the first call copies them)."""
        self.averaged.update_parameters(model)

    def exported(self) -> TimeMoE:
        """A standalone copy of the averaged model, for saving."""
        return copy.deepcopy(self.model)

    def state_dict(self) -> dict[str, Any]:
        """The average and the number of updates folded in, for checkpoints."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.averaged.load_state_dict(state)


def build_weight_average(model: TimeMoE, decay: float) -> WeightAverage | None:
    """The weight average a config asks for (`training.ema_decay` > 0), else None."""
    return WeightAverage(model, decay) if decay > 0 else None
