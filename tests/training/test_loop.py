import numpy as np
import torch

from tsmoe.data.config import DataConfig
from tsmoe.data.store import open_dataset
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.config import TrainingConfig
from tsmoe.training.loop import fit, series_batch
from tests.data.conftest import write_small_dataset
from tests.model.tiny import TINY


def test_series_batch_shifts_labels_by_one_point():
    batch = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    inputs, labels = series_batch(batch, "cpu")
    assert inputs.shape == labels.shape == (6, 4)
    assert torch.equal(labels, inputs + 1)


def test_fit_lowers_the_loss_and_counts_accumulated_steps(tmp_path):
    dataset = open_dataset(write_small_dataset(tmp_path / "data", train=16))
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**TINY))
    data = DataConfig(batch_size=4, num_workers=0, crop_schedule="half_then_full")
    training = TrainingConfig(epochs=6, learning_rate=3e-3, warmup_steps=2, gradient_accumulation=2)
    reports = fit(model, dataset.split("train"), dataset.normalization, data, training)
    assert [report.optimizer_steps for report in reports] == [2] * 6
    assert [report.crop_length for report in reports] == [16, 16, 16, 32, 32, 32]
    assert reports[-1].loss < reports[0].loss
    assert all(np.isfinite(report.tokens_s) and 0 <= report.data_wait_frac < 1 for report in reports)
