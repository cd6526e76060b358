import json

import optuna
import pytest

from tests.conftest import REPO_ROOT
from tests.sweep.conftest import EXPLICIT_SCHEDULE, load_error, write_space
from tsmoe.config import RunConfig
from tsmoe.sweep.space import load_search_space

SEARCH_SPACES = REPO_ROOT / "search_spaces"


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


def test_a_trials_objective_sets_its_models_reconstruction_path():
    # The base's dump says reconstruction_head: false; a trial drawing loss both must still get the path.
    base = RunConfig()
    space = load_search_space(SEARCH_SPACES / "default.yaml", base, 2048)
    params = {path: distribution.values()[-1] for path, distribution in space.parameters.items()}
    params = {path: json.dumps(value) if isinstance(value, list) else value for path, value in params.items()}
    both = space.apply(base, params | {"training.loss": "both", "training.mask_ratio": 0.5})
    assert both.model.reconstruction_head and both.model.reconstruction_mask_ratio == 0.5
    forecast = space.apply(base, params | {"training.loss": "forecast"})
    assert not forecast.model.reconstruction_head
    assert forecast.detector_settings().reconstruction_weight == 0.0 < both.detector_settings().reconstruction_weight


def test_a_null_choice_sets_the_field_to_none_and_a_number_to_that_number():
    base = RunConfig()
    space = load_search_space(SEARCH_SPACES / "default.yaml", base, 2048)
    params = {path: distribution.values()[0] for path, distribution in space.parameters.items()}
    params = {path: json.dumps(value) if isinstance(value, list) else value for path, value in params.items()}
    assert space.apply(base, params | {"evaluation.context_window": None}).evaluation.context_window is None
    assert space.apply(base, params | {"evaluation.context_window": 32}).evaluation.context_window == 32
