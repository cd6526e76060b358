"""fANOVA importance from a trial table: which parameter drives which objective, and when there is none."""

from __future__ import annotations

from tests.sweep.test_pareto import trials_table
from tests.sweep.test_plots import DISTRIBUTIONS, NAN, varied_sweep
from tsmoe.sweep.importance import infer_distributions, parameter_importances


def test_importance_follows_the_parameter_that_drives_each_objective():
    importances = parameter_importances(varied_sweep(), distributions=DISTRIBUTIONS)
    assert set(importances) == {"best_val_auroc", "samples_s"}
    quality, throughput = importances["best_val_auroc"], importances["samples_s"]
    assert max(quality, key=quality.get) == "data.crop_schedule"
    assert max(throughput, key=throughput.get) == "data.batch_size"


def test_importance_is_skipped_when_no_parameter_varies_or_rows_lack_parameters():
    same = trials_table(
        [("a", "completed", 0.9, 100.0), ("b", "completed", 0.8, 200.0)],
        param__data__batch_size=[8, 8],
        param__data__crop_schedule=["grow", "grow"],
    )
    assert parameter_importances(same) is None
    gaps = trials_table(
        [("a", "completed", 0.9, 100.0), ("b", "completed", 0.8, 200.0)],
        param__data__batch_size=[8, 16],
        param__data__crop_schedule=["grow", NAN],
    )
    assert parameter_importances(gaps) is None


def test_distributions_are_inferred_from_the_table_when_the_space_is_not_given():
    inferred = infer_distributions(varied_sweep())
    assert inferred["data.batch_size"].low == 8 and inferred["data.batch_size"].high == 64
    assert sorted(inferred["data.crop_schedule"].choices) == ["fixed", "grow"]
    assert inferred["training.learning_rate"].low == 5e-4
