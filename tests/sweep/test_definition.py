"""Sweep definitions: what `load_sweep` accepts, and the errors that name the file and the field."""

from __future__ import annotations

import pytest
import yaml

from tests.model.tiny import TINY
from tests.training.test_loop import synthetic_data
from tsmoe.cli.main import main
from tsmoe.sweep.definition import load_sweep


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_data(tmp_path_factory.mktemp("sweep_definition") / "data")


def write_sweep(directory, data, space=None, base=None, **settings):
    """A small sweep of the tiny model in `directory`; keyword arguments replace its settings."""
    base_values = {
        # Balanced routing, as new training configs have it: the reference router collapses on this tiny
        # model, and the collapse rule would stop trials the machinery tests expect to complete.
        "model": TINY | {"router_input_norm": "batch", "router_bias_update_rate": 0.01},
        "data": {"path": str(data), "batch_size": 4, "num_workers": 0},
        "training": {"epochs": 2, "warmup_steps": 1, "log_every_steps": 1000},
        "evaluation": {"statistics_segments": 4, "baselines": []},
    } | (base or {})
    (directory / "base.yaml").write_text(yaml.safe_dump(base_values))
    space = space or {
        "data.batch_size": {"type": "categorical", "choices": [2, 4]},
        "training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "model.num_experts_per_tok": {"type": "int", "low": 1, "high": 2},
    }
    (directory / "space.yaml").write_text(yaml.safe_dump({"parameters": space}))
    definition = {
        "name": "tiny",
        "dataset": {"path": str(data)},
        "base_config": "base.yaml",
        "search_space": "space.yaml",
        "num_trials": 3,
        "resources": {"workers": 1},
        "early_stopping": {"scheduler": "moasha", "grace_period": 1},
        "storage": "sweeps",
    } | settings
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def test_a_valid_sweep_loads_with_paths_resolved_from_its_file(tmp_path, data):
    sweep = load_sweep(write_sweep(tmp_path, data))
    assert sweep.config.directory == tmp_path / "sweeps" / "tiny"
    assert sweep.base.data.path == data and sweep.base.training.epochs == 2
    assert set(sweep.space.parameters) == {"data.batch_size", "training.learning_rate", "model.num_experts_per_tok"}
    assert sweep.config.objectives.throughput == "samples_s" and sweep.config.sampler == "tpe"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_trials": 0}, "field num_trials: Input should be greater than 0"),
        ({"objectives": {"throughput": "steps"}}, "field objectives.throughput"),
        ({"sampler": "random"}, "field sampler"),
        ({"early_stopping": {"metric": "accuracy"}}, "metric 'accuracy' is not reported every epoch"),
        ({"early_stopping": {"grace_period": 3}}, "field early_stopping.grace_period: 3 epochs is more than the 2"),
        ({"resources": {"workers": 1, "gpus_per_worker": 1.5}}, "gpus_per_worker above 1 must be a whole number"),
        ({"trials": 3}, "field trials: Extra inputs are not permitted"),
        ({"name": "my sweep"}, "field name: String should match pattern"),
    ],
)
def test_bad_sweep_settings_name_the_file_and_the_field(tmp_path, data, settings, message):
    path = write_sweep(tmp_path, data, **settings)
    with pytest.raises(ValueError) as error:
        load_sweep(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_missing_dataset_without_synthesize_says_how_to_make_one(tmp_path, data):
    path = write_sweep(tmp_path, data, dataset={"path": "nowhere"})
    with pytest.raises(FileNotFoundError, match=r"field dataset\.path: .*nowhere holds no dataset.*tsmoe data synth"):
        load_sweep(path)


def test_a_missing_dataset_with_synthesize_is_written_first(tmp_path, data):
    path = write_sweep(
        tmp_path,
        data,
        dataset={
            "path": "made",
            "synthesize": {"train_segments": 4, "val_segments": 4, "test_segments": 0, "segment_length": 64},
        },
    )
    sweep = load_sweep(path)
    assert (tmp_path / "made" / "meta.json").is_file() and sweep.base.data.path == tmp_path / "made"


def test_epochs_cannot_be_searched(tmp_path, data):
    path = write_sweep(tmp_path, data, space={"training.epochs": {"type": "int", "low": 1, "high": 3}})
    with pytest.raises(ValueError, match=r"space\.yaml: field training\.epochs: cannot be searched"):
        load_sweep(path)


def test_a_search_space_that_breaks_a_rule_fails_before_ray_with_the_cli_exit_code(tmp_path, data, capsys):
    path = write_sweep(tmp_path, data, space={"model.num_experts_per_tok": {"type": "int", "low": 1, "high": 8}})
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err
    assert "space.yaml: field model.num_experts_per_tok" in error and "model.num_experts" in error
    assert not (tmp_path / "sweeps").exists()  # nothing was started or written


@pytest.mark.parametrize("name", ["quickstart", "gpu_24gb", "gpu_80gb"])
def test_the_shipped_sweeps_are_valid_with_their_base_configs_and_spaces(name):
    from tests.conftest import REPO_ROOT
    from tsmoe.config import load_run_config
    from tsmoe.sweep.definition import read_sweep_config
    from tsmoe.sweep.space import load_search_space

    config = read_sweep_config(REPO_ROOT / "sweeps" / f"{name}.yaml")
    assert config.dataset.synthesize is not None  # runs on the built-in data, written on first use
    base = load_run_config(config.base_config)
    space = load_search_space(config.search_space, base, config.dataset.synthesize.segment_length)
    assert config.early_stopping.grace_period <= base.training.epochs
    assert "training.epochs" not in space.parameters


def test_storage_may_be_a_file_uri_of_a_shared_path(tmp_path, data):
    sweep = load_sweep(write_sweep(tmp_path, data, storage=f"file://{tmp_path}/shared%20sweeps"))
    assert sweep.config.directory == tmp_path / "shared sweeps" / "tiny"


def test_object_storage_keeps_the_experiment_there_and_the_drivers_files_in_local_storage(tmp_path, data):
    uri = "s3://bucket/team/sweeps?endpoint_override=127.0.0.1:9000&scheme=http"
    sweep = load_sweep(write_sweep(tmp_path, data, storage=uri, local_storage="driver"))
    assert sweep.config.storage == uri
    assert sweep.config.directory == tmp_path / "driver" / "tiny"
    # The sweep's name goes into the path, before the query that pyarrow reads its options from.
    assert (
        sweep.config.experiment_location == "s3://bucket/team/sweeps/tiny?endpoint_override=127.0.0.1:9000&scheme=http"
    )


def test_a_path_storage_keeps_everything_in_the_sweep_directory(tmp_path, data):
    sweep = load_sweep(write_sweep(tmp_path, data, local_storage="driver"))
    assert sweep.config.experiment_location == sweep.config.directory == tmp_path / "sweeps" / "tiny"


@pytest.mark.parametrize(
    "storage, message",
    [
        ("ftp://host/sweeps", "ftp:// storage is not supported; give a path, a file:// URI or one of s3://, gs://"),
        ("s3:///sweeps", "names no bucket; expected s3://BUCKET/PREFIX"),
        ("file://otherhost/sweeps", "a file:// URI names a path, file:///PATH; got the host 'otherhost'"),
    ],
)
def test_storage_uris_that_name_no_place_are_refused_saying_what_to_do(tmp_path, data, storage, message):
    path = write_sweep(tmp_path, data, storage=storage)
    with pytest.raises(ValueError, match=f"{path}: field storage: .*{message}"):
        load_sweep(path)
