"""A search space's values and combinations, judged by the run config's own validators and the dataset."""

from tests.sweep.conftest import load_error, write_space
from tsmoe.sweep.space import SearchSpace, load_search_space


def test_every_value_a_distribution_produces_must_be_valid_for_its_field(tmp_path, small_base):
    message = load_error(tmp_path, "parameters:\n  data.batch_size: {type: int, low: 0, high: 4}\n", small_base)
    assert "field data.batch_size: 0 is not accepted" in message and "greater than 0" in message

    message = load_error(
        tmp_path, "parameters:\n  data.crop_schedule: {type: categorical, choices: [full, fullest]}\n", small_base
    )
    assert "field data.crop_schedule: fullest is not accepted" in message and "unknown crop schedule" in message

    message = load_error(
        tmp_path, "parameters:\n  training.learning_rate: {type: float, low: 0.0, high: 0.1}\n", small_base
    )
    assert "field training.learning_rate: 0.0 is not accepted" in message


def test_top_k_above_the_number_of_experts_is_caught(tmp_path, small_base):
    message = load_error(
        tmp_path,
        "parameters:\n  model.num_experts_per_tok: {type: int, low: 1, high: 4}\n"
        "  model.num_experts: {type: categorical, choices: [2, 4]}\n",
        small_base,
    )
    assert message.endswith(
        "x.yaml: field model.num_experts_per_tok: 3 is not accepted by the run config: "
        "field model: num_experts_per_tok (3) must be at most num_experts (2)"
    )

    # The partner field comes from the base config when the space leaves it alone.
    message = load_error(
        tmp_path, "parameters:\n  model.num_experts: {type: categorical, choices: [1, 4]}\n", small_base
    )
    assert "field model.num_experts: 1 is not accepted" in message
    assert "num_experts_per_tok (2) must be at most num_experts (1)" in message


def test_a_combination_of_two_parameters_is_named_with_both(tmp_path, small_base):
    # Each value is valid beside the other parameter's first value (4 experts, top-k 2): only the pair breaks.
    message = load_error(
        tmp_path,
        "parameters:\n  model.num_experts: {type: categorical, choices: [4, 2]}\n"
        "  model.num_experts_per_tok: {type: categorical, choices: [2, 4]}\n",
        small_base,
    )
    assert "field model.num_experts: 2 with model.num_experts_per_tok 4 is not accepted" in message


def test_heads_that_do_not_split_the_hidden_size_are_caught(tmp_path, small_base):
    message = load_error(
        tmp_path, "parameters:\n  model.num_attention_heads: {type: categorical, choices: [4, 6]}\n", small_base
    )
    assert "field model.num_attention_heads: 6 is not accepted" in message
    assert "hidden_size (64) must be divisible by num_attention_heads (6)" in message

    # Divisible but with an odd head dimension, which RoPE cannot rotate.
    message = load_error(
        tmp_path, "parameters:\n  model.hidden_size: {type: categorical, choices: [64, 68]}\n", small_base
    )
    assert "field model.hidden_size: 68 is not accepted" in message and "must be even for RoPE" in message


def test_query_heads_must_be_a_multiple_of_key_value_heads(tmp_path, small_base):
    message = load_error(
        tmp_path, "parameters:\n  model.num_key_value_heads: {type: categorical, choices: [2, 3]}\n", small_base
    )
    assert "field model.num_key_value_heads: 3 is not accepted" in message
    assert "num_attention_heads (4) must be divisible by num_key_value_heads (3)" in message


def test_a_rule_between_sections_is_checked(tmp_path, small_base):
    message = load_error(
        tmp_path,
        "parameters:\n  model.horizon_lengths: {type: categorical, choices: [[1, 8], [8, 32]]}\n",
        small_base,
    )
    assert "field model.horizon_lengths: [8, 32] is not accepted" in message
    assert "evaluation.heads [1] are not among model.horizon_lengths [8, 32]" in message


