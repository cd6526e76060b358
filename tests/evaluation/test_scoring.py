import numpy as np
import pytest
import torch

from tests.data.conftest import write_small_dataset
from tests.model.tiny import TINY
from tsmoe.data.loader import normalized_segments
from tsmoe.data.store import open_dataset
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.scoring import (
    ChannelStatistics,
    ErrorStatistics,
    channel_scores,
    context_buckets,
    embedding_states,
    forecast_errors,
    forecast_errors_and_states,
    reconstruction_errors,
    training_error_statistics,
)
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TimeMoE(TimeMoEConfig(**TINY)).double().eval()


def brute_force_errors(model, segments, heads, attention_window=None):
    """Point t's error: mean over heads of the mean squared error of every forecast of t, one loop each."""
    batch, channels, length = segments.shape
    predictions = model(segments.reshape(-1, length).double(), attention_window=attention_window).predictions
    series = segments.reshape(-1, length).double()
    expected = np.full((batch * channels, length), np.nan)
    for row in range(batch * channels):
        for point in range(1, length):
            per_head = []
            for head in heads:
                errors = [
                    (predictions[head][row, origin, point - origin - 1] - series[row, point]).item() ** 2
                    for origin in range(max(0, point - head), point)
                ]
                per_head.append(np.mean(errors))
            expected[row, point] = np.mean(per_head)
    return expected.reshape(batch, channels, length)


@pytest.mark.parametrize("heads", [[1], [4], [1, 8]])
def test_forecast_errors_average_every_forecast_of_a_point(tiny_model, heads):
    segments = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    actual = forecast_errors(tiny_model, segments, heads).numpy()
    np.testing.assert_allclose(actual, brute_force_errors(tiny_model, segments, heads), rtol=1e-5, equal_nan=True)


def test_forecast_errors_with_a_context_window_come_from_the_windowed_pass(tiny_model):
    segments = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    windowed, _ = forecast_errors_and_states(tiny_model, segments, [1, 8], context_window=3)
    expected = brute_force_errors(tiny_model, segments, [1, 8], attention_window=3)
    np.testing.assert_allclose(windowed.numpy(), expected, rtol=1e-5, equal_nan=True)
    whole = forecast_errors(tiny_model, segments, [1, 8]).numpy()
    assert not np.allclose(windowed.numpy()[..., 4:], whole[..., 4:])


def test_absolute_error_is_the_root_of_the_squared_one_for_head_one(tiny_model):
    segments = torch.randn(1, 1, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    squared = forecast_errors(tiny_model, segments, [1], "squared").numpy()
    absolute = forecast_errors(tiny_model, segments, [1], "absolute").numpy()
    np.testing.assert_allclose(absolute[..., 1:] ** 2, squared[..., 1:], rtol=1e-5)


def test_unknown_head_names_the_horizons_the_model_has(tiny_model):
    with pytest.raises(ValueError, match=r"no horizon 2 \(it has \[1, 4, 8\]\)"):
        forecast_errors(tiny_model, torch.zeros(1, 1, 8), [2])


def test_density_states_come_from_the_layer_asked_for(tiny_model):
    segments = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    errors, final = forecast_errors_and_states(tiny_model, segments, [1])
    layer_errors, embedding = forecast_errors_and_states(tiny_model, segments, [1], state_layer=0)
    np.testing.assert_array_equal(layer_errors.numpy(), errors.numpy())
    # The input embedding by hand: silu(gate * x) * (weight * x), each point's value alone.
    value = segments.unsqueeze(-1)  # [B, C, L, 1]
    gate = tiny_model.model.embed_layer.gate_layer.weight[:, 0]
    weight = tiny_model.model.embed_layer.emb_layer.weight[:, 0]
    expected = torch.nn.functional.silu(value * gate) * (value * weight)
    np.testing.assert_allclose(embedding.numpy(), expected.detach().numpy(), rtol=1e-6, atol=1e-9)
    assert final.shape == embedding.shape == (2, 3, 12, TINY["hidden_size"])
    assert not np.allclose(final.numpy(), embedding.numpy())
    with pytest.raises(ValueError, match=r"evaluation.density_layer 3: the model has layers 0 \(embedding\) to 2"):
        forecast_errors_and_states(tiny_model, segments, [1], state_layer=3)


def test_embedding_states_are_the_forward_pass_layer_0_states_without_it(tiny_model, monkeypatch):
    segments = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(5))
    _, expected = forecast_errors_and_states(tiny_model, segments, [1], state_layer=0)

    def no_forward(*arguments, **keywords):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(tiny_model, "forward", no_forward)
    np.testing.assert_array_equal(embedding_states(tiny_model, segments).numpy(), expected.numpy())


def test_context_buckets_group_positions_by_powers_of_two():
    assert context_buckets(9).tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 3]


