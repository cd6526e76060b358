"""The guard counts non-finite steps, stops a run that keeps making them, and finds where the first NaN/inf
appeared by replaying the step in the precision it ran in."""

from __future__ import annotations

import pytest
import torch

from tsmoe.training.guard import NonFiniteGuard, NonFiniteTrainingError, first_nonfinite_module
from tsmoe.training.precision import choose_precision


class _Overflows(torch.nn.Module):
    """A model whose `scale` layer is finite in float32 but overflows to inf in bfloat16."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Linear(1, 1, bias=False)
        # 3.4e38 fits float32 (max 3.40282e38) but rounds to inf in bfloat16 (max 3.38953e38).
        torch.nn.init.constant_(self.scale.weight, 3.4e38)
        self.head = torch.nn.Linear(1, 1)

    def forward(self, inputs, labels=None, loss_masks=None):
        return self.head(self.scale(inputs.unsqueeze(-1)))


def test_a_bfloat16_overflow_is_reproduced_by_replaying_under_the_steps_autocast():
    model, inputs = _Overflows(), torch.ones(2, 3)
    assert first_nonfinite_module(model, inputs, inputs).startswith("not reproduced on replay")
    bfloat16 = choose_precision("cpu", "bfloat16")
    assert first_nonfinite_module(model, inputs, inputs, bfloat16.autocast) == "scale"


def test_the_guard_stops_after_the_limit_in_a_row_and_a_finite_step_resets_the_count():
    guard = NonFiniteGuard(limit=2)
    guard.record(False)
    guard.record(True)
    guard.record(False)
    assert guard.state_dict() == {"consecutive": 1, "total": 2}
    with pytest.raises(NonFiniteTrainingError, match=r"2 optimizer steps in a row.*first non-finite value: here"):
        guard.record(False, diagnose=lambda: "here")
