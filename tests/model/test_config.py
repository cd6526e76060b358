"""TimeMoEConfig: validation, published preset sizes, parameter accounting and reference config.json round trips."""

from __future__ import annotations

import pydantic
import pytest

from tests.model.tiny import TINY
from tsmoe.model import TimeMoEConfig, preset
from tsmoe.model.timemoe import TimeMoE


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_experts_per_tok=5), r"num_experts_per_tok \(5\) must be at most num_experts \(4\)"),
        (dict(hidden_size=30), r"hidden_size \(30\) must be divisible by num_attention_heads \(4\)"),
        (dict(horizon_lengths=[1, 8, 4]), r"horizon_lengths must be positive and strictly increasing"),
        (dict(horizon_lengths=[1, 4, 4]), r"horizon_lengths must be positive and strictly increasing"),
        (dict(num_key_value_heads=3), r"num_attention_heads \(4\) must be divisible by num_key_value_heads \(3\)"),
    ],
)
def test_invalid_shapes_are_rejected_with_a_message_naming_the_problem(overrides, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        TimeMoEConfig(**{**TINY, **overrides})


def test_unknown_field_is_rejected_by_name():
    with pytest.raises(pydantic.ValidationError, match=r"hidden_sise\s+Extra inputs are not permitted"):
        TimeMoEConfig(**TINY, hidden_sise=32)


def test_assignment_is_validated_too():
    config = TimeMoEConfig(**TINY)
    with pytest.raises(pydantic.ValidationError, match="num_experts_per_tok"):
        config.num_experts_per_tok = 8


def test_timemoe_50m_preset_has_the_published_parameter_counts():
    total, active = preset("TimeMoE-50M").parameter_counts()
    assert (round(total / 1e6, 1), round(active / 1e6, 1)) == (113.4, 49.7)


def test_timemoe_200m_preset_has_the_published_parameter_counts():
    total, active = preset("TimeMoE-200M").parameter_counts()
    # Published as "453M / 198M", i.e. rounded to whole millions.
    assert (round(total / 1e6), round(active / 1e6)) == (453, 198)
    assert (round(total / 1e6, 1), round(active / 1e6, 1)) == (453.2, 198.4)


def test_unknown_preset_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match=r"unknown preset 'TimeMoE-1B'.*TimeMoE-50M"):
        preset("TimeMoE-1B")


def test_preset_overrides_replace_fields():
    config = preset("TimeMoE-50M", num_hidden_layers=2, horizon_lengths=[1, 4])
    assert (config.hidden_size, config.num_hidden_layers, config.horizon_lengths) == (384, 2, [1, 4])


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(use_dense=True),
        dict(num_key_value_heads=2),
        dict(num_experts=6, num_experts_per_tok=3),
        dict(reconstruction_head=True),
    ],
    ids=["moe", "dense", "grouped-query", "six-experts-top3", "reconstruction"],
)
def test_parameter_counts_total_equals_a_built_models_parameter_count(overrides):
    config = TimeMoEConfig(**{**TINY, **overrides})
    total, _ = config.parameter_counts()
    assert total == sum(p.numel() for p in TimeMoE(config).parameters())


@pytest.mark.parametrize("overrides", [dict(), dict(num_key_value_heads=2)], ids=["moe", "grouped-query"])
def test_parameter_counts_active_excludes_exactly_the_unchosen_experts(overrides):
    config = TimeMoEConfig(**{**TINY, **overrides})
    model = TimeMoE(config)
    experts = model.model.layers[0].ffn_layer.experts
    per_expert = sum(getattr(experts, name)[0].numel() for name in ("gate_proj", "up_proj", "down_proj"))
    total, active = config.parameter_counts()
    unchosen = config.num_experts - config.num_experts_per_tok
    assert total - active == config.num_hidden_layers * unchosen * per_expert


def test_dense_model_has_equal_total_and_active_counts():
    total, active = TimeMoEConfig(**TINY, use_dense=True).parameter_counts()
    assert total == active


def test_reference_config_of_the_parity_fixture_loads(parity_fixture):
    config = TimeMoEConfig.from_reference_dict(parity_fixture["config"])
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 256, 2)
    assert (config.num_attention_heads, config.key_value_heads) == (4, 4)
    assert (config.num_experts, config.num_experts_per_tok) == (4, 2)
    assert config.horizon_lengths == [1, 8, 32, 64]
    assert config.router_aux_loss_factor == 0.02
    assert config.parameter_counts()[0] == sum(t.numel() for t in parity_fixture["state_dict"].values())


@pytest.mark.parametrize("model_type", ["llama", "time_moe_v2", None])
def test_reference_dict_with_another_model_type_is_rejected(parity_fixture, model_type):
    values = {**parity_fixture["config"], "model_type": model_type}
    with pytest.raises(ValueError, match=r"model_type is .* expected 'time_moe'"):
        TimeMoEConfig.from_reference_dict(values)


def test_reference_dict_with_an_unknown_model_key_is_rejected(parity_fixture):
    with pytest.raises(pydantic.ValidationError, match="num_shared_experts"):
        TimeMoEConfig.from_reference_dict({**parity_fixture["config"], "num_shared_experts": 2})


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_key_value_heads=4),
        dict(num_key_value_heads=2, use_dense=True, rope_theta=500.0),
        dict(
            num_key_value_heads=4,
            router_init_std=1e-4,
            aux_loss_real_tokens_only=True,
            attention_implementation="eager",
            expert_implementation="loop",
            activation_checkpointing=True,
            apply_aux_loss=False,
        ),
    ],
    ids=["moe", "dense-gqa", "tsmoe-options"],
)
def test_reference_dict_round_trips_to_an_equal_config(overrides):
    config = TimeMoEConfig(**{**TINY, **overrides})
    values = config.to_reference_dict()
    assert values["model_type"] == "time_moe"
    assert values["architectures"] == ["TimeMoeForPrediction"]
    assert TimeMoEConfig.from_reference_dict(values) == config


def test_reference_dict_writes_the_resolved_key_value_head_count():
    # The reference's config resolves a missing num_key_value_heads to num_attention_heads, so the
    # round trip of an unset value gives the resolved (equivalent) config, not a field-equal one.
    config = TimeMoEConfig(**TINY)
    values = config.to_reference_dict()
    assert values["num_key_value_heads"] == 4
    assert TimeMoEConfig.from_reference_dict(values) == config.model_copy(update=dict(num_key_value_heads=4))


def test_training_flops_per_token_follows_the_palm_convention():
    config = preset("TimeMoE-50M")
    _, active = config.parameter_counts()
    assert config.training_flops_per_token(512) == 6 * active + 12 * 12 * 384 * 512
    assert config.training_flops_per_token(2048) - config.training_flops_per_token(1024) == 12 * 12 * 384 * 1024
