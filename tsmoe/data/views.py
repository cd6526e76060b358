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
forecasting the channel.

`residual` adds the part of each point's channel vector that normal operation leaves out. The model is
channel independent, so a relation between channels (three phase currents that sum to zero, two sensors
of one quantity) is invisible to it, and a fault that breaks the relation without making any one channel
hard to forecast goes unseen. On the training split's normalised channel vectors x (C of them per point),
the principal directions whose variance is below `residual_variance` times the mean channel variance are
the ones the channels cancel along; for each such direction v with variance s^2, the series
v . (x - mean) / s is unit-variance noise in normal operation and departs from it when the relation
breaks. Each value uses the point's own channels only, so it is causal too. A variance below
`MIN_RESIDUAL_VARIANCE` of the mean (an exact linear dependence) is raised to it, so float rounding is
never divided up into a signal. Channels constant in training are left out (they relate to nothing; a
change of one shows in the time view). Data with fewer than two channels that vary, or channels without
such a relation, get no residual series.

With `residual_reference: run`, each labelled run whose normal data is in the training split (its normal
prefix, or its paired normal file: the segments' run ids) gets directions fitted on that data alone, and its
segments are projected on them (none where its channels hold no relation); segments of other runs, and of runs
with fewer than MIN_RUN_POINTS_PER_CHANNEL normal points per varying channel, use the directions of the whole
training split. Machines whose metrics are mixed from the same loads by different weights each cancel along
their own directions (several dozen for one machine's 38 metrics), while the pooled rows of all machines share
almost none. The series axis has one length, R, the most directions any fit found; a fit with fewer leaves its
last series at zero, which the model forecasts exactly and which never scores.

The model is channel independent, so the extra series simply enlarge the series axis: segments [B, C, L]
become [B, S, L]: the C channels first, then (spectrum) channel 0's bands 0 .. bands-1, channel 1's, and
so on, then (residual) the R residual series, S = C * (1 + bands) + R. Nothing is stored on disk: the views
are computed per crop (after the curriculum cut it), on the training or scoring device, from the same
statistics in both, which are a pure function of the dataset's training split and the data config
(recomputed where needed, as the dataset's own normalisation is read from it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from tsmoe.data.config import DataConfig, check_spectrum_window
from tsmoe.data.loader import normalized_rows
from tsmoe.data.meta import Normalization
from tsmoe.data.store import SegmentSplit, safe_std

# Training segments the per-band statistics are measured on (the first ones, as the detector's statistics).
STATISTICS_SEGMENTS = 256
# Segments per chunk while measuring them: bounds the [chunk, C, points, W] frames in memory.
STATISTICS_CHUNK = 16
# The smallest variance (a share of the mean channel variance) a residual series is scaled by.
MIN_RESIDUAL_VARIANCE = 1e-4
# Below this variance (normalised units) a channel counts as constant in training.
MIN_CHANNEL_VARIANCE = 1e-12
# A run's own residual directions need this many of its normal points per channel that varies (a covariance
# estimated from fewer is mostly noise); a run with fewer uses the whole training split's directions.
MIN_RUN_POINTS_PER_CHANNEL = 10


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
    """The views of a run, with the statistics they need; call it on segments [B, C, L].

    `mean` and `std` ([C, bands], log1p band power on the training split) are None without the spectral view;
    `projection` ([G, C, R]: residual directions divided by their std, per fit) and `offset` ([G, R]: the
    fit's mean projected) are None without the residual view. Fit 0 is the whole training split's; `run_fits`
    ([max run id + 1]) gives the fit of each run id, 0 for a run without its own (None: every run uses fit 0).
    """

    window: int = 64
    bands: int = 4
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    projection: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    run_fits: torch.Tensor | None = None

    @property
    def spectral(self) -> bool:
        """Whether the spectral series are added."""
        return self.mean is not None

    @property
    def residual_series(self) -> int:
        """How many cross-channel residual series are added (0 without the view)."""
        return 0 if self.projection is None else self.projection.shape[2]

    @property
    def runs_with_own_residual(self) -> int:
        """How many runs are projected on directions fitted on their own normal data."""
        return 0 if self.projection is None else self.projection.shape[0] - 1

    def series_count(self, channels: int) -> int:
        """How many series the model sees for segments of `channels` channels."""
        return channels * (1 + self.bands if self.spectral else 1) + self.residual_series

    def to(self, device: torch.device | str) -> SeriesViews:
        """The same views with their statistics on `device` (to move them once, not every batch)."""
        moved = [None if tensor is None else tensor.to(device) for tensor in self._statistics()]
        return SeriesViews(self.window, self.bands, *moved)

    def _statistics(self) -> tuple[torch.Tensor | None, ...]:
        return self.mean, self.std, self.projection, self.offset, self.run_fits

    def __call__(self, segments: torch.Tensor, runs: torch.Tensor | None = None) -> torch.Tensor:
        """Series [B, S, L] of normalised segments [B, C, L], on the segments' device (module docstring);
        `runs` ([B], the segments' run ids) chooses each segment's residual directions (fit 0 when None)."""
        if all(tensor is None for tensor in self._statistics()):
            return segments
        count, channels, length = segments.shape
        parts = [segments]
        if self.mean is not None and self.std is not None:
            if channels != self.mean.shape[0]:
                raise ValueError(
                    f"the spectral view's statistics are for {self.mean.shape[0]} channels, the segments have "
                    f"{channels}"
                )
            logarithm = torch.log1p(band_power(segments, self.window, self.bands))  # [B, C, bands, L]
            mean, std = self.mean.to(segments.device), self.std.to(segments.device)
            spectral = (logarithm - mean[..., None]) / std[..., None]
            parts.append(spectral.reshape(count, channels * self.bands, length).to(segments.dtype))
        if self.projection is not None and self.offset is not None:
            if channels != self.projection.shape[1]:
                raise ValueError(
                    f"the residual view's directions are for {self.projection.shape[1]} channels, the segments "
                    f"have {channels}"
                )
            fits = self._fits_of(runs, count, segments.device)
            projection, offset = self.projection.to(segments.device)[fits], self.offset.to(segments.device)[fits]
            # Outside any autocast: bfloat16 would round the cancelling channels before they cancel.
            with torch.autocast(segments.device.type, enabled=False):
                residual = torch.einsum("bcl,bcr->brl", segments.float(), projection) - offset[..., None]
            parts.append(residual.to(segments.dtype))
        return torch.cat(parts, dim=1)

    def _fits_of(self, runs: torch.Tensor | None, count: int, device: torch.device) -> torch.Tensor:
        """The residual fit [B] of each of `count` segments with run ids `runs`, on `device`."""
        if runs is None or self.run_fits is None:
            return torch.zeros(count, dtype=torch.long, device=device)
        if runs.shape != (count,):
            raise ValueError(f"runs: expected one run id per segment ({count}), got shape {tuple(runs.shape)}")
        table, runs = self.run_fits.to(device), runs.to(device)
        known = (runs >= 0) & (runs < len(table))
        return torch.where(known, table[runs.clamp(0, len(table) - 1)], 0)


def describe_views(views: SeriesViews, config: DataConfig) -> str:
    """The series the model sees, in words: "time", or e.g. "time, residual (2 cross-channel series)"."""
    described = ["time"]
    if views.spectral:
        described.append(f"spectrum ({config.spectrum_bands} bands over {config.spectrum_window} points)")
    if config.residual:
        own = views.runs_with_own_residual
        described.append(
            f"residual ({views.residual_series} cross-channel series"
            + (f"; each of {own} run{'' if own == 1 else 's'} on its own normal data's)" if own else ")")
        )
    return ", ".join(described)


def fit_views(config: DataConfig, train: SegmentSplit, normalization: Normalization) -> SeriesViews:
    """The run's views, with the statistics they measure on the training split (spectral bands' mean and
    std, residual directions)."""
    views = SeriesViews(config.spectrum_window, config.spectrum_bands)
    if config.spectral:
        check_spectrum_window(config, train.meta.segment_length)
        mean, std = _band_statistics(config, train, normalization)
        views = replace(views, mean=mean, std=std)
    if config.residual:
        views = _with_residual_fits(views, config, train, normalization)
    return views


def _statistics_chunks(
    train: SegmentSplit, normalization: Normalization, indices: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """The first STATISTICS_SEGMENTS normalised training segments (of `indices`, all when None),
    STATISTICS_CHUNK at a time: [n, C, L] each."""
    chosen = np.arange(min(len(train), STATISTICS_SEGMENTS)) if indices is None else indices[:STATISTICS_SEGMENTS]
    for start in range(0, len(chosen), STATISTICS_CHUNK):
        yield normalized_rows(train, normalization, chosen[start : start + STATISTICS_CHUNK])


def _band_statistics(
    config: DataConfig, train: SegmentSplit, normalization: Normalization
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [C, bands] of each channel's log1p band power over the first training segments."""
    window, bands = config.spectrum_window, config.spectrum_bands
    # A quarter-window hop: neighbouring frames overlap by 3/4, so sampling every point would add cost, not
    # information, to a mean and std.
    hop = max(1, window // 4)
    total = np.zeros((train.meta.num_channels, bands))
    squares = np.zeros_like(total)
    points = 0
    for segments in _statistics_chunks(train, normalization):
        logarithm = torch.log1p(band_power(torch.from_numpy(segments), window, bands, hop)).double()  # [N, C, bands, T]
        total += logarithm.sum(dim=(0, 3)).numpy()
        squares += logarithm.square().sum(dim=(0, 3)).numpy()
        points += logarithm.shape[0] * logarithm.shape[3]
    mean = total / points
    std = np.sqrt(np.maximum(squares / points - mean**2, 0.0))
    # A band without spread (a constant channel) is shifted to 0 and left unscaled, never divided by zero.
    std = safe_std(std)
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def _with_residual_fits(
    views: SeriesViews, config: DataConfig, train: SegmentSplit, normalization: Normalization
) -> SeriesViews:
    """`views` with the residual view's directions: the whole training split's, then (with
    `residual_reference: run`) each run's own, padded with zero series to the most any fit found."""
    pooled = _residual_directions(config.residual_variance, _statistics_chunks(train, normalization))
    channels = train.meta.num_channels
    fits = [pooled if pooled is not None else (np.zeros((channels, 0)), np.zeros(0))]
    run_ids: list[int] = []
    runs = train.runs
    if config.residual_reference == "run" and runs is not None:
        for run_id in np.unique(runs[runs >= 0]):
            own = _residual_directions(
                config.residual_variance,
                _statistics_chunks(train, normalization, np.flatnonzero(runs == run_id)),
                MIN_RUN_POINTS_PER_CHANNEL,
            )
            # A run with too few normal points keeps the pooled directions; one whose channels hold no relation
            # gets none of its own (zero series), never other machines' relations.
            if own is not None:
                fits.append(own)
                run_ids.append(int(run_id))
    series = max(fit[0].shape[1] for fit in fits)
    if series == 0:
        return views
    projection = np.zeros((len(fits), channels, series))
    offset = np.zeros((len(fits), series))
    for index, (directions, mean_projection) in enumerate(fits):
        projection[index, :, : directions.shape[1]] = directions
        offset[index, : len(mean_projection)] = mean_projection
    run_fits = None
    if run_ids:
        table = np.zeros(max(run_ids) + 1, dtype=np.int64)
        table[run_ids] = np.arange(1, len(run_ids) + 1)
        run_fits = torch.from_numpy(table)
    return replace(
        views,
        projection=torch.from_numpy(projection).float(),
        offset=torch.from_numpy(offset).float(),
        run_fits=run_fits,
    )


def _residual_directions(
    share: float, chunks: Iterator[np.ndarray], min_points_per_channel: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Residual directions scaled by their std [C, R] and the mean's projection [R] (module docstring), from
    the channel vectors of segment chunks [n, C, L] (R may be 0); None when there are fewer than
    `min_points_per_channel` points per channel that varies, too few to tell."""
    total: np.ndarray | None = None
    products = np.zeros(0)
    points = 0
    for segments in chunks:
        vectors = segments.transpose(0, 2, 1).reshape(-1, segments.shape[1]).astype(np.float64)  # [points, C]
        if total is None:
            total, products = np.zeros(vectors.shape[1]), np.zeros((vectors.shape[1], vectors.shape[1]))
        total += vectors.sum(axis=0)
        products += vectors.T @ vectors
        points += len(vectors)
    if total is None:
        return None
    channels = len(total)
    mean = total / points
    covariance = products / points - np.outer(mean, mean)
    # A channel without spread in training relates to nothing: it is left out (its own change already shows in
    # the time view), so constant metrics do not each become a residual series.
    live = np.flatnonzero(np.diag(covariance) > MIN_CHANNEL_VARIANCE)
    if points < min_points_per_channel * max(len(live), 1):
        return None
    no_directions = np.zeros((channels, 0)), np.zeros(0)
    if len(live) < 2:
        return no_directions
    live_covariance = covariance[np.ix_(live, live)]
    variances, directions = np.linalg.eigh(live_covariance)  # ascending, unit columns
    typical = float(np.trace(live_covariance)) / len(live)
    minor = variances < share * typical
    if not minor.any():
        return no_directions
    scale = np.sqrt(np.maximum(variances[minor], MIN_RESIDUAL_VARIANCE * typical))
    projection = np.zeros((channels, int(minor.sum())))
    projection[live] = directions[:, minor] / scale
    return projection, mean @ projection
