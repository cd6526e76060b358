"""The spectral view: causal short-time band power, laid out beside the channels, standardised on training data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.data.conftest import SEGMENT_LENGTH, write_small_dataset
from tests.model.test_device import default_device_elsewhere
from tsmoe.data.config import DataConfig, check_spectrum_window
from tsmoe.data.loader import normalized_segments
from tsmoe.data.store import DatasetWriter, open_dataset
from tsmoe.data.views import SeriesViews, band_matrix, band_power, describe_views, fit_views

WINDOW, BANDS = 16, 4


def _sinusoid(bin_index: int, amplitude: float, length: int = 64, phase: float = 0.3) -> torch.Tensor:
    points = torch.arange(length, dtype=torch.float64)
    return amplitude * torch.cos(2 * math.pi * bin_index * points / WINDOW + phase)


def test_bands_split_the_bins_above_zero_into_equal_groups():
    # 16 points: bins 1..8, two per band, each averaged.
    expected = torch.zeros(8, 4)
    for bin_index in range(8):
        expected[bin_index, bin_index // 2] = 0.5
    torch.testing.assert_close(band_matrix(WINDOW, BANDS), expected)


@pytest.mark.parametrize("bin_index, band", [(4, 1), (6, 2)])
def test_a_sinusoid_lands_in_its_band_with_the_hand_computed_power(bin_index, band):
    # A cosine of amplitude A at bin k0 under a periodic Hann window of W points: |X_k0| = A W / 4 and
    # |X_k0+-1| = A W / 8; sum(w^2) = 3 W / 8, so the power is A^2 W / 6 at k0 and A^2 W / 24 beside it.
    # Bins 2b+1 and 2b+2 form band b: the band holding k0 and k0-1 averages them, the next holds k0+1 alone.
    amplitude = 1.5
    power = band_power(_sinusoid(bin_index, amplitude), WINDOW, BANDS)
    peak, side = amplitude**2 * WINDOW / 6, amplitude**2 * WINDOW / 24
    expected = torch.zeros(BANDS, dtype=torch.float32)
    expected[band] = (peak + side) / 2
    expected[band + 1] = side / 2
    # Every full window (points 15 on) holds whole periods: the same powers at every such point.
    torch.testing.assert_close(
        power[:, WINDOW - 1 :], expected[:, None].expand(BANDS, 64 - WINDOW + 1), atol=1e-5, rtol=1e-5
    )


def test_a_constant_level_has_no_band_power():
    # The window's mean is removed first: a level (here 5) never leaks into the lowest band.
    assert torch.allclose(band_power(torch.full((40,), 5.0), WINDOW, BANDS), torch.zeros(BANDS, 40), atol=1e-5)


def test_points_before_a_full_window_see_the_first_point_repeated():
    series = torch.randn(2, 30, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([series[:, :1].expand(2, WINDOW - 1), series], dim=1)
    torch.testing.assert_close(band_power(series, WINDOW, BANDS), band_power(padded, WINDOW, BANDS)[..., WINDOW - 1 :])


def test_a_hop_measures_every_hop_th_point():
    series = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(band_power(series, WINDOW, BANDS, hop=4), band_power(series, WINDOW, BANDS)[..., ::4])


def _views(channels: int = 2) -> SeriesViews:
    generator = torch.Generator().manual_seed(2)
    return SeriesViews(WINDOW, BANDS, torch.rand(channels, BANDS, generator=generator), 1 + torch.rand(channels, BANDS))


def test_views_put_the_channels_first_then_each_channels_standardised_bands():
    views = _views()
    segments = torch.randn(3, 2, 40, generator=torch.Generator().manual_seed(3))
    series = views(segments)
    assert series.shape == (3, 2 * (1 + BANDS), 40) and views.series_count(2) == 2 * (1 + BANDS)
    torch.testing.assert_close(series[:, :2], segments)
    logarithm = torch.log1p(band_power(segments[:, 1], WINDOW, BANDS))  # channel 1: [3, bands, 40]
    expected = (logarithm[:, 3] - views.mean[1, 3]) / views.std[1, 3]
    torch.testing.assert_close(series[:, 2 + 1 * BANDS + 3], expected)


def test_a_future_point_never_changes_earlier_spectral_values():
    views = _views()
    segments = torch.randn(2, 2, 48, generator=torch.Generator().manual_seed(4))
    changed = segments.clone()
    changed[:, :, 30] += 10.0
    before, after = views(segments), views(changed)
    torch.testing.assert_close(before[..., :30], after[..., :30])
    assert not torch.allclose(before[:, 2:, 30], after[:, 2:, 30])


def test_the_time_view_alone_leaves_segments_as_they_are(tmp_path):
    dataset = open_dataset(write_small_dataset(tmp_path / "data"))
    views = fit_views(DataConfig(), dataset.split("train"), dataset.normalization)
    segments = torch.randn(2, 2, SEGMENT_LENGTH)
    assert views(segments) is segments and views.series_count(2) == 2 and not views.spectral


def test_fitted_statistics_standardise_the_training_split(tmp_path):
    # A 4-point window measures its statistics at every point (hop = window / 4 = 1), so the training
    # split's spectral series have mean 0 and std 1 exactly.
    dataset = open_dataset(write_small_dataset(tmp_path / "data"))
    config = DataConfig(views=["time", "spectrum"], spectrum_window=4, spectrum_bands=2)
    views = fit_views(config, dataset.split("train"), dataset.normalization)
    assert views.mean.shape == views.std.shape == (2, 2)
    train = torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 12))
    spectral = views(train)[:, 2:].double()
    np.testing.assert_allclose(spectral.mean(dim=(0, 2)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(spectral.std(dim=(0, 2), correction=0).numpy(), 1.0, rtol=1e-4)


def test_a_constant_channel_gives_zero_spectral_series_not_a_division_by_zero(tmp_path):
    writer = DatasetWriter(tmp_path / "data", 32, ["live", "frozen"], sampling_rate_hz=1.0)
    segments = writer.add_split("train", 4).segments
    segments[:, 0] = np.random.default_rng(0).normal(size=(4, 32))
    segments[:, 1] = 7.0
    writer.add_split("val", 1, label_level="segment")
    writer.finish()
    dataset = open_dataset(tmp_path / "data")
    config = DataConfig(views=["time", "spectrum"], spectrum_window=8, spectrum_bands=2)
    views = fit_views(config, dataset.split("train"), dataset.normalization)
    torch.testing.assert_close(views.std[1], torch.ones(2))
    series = views(torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 4)))
    assert torch.isfinite(series).all() and torch.equal(series[:, 4:], torch.zeros(4, 2, 32))


def test_the_view_is_computed_on_the_segments_device(tmp_path):
    dataset = open_dataset(write_small_dataset(tmp_path / "data"))
    config = DataConfig(views=["time", "spectrum"], spectrum_window=8, spectrum_bands=2)
    segments = torch.randn(2, 2, SEGMENT_LENGTH)
    with default_device_elsewhere():
        views = fit_views(config, dataset.split("train"), dataset.normalization)
        series = views(segments)
    assert series.device == segments.device and torch.isfinite(series).all()


def test_a_window_longer_than_the_shortest_crop_names_the_field():
    config = DataConfig(views=["time", "spectrum"], spectrum_window=64, crop_schedule="half_then_full")
    check_spectrum_window(config, 128)  # crops of 64 and 128 points
    with pytest.raises(ValueError, match=r"field data.spectrum_window: 64 points, longer than the shortest crop \(32"):
        check_spectrum_window(config, 64)
    check_spectrum_window(config.model_copy(update={"views": ["time"]}), 64)  # no spectral view, no window


# The residual view: a cross-channel relation of normal data, broken.

RESIDUAL_LENGTH = 64


def _write_channels(directory, train: np.ndarray, names: list[str], runs: np.ndarray | None = None):
    """A dataset whose training split holds `train` [N, C, L] (of run ids `runs`) and a one-segment validation
    split."""
    writer = DatasetWriter(directory, train.shape[-1], names, sampling_rate_hz=1.0)
    arrays = writer.add_split("train", len(train), with_runs=runs is not None)
    arrays.segments[:] = train
    if runs is not None:
        arrays.runs[:] = runs
    writer.add_split("val", 1, label_level="segment")
    writer.finish()
    return open_dataset(directory)


def _cancelling_pair(count: int, noise: float, seed: int = 0) -> np.ndarray:
    """Two channels that cancel up to a little noise: b = -a + noise; [count, 2, RESIDUAL_LENGTH]."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(count, RESIDUAL_LENGTH)).cumsum(axis=1)
    return np.stack([a, -a + noise * rng.normal(size=a.shape)], axis=1)


