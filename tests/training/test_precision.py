"""Precision follows the hardware: native bfloat16 on GPUs and CPUs that have it, float16 with scaling on older
GPUs, float32 on other CPUs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_loop import synthetic_data
from tsmoe.config import load_run_config
from tsmoe.training import precision as precision_module
from tsmoe.training.launch import METRICS_FILE, RUN_NAME, collect_outputs
from tsmoe.training.loop import fit
from tsmoe.training.precision import choose_precision
from tsmoe.training.trainer import Trainer

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


def _gpu_with_capability(monkeypatch, capability):
    monkeypatch.setattr(precision_module.torch.cuda, "get_device_capability", lambda device=None: capability)


def _cpu_with(monkeypatch, onednn_bfloat16: bool, avx512_bfloat16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bfloat16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bfloat16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    "onednn, avx512_bfloat16, amx, instructions",
    [(True, True, False, "AVX512-BF16"), (True, True, True, "AMX"), (True, False, True, "AMX")],
)
def test_auto_on_a_cpu_with_bfloat16_instructions_picks_bfloat16_autocast(
    monkeypatch, onednn, avx512_bfloat16, amx, instructions
):
    _cpu_with(monkeypatch, onednn, avx512_bfloat16, amx)
    chosen = choose_precision("cpu")
    assert chosen.name == "bfloat16" and chosen.autocast_dtype == torch.bfloat16 and not chosen.loss_scaling
    assert instructions in chosen.reason and "natively" in chosen.reason
    assert not chosen.grad_scaler().is_enabled()
    with chosen.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "onednn, avx512_bfloat16, amx",
    # Plain AVX512 satisfies oneDNN's own check but converts bfloat16 through float32; no oneDNN, no bfloat16.
    [(True, False, False), (False, False, False), (False, True, False)],
)
def test_auto_on_a_cpu_without_bfloat16_instructions_trains_in_float32(monkeypatch, onednn, avx512_bfloat16, amx):
    _cpu_with(monkeypatch, onednn, avx512_bfloat16, amx)
    chosen = choose_precision("cpu")
    assert chosen.name == "float32" and chosen.autocast_dtype is None and not chosen.loss_scaling
    assert "without native bfloat16" in chosen.reason
    assert not chosen.grad_scaler().is_enabled()
    layer = torch.nn.Linear(4, 4)
    with chosen.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.parametrize(
    "capability, expected, scaling",
    [((9, 0), "bfloat16", False), ((8, 0), "bfloat16", False), ((7, 5), "float16", True), ((7, 0), "float16", True)],
)
def test_auto_on_a_gpu_uses_bfloat16_only_where_it_is_native(monkeypatch, capability, expected, scaling):
    _gpu_with_capability(monkeypatch, capability)
    chosen = choose_precision("cuda:0")
    assert chosen.name == expected and chosen.loss_scaling is scaling
    assert f"{capability[0]}.{capability[1]}" in chosen.reason


def test_an_explicit_choice_wins_and_says_when_it_is_emulated(monkeypatch):
    _gpu_with_capability(monkeypatch, (7, 5))
    chosen = choose_precision("cuda", "bfloat16")
    assert chosen.name == "bfloat16" and "emulates" in chosen.reason
    assert choose_precision("cpu", "bfloat16").autocast_dtype == torch.bfloat16
    assert choose_precision("cpu", "float32").name == "float32"


def test_float16_on_cpu_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"training\.precision: float16 needs a CUDA GPU"):
        choose_precision("cpu", "float16")


@pytest.mark.slow
def test_a_bfloat16_cpu_run_follows_the_float32_run_over_the_quickstart_schedule(tmp_path):
    # The quickstart's model, optimizer and schedule (6 epochs) on a small dataset: 12 optimizer steps.
    data = synthetic_data(tmp_path / "data", train=8, val=4, length=64)
    losses = {}
    for precision in ("float32", "bfloat16"):
        run = load_run_config(QUICKSTART)
        run.data.path, run.data.num_workers = data, 0
        run.training.precision = precision
        run.training.warmup_steps, run.training.aux_loss_warmup_steps = 2, 4
        _, history = fit(run)
        losses[precision] = np.array([metrics["loss"] for metrics in history])
    assert len(losses["bfloat16"]) == 6 and np.isfinite(losses["bfloat16"]).all()
    # bfloat16 rounds matmul inputs to 8 significant bits (relative error up to 2^-9, 0.2%); autocast keeps
    # weights, norms, softmaxes, losses and the optimizer in float32, so the rounding does not compound. 1% per
    # epoch allows for that and for routing flips near ties, and is 30x what was measured here (0.03%).
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.01)
    assert not np.array_equal(losses["bfloat16"], losses["float32"])  # the two runs did differ in precision


@pytest.mark.parametrize("native_bfloat16, expected", [(True, "bfloat16"), (False, "float32")])
def test_the_quickstart_run_records_the_precision_auto_picked_in_its_metrics(
    tmp_path, monkeypatch, native_bfloat16, expected
):
    # What `tsmoe train configs/quickstart.yaml` writes, in one process: the quickstart config (precision auto)
    # on a small dataset, one epoch, its checkpoint, then metrics.jsonl collected from it as the launcher does.
    _cpu_with(monkeypatch, onednn_bfloat16=native_bfloat16, avx512_bfloat16=native_bfloat16, amx=False)
    run = load_run_config(QUICKSTART)
    assert run.training.precision == "auto"
    run.data.path, run.data.num_workers = synthetic_data(tmp_path / "data", train=4, val=4, length=32), 0
    run.training.epochs = 1
    trainer = Trainer(run)
    trainer.history.append(trainer.train_epoch())
    trainer.save_checkpoint(tmp_path / "run" / RUN_NAME / "checkpoint_000000")
    collect_outputs(tmp_path / "run")
    lines = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["precision"] for line in lines] == [expected]
