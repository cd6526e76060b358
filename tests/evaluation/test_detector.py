"""The model's scoring rule: reference statistics from held-out normal data, components, their combination."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.model.tiny import TINY
from tsmoe.data.config import DataConfig
from tsmoe.data.loader import normalized_segments
from tsmoe.data.store import DatasetWriter, open_dataset
from tsmoe.data.views import fit_views
from tsmoe.evaluation import detector as detector_module
from tsmoe.evaluation.baselines import build_baselines
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.detector import ModelDetector, candidate_point_scores, joint_states, reference_split
from tsmoe.evaluation.distances import NearestNeighbourDistance
from tsmoe.evaluation.evaluate import baseline_point_scores, measure
from tsmoe.evaluation.scoring import (
    ErrorStatistics,
    forecast_errors,
    forecast_errors_and_states,
    reconstruction_errors,
)
from tsmoe.evaluation.smoothing import smooth_points
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE

LENGTH = 16


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TimeMoE(TimeMoEConfig(**TINY)).eval()


def _dataset(directory, holdout=True):
    rng = np.random.default_rng(0)
    writer = DatasetWriter(directory, LENGTH, ["a", "b"], sampling_rate_hz=1.0)
    writer.add_split("train", 6).segments[:] = rng.normal(size=(6, 2, LENGTH))
    if holdout:
        # Held-out normal data twice as noisy as training: its statistics must be the ones used.
        writer.add_split("holdout", 6).segments[:] = 2 * rng.normal(size=(6, 2, LENGTH))
    val = writer.add_split("val", 4, label_level="segment", with_runs=True, with_starts=True)
    val.segments[:] = rng.normal(size=(4, 2, LENGTH))
    val.labels[:] = [0, 0, 1, 1]
    val.runs[:] = [0, 0, 1, 1]
    val.starts[:] = [0, 4, 0, 4]
    writer.run_names = ["normal.csv", "faulty.csv"]
    writer.finish()
    return open_dataset(directory)


def test_error_statistics_per_channel_and_context_bucket():
    errors = np.full((2, 1, 4), np.nan)
    errors[:, 0, 1:] = [[1.0, 2.0, 4.0], [3.0, 6.0, 8.0]]
    statistics = ErrorStatistics.from_errors(errors)
    # Buckets: position 1 -> 0, positions 2-3 -> 1.
    np.testing.assert_allclose(statistics.mean, [[2.0, 5.0]])
    np.testing.assert_allclose(statistics.std, [[1.0, np.std([2.0, 4.0, 6.0, 8.0])]])


def test_reference_is_the_holdout_split_when_present(tmp_path):
    with_holdout = _dataset(tmp_path / "a")
    assert reference_split(with_holdout, EvaluationConfig()).name == "holdout"
    assert reference_split(with_holdout, EvaluationConfig(statistics_split="train")).name == "train"
    assert reference_split(_dataset(tmp_path / "b", holdout=False), EvaluationConfig()).name == "train"


@pytest.mark.parametrize(
    "weights",
    [
        {},
        {"error_direction": "both"},
        {"forecast_weight": 0.0, "cross_channel_weight": 1.0},
        {"forecast_weight": 0.0, "density_weight": 1.0},
        {"forecast_weight": 0.0, "density_weight": 1.0, "density_method": "nearest_neighbours"},
        {"forecast_weight": 0.0, "density_weight": 1.0, "density_scope": "joint"},
        {"cross_channel_weight": 2.0, "density_weight": 0.5},
    ],
    ids=["forecast", "both_directions", "cross_channel", "density", "density_neighbours", "density_joint", "all"],
)
def test_every_component_is_standardised_on_the_reference(tmp_path, model, weights):
    dataset = _dataset(tmp_path / "data")
    detector = ModelDetector(model, dataset, EvaluationConfig(batch_size=4, **weights))
    scores = detector.score(dataset.split("holdout"))
    assert scores.shape == (6, LENGTH) and np.isnan(scores[:, 0]).all()
    components = sum(
        weight > 0
        for weight in [
            detector.config.forecast_weight,
            detector.config.cross_channel_weight,
            detector.config.density_weight,
        ]
    )
    if components == 1:
        assert np.nanmean(scores) == pytest.approx(0.0, abs=1e-5)
        assert np.nanstd(scores) == pytest.approx(1.0, rel=1e-4)
    # Training data is half as noisy as the reference: its forecast errors score below normal.
    if weights == {}:
        assert np.nanmean(detector.score(dataset.split("train"))) < -0.3


@pytest.mark.parametrize("layer", ["final", 0, 1])
def test_joint_density_scores_channel_states_side_by_side(tmp_path, model, layer):
    dataset = _dataset(tmp_path / "data")
    config = EvaluationConfig(
        batch_size=4,
        forecast_weight=0.0,
        density_weight=1.0,
        density_scope="joint",
        density_method="nearest_neighbours",
        density_layer=layer,
    )
    detector = ModelDetector(model, dataset, config)
    assert len(detector.state_models) == 1
    train = torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 6))
    _, train_states = forecast_errors_and_states(model, train, [1], state_layer=layer)
    expected_model = NearestNeighbourDistance(5, 8192).fit(
        joint_states(train_states.numpy()).reshape(-1, 2 * TINY["hidden_size"])
    )
    val = torch.from_numpy(normalized_segments(dataset.split("val"), dataset.normalization, 0, 4))
    _, val_states = forecast_errors_and_states(model, val, [1], state_layer=layer)
    raw = expected_model.score(joint_states(val_states.numpy()))
    raw[:, 0] = np.nan
    expected = (raw - detector.location["density"]) / detector.scale["density"]
    np.testing.assert_allclose(detector.score(dataset.split("val")), expected, rtol=1e-4, atol=1e-5)


def test_a_detector_of_input_embedding_density_alone_runs_no_decoder_layer(tmp_path, model, monkeypatch):
    dataset = _dataset(tmp_path / "data")
    config = EvaluationConfig(batch_size=4, forecast_weight=0.0, density_weight=1.0, density_layer=0)
    # The same density from a detector that also runs the forecast pass (for a negligible cross-channel weight).
    with_forward = ModelDetector(model, dataset, config.model_copy(update={"cross_channel_weight": 1e-9}))
    density = with_forward.standardized_components(dataset.split("val"))["density"]
    forward_calls = []
    monkeypatch.setattr(model, "forward", lambda *arguments, **keywords: forward_calls.append(1))
    detector = ModelDetector(model, dataset, config)
    scores = detector.score(dataset.split("val"))
    assert forward_calls == [] and detector.statistics is None
    np.testing.assert_allclose(scores, detector.combine({"density": density}), rtol=1e-5, atol=1e-6)


def test_joint_states_put_channels_side_by_side():
    states = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)  # [N, C, L, H]
    joint = joint_states(states)
    assert joint.shape == (2, 4, 15)
    np.testing.assert_array_equal(joint[1, 2], np.concatenate([states[1, channel, 2] for channel in range(3)]))


def test_both_directions_scores_the_absolute_z(tmp_path, model):
    dataset = _dataset(tmp_path / "data")
    upper = ModelDetector(model, dataset, EvaluationConfig(batch_size=4))
    both = ModelDetector(model, dataset, EvaluationConfig(batch_size=4, error_direction="both"))
    segments = torch.from_numpy(normalized_segments(dataset.split("val"), dataset.normalization, 0, 4))
    errors_z = upper.statistics.normalize(forecast_errors(model, segments, [1]).numpy())
    expected = np.abs(errors_z).mean(axis=1)
    expected = (expected - both.location["forecast"]) / both.scale["forecast"]
    np.testing.assert_allclose(both.score(dataset.split("val")), expected, rtol=1e-4, atol=1e-5)


def test_both_directions_with_smoothing_scores_the_absolute_mean_z_over_the_window(tmp_path, model):
    # The window's mean z, then its absolute value: a stretch of errors all below normal scores high, and
    # normal points whose z-scores scatter on both sides of 0 cancel instead of adding up.
    dataset = _dataset(tmp_path / "data")
    config = EvaluationConfig(batch_size=4, error_direction="both", smoothing_window=4)
    both = ModelDetector(model, dataset, config)
    segments = torch.from_numpy(normalized_segments(dataset.split("val"), dataset.normalization, 0, 4))
    z = both.statistics.normalize(forecast_errors(model, segments, [1]).numpy())  # [4, 2, LENGTH]
    windowed = np.full_like(z, np.nan)
    for position in range(LENGTH):  # centred window of 4: one point before, two after (NaN left out)
        window = z[:, :, max(position - 1, 0) : position + 3]
        windowed[:, :, position] = np.nanmean(window, axis=2)
    raw = np.abs(windowed).mean(axis=1)
    standardised = (raw - both.location["forecast"]) / both.scale["forecast"]
    expected = np.full_like(standardised, np.nan)
    for position in range(LENGTH):  # the combined score is smoothed over the same window
        expected[:, position] = np.nanmean(standardised[:, max(position - 1, 0) : position + 3], axis=1)
    np.testing.assert_allclose(both.score(dataset.split("val")), expected, rtol=1e-4, atol=1e-5)
    # A stretch forecast far better than normal: every z is -1, which |z| per point would score as +1
    # exactly as a stretch of errors above normal; here the stretch of -1 scores 1 while alternating
    # -1, +1 (normal scatter) scores 0.
    alternating = np.tile([-1.0, 1.0], (1, 1, LENGTH // 2))
    flat = np.full((1, 1, LENGTH), -1.0)
    assert np.allclose(both._forecast_deviation(flat)[0, 0, 1:-2], 1.0)
    assert np.allclose(both._forecast_deviation(alternating)[0, 0, 1:-2], 0.0)


@pytest.mark.parametrize("context_window", [None, 4])
def test_with_a_context_window_a_spike_stops_shaping_the_scores_of_the_points_after_its_reach(
    tmp_path, model, context_window
):
    rng = np.random.default_rng(0)
    writer = DatasetWriter(tmp_path / "data", LENGTH, ["a", "b"], sampling_rate_hz=1.0)
    writer.add_split("train", 6).segments[:] = rng.normal(size=(6, 2, LENGTH))
    val = writer.add_split("val", 2, label_level="segment")
    clean = rng.normal(size=(2, LENGTH))
    val.segments[:] = clean
    val.segments[1, 0, 2] += 5.0  # the same segment with a spike at point 2
    val.labels[:] = [0, 1]
    writer.finish()
    dataset = open_dataset(tmp_path / "data")
    config = EvaluationConfig(
        batch_size=4, density_weight=1.0, density_method="nearest_neighbours", context_window=context_window
    )
    scores = ModelDetector(model, dataset, config).score(dataset.split("val"))
    # Head 1 forecasts point t from the state at t - 1, which the spike reaches up to 2 + layers * (window - 1).
    after = 2 + TINY["num_hidden_layers"] * 3 + 2
    if context_window is None:
        assert np.abs(scores[1, after:] - scores[0, after:]).max() > 1e-3
    else:
        np.testing.assert_allclose(scores[1, after:], scores[0, after:], rtol=1e-5, atol=1e-6)
        assert np.abs(scores[1, after - 1] - scores[0, after - 1]) > 1e-3


def test_files_labelled_whole_are_measured_at_run_level(tmp_path, model):
    dataset = _dataset(tmp_path / "data")
    split = dataset.split("val")
    scores = np.zeros((4, LENGTH))
    scores[2:] = 1.0  # the faulty file's windows score higher
    result = measure("detector", scores, split, EvaluationConfig())
    assert result.headline[0] == "run" and result.run.auroc == 1.0 and result.run.groups_scored == 1
    assert [row["level"] for row in result.rows()] == ["segment", "run"]


def _spectral_views(dataset):
    config = DataConfig(views=["time", "spectrum"], spectrum_window=4, spectrum_bands=2)
    return fit_views(config, dataset.split("train"), dataset.normalization)


def test_a_model_trained_with_the_spectral_view_is_scored_over_every_series(tmp_path, model):
    dataset = _dataset(tmp_path / "data")
    views = _spectral_views(dataset)
    detector = ModelDetector(model, dataset, EvaluationConfig(batch_size=4), views=views)
    assert detector.statistics.mean.shape[0] == 2 * (1 + 2)  # error statistics for each of the 6 series
    segments = views(torch.from_numpy(normalized_segments(dataset.split("val"), dataset.normalization, 0, 4)))
    z = detector.statistics.normalize(forecast_errors(model, segments, [1]).numpy())
    expected = (z.mean(axis=1) - detector.location["forecast"]) / detector.scale["forecast"]
    scores = detector.score(dataset.split("val"))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    time_only = ModelDetector(model, dataset, EvaluationConfig(batch_size=4)).score(dataset.split("val"))
    assert not np.allclose(scores[:, 1:], time_only[:, 1:])


@pytest.mark.parametrize("scope", ["channel", "joint"])
def test_cross_channel_and_density_scores_run_over_the_spectral_series(tmp_path, model, scope):
    dataset = _dataset(tmp_path / "data")
    config = EvaluationConfig(batch_size=4, cross_channel_weight=1.0, density_weight=1.0, density_scope=scope)
    detector = ModelDetector(model, dataset, config, views=_spectral_views(dataset))
    assert detector.cross_channel.score(np.zeros((1, 1, 6))).shape == (1, 1)  # a distance over 6 series
    assert len(detector.state_models) == (1 if scope == "joint" else 6)
    scores = detector.score(dataset.split("val"))
    assert scores.shape == (4, LENGTH) and np.isfinite(scores[:, 1:]).all()


@pytest.fixture
def reconstruction_model():
    torch.manual_seed(0)
    config = TimeMoEConfig(**TINY, reconstruction_head=True, reconstruction_mask_ratio=0.25, reconstruction_mask_span=2)
    return TimeMoE(config).eval()


@pytest.mark.parametrize(
    "weights",
    [{"forecast_weight": 0.0, "reconstruction_weight": 1.0}, {"reconstruction_weight": 0.5}],
    ids=["reconstruction", "with_forecast"],
)
def test_the_reconstruction_component_is_standardised_on_the_reference(tmp_path, reconstruction_model, weights):
    dataset = _dataset(tmp_path / "data")
    detector = ModelDetector(reconstruction_model, dataset, EvaluationConfig(batch_size=4, **weights))
    scores = detector.score(dataset.split("holdout"))
    assert scores.shape == (6, LENGTH) and np.isnan(scores[:, 0]).all() and np.isfinite(scores[:, 1:]).all()
    if "forecast_weight" in weights:
        assert np.nanmean(scores) == pytest.approx(0.0, abs=1e-5)
        assert np.nanstd(scores) == pytest.approx(1.0, rel=1e-4)


def test_the_reconstruction_score_is_the_channel_z_of_each_hidden_points_error(tmp_path, reconstruction_model):
    dataset = _dataset(tmp_path / "data")
    config = EvaluationConfig(batch_size=4, forecast_weight=0.0, reconstruction_weight=1.0, channel_aggregate="max")
    detector = ModelDetector(reconstruction_model, dataset, config)
    holdout = torch.from_numpy(normalized_segments(dataset.split("holdout"), dataset.normalization, 0, 6))
    reference = reconstruction_errors(reconstruction_model, holdout).numpy().astype(np.float64)
    mean, std = reference.mean(axis=(0, 2)), reference.std(axis=(0, 2))
    val = torch.from_numpy(normalized_segments(dataset.split("val"), dataset.normalization, 0, 4))
    raw = ((reconstruction_errors(reconstruction_model, val).numpy() - mean[:, None]) / std[:, None]).max(axis=1)
    raw[:, 0] = np.nan
    expected = (raw - detector.location["reconstruction"]) / detector.scale["reconstruction"]
    np.testing.assert_allclose(detector.score(dataset.split("val")), expected, rtol=1e-4, atol=1e-5)


def test_a_reconstruction_weight_for_a_model_without_the_path_is_refused_naming_the_field(tmp_path, model):
    dataset = _dataset(tmp_path / "data")
    with pytest.raises(ValueError, match=r"evaluation\.reconstruction_weight is 1\.0 .*no reconstruction path"):
        ModelDetector(model, dataset, EvaluationConfig(reconstruction_weight=1.0))


def test_candidates_alike_but_for_their_weights_share_one_detector_and_score_as_each_alone(
    tmp_path, model, monkeypatch
):
    dataset = _dataset(tmp_path / "data")
    section = EvaluationConfig(
        batch_size=4,
        error_direction="both",
        density_weight=1.0,
        density_method="nearest_neighbours",
        density_scope="joint",
        smoothing_window=3,
        alternatives=[
            {"density_weight": 0.0},
            {"forecast_weight": 0.0},
            {"forecast_weight": 0.0, "density_layer": 0},
            # The density alone only smooths its sum: another window shares the section's detector.
            {"forecast_weight": 0.0, "smoothing_window": 5},
            # Forecast deviation in both directions is a window's mean z: another window needs its own.
            {"density_weight": 0.0, "smoothing_window": 5},
        ],
    )
    candidates = section.candidates()
    built = []
    build = ModelDetector.__init__

    def counted(self, *arguments, **keywords):
        built.append(arguments[2])
        build(self, *arguments, **keywords)

    monkeypatch.setattr(ModelDetector, "__init__", counted)
    shared = candidate_point_scores(model, dataset, dataset.split("val"), candidates)
    monkeypatch.undo()
    # The final-state candidates share one detector computing both components; the embedding's is apart, and so
    # is the forecast deviation over another window.
    assert [
        (config.forecast_weight, config.density_weight, config.density_layer, config.smoothing_window)
        for config in built
    ] == [(1.0, 1.0, "final", 3), (0.0, 1.0, 0, 3), (1.0, 0.0, "final", 5)]
    for scores, candidate in zip(shared, candidates, strict=True):
        alone = ModelDetector(model, dataset, candidate).score(dataset.split("val"))
        np.testing.assert_allclose(scores, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(shared[1], shared[2], equal_nan=True)
    assert not np.allclose(shared[2], shared[4], equal_nan=True)


def test_a_detector_refuses_a_forecast_deviation_over_another_window(tmp_path, model):
    dataset = _dataset(tmp_path / "data")
    detector = ModelDetector(model, dataset, EvaluationConfig(batch_size=4, error_direction="both", smoothing_window=3))
    components = detector.standardized_components(dataset.split("val"))
    with pytest.raises(ValueError, match="window of 3 points, not 5"):
        detector.combine(components, EvaluationConfig(error_direction="both", smoothing_window=5))
    # Summed components alone (upper direction) may be smoothed over any window.
    upper = EvaluationConfig(batch_size=4, smoothing_window=3)
    detector = ModelDetector(model, dataset, upper)
    components = detector.standardized_components(dataset.split("val"))
    unsmoothed = detector.combine(components, upper.model_copy(update={"smoothing_window": 1}))
    np.testing.assert_allclose(
        detector.combine(components, upper.model_copy(update={"smoothing_window": 5})), smooth_points(unsmoothed, 5)
    )


def test_a_detector_cannot_weigh_a_component_it_did_not_compute(tmp_path, model):
    dataset = _dataset(tmp_path / "data")
    detector = ModelDetector(model, dataset, EvaluationConfig(batch_size=4))
    components = detector.standardized_components(dataset.split("val"))
    with pytest.raises(ValueError, match="computed no density component"):
        detector.combine(components, EvaluationConfig(density_weight=1.0))


def _dataset_with_run_prefixes(directory):
    """Two labelled runs at different operating points, each with training windows cut from its own normal rows
    (beside a normal file's); each run's evaluated segments repeat a training window: first its own, then the
    other run's."""
    rng = np.random.default_rng(1)
    writer = DatasetWriter(directory, LENGTH, ["a", "b"], sampling_rate_hz=1.0)
    train = writer.add_split("train", 6, with_runs=True)
    train.segments[:] = rng.normal(size=(6, 2, LENGTH)) + np.array([0, 0, 3, 3, -3, -3])[:, None, None]
    train.runs[:] = [-1, -1, 0, 0, 1, 1]
    val = writer.add_split("val", 4, label_level="segment", with_runs=True, with_starts=True)
    val.segments[:] = train.segments[[2, 4, 4, 2]]
    val.labels[:] = [0, 1, 0, 1]
    val.runs[:] = [0, 0, 1, 1]
    val.starts[:] = [0, 4, 0, 4]
    writer.run_names = ["a.csv", "b.csv"]
    writer.finish()
    return open_dataset(directory)


def test_under_normal_reference_run_a_run_is_measured_against_its_own_normal_states(tmp_path, model):
    dataset = _dataset_with_run_prefixes(tmp_path / "data")
    config = EvaluationConfig(
        batch_size=4,
        forecast_weight=0.0,
        density_weight=1.0,
        density_scope="joint",
        density_method="nearest_neighbours",
        density_neighbours=1,
    )
    val = dataset.split("val")

    def raw_density(detector):
        return detector.score(val) * detector.scale["density"] + detector.location["density"]

    # Against all training states every evaluated segment is a training window: no distance anywhere.
    everyone = ModelDetector(model, dataset, config)
    assert everyone.run_state_models == {}
    np.testing.assert_allclose(raw_density(everyone)[:, 1:], 0.0, atol=1e-3)
    # Against its own run's: its own window is still at distance 0, the other run's window is far.
    own = ModelDetector(model, dataset, config.model_copy(update={"normal_reference": "run"}))
    train = torch.from_numpy(normalized_segments(dataset.split("train"), dataset.normalization, 0, 6))
    _, train_states = forecast_errors_and_states(model, train, [1])
    scored = torch.from_numpy(normalized_segments(val, dataset.normalization, 0, 4))
    _, val_states = forecast_errors_and_states(model, scored, [1])
    width = 2 * TINY["hidden_size"]
    density = raw_density(own)
    assert sorted(own.run_state_models) == [0, 1]  # fitted as each run was first scored
    # Run 0's second segment is run 1's window (training segments 4-5 are run 1's), and the other way round.
    for own_windows, other in ((slice(2, 4), 1), (slice(4, 6), 3)):
        reference = NearestNeighbourDistance(1, 8192).fit(
            joint_states(train_states[own_windows].numpy()).reshape(-1, width)
        )
        expected = reference.score(joint_states(val_states[other : other + 1].numpy()))[0]
        np.testing.assert_allclose(density[other, 1:], expected[1:], rtol=1e-4, atol=1e-4)
        assert expected[1:].min() > 1.0
    np.testing.assert_allclose(density[[0, 2], 1:], 0.0, atol=1e-3)


def test_only_the_most_recent_runs_state_models_are_kept_and_scores_do_not_change(tmp_path, model, monkeypatch):
    dataset = _dataset_with_run_prefixes(tmp_path / "data")
    config = EvaluationConfig(
        batch_size=1,
        forecast_weight=0.0,
        density_weight=1.0,
        density_method="nearest_neighbours",
        normal_reference="run",
    )
    val = dataset.split("val")
    kept_all = ModelDetector(model, dataset, config)
    expected = kept_all.score(val)
    assert list(kept_all.run_state_models) == [0, 1]
    monkeypatch.setattr(detector_module, "RUN_STATE_MODELS_KEPT", 1)
    fitted = []
    collect = ModelDetector._collect

    def counted(self, split, count, first=0):
        fitted.append((split.name, first, count))
        return collect(self, split, count, first)

    monkeypatch.setattr(ModelDetector, "_collect", counted)
    kept_one = ModelDetector(model, dataset, config)
    fitted.clear()
    np.testing.assert_array_equal(kept_one.score(val), expected)
    assert list(kept_one.run_state_models) == [1]
    # Each run's segments lie together in the split, so scoring it fitted each run's own states once
    # (training segments 2-3 are run 0's, 4-5 run 1's).
    assert [call for call in fitted if call[0] == "train"] == [("train", 2, 4), ("train", 4, 6)]


def test_under_normal_reference_run_each_baseline_is_fitted_on_the_runs_own_normal_segments(tmp_path):
    dataset = _dataset_with_run_prefixes(tmp_path / "data")
    config = EvaluationConfig(
        baselines=["moving_variance", "kmeans"], moving_window=4, kmeans_clusters=2, normal_reference="run"
    )
    train, val = dataset.split("train"), dataset.split("val")
    own = baseline_point_scores(dataset, val, config)
    for run_id in (0, 1):
        segments = normalized_segments(train, dataset.normalization, 2 + 2 * run_id, 4 + 2 * run_id)
        for baseline in build_baselines(config):
            baseline.fit(segments)
            expected = baseline.score(normalized_segments(val, dataset.normalization, 2 * run_id, 2 + 2 * run_id))
            np.testing.assert_allclose(own[baseline.name][2 * run_id : 2 + 2 * run_id], expected, rtol=1e-6)
    everyone = baseline_point_scores(dataset, val, config.model_copy(update={"normal_reference": "all"}))
    for baseline in build_baselines(config):
        baseline.fit(normalized_segments(train, dataset.normalization, 0, 6))
        expected = baseline.score(normalized_segments(val, dataset.normalization, 0, 4))
        np.testing.assert_allclose(everyone[baseline.name], expected, rtol=1e-6)
        assert not np.allclose(everyone[baseline.name], own[baseline.name])
