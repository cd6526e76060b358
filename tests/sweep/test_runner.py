"""What `tsmoe sweep` refuses before starting Ray, and what it needs to fit on the cluster."""

from __future__ import annotations

import pytest

from tests.sweep.test_definition import write_sweep
from tests.training.test_loop import synthetic_data
from tsmoe.sweep.definition import load_sweep
from tsmoe.sweep.runner import TRIAL_DRIVER, _check_directory, _check_resources, _store_definition, read_stored_sweep


@pytest.fixture
def sweep(tmp_path):
    return load_sweep(write_sweep(tmp_path, synthetic_data(tmp_path / "data")))


def test_a_sweep_directory_with_other_settings_is_refused_naming_them(sweep):
    _store_definition(sweep, segment_length=64)
    sweep.config.num_trials = 9
    sweep.config.sampler = "nsga2"
    with pytest.raises(FileExistsError, match=r"other settings \(sampler, num_trials differ\)"):
        _check_directory(sweep, resume=True)


def test_a_stored_sweep_reads_back_as_it_was_run(sweep):
    _store_definition(sweep, segment_length=64)
    stored = read_stored_sweep(sweep.config.directory)
    assert stored.config == sweep.config and stored.base == sweep.base
    assert stored.space.parameters == sweep.space.parameters and stored.epochs == 2


def test_a_non_empty_directory_that_holds_no_sweep_is_refused(sweep):
    sweep.config.directory.mkdir(parents=True)
    (sweep.config.directory / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no tsmoe sweep"):
        _check_directory(sweep, resume=True)


def test_a_trial_larger_than_the_cluster_fails_before_any_trial(sweep):
    sweep.config.resources.workers = 4
    with pytest.raises(ValueError, match=r"4 workers x 1 CPUs = 4, the cluster has 2"):
        _check_resources(sweep.config, {"CPU": 2.0}, "sweep.yaml")
    sweep.config.resources.workers, sweep.config.resources.gpus_per_worker = 1, 0.5
    with pytest.raises(ValueError, match=r"sweep\.yaml: field resources: a trial needs 0\.5 GPUs, the cluster has 0"):
        _check_resources(sweep.config, {"CPU": 2.0}, "sweep.yaml")


def test_each_trial_driver_holds_one_of_the_sweeps_driver_slots_or_a_sliver_of_a_cpu(sweep):
    assert _check_resources(sweep.config, {"CPU": 2.0, TRIAL_DRIVER: 2.0}) == {TRIAL_DRIVER: 1}
    assert _check_resources(sweep.config, {"CPU": 2.0}) == {"CPU": 0.01}
