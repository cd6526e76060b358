"""Precision follows the hardware: native bfloat16, float16 with scaling on older GPUs, float32 on CPU."""

from __future__ import annotations

import pytest
import torch

from tsmoe.training import precision as precision_module
from tsmoe.training.precision import choose_precision


def _gpu_with_capability(monkeypatch, capability):
    monkeypatch.setattr(precision_module.torch.cuda, "get_device_capability", lambda device=None: capability)


def test_cpu_trains_in_float32_without_autocast_or_scaling():
    chosen = choose_precision("cpu")
    assert chosen.name == "float32" and chosen.autocast_dtype is None and not chosen.loss_scaling
    assert not chosen.grad_scaler().is_enabled()
    layer = torch.nn.Linear(4, 4)
    with chosen.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.parametrize(
    "capability, expected, scaling",
    [((9, 0), "bfloat16", False), ((8, 0), "bfloat16", False), ((7, 5), "float16", True), ((7, 0), "float16", True)],
)
def test_auto_on_a_gpu_uses_bfloat16_only_where_it_is_native(monkeypatch, capability, expected, scaling):
    _gpu_with_capability(monkeypatch, capability)
    chosen = choose_precision("cuda:0")
    assert chosen.name == expected and chosen.loss_scaling is scaling
    assert f"{capability[0]}.{capability[1]}" in chosen.reason


def test_an_explicit_choice_wins_and_says_when_it_is_emulated(monkeypatch):
    _gpu_with_capability(monkeypatch, (7, 5))
    chosen = choose_precision("cuda", "bfloat16")
    assert chosen.name == "bfloat16" and "emulates" in chosen.reason
    assert choose_precision("cpu", "bfloat16").autocast_dtype == torch.bfloat16


def test_float16_on_cpu_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"training\.precision: float16 needs a CUDA GPU"):
        choose_precision("cpu", "float16")
