import json

import optuna
import pytest

from tests.conftest import REPO_ROOT
from tsmoe.config import RunConfig
from tsmoe.sweep.space import SearchSpace, load_search_space

SEARCH_SPACES = REPO_ROOT / "search_spaces"
EXPLICIT_SCHEDULE = [{"until": 0.5, "length": 256}, {"until": 1.0, "length": 1.0}]


@pytest.fixture
def small_base() -> RunConfig:
    """The quickstart shape: hidden 64, 4 heads, 4 experts with top-k 2."""
    return RunConfig.model_validate(
        {
            "model": {
                "hidden_size": 64,
                "num_attention_heads": 4,
                "intermediate_size": 256,
                "num_experts": 4,
                "num_experts_per_tok": 2,
            }
        }
    )


def write_space(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path, text: str, base: RunConfig, segment_length: int = 512) -> str:
    path = write_space(tmp_path, text, "x.yaml")
    with pytest.raises(ValueError) as raised:
        load_search_space(path, base, segment_length)
    message = str(raised.value)
    assert message.startswith(str(path)), message
    return message


def test_distributions_map_to_optuna_types_with_their_bounds_log_and_step(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n"
        "  data.batch_size: {type: categorical, choices: [4, 8]}\n"
        "  model.num_hidden_layers: {type: int, low: 2, high: 6, step: 2}\n"
        "  training.gradient_accumulation: {type: int, low: 1, high: 8, log: true}\n"
        "  training.learning_rate: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}\n"
        "  training.weight_decay: {type: float, low: 0.0, high: 0.2, step: 0.05}\n"
        "  model.router_init_std: {type: fixed, value: 0.002}\n",
    )
    distributions = load_search_space(path, small_base, 512).optuna_distributions()

    assert distributions == {
        "data.batch_size": optuna.distributions.CategoricalDistribution([4, 8]),
        "model.num_hidden_layers": optuna.distributions.IntDistribution(2, 6, step=2),
        "training.gradient_accumulation": optuna.distributions.IntDistribution(1, 8, log=True),
        "training.learning_rate": optuna.distributions.FloatDistribution(3e-4, 3e-3, log=True),
        "training.weight_decay": optuna.distributions.FloatDistribution(0.0, 0.2, step=0.05),
    }


def test_non_scalar_choices_travel_through_optuna_as_json_strings_and_decode_back(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n  data.crop_schedule:\n    type: categorical\n    choices:\n"
        "      - full\n      - [{until: 0.5, length: 256}, {until: 1.0, length: 1.0}]\n",
    )
    space = load_search_space(path, small_base, 512)

    choices = space.optuna_distributions()["data.crop_schedule"].choices
    assert choices == ("full", json.dumps(EXPLICIT_SCHEDULE, sort_keys=True))
    assert space.decode({"data.crop_schedule": choices[1]}) == {"data.crop_schedule": EXPLICIT_SCHEDULE}
    assert space.decode({"data.crop_schedule": "full"}) == {"data.crop_schedule": "full"}
    # A results table may hold the JSON with other spacing.
    assert space.decode({"data.crop_schedule": json.dumps(EXPLICIT_SCHEDULE, separators=(",", ":"))}) == {
        "data.crop_schedule": EXPLICIT_SCHEDULE
    }
    with pytest.raises(ValueError, match=r"space.yaml: field data.crop_schedule: .*not one of the choices"):
        space.decode({"data.crop_schedule": "quarter_then_full"})


def test_apply_sets_nested_and_fixed_fields_and_returns_a_validated_config(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n"
        "  model.num_experts_per_tok: {type: int, low: 1, high: 2}\n"
        "  training.learning_rate: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}\n"
        "  data.crop_schedule: {type: categorical, choices: [full, "
        "[{until: 0.5, length: 256}, {until: 1.0, length: 1.0}]]}\n"
        "  training.finetune.lora_rank: {type: fixed, value: 4}\n",
    )
    space = load_search_space(path, small_base, 512)
    params = {
        "model.num_experts_per_tok": 1,
        "training.learning_rate": 0.002,
        "data.crop_schedule": json.dumps(EXPLICIT_SCHEDULE, sort_keys=True),
    }

    config = space.apply(small_base, params)

    assert isinstance(config, RunConfig)
    dumped = config.model_dump(mode="json")
    decoded = space.decode(params)
    assert set(decoded) == {*params, "training.finetune.lora_rank"}
    for path_, value in decoded.items():
        section = dumped
        for name in path_.split("."):
            section = section[name]
        assert section == value, path_
    assert config.model.hidden_size == 64 and small_base.model.num_experts_per_tok == 2  # base untouched


def test_apply_names_the_field_when_a_value_is_invalid(tmp_path, small_base):
    path = write_space(tmp_path, "parameters:\n  data.batch_size: {type: int, low: 1, high: 4}\n")
    space = load_search_space(path, small_base, 512)
    with pytest.raises(ValueError, match=r"space.yaml: field data.batch_size"):
        space.apply(small_base, {"data.batch_size": 0})
    with pytest.raises(ValueError, match=r"no value for data.batch_size"):
        space.apply(small_base, {})
    with pytest.raises(ValueError, match=r"model.num_experts: not sampled"):
        space.apply(small_base, {"data.batch_size": 2, "model.num_experts": 2})