def test_two_cancelling_channels_give_one_residual_series_along_their_sum(tmp_path):
    # Noise large enough that the relation's variance is above the floor, small enough to be a residual.
    dataset = _write_channels(tmp_path / "data", _cancelling_pair(12, noise=0.2), ["a", "b"])
    views = fit_views(DataConfig(views=["time", "residual"]), dataset.split("train"), dataset.normalization)
    assert views.residual_series == 1 and views.series_count(2) == 3
    # Normalised, the channels are a' and about -a': they cancel along (1, 1) / sqrt(2).
    direction = views.projection[0, :, 0] / views.projection[0, :, 0].norm()
    torch.testing.assert_close(direction.abs(), torch.full((2,), 0.5**0.5), atol=1e-3, rtol=0)
    assert torch.sign(direction[0]) == torch.sign(direction[1])
    # On the training split the residual series is the relation's noise scaled to mean 0 and variance 1.
    train = torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 12))
    series = views(train)
    torch.testing.assert_close(series[:, :2], train)
    residual = series[:, 2].double()
    assert abs(residual.mean().item()) < 1e-4 and abs(residual.std(correction=0).item() - 1.0) < 1e-3
    # Hand-computed value of one point: direction . (x - mean) / std over the training vectors.
    vectors = train.permute(0, 2, 1).reshape(-1, 2).double()
    mean = vectors.mean(dim=0)
    std = ((vectors - mean) @ direction.double()).std(correction=0)
    expected = (train[3, :, 10].double() - mean) @ direction.double() / std
    torch.testing.assert_close(series[3, 2, 10].double(), expected, atol=1e-4, rtol=1e-4)


