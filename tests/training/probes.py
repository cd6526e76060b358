"""Test probes on a Trainer's model: a snapshot of its parameters, and hooks that inject NaNs on chosen calls."""

from __future__ import annotations

import math

import torch

from tsmoe.training.finetune import base_model
from tsmoe.training.trainer import Trainer


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter of the trainer's TimeMoE, by name."""
    return {name: parameter.detach().clone() for name, parameter in base_model(trainer.module).named_parameters()}


def _on_calls(calls: set[int], poison):
    """A hook that replaces its value by `poison(value)` on the given calls, counted from 0."""
    count = {"calls": 0}

    def hook(*arguments):
        value = arguments[-1]
        call = count["calls"]
        count["calls"] += 1
        return poison(value) if call in calls else value

    return hook


def poison_router(trainer: Trainer, calls: set[int]) -> None:
    """Make layer 1's router logits (and so the loss) NaN on the given forward calls, counted from 0."""
    gate = base_model(trainer.module).model.layers[1].ffn_layer.gate
    gate.register_forward_hook(_on_calls(calls, lambda output: torch.full_like(output, math.nan)))


def poison_gradient(trainer: Trainer, calls: set[int]) -> None:
    """Make one weight's gradient NaN on the given backward calls (counted from 0); the loss stays finite."""
    weight = base_model(trainer.module).model.layers[0].self_attn.q_proj.weight
    weight.register_hook(_on_calls(calls, lambda gradient: torch.full_like(gradient, math.nan)))
