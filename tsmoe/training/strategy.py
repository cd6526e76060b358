"""How a rank turns micro-batch losses into optimizer steps: the `Strategy` protocol and its DDP implementation.

The trainer runs one loop for every strategy (see `trainer.py`): for each micro-batch it enters
`accumulating(last_micro_batch)`, calls `model`, and hands the loss to `backward` (or, when the loss is not
finite on some rank, calls `skip_backward`); then `step` unscales, clips, checks the gradients, updates the
parameters unless something was not finite, zeroes the gradients and advances the learning-rate schedule:
a skipped step advances it too, so the schedule stays aligned with the data under every strategy.

`DDPStrategy` covers one process and N (DistributedDataParallel), optional `torch.compile`, and a
GradScaler for float16. DeepSpeed ZeRO lives in `deepspeed_strategy.py`.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from tsmoe.training.config import TrainingConfig
from tsmoe.training.optim import build_optimizer, build_scheduler
from tsmoe.training.precision import Precision

STATE_FILE = "trainer_state.pt"  # the DDP strategy's checkpoint: model, optimizer, schedule, scaler, trainer


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every rank: a step is skipped by all ranks together or by none."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def advance_schedule(scheduler: LRScheduler) -> None:
    """One schedule step, also after a skipped update (so the schedule stays aligned with the data)."""
    with warnings.catch_warnings():
        # torch warns about a scheduler step without an optimizer step, which here is intended.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        scheduler.step()


class Strategy(Protocol):
    """What the trainer needs from a way of training: see the module docstring."""

    model: torch.nn.Module  # what a forward pass calls: the (DDP-wrapped, compiled) model or the engine
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    every_rank_saves: bool  # whether every rank writes checkpoint files (ZeRO shards) or rank 0 alone

    def accumulating(self, last_micro_batch: bool) -> AbstractContextManager[None]:
        """The context of one micro-batch's forward and backward: gradients are synchronised on the last."""
        ...

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate one micro-batch's loss (finite on every rank), averaged over the accumulation."""
        ...

    def skip_backward(self) -> None:
        """Stand in for `backward` on a micro-batch whose loss is not finite on some rank."""
        ...

    def step(self, losses_finite: bool) -> bool:
        """End an optimizer step; returns False when the guard must count it as a non-finite step."""
        ...

    def save_checkpoint(self, directory: Path, trainer_state: dict[str, Any], rank: int) -> None:
        """Write model, optimizer, schedule and `trainer_state` under `directory`."""
        ...

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Restore what `save_checkpoint` wrote; returns its `trainer_state`."""
        ...


class DDPStrategy:
    """Plain PyTorch: fused AdamW, DistributedDataParallel when world_size > 1, GradScaler for float16."""

    every_rank_saves = False

    def __init__(
        self,
        module: torch.nn.Module,
        training: TrainingConfig,
        precision: Precision,
        device: torch.device,
        world_size: int,
        total_steps: int,
    ):
        self.module, self.training, self.device = module, training, device
        self.optimizer: torch.optim.Optimizer = build_optimizer(module, training)
        self.scheduler: LRScheduler = build_scheduler(self.optimizer, total_steps, training)
        self.scaler = precision.grad_scaler()
        self.accumulation = training.gradient_accumulation
        self.ddp_model: DistributedDataParallel | None = None
        model: torch.nn.Module = module
        if world_size > 1:
            self.ddp_model = DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )
            model = self.ddp_model
        # torch.compile of a module returns a module (OptimizedModule); its signature only says Callable.
        self.model: torch.nn.Module = cast(torch.nn.Module, torch.compile(model)) if training.compile else model

    def accumulating(self, last_micro_batch: bool) -> AbstractContextManager[None]:
        """Accumulating micro-batches skip DDP's gradient all-reduce; only the last one pays for it."""
        if self.ddp_model is not None and not last_micro_batch:
            return self.ddp_model.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Scaled (float16) backward of the micro-batch's share of the step's loss."""
        self.scaler.scale(loss / self.accumulation).backward()

    def skip_backward(self) -> None:
        """Nothing to do: `step` discards the gradients of a step with a non-finite loss."""

    def step(self, losses_finite: bool) -> bool:
        """Unscale, clip, step when the loss and the gradients are finite; zero the gradients; schedule."""
        finite = losses_finite
        if losses_finite:
            self.scaler.unscale_(self.optimizer)
            parameters = [p for p in self.module.parameters() if p.requires_grad]
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.training.gradient_clip)
            gradients_finite = all_ranks_agree(bool(torch.isfinite(norm)), self.device)
            # Under float16 loss scaling an overflowing gradient is routine: the scaler skips the step and
            # lowers the scale. Only without scaling is it a step the guard must count.
            if self.scaler.is_enabled() or gradients_finite:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            finite = gradients_finite or self.scaler.is_enabled()
        self.optimizer.zero_grad(set_to_none=True)
        advance_schedule(self.scheduler)
        return finite

    def save_checkpoint(self, directory: Path, trainer_state: dict[str, Any], rank: int) -> None:
        """Rank 0 writes one file that `torch.load(weights_only=True)` reads (tensors, numbers, strings)."""
        if rank != 0:
            return  # DDP keeps every rank's model and optimizer identical
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "trainer": trainer_state,
        }
        torch.save(state, directory / STATE_FILE)

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Load with `weights_only=True`: a checkpoint from elsewhere cannot run code on load."""
        state = torch.load(directory / STATE_FILE, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        return state["trainer"]
