"""Series views: what the model sees of each channel, computed in torch on the device of the batch.

`time` is the normalised channel itself. `spectrum` adds, per channel, `spectrum_bands` series of causal
short-time band power: at every point t,

1. the trailing window of `spectrum_window` (W) points ending at t; before the segment's (or crop's)
   start the window is filled with copies of its first point, which keeps the view causal (a reflected
   start would read points after t);
2. the window's mean subtracted (a channel's level would otherwise leak into the lowest band through the
   Hann window's main lobe; the time series already carries the level), then a periodic Hann window;
3. the rFFT's power |X_k|^2 / sum(w^2) at bins k = 1 .. W/2 (so unit-variance white noise has power 1
   per bin), averaged over the bins of each band: band b holds the bins k with (k-1) * bands // (W/2) = b,
   equal-width bands between 0 (excluded) and the Nyquist frequency;
4. log1p of that power, standardised per (channel, band) by its mean and std over the training split, so
   each series is O(1) like the normalised channels.

Every value depends on points up to t only, so forecasting the spectral series is as meaningful as
forecasting the channel. The model is channel independent, so the extra series simply enlarge the series
axis: segments [B, C, L] become [B, C * (1 + bands), L], the C channels first, then channel 0's bands
0 .. bands-1, channel 1's, and so on. Nothing is stored on disk: the view is computed per crop (after the
curriculum cut it), on the training or scoring device, from the same statistics in both, which are a pure
function of the dataset's training split and the data config (recomputed where needed, as the dataset's
own normalisation is read from it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tsmoe.data.config import DataConfig
from tsmoe.data.curriculum import crop_lengths
from tsmoe.data.loader import normalized_segments
from tsmoe.data.meta import Normalization
from tsmoe.data.store import SegmentSplit, safe_std

# Training segments the per-band statistics are measured on (the first ones, as the detector's statistics).
STATISTICS_SEGMENTS = 256
# Segments per chunk while measuring them: bounds the [chunk, C, points, W] frames in memory.
STATISTICS_CHUNK = 16


def band_matrix(window: int, bands: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Averaging weights [W/2, bands] from the power at bins 1 .. W/2 to the bands' mean power."""
    bins = window // 2
    members = torch.arange(bins, device=device) * bands // bins  # band of bin k = index + 1
    weights = torch.nn.functional.one_hot(members, bands).float()
    return weights / weights.sum(dim=0)


def band_power(series: torch.Tensor, window: int, bands: int, hop: int = 1) -> torch.Tensor:
    """Causal short-time band power [..., bands, T] of series [..., L] (see the module docstring, steps 1-3).

    Measured at points 0, hop, 2 hop, ... (T = ceil(L / hop) of them); `hop` 1 gives every point.
    """
    values = series.float()
    # In float32 under a caller's autocast too (scoring runs in one): training computes it outside any, and
    # the band averaging's matmul would otherwise round to bfloat16 and score other values than it trained on.
    with torch.autocast(values.device.type, enabled=False):
        start = values[..., :1].expand(*values.shape[:-1], window - 1)
        frames = torch.cat([start, values], dim=-1).unfold(-1, window, hop)  # [..., T, W]: frame t ends at t
        frames = frames - frames.mean(dim=-1, keepdim=True)
        hann = torch.hann_window(window, periodic=True, device=values.device)
        spectrum = torch.fft.rfft(frames * hann, dim=-1)[..., 1:]  # bins 1 .. W/2
        power = (spectrum.real.square() + spectrum.imag.square()) / hann.square().sum()
        return (power @ band_matrix(window, bands, values.device)).transpose(-1, -2)


@dataclass(frozen=True)
class SeriesViews:
    """The views of a run, with the spectral statistics they need; call it on segments [B, C, L].

    `mean` and `std` ([C, bands], log1p band power on the training split) are None for the time view alone.
    """

    window: int = 64
    bands: int = 4
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @property
    def spectral(self) -> bool:
        """Whether the spectral series are added."""
        return self.mean is not None

    def series_per_channel(self) -> int:
        """How many series the model sees for each channel of a segment."""
        return 1 + self.bands if self.spectral else 1

    def to(self, device: torch.device | str) -> SeriesViews:
        """The same views with their statistics on `device` (to move them once, not every batch)."""
        if self.mean is None or self.std is None:
            return self
        return SeriesViews(self.window, self.bands, self.mean.to(device), self.std.to(device))

    def __call__(self, segments: torch.Tensor) -> torch.Tensor:
        """Series [B, C * series_per_channel, L] of normalised segments [B, C, L], on the segments' device."""
        if self.mean is None or self.std is None:
            return segments
        count, channels, length = segments.shape
        if channels != self.mean.shape[0]:
            raise ValueError(
                f"the spectral view's statistics are for {self.mean.shape[0]} channels, the segments have {channels}"
            )
        logarithm = torch.log1p(band_power(segments, self.window, self.bands))  # [B, C, bands, L]
        mean, std = self.mean.to(segments.device), self.std.to(segments.device)
        spectral = (logarithm - mean[..., None]) / std[..., None]
        return torch.cat([segments, spectral.reshape(count, channels * self.bands, length).to(segments.dtype)], dim=1)


def check_spectrum_window(config: DataConfig, segment_length: int) -> None:
    """Raise a ValueError naming data.spectrum_window when the spectral view's window exceeds the shortest
    crop the curriculum trains on (a longer window would measure mostly the padding before a crop)."""
    if not config.spectral:
        return
    shortest = min([*crop_lengths(config.crop_schedule, segment_length), segment_length])
    if config.spectrum_window > shortest:
        raise ValueError(
            f"field data.spectrum_window: {config.spectrum_window} points, longer than the shortest crop "
            f"({shortest} points of {segment_length}-point segments with crop_schedule {config.crop_schedule!r}); "
            f"choose a power of two <= {shortest}"
        )


def fit_views(config: DataConfig, train: SegmentSplit, normalization: Normalization) -> SeriesViews:
    """The run's views; the spectral one measures its per-(channel, band) statistics on the training split."""
    if not config.spectral:
        return SeriesViews(config.spectrum_window, config.spectrum_bands)
    check_spectrum_window(config, train.meta.segment_length)
    window, bands = config.spectrum_window, config.spectrum_bands
    # A quarter-window hop: neighbouring frames overlap by 3/4, so sampling every point would add cost, not
    # information, to a mean and std.
    hop = max(1, window // 4)
    count = min(len(train), STATISTICS_SEGMENTS)
    total = np.zeros((train.meta.num_channels, bands))
    squares = np.zeros_like(total)
    points = 0
    for start in range(0, count, STATISTICS_CHUNK):
        segments = torch.from_numpy(
            normalized_segments(train, normalization, start, min(start + STATISTICS_CHUNK, count))
        )
        logarithm = torch.log1p(band_power(segments, window, bands, hop)).double()  # [N, C, bands, T]
        total += logarithm.sum(dim=(0, 3)).numpy()
        squares += logarithm.square().sum(dim=(0, 3)).numpy()
        points += logarithm.shape[0] * logarithm.shape[3]
    mean = total / points
    std = np.sqrt(np.maximum(squares / points - mean**2, 0.0))
    # A band without spread (a constant channel) is shifted to 0 and left unscaled, never divided by zero.
    std = safe_std(std)
    return SeriesViews(window, bands, torch.from_numpy(mean).float(), torch.from_numpy(std).float())
