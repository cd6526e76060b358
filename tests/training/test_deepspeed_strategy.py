"""DeepSpeed ZeRO trains like DDP: the same losses and parameters, the same skipped steps and schedule on a NaN,
and a resumed run that ends where an uninterrupted one does. Two gloo ranks on the CPU, no Ray.

DeepSpeed builds C++ ops on first use (cached in ~/.cache/torch_extensions), so these tests are slow and few:
each spawns its two ranks once and runs every trainer it compares inside them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing

from tests.training.probes import parameters, poison_gradient, poison_router
from tests.training.spawned_ranks import leave_and_exit
from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.config import RunConfig
from tsmoe.training.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _deepspeed_on_the_cpu(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # inherited by the spawned ranks, read when deepspeed is imported


def _with_strategy(run: RunConfig, strategy: str, stage: int = 2) -> RunConfig:
    run = run.model_copy(deep=True)
    run.training.strategy = strategy  # type: ignore[assignment]
    run.training.deepspeed.stage = stage  # type: ignore[assignment]
    return run


def _train(trainer: Trainer, epochs: int) -> dict:
    history = [trainer.train_epoch() for _ in range(epochs)]
    return {
        "losses": [metrics["loss"] for metrics in history],
        "nan_steps": [metrics["nan_steps"] for metrics in history],
        "learning_rate": trainer.learning_rate(),
        "step": trainer.step,
        "parameters": parameters(trainer),
    }


def _spawn(function, tmp_path: Path, *args) -> dict:
    multiprocessing.spawn(function, args=(str(tmp_path), *args), nprocs=2)
    return torch.load(tmp_path / "results.pt", weights_only=False)


def _join(rank: int, tmp_path: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)  # DeepSpeed asks for it; Ray Train and torchrun set it
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=rank, world_size=2)


def _zero_and_ddp(rank: int, tmp_path: str, run: RunConfig, stage: int) -> None:
    _join(rank, tmp_path)
    results = {
        "ddp": _train(Trainer(_with_strategy(run, "ddp"), rank=rank, world_size=2), epochs=2),
        "zero": _train(Trainer(_with_strategy(run, "deepspeed", stage), rank=rank, world_size=2), epochs=2),
    }
    if rank == 0:
        torch.save(results, Path(tmp_path) / "results.pt")
    leave_and_exit()


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_matches_ddp_in_losses_and_parameters(tmp_path, stage):
    # 16 segments: each of 2 ranks has 2 micro-batches of 4 per epoch, accumulated into 1 optimizer step.
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=2, gradient_accumulation=2)
    results = _spawn(_zero_and_ddp, tmp_path, run, stage)
    ddp, zero = results["ddp"], results["zero"]
    assert zero["step"] == ddp["step"] == 2 and zero["nan_steps"] == ddp["nan_steps"] == [0, 0]
    assert zero["losses"] == pytest.approx(ddp["losses"], rel=1e-5)
    assert zero["learning_rate"] == pytest.approx(ddp["learning_rate"])
    for name, expected in ddp["parameters"].items():
        torch.testing.assert_close(zero["parameters"][name], expected, rtol=1e-4, atol=1e-6, msg=name)


def _nonfinite_steps(rank: int, tmp_path: str, run: RunConfig) -> None:
    _join(rank, tmp_path)
    results = {}
    for strategy in ("ddp", "deepspeed"):
        for poison in ("loss", "gradient"):
            trainer = Trainer(_with_strategy(run, strategy), rank=rank, world_size=2)
            if rank == 0:  # one rank's NaN must make both ranks skip the step
                (poison_router if poison == "loss" else poison_gradient)(trainer, calls={1})
            results[strategy, poison] = _train(trainer, epochs=2)
        results[strategy, "clean"] = _train(Trainer(_with_strategy(run, strategy), rank=rank, world_size=2), epochs=2)
    torch.save(results, Path(tmp_path) / f"results{rank}.pt")
    if rank == 0:
        torch.save(results, Path(tmp_path) / "results.pt")
    leave_and_exit()


def test_a_nonfinite_loss_or_gradient_is_skipped_alike_under_ddp_and_zero(tmp_path):
    # 2 optimizer steps per epoch per rank; the poisoned forward/backward call 1 is step 2 (no accumulation).
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=2)
    results = _spawn(_nonfinite_steps, tmp_path, run)
    other_rank = torch.load(tmp_path / "results1.pt", weights_only=False)
    for poison in ("loss", "gradient"):
        ddp, zero = results["ddp", poison], results["deepspeed", poison]
        for figures in (ddp, zero, other_rank["ddp", poison], other_rank["deepspeed", poison]):
            assert figures["nan_steps"] == [1, 0], poison  # counted once, on every rank
            assert figures["step"] == 4
        # A skipped step advances the schedule: the learning rate is the clean run's, under both.
        assert zero["learning_rate"] == ddp["learning_rate"] == results["ddp", "clean"]["learning_rate"]
        assert zero["losses"] == pytest.approx(ddp["losses"], rel=1e-5)
        for name, expected in ddp["parameters"].items():
            torch.testing.assert_close(zero["parameters"][name], expected, rtol=1e-4, atol=1e-6, msg=name)
        # The skipped update leaves the parameters off the clean run's path.
        clean = results["ddp", "clean"]["parameters"]["model.layers.0.self_attn.q_proj.weight"]
        assert not torch.allclose(ddp["parameters"]["model.layers.0.self_attn.q_proj.weight"], clean)


def _resume(rank: int, tmp_path: str, run: RunConfig) -> None:
    _join(rank, tmp_path)
    uninterrupted = _train(Trainer(run, rank=rank, world_size=2), epochs=3)
    first = Trainer(run, rank=rank, world_size=2)
    first.train_epoch()
    first.save_checkpoint(Path(tmp_path) / "checkpoint")
    dist.barrier()
    resumed = Trainer(run, rank=rank, world_size=2)
    resumed.load_checkpoint(Path(tmp_path) / "checkpoint")
    epoch_after_load = resumed.epoch
    results = {"uninterrupted": uninterrupted, "resumed": _train(resumed, epochs=2), "epoch": epoch_after_load}
    if rank == 0:
        torch.save(results, Path(tmp_path) / "results.pt")
    leave_and_exit()


def test_zero_resumed_from_a_checkpoint_ends_like_an_uninterrupted_run(tmp_path):
    run = _with_strategy(tiny_run(synthetic_data(tmp_path / "data"), epochs=3, aux_loss_warmup_steps=3), "deepspeed")
    results = _spawn(_resume, tmp_path, run)
    uninterrupted, resumed = results["uninterrupted"], results["resumed"]
    assert results["epoch"] == 1 and resumed["step"] == uninterrupted["step"] == 6
    assert resumed["losses"] == uninterrupted["losses"][1:]
    assert resumed["learning_rate"] == uninterrupted["learning_rate"]
    for name, expected in uninterrupted["parameters"].items():
        assert torch.equal(resumed["parameters"][name], expected), name
    shards = sorted(path.name for path in (tmp_path / "checkpoint" / "deepspeed" / "state").glob("zero_pp_rank_*"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
