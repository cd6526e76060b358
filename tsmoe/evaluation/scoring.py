"""Anomaly scores from forecast error.

Head h at position t predicts x[t+1 .. t+h], so point t is forecast by head h from each of the positions
t-h .. t-1 that exist. A point's error for head h is the mean error of those forecasts; its score is that
error normalised by the statistics of training errors, per channel and per context length, then averaged
over the chosen heads and combined over channels.

Normalising per context length matters: a point 3 steps into a segment is forecast from 3 points of
history and errs far more than one 1,000 steps in. Without it, every segment's first points would look
anomalous; with it, a point is compared with normal points forecast from as much context as it had.
Context lengths are grouped in powers of two (1, 2-3, 4-7, ...), which keeps every group well populated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tsmoe.data.loader import normalized_segments
from tsmoe.data.meta import Normalization
from tsmoe.data.store import SegmentSplit, safe_std
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.model.masking import scoring_masks, scoring_passes
from tsmoe.model.timemoe import TimeMoE


def context_buckets(length: int) -> np.ndarray:
    """Bucket of every position [L]: floor(log2(position)) for position >= 1; position 0 has no forecast."""
    positions = np.arange(length)
    buckets = np.zeros(length, dtype=np.int64)
    buckets[1:] = np.floor(np.log2(positions[1:])).astype(np.int64)
    return buckets


@torch.inference_mode()
def forecast_errors(
    model: TimeMoE,
    segments: torch.Tensor,
    heads: list[int],
    error: str = "squared",
    context_window: int | None = None,
) -> torch.Tensor:
    """Per-point forecast error [B, C, L] of normalised segments [B, C, L]; NaN at position 0.

    Each head's error at a point is the mean over that head's forecasts of the point; the result is the
    mean over `heads`. `context_window` as in `forecast_errors_and_states`.
    """
    return forecast_errors_and_states(model, segments, heads, error, context_window=context_window)[0]


@torch.inference_mode()
def forecast_errors_and_states(
    model: TimeMoE,
    segments: torch.Tensor,
    heads: list[int],
    error: str = "squared",
    state_layer: int | str = "final",
    context_window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forecast errors [B, C, L] (as `forecast_errors`) and hidden states [B, C, L, H], one pass: the final ones
    (after the final norm), or with `state_layer` i the input embedding (0) or decoder layer i's output. With
    `context_window` w, each layer's attention sees a point and the w - 1 points before it."""
    batch, channels, length = segments.shape
    parameter = next(model.parameters())
    series = segments.reshape(batch * channels, length).to(device=parameter.device, dtype=parameter.dtype)
    layers = model.config.num_hidden_layers
    if state_layer != "final" and not 0 <= int(state_layer) <= layers:
        raise ValueError(f"evaluation.density_layer {state_layer}: the model has layers 0 (embedding) to {layers}")
    output = model(
        series, state_layer=None if state_layer == "final" else int(state_layer), attention_window=context_window
    )
    predictions = output.predictions  # {h: [B*C, L, h]}
    total = torch.zeros_like(series, dtype=torch.float32)
    for head in heads:
        if head not in predictions:
            raise ValueError(f"evaluation heads: the model has no horizon {head} (it has {sorted(predictions)})")
        head_error = torch.zeros_like(total)
        forecasts = torch.zeros(length, device=series.device)
        for step in range(min(head, length - 1)):
            # Forecasts made at positions 0 .. L-2-step of the point `step + 1` ahead.
            difference = predictions[head][:, : length - 1 - step, step].float() - series[:, step + 1 :].float()
            head_error[:, step + 1 :] += difference.square() if error == "squared" else difference.abs()
            forecasts[step + 1 :] += 1
        total[:, 1:] += head_error[:, 1:] / forecasts[1:]
    total = total / len(heads)
    total[:, 0] = float("nan")
    chosen = output.last_hidden_state if output.layer_state is None else output.layer_state
    states = chosen.float().reshape(batch, channels, length, -1)
    return total.reshape(batch, channels, length).cpu(), states.cpu()


@torch.inference_mode()
def embedding_states(model: TimeMoE, segments: torch.Tensor) -> torch.Tensor:
    """Hidden states [B, C, L, H] of layer 0 (the input embedding) of normalised segments [B, C, L]: the states
    `forecast_errors_and_states` gives with `state_layer` 0, without the decoder layers' cost."""
    batch, channels, length = segments.shape
    parameter = next(model.parameters())
    series = segments.reshape(batch * channels, length).to(device=parameter.device, dtype=parameter.dtype)
    return model.embed(series).float().reshape(batch, channels, length, -1).cpu()