def test_a_broken_relation_stands_out_of_the_residual_series_while_each_channel_looks_normal(tmp_path):
    dataset = _write_channels(tmp_path / "data", _cancelling_pair(12, noise=0.01), ["a", "b"])
    views = fit_views(DataConfig(views=["time", "residual"]), dataset.split("train"), dataset.normalization)
    segment = torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 1)).clone()
    broken = segment.clone()
    broken[:, 1, 32:] *= 0.9  # channel b loses a tenth of its amplitude: well inside its normal range
    before, after = views(segment)[0, 2], views(broken)[0, 2]
    torch.testing.assert_close(after[:32], before[:32])
    assert after[32:].abs().mean() > 10 * before[32:].abs().mean()


@pytest.mark.parametrize(
    "train, names",
    [
        (np.random.default_rng(1).normal(size=(6, 2, RESIDUAL_LENGTH)), ["x", "y"]),  # independent channels
        (np.random.default_rng(2).normal(size=(6, 1, RESIDUAL_LENGTH)), ["x"]),  # one channel
    ],
)
def test_channels_without_a_cancelling_relation_get_no_residual_series(tmp_path, train, names):
    dataset = _write_channels(tmp_path / "data", train, names)
    views = fit_views(DataConfig(views=["time", "residual"]), dataset.split("train"), dataset.normalization)
    segments = torch.randn(2, len(names), RESIDUAL_LENGTH)
    assert views.residual_series == 0 and views(segments) is segments


def test_an_exact_relation_is_scaled_by_the_floor_and_a_constant_channel_is_left_out(tmp_path):
    train = _cancelling_pair(6, noise=0.0)  # b = -a exactly
    train = np.concatenate([train, np.full((6, 1, RESIDUAL_LENGTH), 4.0)], axis=1)  # and a constant channel
    dataset = _write_channels(tmp_path / "data", train, ["a", "b", "frozen"])
    views = fit_views(DataConfig(views=["time", "residual"]), dataset.split("train"), dataset.normalization)
    # One series: the pair's sum. The constant channel relates to nothing and takes no part in it.
    assert views.residual_series == 1 and views.projection[0, 2, 0] == 0.0
    series = views(torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 6)))
    assert torch.isfinite(series).all() and series[:, 3].abs().max() < 1e-2
    # Scaled by the floor: a unit departure along the direction reads 1 / sqrt(MIN_RESIDUAL_VARIANCE times
    # the mean variance of the channels that vary), here 1 / sqrt(1e-4 * 1) = 100.
    torch.testing.assert_close(views.projection[0].norm(dim=0), torch.tensor([100.0]), rtol=1e-3, atol=0)


