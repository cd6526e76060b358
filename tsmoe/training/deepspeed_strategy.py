"""DeepSpeed ZeRO (stage 1 or 2, optional CPU optimizer offload): the `Strategy` beside DDP's.

The engine is built from the run's typed config: the same AdamW settings and weight-decay groups, warm-up/
cosine schedule, gradient clipping and accumulation as the DDP path. It runs inside the Ray Train workers,
whose process group already exists, hence `dist_init_required=False`. On a machine without CUDA, DeepSpeed
needs `DS_ACCELERATOR=cpu` before it is imported; `tsmoe train` sets it for the workers.

The engine clips, checks the gradients for NaN/inf (all ranks together) and skips such an update itself.
Two things are left to this strategy so that both strategies behave alike: the learning-rate schedule is
stepped here, after every optimizer step, skipped or not (the engine would leave it behind on a skipped
one), and a micro-batch whose loss is not finite backpropagates NaN into every gradient, so that the
engine's own check skips the update with all its bookkeeping (accumulation, ZeRO buckets) intact.
"""

from __future__ import annotations

import contextlib
import math
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from tsmoe.training.config import TrainingConfig
from tsmoe.training.optim import build_optimizer, build_scheduler, weight_decay_groups
from tsmoe.training.precision import Precision
from tsmoe.training.strategy import advance_schedule

CHECKPOINT_DIR = "deepspeed"  # DeepSpeed's own checkpoint folder inside a tsmoe checkpoint
CHECKPOINT_TAG = "state"


def deepspeed_config(
    training: TrainingConfig, precision: Precision, micro_batch_series: int, world_size: int
) -> dict[str, Any]:
    """The DeepSpeed config dict for this run (batch sizes count series: segments x channels)."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_series,
        "gradient_accumulation_steps": training.gradient_accumulation,
        "train_batch_size": micro_batch_series * training.gradient_accumulation * world_size,
        "gradient_clipping": training.gradient_clip,
        "zero_optimization": {"stage": training.deepspeed.stage},
        "steps_per_print": 10**9,  # tsmoe logs progress itself
        "wall_clock_breakdown": False,
    }
    if training.deepspeed.offload_optimizer:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
        config["zero_force_ds_cpu_optimizer"] = True
    if precision.name == "bfloat16":
        # The engine checks bfloat16 gradients for NaN/inf only when asked: the guard relies on it.
        config["bf16"] = {"enabled": True, "check_grad_overflow": True}
    elif precision.name == "float16":
        config["fp16"] = {"enabled": True, "loss_scale": 0}  # 0: dynamic loss scaling
    return config


class DeepSpeedStrategy:
    """A DeepSpeed engine around the model: ZeRO shards optimizer state (stage 1) and gradients (stage 2)."""

    every_rank_saves = True  # each rank holds its own ZeRO shard

    def __init__(
        self,
        module: torch.nn.Module,
        training: TrainingConfig,
        precision: Precision,
        micro_batch_series: int,
        world_size: int,
        total_steps: int,
    ):
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed  # imported here: it inspects the accelerator at import time

        self.module, self.precision = module, precision
        self.trainable = [parameter for parameter in module.parameters() if parameter.requires_grad]
        optimizer: torch.optim.Optimizer
        if training.deepspeed.offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            groups = weight_decay_groups(module, training.weight_decay)
            optimizer = DeepSpeedCPUAdam(groups, lr=training.learning_rate, betas=training.betas, adamw_mode=True)
        else:
            optimizer = build_optimizer(module, training)
        # The schedule is built on the optimizer's parameter groups, whose learning rates ZeRO reads at
        # every step, and is deliberately not handed to the engine (see the module docstring).
        self.scheduler: LRScheduler = build_scheduler(optimizer, total_steps, training)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module,
            optimizer=optimizer,
            config=deepspeed_config(training, precision, micro_batch_series, world_size),
            dist_init_required=False,
        )
        self.model: torch.nn.Module = self.engine

    def accumulating(self, last_micro_batch: bool) -> AbstractContextManager[None]:
        """Tell the engine whether this micro-batch ends the step (it reduces gradients there)."""
        self.engine.set_gradient_accumulation_boundary(last_micro_batch)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """The engine's backward: loss scaling, averaging over the accumulation and ZeRO's reductions."""
        self.engine.backward(loss)

    def skip_backward(self) -> None:
        """Backpropagate NaN into every trainable parameter's gradient: the engine then skips the update."""
        poison = torch.stack([parameter.reshape(-1)[0] for parameter in self.trainable]).sum() * math.nan
        self.engine.backward(poison)

    def step(self, losses_finite: bool) -> bool:
        """The engine's step (clip, gradient check, update, zero gradients), then the schedule's."""
        self.engine.step()
        applied = bool(self.engine.was_step_applied())
        advance_schedule(self.scheduler)
        # Under float16 loss scaling an overflow is routine (the engine lowers the scale), as under DDP.
        return losses_finite and (applied or self.precision.loss_scaling)

    def save_checkpoint(self, directory: Path, trainer_state: dict[str, Any], rank: int) -> None:
        """Every rank writes its shard into DeepSpeed's own checkpoint format."""
        client_state = {"trainer": trainer_state, "scheduler": self.scheduler.state_dict()}
        self.engine.save_checkpoint(str(directory / CHECKPOINT_DIR), tag=CHECKPOINT_TAG, client_state=client_state)

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Loaded as DeepSpeed loads its format (which unpickles: load only checkpoints you wrote)."""
        _, client_state = self.engine.load_checkpoint(str(directory / CHECKPOINT_DIR), tag=CHECKPOINT_TAG)
        if client_state is None:
            raise FileNotFoundError(f"{directory / CHECKPOINT_DIR}: no DeepSpeed checkpoint tagged {CHECKPOINT_TAG}")
        self.scheduler.load_state_dict(client_state["scheduler"])
        return client_state["trainer"]
