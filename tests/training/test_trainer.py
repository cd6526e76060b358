"""The trainer's promises: DDP equals one process, resume equals no interruption, NaNs are caught and named,
and fine-tuning modes train only what they say."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from tests.model.tiny import TINY
from tests.training.probes import parameters, poison_gradient, poison_router
from tests.training.spawned_ranks import leave_and_exit
from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.config import RunConfig, load_detector, load_run_config
from tsmoe.data.loader import normalized_segments
from tsmoe.data.store import DatasetWriter
from tsmoe.data.views import SeriesViews
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.masking import span_mask
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.checkpoint_files import CHOSEN_DETECTOR_FILE
from tsmoe.training.config import FinetuneConfig
from tsmoe.training.finetune import base_model
from tsmoe.training.guard import NonFiniteTrainingError
from tsmoe.training.strategy import STATE_FILE
from tsmoe.training.trainer import SUMMARY_FILE, Trainer, aux_loss_factor, rng_state, set_rng_state


def test_aux_loss_factor_warms_up_linearly():
    assert [aux_loss_factor(step, 0.02, 4) for step in (0, 2, 4, 10)] == [0.0, 0.01, 0.02, 0.02]
    assert aux_loss_factor(0, 0.02, 0) == 0.02


def _ddp_rank(rank: int, run, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    trainer = Trainer(run, "cpu", rank=rank, world_size=2)
    reductions = []

    def counting_allreduce(state, bucket):
        reductions.append(bucket.index())
        return allreduce_hook(None, bucket)

    trainer.strategy.ddp_model.register_comm_hook(None, counting_allreduce)
    trainer.train_epoch()
    if rank == 0:
        torch.save({"parameters": parameters(trainer), "reductions": len(reductions)}, out)
    leave_and_exit()


@pytest.mark.slow
@pytest.mark.parametrize(
    "batch_size, accumulation, views", [(2, 1, ["time"]), (1, 2, ["time"]), (2, 1, ["time", "spectrum"])]
)
def test_two_ddp_workers_match_one_process_on_the_same_global_batch(tmp_path, batch_size, accumulation, views):
    data = synthetic_data(tmp_path / "data", train=4, val=4)
    # Full crops start at 0 and no shuffle: rank r trains on segments r and r+2, the single process on all
    # four, in one micro-batch or two. The aux loss is a statistic of each rank's own tokens (as in the
    # reference under DDP), so it is off here.
    single = tiny_run(data, epochs=1, warmup_steps=0)
    single.model.router_aux_loss_factor = 0.0
    single.data.shuffle = False
    # The spectral view's statistics come from the training split on every rank alike: nothing rank-specific.
    single.data.views, single.data.spectrum_window = views, 16
    distributed = single.model_copy(deep=True)
    distributed.data.batch_size = batch_size
    distributed.training.gradient_accumulation = accumulation
    multiprocessing.spawn(
        _ddp_rank, args=(distributed, str(tmp_path / "rendezvous"), str(tmp_path / "ddp.pt")), nprocs=2
    )
    trainer = Trainer(single, "cpu")
    initial = parameters(trainer)
    trainer.train_epoch()
    expected, got = parameters(trainer), torch.load(tmp_path / "ddp.pt")
    assert trainer.step == 1
    for name in expected:
        assert not torch.equal(expected[name], initial[name]) or "shared_expert_gate" in name, name
        torch.testing.assert_close(got["parameters"][name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # The tiny model's gradients fit one 25 MB DDP bucket: one all-reduce for the one optimizer step, however
    # many micro-batches it accumulates (an all-reduce per micro-batch would count 2).
    assert got["reductions"] == 1


def test_a_resumed_run_ends_with_the_same_parameters(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=3, aux_loss_warmup_steps=3)
    uninterrupted = Trainer(run)
    for _ in range(3):
        uninterrupted.train_epoch()

    first = Trainer(run)
    first.train_epoch()
    first.history.append({"epoch": 1})
    first.save_checkpoint(tmp_path / "checkpoint")
    resumed = Trainer(run)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    assert resumed.epoch == 1 and resumed.step == first.step and resumed.history == [{"epoch": 1}]
    for _ in range(2):
        resumed.train_epoch()
    expected, got = parameters(uninterrupted), parameters(resumed)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert (tmp_path / "checkpoint" / "model" / "config.json").is_file()


def test_one_nan_step_is_skipped_and_counted(tmp_path):
    trainer = Trainer(tiny_run(synthetic_data(tmp_path / "data"), epochs=1))
    poison_router(trainer, calls={1})
    metrics = trainer.train_epoch()
    assert metrics["nan_steps"] == 1 and trainer.step == 4
    assert math.isfinite(metrics["loss"])  # the NaN is left out of the mean, never logged as 0


def test_a_persistent_nan_stops_the_run_naming_the_router(tmp_path):
    trainer = Trainer(tiny_run(synthetic_data(tmp_path / "data"), epochs=1, max_consecutive_nonfinite_steps=2))
    poison_router(trainer, calls=set(range(100)))
    with pytest.raises(
        NonFiniteTrainingError,
        match=r"2 optimizer steps in a row.*model\.layers\.1\.ffn_layer\.gate "
        r"\(router logits\)",
    ):
        trainer.train_epoch()


@pytest.fixture
def pretrained(tmp_path):
    torch.manual_seed(1)
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained"


def test_lora_trains_only_adapter_weights(tmp_path, pretrained):
    run = tiny_run(
        synthetic_data(tmp_path / "data"), epochs=1, finetune=FinetuneConfig(checkpoint=pretrained, mode="lora")
    )
    trainer = Trainer(run)
    trainable = [name for name, parameter in trainer.module.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("embed_layer.emb_layer.lora_A" in name for name in trainable)
    assert not any("experts" in name for name in trainable)
    before = parameters(trainer)
    trainer.train_epoch()
    after = parameters(trainer)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all("lora_" in name for name in changed)


def test_frozen_experts_leave_expert_weights_unchanged(tmp_path, pretrained):
    run = tiny_run(
        synthetic_data(tmp_path / "data"),
        epochs=1,
        finetune=FinetuneConfig(checkpoint=pretrained, mode="frozen_experts"),
    )
    trainer = Trainer(run)
    before = parameters(trainer)
    trainer.train_epoch()
    after = parameters(trainer)
    experts = [name for name in before if ".ffn_layer.experts." in name or ".shared_expert" in name]
    assert experts and all(torch.equal(before[name], after[name]) for name in experts)
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )


def test_router_only_trains_the_routers(tmp_path, pretrained):
    run = tiny_run(
        synthetic_data(tmp_path / "data"), epochs=1, finetune=FinetuneConfig(checkpoint=pretrained, mode="router_only")
    )
    trainable = [name for name, p in Trainer(run).module.named_parameters() if p.requires_grad]
    assert trainable == ["model.layers.0.ffn_layer.gate.weight", "model.layers.1.ffn_layer.gate.weight"]


@pytest.mark.slow
def test_a_compiled_model_trains_like_the_eager_one(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=1)
    eager = Trainer(run).train_epoch()
    compiled = Trainer(run.model_copy(update={"training": run.training.model_copy(update={"compile": True})}))
    metrics = compiled.train_epoch()
    assert metrics["nan_steps"] == 0
    assert metrics["loss"] == pytest.approx(eager["loss"], rel=1e-4)


def test_a_nonfinite_gradient_is_skipped_counted_and_the_schedule_still_advances(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=1)
    clean = Trainer(run)
    clean.train_epoch()
    trainer = Trainer(run)
    poison_gradient(trainer, calls={1})
    metrics = trainer.train_epoch()
    assert metrics["nan_steps"] == 1 and math.isfinite(metrics["loss"]) and trainer.step == 4
    assert metrics["learning_rate"] == clean.learning_rate()
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.isfinite(parameters(trainer)[weight]).all()
    assert not torch.equal(parameters(trainer)[weight], parameters(clean)[weight])


def test_a_checkpoint_loads_with_weights_only_and_records_the_precision(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=2)
    trainer = Trainer(run)
    metrics = trainer.train_epoch()
    assert metrics["precision"] == "float32"
    trainer.history.append(metrics)
    trainer.save_checkpoint(tmp_path / "checkpoint")
    state = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)  # no pickled code allowed
    assert state["trainer"]["epoch"] == 1 and state["trainer"]["history"][0]["precision"] == "float32"
    summary = json.loads((tmp_path / "checkpoint" / SUMMARY_FILE).read_text())
    assert summary["precision"] == "float32"
    # The precision is recorded, not written into the config: the same config still resumes the run.
    assert load_run_config(tmp_path / "checkpoint" / "config.yaml") == run


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.standard_normal()  # numpy's cached gaussian is part of its state
    torch.save(rng_state(torch.device("cpu")), tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    got = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


@pytest.mark.parametrize("mode", ["scratch", "lora"])
def test_a_run_with_the_spectral_view_trains_on_every_series_and_validates(tmp_path, pretrained, mode):
    finetune = FinetuneConfig(checkpoint=pretrained, mode="lora") if mode == "lora" else FinetuneConfig()
    run = tiny_run(
        synthetic_data(tmp_path / "data", train=8, val=4), epochs=1, finetune=finetune, throughput_warmup_steps=0
    )
    run.data.crop_schedule = "half_then_full"  # two steps: a crop of 32 points, then one of 64
    run.data.views = ["time", "spectrum"]
    run.data.spectrum_window, run.data.spectrum_bands = 16, 2
    trainer = Trainer(run)
    shapes = []
    base_model(trainer.module).register_forward_pre_hook(lambda module, inputs: shapes.append(tuple(inputs[0].shape)))
    metrics = trainer.train_epoch()
    metrics.update(trainer.validate())
    # 4 segments x 3 channels x (1 + 2 bands) series per micro-batch, inputs one point shorter than the crop;
    # validation scores full segments with the same 9 series per segment.
    assert shapes[:2] == [(36, 31), (36, 63)] and set(shapes[2:]) == {(4 * 9, 64)}
    assert metrics["tokens_s"] / metrics["samples_s"] == pytest.approx(9 * (32 + 64) / 2)  # tokens: every series
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["val_auroc"] <= 1
    # The view adds series, never parameters: the model is the plain one, and LoRA trains its adapters alone.
    if mode == "scratch":
        plain = TimeMoE(TimeMoEConfig(**TINY))
        assert [name for name, _ in trainer.module.named_parameters()] == [name for name, _ in plain.named_parameters()]
    else:
        assert all("lora_" in name for name, value in trainer.module.named_parameters() if value.requires_grad)


def _two_machines_data(directory, length: int = 64):
    """Two machines' runs of 3 channels: 4 normal segments each, whose channels relate in each machine's own way
    (tests/data/test_views.py), and one labelled segment each with an anomaly in its second half."""
    rng = np.random.default_rng(5)
    level = rng.normal(size=(2, 5, length)).cumsum(axis=2)
    segments = np.stack(
        [
            np.stack([a, sign * a + 0.5 * rng.normal(size=a.shape), rng.normal(size=a.shape)], axis=1)
            for a, sign in zip(level, (-1, 1), strict=True)
        ]
    )  # [machine, 5, 3, length]
    writer = DatasetWriter(directory, length, ["a", "b", "c"], sampling_rate_hz=1.0)
    train = writer.add_split("train", 8, with_runs=True)
    train.segments[:] = segments[:, :4].reshape(8, 3, length)
    train.runs[:] = np.repeat([0, 1], 4)
    val = writer.add_split("val", 2, label_level="point", with_runs=True, with_starts=True)
    val.segments[:] = segments[:, 4]
    val.segments[:, 1, length // 2 :] *= -1  # each machine's relation broken the other machine's way
    val.labels[:, length // 2 :] = 1
    val.runs[:], val.starts[:] = [0, 1], [0, 0]
    writer.finish()
    return directory


def test_every_crop_is_projected_on_its_own_runs_residual_directions_in_training_and_validation(tmp_path, monkeypatch):
    run = tiny_run(_two_machines_data(tmp_path / "data"), epochs=1, throughput_warmup_steps=0)
    run.data.views, run.data.residual_reference = ["time", "residual"], "run"
    trainer = Trainer(run)
    assert trainer.views.runs_with_own_residual == 2
    train = normalized_segments(trainer.dataset.split("train"), trainer.dataset.normalization, 0, 8)
    calls = []
    views = SeriesViews.__call__

    def recording(self, segments, runs=None):
        calls.append((segments.clone(), runs))
        return views(self, segments, runs)

    monkeypatch.setattr(SeriesViews, "__call__", recording)
    trainer.train_epoch()
    metrics = trainer.validate()
    crops = [call for call in calls if call[0].shape[0] == run.data.batch_size and call[1] is not None]
    assert crops and all(runs is not None for _, runs in calls)
    # Each crop came with the run id of the segment it was cut from.
    for segments, runs in crops:
        for crop, run_id in zip(segments.numpy(), runs.tolist(), strict=True):
            length = crop.shape[-1]
            owners = {
                index // 4
                for index in range(8)
                for start in range(64 - length + 1)
                if np.array_equal(train[index, :, start : start + length], crop)
            }
            assert owners == {run_id}
    # Validation scored both labelled runs, each with its own directions.
    assert {tuple(runs.tolist()) for _, runs in calls if runs is not None and runs.min() >= 0} >= {(0, 1)}
    assert 0 <= metrics["val_auroc"] <= 1


# --- the masked-reconstruction objective ---------------------------------------------------------------
def _objective_run(data, loss: str, **training) -> RunConfig:
    """tiny_run with `loss`; masked_reconstruction alone scores with the reconstruction error only."""
    values = tiny_run(data, **training).model_dump()
    values["training"]["loss"] = loss
    if loss == "masked_reconstruction":
        values["evaluation"].update(forecast_weight=0.0, reconstruction_weight=1.0)
    return RunConfig.model_validate(values)


def _held_out_reconstruction_loss(trainer: Trainer) -> float:
    """The reconstruction loss of 8 validation segments under one fixed mask: comparable across epochs."""
    split = trainer.dataset.split("val")
    series = torch.from_numpy(normalized_segments(split, trainer.dataset.normalization, 0, 8)).flatten(0, 1)
    hidden = span_mask(series.shape[0], series.shape[1], 0.25, 4, torch.Generator().manual_seed(0))
    model = base_model(trainer.module).eval()
    with torch.no_grad():
        loss = model(series, reconstruction_mask=hidden, forecast=False).reconstruction_loss
    model.train()
    assert loss is not None
    return loss.item()


@pytest.mark.slow
def test_both_objectives_lower_the_reconstruction_loss(tmp_path):
    run = _objective_run(
        synthetic_data(tmp_path / "data", train=48), "both", epochs=4, mask_span=4, throughput_warmup_steps=0
    )
    # At the reference's 0.02 init the scalar embedding is about x^2 times one vector (docs/design.md section 2):
    # the sign of a value is lost and a tiny model needs hundreds of steps to start learning either objective.
    run.model.initializer_range = 0.3
    trainer = Trainer(run)
    before = _held_out_reconstruction_loss(trainer)
    history = [trainer.train_epoch() for _ in range(4)]
    assert all(metrics["nan_steps"] == 0 for metrics in history)
    assert _held_out_reconstruction_loss(trainer) < 0.5 * before
    assert history[-1]["reconstruction_loss"] < 0.5 * history[0]["reconstruction_loss"]
    # The loss counts both objectives: the forecast heads' share is what remains beside the reconstruction.
    assert history[-1]["loss"] > history[-1]["reconstruction_loss"]


def test_masked_reconstruction_trains_its_path_and_freezes_the_forecast_heads(tmp_path):
    trainer = Trainer(_objective_run(synthetic_data(tmp_path / "data"), "masked_reconstruction", epochs=1))
    assert base_model(trainer.module).config.reconstruction_head
    before = parameters(trainer)
    metrics = trainer.train_epoch()
    after = parameters(trainer)
    assert metrics["nan_steps"] == 0 and math.isfinite(metrics["reconstruction_loss"])
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert {"mask_embedding", "reconstruction_head.out_layer.weight"} <= changed
    assert not any(name.startswith("lm_heads.") for name in changed)
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    # Validation scores with the reconstruction error the run's evaluation section asks for.
    assert 0.0 <= trainer.validate()["val_auroc"] <= 1.0


def test_the_masks_follow_the_crop_curriculum(tmp_path):
    run = _objective_run(synthetic_data(tmp_path / "data"), "both", epochs=2, mask_span=4)
    run.data.crop_schedule = "half_then_full"
    trainer = Trainer(run)
    crops = [trainer.train_epoch()["crop_length"] for _ in range(2)]
    assert crops == [32, 64]
    inputs = torch.zeros(3, 31)
    mask = trainer._reconstruction_mask(inputs, micro=0)
    assert mask.shape == (3, 31) and mask.sum(dim=1).tolist() == [8, 8, 8]  # round(0.25 * 31 / 4) spans of 4


def test_a_mask_span_longer_than_the_shortest_crop_is_refused_naming_the_field(tmp_path):
    run = _objective_run(synthetic_data(tmp_path / "data"), "both", mask_span=40)
    run.data.crop_schedule = "half_then_full"
    with pytest.raises(ValueError, match=r"training\.mask_span 40: .*31 input points"):
        Trainer(run)


def test_lora_with_reconstruction_trains_adapters_and_the_new_path(tmp_path, pretrained):
    run = _objective_run(
        synthetic_data(tmp_path / "data"), "both", epochs=1, finetune=FinetuneConfig(checkpoint=pretrained, mode="lora")
    )
    trainer = Trainer(run)
    trainable = [name for name, parameter in trainer.module.named_parameters() if parameter.requires_grad]
    new_path = [name for name in trainable if "lora_" not in name]
    assert sorted(name.split("model.", 2)[-1] for name in new_path) == [
        "mask_embedding",
        "reconstruction_head.out_layer.weight",
    ]
    before = parameters(trainer)
    trainer.train_epoch()
    after = parameters(trainer)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert {"mask_embedding", "reconstruction_head.out_layer.weight"} <= changed
    assert not any(".ffn_layer." in name or name.startswith("lm_heads.") for name in changed)


def _ddp_objective_rank(rank: int, runs, rendezvous: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    for run in runs:
        trainer = Trainer(run, "cpu", rank=rank, world_size=2)
        metrics = trainer.train_epoch()
        assert metrics["nan_steps"] == 0 and trainer.step == 2
    leave_and_exit()


@pytest.mark.slow
def test_ddp_trains_each_objective_without_unused_parameters(tmp_path):
    # Two optimizer steps per rank: DDP fails the second forward when a parameter got no gradient in the first.
    # Both objectives in one pair of processes, which costs most of the time to start.
    data = synthetic_data(tmp_path / "data", train=8)
    runs = [_objective_run(data, loss, epochs=1) for loss in ("both", "masked_reconstruction")]
    for run in runs:
        run.data.batch_size = 2
    multiprocessing.spawn(_ddp_objective_rank, args=(runs, str(tmp_path / "rendezvous")), nprocs=2)


def test_validation_chooses_among_the_alternatives_and_the_checkpoint_keeps_the_choice(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data", train=8, val=4), epochs=1)
    run.evaluation = run.evaluation.model_copy(
        update={"density_weight": 1.0, "alternatives": [{"density_weight": 0.0}, {"forecast_weight": 0.0}]}
    )
    trainer = Trainer(run)
    metrics = trainer.train_epoch()
    metrics.update(trainer.validate())
    aurocs = [metrics[f"val_auroc_detector_{index}"] for index in range(3)]
    assert metrics["val_auroc"] == max(aurocs) and aurocs[int(metrics["val_detector"])] == max(aurocs)
    trainer.history.append(metrics)
    trainer.save_checkpoint(tmp_path / "checkpoint")
    chosen = load_detector(tmp_path / "checkpoint" / "model" / CHOSEN_DETECTOR_FILE)
    assert chosen == run.detector_settings().candidates()[int(metrics["val_detector"])]
    assert not chosen.alternatives


def test_a_run_without_alternatives_saves_no_chosen_detector(tmp_path):
    trainer = Trainer(tiny_run(synthetic_data(tmp_path / "data", train=8, val=4), epochs=1))
    metrics = trainer.train_epoch()
    metrics.update(trainer.validate())
    trainer.history.append(metrics)
    trainer.save_checkpoint(tmp_path / "checkpoint")
    assert "val_detector" not in metrics and not (tmp_path / "checkpoint" / "model" / CHOSEN_DETECTOR_FILE).exists()