@torch.inference_mode()
def reconstruction_errors(model: TimeMoE, segments: torch.Tensor, error: str = "squared") -> torch.Tensor:
    """Per-point reconstruction error [B, C, L] of normalised segments [B, C, L], each point's from the pass
    that hid it: ceil(1 / ratio) passes of the model's training span and ratio hide every point exactly once."""
    config = model.config
    if not config.reconstruction_head:
        raise ValueError("the model has no reconstruction path (model.reconstruction_head is false)")
    batch, channels, length = segments.shape
    parameter = next(model.parameters())
    series = segments.reshape(batch * channels, length).to(device=parameter.device, dtype=parameter.dtype)
    masks = scoring_masks(length, config.reconstruction_mask_span, scoring_passes(config.reconstruction_mask_ratio))
    total = torch.zeros_like(series, dtype=torch.float32)
    for hidden in masks.to(series.device):
        hidden_points = hidden.expand_as(series)
        difference = model.reconstruct(series, hidden_points).float() - series.float()
        total += torch.where(hidden_points, difference.square() if error == "squared" else difference.abs(), 0.0)
    return total.reshape(batch, channels, length).cpu()


@dataclass
class ChannelStatistics:
    """Mean and std of reference errors per channel, [C] each (reconstruction errors: every position alike)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_errors(cls, errors: np.ndarray) -> ChannelStatistics:
        """Statistics of errors [N, C, L] of normal segments; a channel without spread keeps std 1."""
        values = errors.astype(np.float64)
        return cls(mean=values.mean(axis=(0, 2)), std=safe_std(values.std(axis=(0, 2))))

    def normalize(self, errors: np.ndarray) -> np.ndarray:
        """z-scores [N, C, L] of errors [N, C, L]."""
        return (errors - self.mean[None, :, None]) / self.std[None, :, None]


@dataclass
class ErrorStatistics:
    """Mean and std of training forecast errors, per channel and context-length bucket: [C, buckets]."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_errors(cls, errors: np.ndarray) -> ErrorStatistics:
        """Statistics of errors [N, C, L] of normal segments (position 0, never forecast, is left out)."""
        buckets = context_buckets(errors.shape[-1])
        bucket_count = int(buckets.max()) + 1
        channels = errors.shape[1]
        mean = np.zeros((channels, bucket_count))
        std = np.ones((channels, bucket_count))
        values = errors.astype(np.float64)
        for bucket in range(bucket_count):
            members = values[:, :, 1:][:, :, buckets[1:] == bucket]
            if members.size:
                mean[:, bucket] = members.mean(axis=(0, 2))
                std[:, bucket] = members.std(axis=(0, 2))
        # Position 0's bucket is never forecast; a bucket without spread must not divide by zero.
        return cls(mean=mean, std=np.where(std > 1e-12, std, 1.0))

    def normalize(self, errors: np.ndarray) -> np.ndarray:
        """z-scores [N, C, L] of errors [N, C, L]."""
        buckets = context_buckets(errors.shape[-1])
        return (errors - self.mean[:, buckets]) / self.std[:, buckets]


def _iterate_errors(
    model: TimeMoE,
    split: SegmentSplit,
    normalization: Normalization,
    config: EvaluationConfig,
    count: int,
    progress: Callable[[int, int], None] | None,
):
    for start in range(0, count, config.batch_size):
        stop = min(start + config.batch_size, count)
        segments = torch.from_numpy(normalized_segments(split, normalization, start, stop))
        yield start, forecast_errors(model, segments, config.heads, config.error, config.context_window).numpy()
        if progress is not None:
            progress(stop, count)


def training_error_statistics(
    model: TimeMoE,
    train: SegmentSplit,
    normalization: Normalization,
    config: EvaluationConfig,
    progress: Callable[[int, int], None] | None = None,
) -> ErrorStatistics:
    """Error statistics over the first `config.statistics_segments` training segments."""
    count = min(len(train), config.statistics_segments)
    length = train.meta.segment_length
    buckets = context_buckets(length)
    bucket_count = int(buckets.max()) + 1
    channels = train.meta.num_channels
    total = np.zeros((channels, bucket_count))
    squares = np.zeros((channels, bucket_count))
    points = np.bincount(buckets[1:], minlength=bucket_count).astype(np.float64)
    for _, errors in _iterate_errors(model, train, normalization, config, count, progress):
        errors = errors[:, :, 1:].astype(np.float64)
        for channel in range(channels):
            total[channel] += np.bincount(buckets[1:], weights=errors[:, channel].sum(axis=0), minlength=bucket_count)
            squares[channel] += np.bincount(
                buckets[1:], weights=np.square(errors[:, channel]).sum(axis=0), minlength=bucket_count
            )
    samples = points * count
    mean = total / np.maximum(samples, 1)
    std = np.sqrt(np.maximum(squares / np.maximum(samples, 1) - mean**2, 0.0))
    # Position 0's bucket is never forecast; a bucket without spread must not divide by zero.
    std = safe_std(std)
    return ErrorStatistics(mean=mean, std=std)


def channel_scores(
    model: TimeMoE,
    split: SegmentSplit,
    normalization: Normalization,
    statistics: ErrorStatistics,
    config: EvaluationConfig,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Normalised forecast-error scores of every point and channel of a split: [N, C, L] float32."""
    meta = split.meta
    scores = np.empty((len(split), meta.num_channels, meta.segment_length), dtype=np.float32)
    for start, errors in _iterate_errors(model, split, normalization, config, len(split), progress):
        scores[start : start + len(errors)] = statistics.normalize(errors)
    return scores
