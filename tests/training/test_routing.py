"""Routing health tells a balanced router from a collapsed one."""

from __future__ import annotations

import math

import pytest
import torch

from tests.model.tiny import TINY
from tests.training.spawned_ranks import leave_and_exit
from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.finetune import base_model
from tsmoe.training.routing import RoutingTally, routing_health
from tsmoe.training.trainer import Trainer


def test_a_uniform_router_has_full_entropy():
    health = routing_health([torch.zeros(10, 4)], top_k=2)
    assert health.entropy == [pytest.approx(1.0)]
    assert sum(health.load_shares[0]) == pytest.approx(1.0)


def test_a_collapsed_router_shows_zero_entropy_and_one_busy_expert():
    logits = torch.full((12, 4), -50.0)
    logits[:, 2] = 50.0
    health = routing_health([logits], top_k=1)
    assert health.entropy[0] == pytest.approx(0.0, abs=1e-6)
    assert health.load_shares[0] == [0.0, 0.0, 1.0, 0.0]
    assert health.max_load_share == 1.0


def test_balanced_assignments_share_evenly():
    # Token i prefers expert i % 4: with top-1, each expert gets a quarter of the tokens.
    logits = torch.eye(4).repeat(3, 1) * 5
    health = routing_health([logits, logits], top_k=1)
    assert health.load_shares == [[0.25] * 4, [0.25] * 4]
    metrics = health.metrics()
    assert set(metrics) == {
        "routing_entropy_min",
        "routing_max_load_share",
        "routing_entropy_layer0",
        "routing_entropy_layer1",
        *(f"routing_load_share_layer{layer}_expert{expert}" for layer in (0, 1) for expert in range(4)),
    }
    assert metrics["routing_load_share_layer1_expert3"] == 0.25
    expected = -(
        torch.softmax(torch.tensor([5.0, 0, 0, 0]), 0) * torch.log_softmax(torch.tensor([5.0, 0, 0, 0]), 0)
    ).sum()
    assert metrics["routing_entropy_min"] == pytest.approx(float(expected) / math.log(4), rel=1e-5)


def test_a_fresh_model_starts_with_near_uniform_routing():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**TINY))
    output = model(torch.randn(4, 64))
    health = routing_health(output.router_logits, model.config.num_experts_per_tok)
    assert len(health.entropy) == TINY["num_hidden_layers"]
    assert all(entropy > 0.9 for entropy in health.entropy)
    assert all(sum(shares) == pytest.approx(1.0) for shares in health.load_shares)


def test_a_tally_of_several_batches_equals_the_health_of_them_all_at_once():
    torch.manual_seed(0)
    batches = [[torch.randn(5, 4), torch.randn(5, 4)], [torch.randn(7, 4), torch.randn(7, 4)]]
    tally = RoutingTally(top_k=2)
    for logits in batches:
        tally.add(logits)
    together = routing_health([torch.cat([first[layer] for first in batches]) for layer in (0, 1)], top_k=2)
    assert tally.tokens == 12
    for layer in (0, 1):
        assert tally.health().load_shares[layer] == pytest.approx(together.load_shares[layer])
    assert tally.health().entropy == pytest.approx(together.entropy)


def test_an_epochs_routing_health_covers_every_micro_batch_not_the_last(tmp_path):
    # 4 optimizer steps of one micro-batch; the last one's layer-1 router is certain of expert 0 (top-2: the
    # second choice is expert 1), so that batch alone gives experts 2 and 3 no token and an entropy of 0.
    trainer = Trainer(tiny_run(synthetic_data(tmp_path / "data"), epochs=1))
    calls = {"count": 0}

    def collapse_on_the_last_call(module, args, output):
        calls["count"] += 1
        if calls["count"] < 4:
            return output
        collapsed = torch.full_like(output, -50.0)
        collapsed[:, 0] = 50.0
        return collapsed

    base_model(trainer.module).model.layers[1].ffn_layer.gate.register_forward_hook(collapse_on_the_last_call)
    metrics = trainer.train_epoch()
    shares = [metrics[f"routing_load_share_layer1_expert{expert}"] for expert in range(TINY["num_experts"])]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[2] > 0.05 and shares[3] > 0.05
    assert 0.5 < metrics["routing_entropy_layer1"] < metrics["routing_entropy_layer0"]


def _tally_rank(rank: int, rendezvous: str, logits: list[list[torch.Tensor]], out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    tally = RoutingTally(top_k=1)
    tally.add(logits[rank])
    tally.all_reduce(torch.device("cpu"))
    torch.save({"shares": tally.health().load_shares, "entropy": tally.health().entropy}, f"{out}{rank}.pt")
    leave_and_exit()


@pytest.mark.slow
def test_tallies_all_reduced_over_ranks_give_every_rank_the_global_figures(tmp_path):
    torch.manual_seed(1)
    logits = [[torch.randn(6, 4) * 3], [torch.randn(10, 4) * 3]]  # one layer; ranks see different tokens
    torch.multiprocessing.spawn(
        _tally_rank, args=(str(tmp_path / "rendezvous"), logits, str(tmp_path / "rank")), nprocs=2
    )
    expected = routing_health([torch.cat([logits[0][0], logits[1][0]])], top_k=1)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["shares"][0] == pytest.approx(expected.load_shares[0])
        assert got["entropy"] == pytest.approx(expected.entropy)
