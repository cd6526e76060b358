"""Warm starts: earlier sweeps' trials added to the study when they fit, and enqueued configs run first."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.sweep.test_definition import write_sweep
from tests.training.test_loop import synthetic_data
from tsmoe.config import dump_run_config
from tsmoe.sweep.definition import load_sweep
from tsmoe.sweep.searcher import SweepSearch, study_storage
from tsmoe.sweep.warm_start import WARM_START_SOURCE, add_earlier_trials, enqueued_points

FITS = {"data.batch_size": 4, "training.learning_rate": 0.003, "model.num_experts_per_tok": 2}


@pytest.fixture
def sweep(tmp_path):
    return load_sweep(write_sweep(tmp_path, synthetic_data(tmp_path / "data")))


def _old_sweep(directory, sweep, trials, throughput="samples_s"):
    """A sweep directory as an earlier run leaves it: its definition and its study of `trials`
    (params, values, state, constraints)."""
    directory.mkdir(parents=True)
    config = sweep.config.model_dump(mode="json") | {"objectives": {"throughput": throughput}}
    (directory / "sweep.yaml").write_text(yaml.safe_dump(config))
    study = optuna.create_study(
        study_name=sweep.config.name, storage=study_storage(directory), directions=["maximize", "maximize"]
    )
    wide = {
        "data.batch_size": optuna.distributions.CategoricalDistribution([2, 4, 8]),
        "training.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
        "model.num_experts_per_tok": optuna.distributions.IntDistribution(1, 2),
        "model.num_hidden_layers": optuna.distributions.IntDistribution(1, 4),
    }
    for params, values, state, constraints in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={name: wide[name] for name in params},
                values=values,
                state=state,
                system_attrs={f"constraints:{name}": value for name, value in constraints.items()},
            )
        )


def test_earlier_trials_that_fit_are_added_and_the_others_reported(sweep, tmp_path):
    old = tmp_path / "old"
    _old_sweep(
        old,
        sweep,
        [
            (FITS, [0.8, 120.0], TrialState.COMPLETE, {"out_of_memory": 1.0}),
            (FITS | {"training.learning_rate": 0.5}, [0.7, 90.0], TrialState.COMPLETE, {}),
            (FITS | {"data.batch_size": 8}, [0.7, 90.0], TrialState.COMPLETE, {}),
            (FITS | {"model.num_hidden_layers": 3}, [0.9, 80.0], TrialState.COMPLETE, {}),
            (FITS, None, TrialState.PRUNED, {}),
        ],
    )
    (tmp_path / "new").mkdir()
    search = SweepSearch(sweep.config, sweep.space, tmp_path / "new")
    outcome = add_earlier_trials(search.study, [old], sweep.space, sweep.base, "samples_s")

    assert outcome.added == 1 and len(outcome.skipped) == 3
    assert "training.learning_rate = 0.5 is outside" in outcome.skipped[0]
    assert "data.batch_size = 8 is outside" in outcome.skipped[1]
    assert "parameters no longer in the space: model.num_hidden_layers" in outcome.skipped[2]
    (added,) = search.study.trials
    assert added.state == TrialState.COMPLETE and added.params == FITS and added.values == [0.8, 120.0]
    assert added.constraints == {"out_of_memory": 1.0}
    assert added.user_attrs[WARM_START_SOURCE] == f"{old} trial 0"
    # The sampler goes on from there: the next trial is a new one, numbered after the added trial.
    search.suggest("first")
    assert len(search.study.trials) == 2 and search.study.trials[1].state == TrialState.RUNNING


def test_a_sweep_scored_on_another_throughput_is_skipped_whole(sweep, tmp_path):
    _old_sweep(tmp_path / "old", sweep, [(FITS, [0.8, 1e5], TrialState.COMPLETE, {})], throughput="tokens_s")
    (tmp_path / "new").mkdir()
    search = SweepSearch(sweep.config, sweep.space, tmp_path / "new")
    outcome = add_earlier_trials(search.study, [tmp_path / "old"], sweep.space, sweep.base, "samples_s")
    assert outcome.added == 0 and "scored on tokens_s, this sweep on samples_s" in outcome.skipped[0]
    assert search.study.trials == []


def test_enqueued_configs_are_the_first_trials(sweep, tmp_path):
    best = tmp_path / "best.yaml"
    dump_run_config(sweep.space.apply(sweep.base, FITS), best)
    points = enqueued_points([best], sweep.space)
    assert points == [FITS]
    (tmp_path / "new").mkdir()
    search = SweepSearch(sweep.config, sweep.space, tmp_path / "new", points_to_evaluate=points)
    assert search.suggest("first") == FITS


def test_an_enqueued_config_outside_the_space_is_refused_before_ray(sweep, tmp_path):
    best = tmp_path / "best.yaml"
    dump_run_config(sweep.space.apply(sweep.base, FITS), best)
    values = yaml.safe_load(best.read_text())
    values["data"]["batch_size"] = 16
    best.write_text(yaml.safe_dump(values))
    definition = write_sweep(tmp_path, sweep.base.data.path, enqueue=["best.yaml"])
    with pytest.raises(ValueError, match=r"best.yaml: field data.batch_size: 16 is outside"):
        load_sweep(definition)