def test_statistics_normalise_training_errors_per_channel_and_context(tmp_path, tiny_model):
    dataset = open_dataset(write_small_dataset(tmp_path / "data", train=12))
    model = tiny_model.float()
    config = EvaluationConfig(batch_size=5)
    statistics = training_error_statistics(model, dataset.split("train"), dataset.normalization, config)
    assert statistics.mean.shape == (2, 5)  # 2 channels, buckets of positions 1..31
    z = channel_scores(model, dataset.split("train"), dataset.normalization, statistics, config)
    assert np.isnan(z[:, :, 0]).all()
    buckets = context_buckets(32)
    for channel in range(2):
        for bucket in range(5):
            values = z[:, channel, 1:][:, buckets[1:] == bucket]
            assert abs(values.mean()) < 1e-4 and values.std() == pytest.approx(1.0, rel=1e-3)


def test_channel_scores_read_the_configs_context_window(tmp_path, tiny_model):
    dataset = open_dataset(write_small_dataset(tmp_path / "data", train=12))
    model, train = tiny_model.float(), dataset.split("train")
    config = EvaluationConfig(batch_size=5, context_window=4)
    statistics = training_error_statistics(model, train, dataset.normalization, config)
    z = channel_scores(model, train, dataset.normalization, statistics, config)
    segments = torch.from_numpy(normalized_segments(train, dataset.normalization, 0, len(train)))
    windowed = forecast_errors(model, segments, config.heads, context_window=4).numpy()
    np.testing.assert_allclose(z, statistics.normalize(windowed), rtol=1e-5, atol=1e-5, equal_nan=True)
    whole = forecast_errors(model, segments, config.heads).numpy()
    assert not np.allclose(windowed[..., 8:], whole[..., 8:])


def test_statistics_use_only_the_requested_number_of_segments(tmp_path, tiny_model):
    dataset = open_dataset(write_small_dataset(tmp_path / "data", train=12))
    seen = []
    training_error_statistics(
        tiny_model.float(),
        dataset.split("train"),
        dataset.normalization,
        EvaluationConfig(statistics_segments=4, batch_size=3),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(3, 4), (4, 4)]


def test_normalize_uses_the_bucket_of_each_position():
    statistics = ErrorStatistics(mean=np.array([[0.0, 1.0, 2.0]]), std=np.array([[1.0, 2.0, 4.0]]))
    errors = np.array([[[5.0, 5.0, 5.0, 5.0, 6.0]]])
    np.testing.assert_allclose(statistics.normalize(errors), [[[5.0, 5.0, 2.0, 2.0, 1.0]]])


def test_every_point_is_scored_by_the_pass_that_hid_it(monkeypatch):
    torch.manual_seed(0)
    model = TimeMoE(
        TimeMoEConfig(**TINY, reconstruction_head=True, reconstruction_mask_ratio=0.3, reconstruction_mask_span=2)
    ).eval()
    segments = torch.randint(-3, 4, (2, 3, 11)).float()  # whole numbers: the differences below are exact
    calls = []

    def reconstruct(series, hidden_points):
        # A stand-in reconstruction that errs by (pass + 1) where the pass hides, and by 100 where it does not:
        # only the hidden points' errors may reach the score.
        calls.append(hidden_points[0].clone())
        return series + torch.where(hidden_points, float(len(calls)), 100.0)

    monkeypatch.setattr(model, "reconstruct", reconstruct)
    errors = reconstruction_errors(model, segments)
    # ceil(1 / 0.3) = 4 passes of spans of 2: pass p hides t with (t // 2) % 4 == p.
    assert len(calls) == 4
    assert torch.equal(torch.stack(calls).sum(dim=0), torch.ones(11, dtype=torch.long))
    expected_pass = (torch.arange(11) // 2) % 4
    assert torch.equal(errors, ((expected_pass + 1.0) ** 2).expand(2, 3, 11))
    calls.clear()
    absolute = reconstruction_errors(model, segments, error="absolute")
    assert torch.equal(absolute, (expected_pass + 1.0).expand(2, 3, 11))


def test_reconstruction_errors_need_the_reconstruction_path(tiny_model):
    with pytest.raises(ValueError, match="no reconstruction path"):
        reconstruction_errors(tiny_model, torch.zeros(1, 1, 8))


def test_channel_statistics_z_score_each_channel_over_every_position():
    errors = np.array([[[1.0, 3.0], [5.0, 5.0]], [[1.0, 3.0], [5.0, 5.0]]])  # [N=2, C=2, L=2]
    statistics = ChannelStatistics.from_errors(errors)
    np.testing.assert_allclose(statistics.mean, [2.0, 5.0])
    # The second channel has no spread: it keeps std 1 and is centred, never divided by zero.
    np.testing.assert_allclose(statistics.std, [1.0, 1.0])
    np.testing.assert_allclose(statistics.normalize(np.array([[[4.0, 0.0], [6.0, 5.0]]])), [[[2.0, -2.0], [1.0, 0.0]]])