def test_a_pair_of_which_one_channel_is_constant_has_nothing_to_relate(tmp_path):
    rng = np.random.default_rng(3)
    train = np.stack([rng.normal(size=(6, RESIDUAL_LENGTH)), np.full((6, RESIDUAL_LENGTH), -2.0)], axis=1)
    dataset = _write_channels(tmp_path / "data", train, ["live", "frozen"])
    views = fit_views(DataConfig(views=["time", "residual"]), dataset.split("train"), dataset.normalization)
    assert views.residual_series == 0


def test_residual_series_follow_the_spectral_ones(tmp_path):
    dataset = _write_channels(tmp_path / "data", _cancelling_pair(8, noise=0.01), ["a", "b"])
    config = DataConfig(views=["time", "spectrum", "residual"], spectrum_window=8, spectrum_bands=2)
    views = fit_views(config, dataset.split("train"), dataset.normalization)
    segments = torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 3))
    series = views(segments)
    assert series.shape == (3, 2 + 2 * 2 + 1, RESIDUAL_LENGTH) == (3, views.series_count(2), RESIDUAL_LENGTH)
    only_spectrum = fit_views(
        config.model_copy(update={"views": ["time", "spectrum"]}), dataset.split("train"), dataset.normalization
    )
    only_residual = fit_views(
        config.model_copy(update={"views": ["time", "residual"]}), dataset.split("train"), dataset.normalization
    )
    torch.testing.assert_close(series[:, :6], only_spectrum(segments))
    torch.testing.assert_close(series[:, 6:], only_residual(segments)[:, 2:])


def test_the_residual_view_is_computed_on_the_segments_device(tmp_path):
    dataset = _write_channels(tmp_path / "data", _cancelling_pair(6, noise=0.01), ["a", "b"])
    segments = torch.randn(2, 2, RESIDUAL_LENGTH)
    with default_device_elsewhere():
        views = fit_views(DataConfig(views=["time", "residual"]), dataset.split("train"), dataset.normalization)
        series = views(segments)
    assert series.device == segments.device and series.shape == (2, 3, RESIDUAL_LENGTH)


# Per run: machines whose channels relate in their own ways.


def _two_machines(count: int, length: int = RESIDUAL_LENGTH, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Three channels of two machines, `count` segments each, and their run ids (0, then 1). Machine 0's
    channels 1 and 2 both follow -a, two relations; machine 1's channel 1 follows +a and channel 2 is
    independent, one relation. Pooled, neither machine's relations hold."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, count, length)).cumsum(axis=2)
    noise = 0.5 * rng.normal(size=(2, 2, count, length))
    first = np.stack([a[0], -a[0] + noise[0, 0], -a[0] + noise[0, 1]], axis=1)
    second = np.stack([a[1], a[1] + noise[1, 0], 3 * rng.normal(size=(count, length))], axis=1)
    return np.concatenate([first, second]), np.repeat([0, 1], count)


def test_each_run_is_projected_on_the_relations_of_its_own_normal_data(tmp_path):
    train, runs = _two_machines(8)
    dataset = _write_channels(tmp_path / "data", train, ["a", "b", "c"], runs)
    split = dataset.split("train")
    config = DataConfig(views=["time", "residual"], residual_reference="run")
    views = fit_views(config, split, dataset.normalization)
    # Two series: machine 0 has two relations, machine 1 one, and its second series is zero.
    assert views.residual_series == 2 and views.runs_with_own_residual == 2
    fit_0, fit_1 = (views.projection[int(views.run_fits[run])].double() for run in (0, 1))
    # Machine 0's channels follow a, -a, -a: its directions are orthogonal to (1, -1, -1), the one it moves along.
    moving = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64) / 3**0.5
    assert (moving @ (fit_0 / fit_0.norm(dim=0))).abs().max() < 0.05
    # Machine 1's a and b = a cancel along (1, -1, 0) / sqrt(2) (the channels share one normalisation).
    along = fit_1[:, 0] / fit_1[:, 0].norm()
    assert abs(along @ torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / 2**0.5) > 0.99
    segments = torch.from_numpy(normalized_segments(split, dataset.normalization, 0, len(split)))
    own = views(segments, torch.from_numpy(runs))[:, 3:].double()
    assert own[8:, 1].abs().max() == 0
    # On each machine's own training data its residual series are unit noise about 0.
    for machine, series in ((0, own[:8]), (1, own[8:, :1])):
        spread = series.transpose(0, 1).reshape(series.shape[1], -1).std(dim=1, correction=0)
        torch.testing.assert_close(spread, torch.ones_like(spread), atol=1e-3, rtol=0, msg=f"machine {machine}")
    # Machine 1's relation broken the way machine 0 behaves (b = -a) stands out of its own series.
    broken = segments[8:9].clone()
    broken[:, 1] = -broken[:, 0]
    intact = views(segments[8:9], torch.tensor([1]))[0, 3].abs().mean()
    assert views(broken, torch.tensor([1]))[0, 3].abs().mean() > 5 * intact


