"""AdamW with a linear warm-up into a cosine decay that stops at a floor."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from tsmoe.training.config import TrainingConfig


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters in two optimizer groups: matrices decay, norms and biases do not (decaying
    them only hurts). Every optimizer tsmoe builds, DDP's and DeepSpeed's, takes these groups."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over `weight_decay_groups`."""
    # Fused AdamW is several times faster than the foreach version on CPU and GPU alike.
    return torch.optim.AdamW(
        weight_decay_groups(model, config.weight_decay), lr=config.learning_rate, betas=config.betas, fused=True
    )


def learning_rate_factor(step: int, total_steps: int, config: TrainingConfig) -> float:
    """Multiplier of the peak learning rate at optimizer step `step`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    decay_steps = max(total_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / decay_steps, 1.0)
    floor = config.min_learning_rate_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: TrainingConfig) -> LambdaLR:
    """The warm-up + cosine schedule, stepped once per optimizer step."""
    return LambdaLR(optimizer, lambda step: learning_rate_factor(step, total_steps, config))
