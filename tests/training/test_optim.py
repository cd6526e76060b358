import itertools

import pytest
import torch

from tsmoe.training.config import TrainingConfig
from tsmoe.training.optim import build_optimizer, learning_rate_factor


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
    config = TrainingConfig(warmup_steps=4, min_learning_rate_ratio=0.1)
    factors = [learning_rate_factor(step, 14, config) for step in range(16)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert factors[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert factors[14:] == pytest.approx([0.1, 0.1])
    assert all(later <= earlier for earlier, later in itertools.pairwise(factors[3:]))


def test_weight_decay_spares_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    groups = build_optimizer(model, TrainingConfig(weight_decay=0.3)).param_groups
    assert [group["weight_decay"] for group in groups] == [0.3, 0.0]
    assert [tuple(p.shape) for p in groups[0]["params"]] == [(4, 3)]
    assert len(groups[1]["params"]) == 3
