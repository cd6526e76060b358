"""The router options of SparseMoE (balancing bias, input norm): off by default, and what each changes."""

from __future__ import annotations

import pytest
import torch

from tests.model.tiny import TINY
from tsmoe.model.checkpoint import load_pretrained, save_pretrained
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import SparseMoE, TimeMoE


def _moe_layers(model: TimeMoE) -> list[SparseMoE]:
    return [layer.ffn_layer for layer in model.model.layers]


def _series(batch=4, length=48, seed=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, generator=generator).cumsum(-1)


def test_default_config_has_exactly_the_reference_state():
    torch.manual_seed(0)
    plain = TimeMoE(TimeMoEConfig(**TINY)).state_dict()
    names = {name.split("ffn_layer.")[-1] for name in plain if "ffn_layer." in name}
    assert names == {
        "gate.weight",
        "experts.gate_proj",
        "experts.up_proj",
        "experts.down_proj",
        "shared_expert.gate_proj.weight",
        "shared_expert.up_proj.weight",
        "shared_expert.down_proj.weight",
        "shared_expert_gate.weight",
    }


def test_bias_changes_which_experts_are_chosen_but_not_their_weights():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**{**TINY, "router_bias_update_rate": 1e-3}))
    layer = _moe_layers(model)[0]
    tokens = torch.randn(50, TINY["hidden_size"])
    logits, weights, chosen = layer.route(tokens)
    probabilities = torch.softmax(logits.float(), dim=-1)
    assert torch.equal(chosen, probabilities.topk(2, dim=-1).indices)  # zero bias: the reference's choice
    layer.expert_bias.copy_(torch.tensor([0.0, 0.0, 100.0, 100.0]))
    logits, weights, chosen = layer.route(tokens)
    assert torch.equal(chosen.sort(dim=-1).values, torch.tensor([[2, 3]]).expand(50, 2))
    torch.testing.assert_close(weights, torch.softmax(logits.float(), dim=-1).gather(-1, chosen))


def test_training_forwards_count_the_tokens_each_expert_received():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**{**TINY, "router_bias_update_rate": 1e-3}))
    x = _series()
    model(x)
    model(x)
    for layer in _moe_layers(model):
        assert layer.tokens_per_expert.sum().item() == 2 * x.numel() * TINY["num_experts_per_tok"]
    model.eval()
    model(x)
    assert all(layer.tokens_per_expert.sum().item() == 2 * x.numel() * 2 for layer in _moe_layers(model))


def test_at_small_init_every_token_picks_the_same_expert_unless_the_router_input_is_normalised():
    # The root cause of the early collapse: with 0.02 init every token's hidden state points the same way.
    x = _series(batch=8, length=64)
    chosen = {}
    for norm in ("none", "batch"):
        torch.manual_seed(0)
        model = TimeMoE(TimeMoEConfig(**{**TINY, "num_experts_per_tok": 1, "router_input_norm": norm}))
        # What the first MoE layer would see without attention: the normalised embedding.
        tokens = model.model.layers[0].post_attention_layernorm(model.model.embed_layer(x.unsqueeze(-1)))
        _, _, index = _moe_layers(model)[0].route(tokens.reshape(-1, TINY["hidden_size"]))
        chosen[norm] = torch.bincount(index.reshape(-1), minlength=4) / index.numel()
    assert chosen["none"].max().item() > 0.95
    assert chosen["batch"].max().item() < 0.6


def test_router_input_norm_uses_running_statistics_in_eval():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**{**TINY, "router_input_norm": "batch"}))
    model(_series())
    model.eval()
    one = model(_series(batch=1, seed=2)).predictions[1]
    two = model(torch.cat([_series(batch=1, seed=2), _series(batch=1, seed=3)])).predictions[1][:1]
    torch.testing.assert_close(one, two)  # a token's output does not depend on its batch in eval


def test_balancing_bias_and_router_norm_are_saved_and_reference_checkpoints_load_with_zero_bias(tmp_path):
    torch.manual_seed(0)
    options = {"router_bias_update_rate": 1e-3, "router_input_norm": "batch"}
    model = TimeMoE(TimeMoEConfig(**{**TINY, **options}))
    model(_series())
    for layer in _moe_layers(model):
        layer.expert_bias.copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
    save_pretrained(model, tmp_path / "balanced")
    loaded = load_pretrained(tmp_path / "balanced")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    save_pretrained(TimeMoE(TimeMoEConfig(**TINY)), tmp_path / "reference")
    fine_tuned = load_pretrained(tmp_path / "reference", router_bias_update_rate=1e-3)
    assert all(torch.count_nonzero(layer.expert_bias) == 0 for layer in _moe_layers(fine_tuned))


@pytest.mark.parametrize("field, value", [("router_bias_update_rate", -0.1), ("router_input_norm", "layer")])
def test_router_options_reject_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        TimeMoEConfig(**{**TINY, field: value})
