"""Auxiliary-loss-free balancing: the bias moves towards balance after each step, identically on every rank."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing

from tests.model.tiny import TINY
from tests.training.spawned_ranks import leave_and_exit
from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.balancing import balanced_layers, selection_logits, update_expert_bias
from tsmoe.training.finetune import base_model
from tsmoe.training.trainer import Trainer


def _model(rate=0.01, **options) -> TimeMoE:
    torch.manual_seed(0)
    return TimeMoE(TimeMoEConfig(**{**TINY, "router_bias_update_rate": rate, **options}))


def test_update_moves_each_bias_by_the_rate_towards_the_mean_load_and_resets_the_counts():
    model = _model(rate=0.01)
    first, second = balanced_layers(model)
    first.tokens_per_expert = torch.tensor([10.0, 30.0, 20.0, 20.0])  # mean 20
    second.tokens_per_expert = torch.tensor([0.0, 0.0, 0.0, 0.0])  # saw nothing: left alone
    update_expert_bias(model)
    torch.testing.assert_close(first.expert_bias, torch.tensor([0.01, -0.01, 0.0, 0.0]))
    torch.testing.assert_close(second.expert_bias, torch.zeros(4))
    assert torch.count_nonzero(first.tokens_per_expert) == 0


def test_a_model_without_balancing_is_left_alone():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**TINY))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    update_expert_bias(model)
    assert balanced_layers(model) == []
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in before.items())


def test_repeated_updates_spread_a_collapsed_router():
    # Every token starts on the same top-1 expert (a router that prefers expert 0 strongly); the bias
    # moves the others' tokens back within a few hundred steps.
    model = _model(rate=0.05, num_experts_per_tok=1)
    layer = balanced_layers(model)[0]
    common = torch.randn(TINY["hidden_size"])
    tokens = common + 0.3 * torch.randn(256, TINY["hidden_size"])  # alike tokens, as at small init
    with torch.no_grad():
        layer.gate.weight.mul_(10.0)
        layer.gate.weight[0] += 0.1 * common
    _, _, chosen = layer.route(tokens)
    assert torch.bincount(chosen.reshape(-1), minlength=4).max().item() / 256 > 0.9
    for _ in range(200):
        layer.route(tokens)
        update_expert_bias(model)
    _, _, chosen = layer.route(tokens)
    assert torch.bincount(chosen.reshape(-1), minlength=4).max().item() / 256 < 0.4


def test_selection_logits_add_each_layers_bias():
    model = _model()
    for index, layer in enumerate(balanced_layers(model)):
        layer.expert_bias.fill_(float(index + 1))
    logits = [torch.zeros(3, 4), torch.ones(3, 4)]
    shifted = selection_logits(model, logits)
    assert torch.equal(shifted[0], torch.ones(3, 4)) and torch.equal(shifted[1], torch.full((3, 4), 3.0))
    with pytest.raises(ValueError, match="1 router logits for 2 MoE layers"):
        selection_logits(model, logits[:1])


def _rank(rank: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    model = _model(rate=0.01)
    layer = balanced_layers(model)[0]
    # Rank 0 sends its tokens to expert 0, rank 1 to expert 3: together experts 1 and 2 are under the mean.
    layer.tokens_per_expert = torch.tensor([40.0, 0.0, 0.0, 0.0] if rank == 0 else [0.0, 0.0, 0.0, 40.0])
    update_expert_bias(model, distributed=True)
    torch.save(layer.expert_bias, f"{out}.{rank}")
    leave_and_exit()


@pytest.mark.slow
def test_ddp_ranks_update_from_the_summed_counts_and_keep_identical_biases(tmp_path):
    out = str(tmp_path / "bias")
    multiprocessing.spawn(_rank, args=(str(tmp_path / "rendezvous"), out), nprocs=2)
    expected = torch.tensor([-0.01, 0.01, 0.01, -0.01])
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(f"{out}.{rank}"), expected)


def test_the_trainer_moves_the_bias_once_per_optimizer_step_and_its_checkpoint_keeps_it(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=1, gradient_accumulation=2)
    run.model.router_bias_update_rate = 0.01
    run.model.router_input_norm = "batch"
    trainer = Trainer(run)
    trainer.train_epoch()
    layers = balanced_layers(base_model(trainer.module))
    assert trainer.step == 2
    assert any(torch.count_nonzero(layer.expert_bias) > 0 for layer in layers)
    for layer in layers:  # one move of exactly the rate (or none) per expert and optimizer step
        moves = layer.expert_bias / 0.01
        torch.testing.assert_close(moves, moves.round())
        assert moves.abs().max() <= trainer.step
    trainer.save_checkpoint(tmp_path / "checkpoint")
    resumed = Trainer(run)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    for layer, restored in zip(layers, balanced_layers(base_model(resumed.module)), strict=True):
        assert torch.equal(restored.expert_bias, layer.expert_bias)
