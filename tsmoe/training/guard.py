"""The non-finite guard: skip a step whose loss or gradient is NaN/inf, and stop a run that keeps doing it.

One bad batch should not end a run, so such a step is skipped (no optimizer update) and counted. A run
that produces them step after step has diverged: it stops with an error that names where the first
non-finite value appeared, found by replaying the batch with a forward hook on every module, so the user
reads "model.layers.3.ffn_layer.gate (router logits)" rather than "loss is nan".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch


class NonFiniteTrainingError(RuntimeError):
    """Too many non-finite steps in a row."""


class NonFiniteGuard:
    """Counts skipped steps; `record` raises once `limit` non-finite steps come in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.consecutive = 0
        self.total = 0

    def record(self, finite: bool, diagnose: Callable[[], str] | None = None) -> None:
        """Count one step; `diagnose()` (a description of the culprit) is called only when stopping."""
        if finite:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.limit:
            where = diagnose() if diagnose is not None else "unknown"
            raise NonFiniteTrainingError(
                f"{self.consecutive} optimizer steps in a row had a non-finite loss or gradient "
                f"(training.max_consecutive_nonfinite_steps = {self.limit}); first non-finite value: {where}"
            )

    def state_dict(self) -> dict[str, int]:
        """The counters, for a checkpoint."""
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the counters of `state_dict`."""
        self.consecutive, self.total = state["consecutive"], state["total"]


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in _tensors(item)]
    return []


@torch.no_grad()
def first_nonfinite_module(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> str:
    """Replay a batch and name the first module (in execution order) whose output holds NaN or inf.

    `autocast` is the context the step ran under (`Precision.autocast`): a bfloat16 or float16 overflow
    happens only in that precision, so the replay must use it to reproduce one.

    A MoE layer's `gate` outputs its router logits, so a router that blew up is named as such. When the
    forward pass is finite, the culprit is in the backward pass: the first parameter with a non-finite
    gradient is named instead.
    """
    found: list[str] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(module: torch.nn.Module, args: Any, output: Any, name: str = name) -> None:
            if not found and any(not torch.isfinite(tensor).all() for tensor in _tensors(output)):
                found.append(name + (" (router logits)" if name.endswith(".gate") else ""))

        handles.append(module.register_forward_hook(hook))
    try:
        with autocast():
            model(inputs, labels=labels, loss_masks=torch.ones_like(labels))
    finally:
        for handle in handles:
            handle.remove()
    if found:
        return found[0]
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
            return f"the gradient of {name} (the forward pass was finite)"
    return "not reproduced on replay (the forward pass and the gradients are finite)"
