"""How the model is optimised: the training part of a run's config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FinetuneConfig(BaseModel):
    """Start from a pretrained checkpoint, and which of its parameters train."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # A local directory in the reference format (config.json + model.safetensors); None trains from scratch.
    checkpoint: Path | None = None
    # full: every parameter; lora: low-rank adapters on attention and the input embedding, the rest frozen;
    # frozen_experts: everything but the routed and shared experts; router_only: the routers alone.
    mode: Literal["full", "lora", "frozen_experts", "router_only"] = "full"
    lora_rank: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)  # peft's LoraConfig takes an integer alpha
    lora_dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _needs_checkpoint(self) -> FinetuneConfig:
        if self.mode != "full" and self.checkpoint is None:
            raise ValueError(f"mode {self.mode} fine-tunes a pretrained model: set checkpoint to its directory")
        return self


class DeepSpeedConfig(BaseModel):
    """ZeRO settings when `training.strategy` is deepspeed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    stage: Literal[1, 2] = 2
    offload_optimizer: bool = False  # optimizer state and step on the CPU (DeepSpeedCPUAdam)


class TrainingConfig(BaseModel):
    """Optimiser, schedule, precision, stability and loop settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(4, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    min_learning_rate_ratio: float = Field(0.1, ge=0, le=1)  # the cosine schedule's floor, relative to the peak
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    gradient_clip: float = Field(1.0, gt=0)
    gradient_accumulation: int = Field(1, gt=0)  # micro-batches per optimizer step
    # auto: bfloat16 where the GPU computes it natively, float16 with loss scaling on older GPUs, float32 on CPU.
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # The aux-loss factor rises linearly from 0 to model.router_aux_loss_factor over this many optimizer
    # steps: a full-strength balancing loss on a fresh router is one way runs collapse early.
    aux_loss_warmup_steps: int = Field(0, ge=0)
    # A step whose loss or gradient is NaN/inf is skipped and counted; this many in a row stop the run.
    max_consecutive_nonfinite_steps: int = Field(5, gt=0)
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    compile: bool = False  # torch.compile the model
    # An exponential moving average of the weights (decay per optimizer step; 0: none) is what validation
    # scores and the run saves: it steadies a small detector's AUROC from epoch to epoch.
    ema_decay: float = Field(0.0, ge=0, lt=1)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    log_every_steps: int = Field(50, gt=0)  # a progress line every this many optimizer steps
    throughput_warmup_steps: int = Field(2, ge=0)  # first-epoch steps left out of the throughput figures
    # Checkpoints kept on disk: those of the epochs chosen as the run's best so far (tsmoe/training/epoch_choice.py),
    # the latest chosen first, and always the latest epoch's.
    keep_checkpoints: int = Field(2, gt=0)
    seed: int = 0
    # The objective (docs/detection.md): forecast every horizon (the reference's); reconstruct hidden spans
    # from both sides with the same blocks (masked_reconstruction); or both, their losses summed.
    loss: Literal["forecast", "masked_reconstruction", "both"] = "forecast"
    # The share of each series the reconstruction objective hides, in spans of mask_span points.
    mask_ratio: float = Field(0.25, gt=0, lt=1)
    mask_span: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _average_of_full_weights(self) -> TrainingConfig:
        if self.ema_decay > 0 and self.finetune.mode == "lora":
            raise ValueError(
                "ema_decay: a weight average of LoRA adapters is not supported; set ema_decay: 0 or finetune.mode "
                "to full, frozen_experts or router_only"
            )
        return self