def test_a_run_without_its_own_fit_uses_the_whole_training_split(tmp_path):
    train, runs = _two_machines(8)
    dataset = _write_channels(tmp_path / "data", train, ["a", "b", "c"], runs)
    split = dataset.split("train")
    pooled = fit_views(DataConfig(views=["time", "residual"]), split, dataset.normalization)
    per_run = fit_views(DataConfig(views=["time", "residual"], residual_reference="run"), split, dataset.normalization)
    segments = torch.randn(3, 3, RESIDUAL_LENGTH)
    expected = pooled(segments)
    width = expected.shape[1]
    # Run ids the training split has no data of, a normal file's id and no run ids at all: fit 0, the pooled one.
    for runs in (torch.tensor([2, 7, -1]), None):
        series = per_run(segments, runs)
        torch.testing.assert_close(series[:, :width], expected)
        assert series[:, width:].abs().max() == 0


def test_a_run_whose_channels_hold_no_relation_gets_zero_series_not_the_other_runs_relations(tmp_path):
    train, runs = _two_machines(8)
    rng = np.random.default_rng(6)
    independent = 3 * rng.normal(size=(4, 3, RESIDUAL_LENGTH))  # run 2: three unrelated channels
    train, runs = np.concatenate([train, independent]), np.concatenate([runs, [2, 2, 2, 2]])
    dataset = _write_channels(tmp_path / "data", train, ["a", "b", "c"], runs)
    views = fit_views(
        DataConfig(views=["time", "residual"], residual_reference="run"), dataset.split("train"), dataset.normalization
    )
    assert views.runs_with_own_residual == 3 and views.run_fits.tolist() == [1, 2, 3]
    segments = torch.randn(2, 3, RESIDUAL_LENGTH)
    assert views(segments, torch.tensor([2, 2]))[:, 3:].abs().max() == 0


def test_a_run_with_too_few_normal_points_gets_no_fit_of_its_own(tmp_path):
    train, runs = _two_machines(8, length=8)
    runs[8:] = np.array([1, 2, 2, 2, 2, 2, 2, 2])  # run 1: one segment, 8 points for 3 channels, < 10 each
    dataset = _write_channels(tmp_path / "data", train, ["a", "b", "c"], runs)
    views = fit_views(
        DataConfig(views=["time", "residual"], residual_reference="run"), dataset.split("train"), dataset.normalization
    )
    assert views.runs_with_own_residual == 2 and views.run_fits.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match=r"runs: expected one run id per segment \(2\)"):
        views(torch.randn(2, 3, 8), torch.tensor([0, 1, 2]))


def test_views_are_described_with_the_series_they_add(tmp_path):
    train, runs = _two_machines(8)
    dataset = _write_channels(tmp_path / "data", train, ["a", "b", "c"], runs)
    split = dataset.split("train")
    config = DataConfig(views=["time", "spectrum", "residual"], spectrum_window=8, spectrum_bands=2)
    pooled = fit_views(config, split, dataset.normalization)
    per_run = fit_views(config.model_copy(update={"residual_reference": "run"}), split, dataset.normalization)
    plain = DataConfig()
    assert describe_views(fit_views(plain, split, dataset.normalization), plain) == "time"
    spectrum = f"spectrum (2 bands over 8 points), residual ({pooled.residual_series} cross-channel series)"
    assert describe_views(pooled, config) == f"time, {spectrum}"
    assert describe_views(per_run, config) == (
        "time, spectrum (2 bands over 8 points), residual (2 cross-channel series; each of 2 runs on its own "
        "normal data's)"
    )
