"""How the model is optimised: the training part of a run's config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainingConfig(BaseModel):
    """Optimiser, schedule and loop settings."""

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
    seed: int = 0
