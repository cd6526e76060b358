"""The training loop over crop-curriculum batches: forward all heads, backward, clip, step.

One segment of C channels is C independent series (channel independence, as in the reference), so a
batch [B, C, crop] trains as B*C series of `crop - 1` inputs, each point's next values being its labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from tsmoe.data.config import DataConfig
from tsmoe.data.loader import build_train_loader
from tsmoe.data.meta import Normalization
from tsmoe.data.store import SegmentSplit
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.config import TrainingConfig
from tsmoe.training.optim import build_optimizer, build_scheduler


@dataclass
class EpochReport:
    """What one epoch did and how fast, measured over its training steps only."""

    epoch: int
    loss: float  # mean over micro-batches; NaN stays NaN
    optimizer_steps: int
    seconds: float
    samples_s: float  # segments per second
    tokens_s: float  # points x channels per second
    data_wait_frac: float  # share of the epoch spent waiting for batches
    crop_length: int  # the last batch's crop length


def series_batch(batch: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels [B*C, crop-1] from a [B, C, crop] batch: labels are the inputs shifted by one."""
    series = batch.reshape(-1, batch.shape[-1]).to(device, non_blocking=True)
    return series[:, :-1], series[:, 1:]


def fit(model: TimeMoE, train: SegmentSplit, normalization: Normalization, data: DataConfig,
        training: TrainingConfig, device: torch.device | str = "cpu",
        on_epoch: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
    """Train `model` in this process for `training.epochs` epochs; returns one report per epoch."""
    torch.manual_seed(training.seed)
    model.to(device).train()
    loader = build_train_loader(train, normalization, data, training.epochs,
                                pin_memory=torch.device(device).type == "cuda")
    accumulation = training.gradient_accumulation
    steps_per_epoch = len(loader) // accumulation
    if steps_per_epoch == 0:
        raise ValueError(f"{len(loader)} batches per epoch make no optimizer step of {accumulation} micro-batches; "
                         "lower training.gradient_accumulation or data.batch_size")
    optimizer = build_optimizer(model, training)
    scheduler = build_scheduler(optimizer, steps_per_epoch * training.epochs, training)
    reports = []
    for epoch in range(training.epochs):
        loader.batch_sampler.set_epoch(epoch)
        losses, waited, samples, tokens, steps = [], 0.0, 0, 0, 0
        started = time.perf_counter()
        batches = iter(loader)
        for micro_step in range(steps_per_epoch * accumulation):
            wait_started = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - wait_started
            inputs, labels = series_batch(batch, device)
            # Masks of ones keep targets past the end of the crop (zeros) out of the loss.
            output = model(inputs, labels=labels, loss_masks=torch.ones_like(labels))
            (output.loss / accumulation).backward()
            losses.append(output.loss.item())
            samples += batch.shape[0]
            tokens += batch.shape[0] * batch.shape[1] * batch.shape[2]
            if (micro_step + 1) % accumulation == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.gradient_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
        del batches
        seconds = time.perf_counter() - started
        report = EpochReport(epoch=epoch, loss=float(np.mean(losses)), optimizer_steps=steps, seconds=seconds,
                             samples_s=samples / seconds, tokens_s=tokens / seconds,
                             data_wait_frac=waited / seconds, crop_length=int(batch.shape[-1]))
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
    model.eval()
    return reports