def test_a_crop_stage_longer_than_the_segment_is_caught(tmp_path, small_base):
    message = load_error(
        tmp_path,
        "parameters:\n  data.crop_schedule: {type: categorical, choices: [full, "
        "[{until: 0.5, length: 1024}, {until: 1.0, length: 1.0}]]}\n",
        small_base,
        segment_length=512,
    )
    assert "field data.crop_schedule: [{until: 0.5, length: 1024}, {until: 1.0, length: 1.0}]" in message
    assert "asks for crops of 1024 points, longer than the dataset's segment length 512" in message


def test_a_combination_repaired_by_another_parameter_loads(tmp_path, small_base):
    # One expert alone breaks the base's top-k 2, but the space fixes top-k at 1.
    path = write_space(
        tmp_path,
        "parameters:\n  model.num_experts: {type: categorical, choices: [1, 2]}\n"
        "  model.num_experts_per_tok: {type: fixed, value: 1}\n",
    )
    space = load_search_space(path, small_base, 512)
    assert space.apply(small_base, {"model.num_experts": 1}).model.num_experts == 1


def test_a_space_whose_every_combination_is_valid_loads(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n"
        "  model.num_experts: {type: categorical, choices: [2, 4]}\n"
        "  model.num_experts_per_tok: {type: int, low: 1, high: 2}\n"
        "  model.num_attention_heads: {type: categorical, choices: [2, 4, 8]}\n"
        "  model.hidden_size: {type: int, low: 32, high: 128, step: 32}\n"
        "  data.crop_schedule: {type: categorical, choices: [full, quarter_then_full, "
        "[{until: 0.5, length: 128}, {until: 1.0, length: 512}]]}\n",
    )
    space = load_search_space(path, small_base, 512)
    assert isinstance(space, SearchSpace) and space.source == str(path)


def test_a_spectral_window_longer_than_the_shortest_crop_is_caught(tmp_path, small_base):
    message = load_error(
        tmp_path,
        "parameters:\n  data.crop_schedule: {type: categorical, choices: [full, quarter_then_full]}\n"
        "  data.views: {type: categorical, choices: [[time], [time, spectrum]]}\n"
        "  data.spectrum_window: {type: categorical, choices: [64, 256]}\n",
        small_base,
        segment_length=512,
    )
    assert "field data.crop_schedule: quarter_then_full with data.views [time, spectrum] with " in message
    assert (
        "data.spectrum_window 256: field data.spectrum_window: 256 points, longer than the shortest crop (128"
        in message
    )


def test_spectral_windows_that_fit_every_crop_load(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n  data.crop_schedule: {type: categorical, choices: [full, quarter_then_full]}\n"
        "  data.views: {type: categorical, choices: [[time], [time, spectrum]]}\n"
        "  data.spectrum_window: {type: categorical, choices: [64, 128]}\n"
        "  data.spectrum_bands: {type: categorical, choices: [2, 8]}\n",
    )
    space = load_search_space(path, small_base, 512)
    last_choices = {path: distribution.choices[-1] for path, distribution in space.optuna_distributions().items()}
    config = space.apply(small_base, last_choices)
    assert config.data.views == ["time", "spectrum"] and config.data.spectrum_window == 128


def test_a_value_that_leaves_an_alternative_detector_nothing_to_score_is_caught(tmp_path, small_base):
    base = small_base.model_copy(deep=True)
    # Density alone, as an alternative: a space that draws the density weight down to 0 leaves it no component.
    base.evaluation = base.evaluation.model_copy(
        update={"density_weight": 1.0, "alternatives": [{"forecast_weight": 0.0}]}
    )
    message = load_error(
        tmp_path, "parameters:\n  evaluation.density_weight: {type: categorical, choices: [0.0, 1.0]}\n", base
    )
    assert "field evaluation.density_weight: 0.0 is not accepted" in message
    assert "alternatives[0]: forecast_weight, cross_channel_weight, density_weight and reconstruction_weight" in message
