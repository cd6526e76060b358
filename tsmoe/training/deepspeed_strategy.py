"""DeepSpeed ZeRO (stage 1 or 2, optional CPU optimizer offload) as an alternative to DDP.

The engine is built from the run's typed config: the same AdamW settings, warm-up/cosine schedule,
gradient clipping and accumulation as the DDP path. It runs inside the Ray Train workers, whose process
group already exists, hence `dist_init_required=False`. On a machine without CUDA, DeepSpeed needs
`DS_ACCELERATOR=cpu` before it is imported; `tsmoe train` sets it for the workers.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from tsmoe.training.config import TrainingConfig
from tsmoe.training.optim import build_scheduler
from tsmoe.training.precision import Precision


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
        config["bf16"] = {"enabled": True}
    elif precision.name == "float16":
        config["fp16"] = {"enabled": True, "loss_scale": 0}  # 0: dynamic loss scaling
    return config


def build_engine(
    model: torch.nn.Module,
    training: TrainingConfig,
    precision: Precision,
    micro_batch_series: int,
    world_size: int,
    total_steps: int,
):
    """Wrap the model in a DeepSpeed engine with tsmoe's optimizer and schedule; returns the engine."""
    if torch.cuda.is_available() is False:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # imported here: it inspects the accelerator at import time

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if training.deepspeed.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=training.learning_rate, betas=training.betas, adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=training.learning_rate, betas=training.betas)
    scheduler = build_scheduler(optimizer, total_steps, training)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(training, precision, micro_batch_series, world_size),
        dist_init_required=False,
    )
    return engine