def test_a_missing_file_is_named(tmp_path, small_base):
    with pytest.raises(FileNotFoundError, match=r"nothing\.yaml"):
        load_search_space(tmp_path / "nothing.yaml", small_base, 512)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("parameters: [unclosed\n", "not valid YAML"),
        ("- data.batch_size\n", "expected a mapping with `parameters`"),
        ("parameters: [data.batch_size]\n", "expected a mapping with `parameters`"),
        ("parameters: {}\n", "field parameters: empty"),
        ("parameters:\n  data.batch_size: {type: fixed, value: 4}\nsampler: tpe\n", "unknown top-level keys sampler"),
    ],
)
def test_malformed_files_are_rejected_with_the_file_named(tmp_path, small_base, text, reason):
    assert reason in load_error(tmp_path, text, small_base)


def test_an_unknown_field_is_named_with_the_closest_field(tmp_path, small_base):
    message = load_error(tmp_path, "parameters:\n  model.hidden: {type: fixed, value: 64}\n", small_base)
    assert "field model.hidden: unknown" in message and "did you mean" in message
    assert "model.hidden_size" in message.split("did you mean")[1]

    message = load_error(tmp_path, "parameters:\n  model.num_expert: {type: fixed, value: 4}\n", small_base)
    assert "field model.num_expert: unknown" in message and "did you mean model.num_experts" in message

    message = load_error(tmp_path, "parameters:\n  zzz: {type: fixed, value: 64}\n", small_base)
    assert "field zzz: unknown" in message and "did you mean" not in message


def test_a_whole_section_is_not_a_field(tmp_path, small_base):
    message = load_error(tmp_path, "parameters:\n  training.deepspeed: {type: fixed, value: {stage: 1}}\n", small_base)
    assert "field training.deepspeed: a section, not a field" in message and "training.deepspeed.stage" in message


@pytest.mark.parametrize(
    "distribution, reason",
    [
        ("{type: int, low: 5, high: 2}", "low 5 is greater than high 2"),
        ("{type: float, low: 0.0, high: 0.1, log: true}", "a log range needs low > 0"),
        ("{type: int, low: 0, high: 4, log: true}", "a log range needs low >= 1"),
        ("{type: float, low: 0.1, high: 0.5, step: 0.1, log: true}", "log and step cannot be combined"),
        ("{type: int, low: 2, high: 7, step: 2}", "high 7 is not low 2 plus a multiple of step 2"),
        ("{type: int, low: 1.5, high: 4}", "field data.batch_size.low: Input should be a valid integer"),
        ("{type: categorical, choices: []}", "field data.batch_size.choices: List should have at least 1 item"),
        ("{type: categorical, choices: [4, 8, 4]}", "choice 4 repeats 4"),
        ("{type: categorical, choices: [1, 1.0]}", "choice 1.0 repeats 1"),
        ("{type: uniform, low: 1, high: 4}", "unknown type uniform; expected one of int, float, categorical, fixed"),
        ("{low: 1, high: 4}", "no type; expected one of int"),
        (
            "{type: int, low: 1, hi: 4}",
            "data.batch_size.high: Field required; field data.batch_size.hi: Extra inputs are not permitted",
        ),
        ("8", "expected a distribution"),
    ],
)
def test_malformed_distributions_are_described_in_one_line(tmp_path, small_base, distribution, reason):
    message = load_error(tmp_path, f"parameters:\n  data.batch_size: {distribution}\n", small_base)
    assert "field data.batch_size" in message and reason in message
    assert "\n" not in message


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


def test_exponent_floats_without_a_dot_are_numbers(tmp_path, small_base):
    # YAML 1.1 would read 1e-3 as the string "1e-3".
    path = write_space(tmp_path, "parameters:\n  training.learning_rate: {type: categorical, choices: [1e-3, 3e-3]}\n")
    assert load_search_space(path, small_base, 512).parameters["training.learning_rate"].choices == [1e-3, 3e-3]


@pytest.mark.parametrize("name, segment_length", [("default", 2048), ("speed_first", 2048), ("quickstart", 512)])
def test_the_project_search_spaces_load_against_their_base_configs(small_base, name, segment_length):
    base = small_base if name == "quickstart" else RunConfig()
    space = load_search_space(SEARCH_SPACES / f"{name}.yaml", base, segment_length)
    assert space.optuna_distributions()


def test_sampled_trials_apply_to_valid_configs():
    base = RunConfig()
    space = load_search_space(SEARCH_SPACES / "default.yaml", base, 2048)
    distributions = space.optuna_distributions()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))

    for _ in range(10):
        trial = study.ask(fixed_distributions=distributions)
        config = space.apply(base, trial.params)
        assert RunConfig.model_validate(config.model_dump()) == config
        assert config.model.num_experts_per_tok <= config.model.num_experts
        assert config.training.learning_rate == trial.params["training.learning_rate"]
        study.tell(trial, config.training.learning_rate)
