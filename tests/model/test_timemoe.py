"""TimeMoE behaviour: channel independence, padding, attention and expert kernels, generate, init and losses."""

from __future__ import annotations

import functools
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tests.model.tiny import TINY
from tsmoe.model import TimeMoEConfig
from tsmoe.model.experts import grouped_experts, loop_experts
from tsmoe.model.timemoe import (
    Attention,
    RMSNorm,
    TimeMoE,
    _attention_mask,
    load_balancing_loss,
    masked_huber_loss,
    total_loss,
)

EXACT = dict(rtol=1e-10, atol=1e-10)
# RoPE angles and the eager softmax are computed in float32 even for float64 models (as the
# reference does), so computations that take different paths through them agree to float32 rounding.
FLOAT32_ROUNDING = dict(rtol=1e-6, atol=1e-6)


def tiny_model(seed: int = 0, dtype=torch.float64, **overrides) -> TimeMoE:
    """A tiny model whose tokens spread over every expert (the 0.02 init routes them all alike)."""
    torch.manual_seed(seed)
    model = TimeMoE(TimeMoEConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for weight in model.model.embed_layer.parameters():
            weight.normal_(0.0, 1.0)
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.normal_(0.0, 0.3)
            layer.self_attn.k_proj.weight.normal_(0.0, 0.3)
            if not model.config.use_dense:
                layer.ffn_layer.gate.weight.normal_(0.0, 0.5)
    return model.to(dtype).eval()


def series(*shape, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype)


def gradients(model: TimeMoE) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_all_experts_used(router_logits, top_k: int, num_experts: int) -> None:
    """Guards a comparison's strength: an expert with no tokens could hide a dispatch bug."""
    for logits in router_logits:
        chosen = torch.topk(logits, top_k, dim=-1).indices.reshape(-1)
        assert torch.bincount(chosen, minlength=num_experts).min() > 0


def huber(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    error = (prediction - target).abs()
    return torch.where(error <= 2.0, 0.5 * error**2, 2.0 * (error - 1.0))


# --- channel independence ------------------------------------------------------------------------
def test_multichannel_outputs_equal_each_channel_run_alone():
    model = tiny_model()
    x = series(2, 24, 3)
    with torch.no_grad():
        out = model(x)
        for channel in range(3):
            alone = model(x[..., channel])
            for horizon in (1, 4, 8):
                assert out.predictions[horizon].shape == (2, 24, 3, horizon)
                assert_close(out.predictions[horizon][:, :, channel], alone.predictions[horizon], **EXACT)
            assert_close(out.last_hidden_state[:, :, channel], alone.last_hidden_state, **EXACT)
    assert out.last_hidden_state.shape == (2, 24, 3, 32)
    assert [logits.shape for logits in out.router_logits] == [(2 * 3 * 24, 4)] * 2


def test_a_layer_state_is_the_embedding_or_that_layers_output_before_the_final_norm():
    model = tiny_model()
    x = series(2, 16, 3)
    with torch.no_grad():
        plain = model(x)
        embedding = model(x, state_layer=0).layer_state
        first = model(x, state_layer=1).layer_state
        last = model(x, state_layer=model.config.num_hidden_layers).layer_state
        expected_embedding = model.model.embed_layer(x.unsqueeze(-1))  # [B, L, C, H]: each value alone
    assert plain.layer_state is None
    assert embedding.shape == first.shape == last.shape == (2, 16, 3, 32)
    assert_close(embedding, expected_embedding, **EXACT)
    assert not torch.allclose(first, embedding) and not torch.allclose(first, last)
    assert_close(model.model.norm(last), plain.last_hidden_state, **EXACT)
    with pytest.raises(ValueError, match=r"state_layer 3: the model has layers 0 \(embedding\) to 2"):
        model(x, state_layer=3)
    with pytest.raises(ValueError, match="forecast pass alone"):
        model(x, reconstruction_mask=torch.zeros(2, 16, 3, dtype=torch.bool), state_layer=0)


def flattened(x: torch.Tensor) -> torch.Tensor:
    """[B, L, C] -> [B*C, L], series ordered batch-major then channel."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def test_multichannel_loss_equals_loss_of_the_flattened_series():
    model = tiny_model()
    x, labels = series(2, 24, 3), 3 * series(2, 24, 3, seed=2)
    loss_masks = torch.ones(2, 24, dtype=torch.float64)
    loss_masks[1, 17:] = 0
    with torch.no_grad():
        out = model(x, labels=labels, loss_masks=loss_masks)
        expected = model(flattened(x), labels=flattened(labels), loss_masks=loss_masks.repeat_interleave(3, dim=0))
    assert_close(out.loss, expected.loss, **EXACT)
    assert_close(out.aux_loss, expected.aux_loss, **EXACT)
    for horizon in (1, 4, 8):
        assert_close(out.head_losses[horizon], expected.head_losses[horizon], **EXACT)


# --- padding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_left_padding_leaves_real_token_outputs_unchanged(attention):
    model = tiny_model(attention_implementation=attention)
    x = series(2, 20)
    # Row 0 is left-padded by 6 large values; row 1 has no left padding, only 6 masked at its end.
    padded = torch.zeros(2, 26, dtype=torch.float64)
    attention_mask = torch.zeros(2, 26)
    padded[0, :6], padded[0, 6:], attention_mask[0, 6:] = 5 * series(6, seed=3), x[0], 1
    padded[1, :20], padded[1, 20:], attention_mask[1, :20] = x[1], 0.0, 1
    with torch.no_grad():
        alone = model(x)
        masked = model(padded, attention_mask=attention_mask)
        unmasked = model(padded)
    for horizon in (1, 4, 8):
        assert_close(masked.predictions[horizon][0, 6:], alone.predictions[horizon][0], **FLOAT32_ROUNDING)
        assert_close(masked.predictions[horizon][1, :20], alone.predictions[horizon][1], **FLOAT32_ROUNDING)
    assert_close(masked.last_hidden_state[0, 6:], alone.last_hidden_state[0], **FLOAT32_ROUNDING)
    # Without the mask the padding is attended to: shows the equality above is the mask's doing.
    assert (unmasked.predictions[1][0, 6:] - alone.predictions[1][0]).abs().max() > 1e-3


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["masked", "unmasked"])
def test_right_padding_never_changes_outputs_at_real_positions(attention, with_mask):
    model = tiny_model(attention_implementation=attention)
    x = series(2, 20)
    padded = torch.cat([x, 7 * series(2, 8, seed=4)], dim=1)
    attention_mask = torch.cat([torch.ones(2, 20), torch.zeros(2, 8)], dim=1) if with_mask else None
    with torch.no_grad():
        alone = model(x)
        out = model(padded, attention_mask=attention_mask)
    for horizon in (1, 4, 8):
        assert_close(out.predictions[horizon][:, :20], alone.predictions[horizon], **EXACT)
    assert_close(out.last_hidden_state[:, :20], alone.last_hidden_state, **EXACT)


# --- attention and expert kernels ----------------------------------------------------------------
def run_with_gradients(model: TimeMoE, x, labels, **kwargs):
    model.zero_grad()
    out = model(x, labels=labels, **kwargs)
    out.loss.backward()
    return out, gradients(model)


def run_each_expert_kernel(x, labels, dtype, prepare=None, autocast_dtype=None, **overrides):
    """run_with_gradients on two tiny models that differ only in their expert kernel: (loop, grouped)."""
    results = {}
    for experts in ("loop", "grouped"):
        model = tiny_model(dtype=dtype, expert_implementation=experts, **overrides)
        if prepare is not None:
            with torch.no_grad():
                prepare(model)
        autocast = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with autocast:
            results[experts] = run_with_gradients(model, x, labels)
    return results["loop"], results["grouped"]


def assert_gradients_close(actual: dict, expected: dict, **tolerance) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_close(actual[name], expected[name], **tolerance, msg=name)


@pytest.mark.parametrize("with_mask", [False, True], ids=["causal", "left-padded"])
def test_sdpa_and_eager_attention_agree_on_outputs_and_gradients(with_mask):
    x, labels = series(3, 32), 3 * series(3, 32, seed=2)
    attention_mask = None
    if with_mask:
        attention_mask = torch.ones(3, 32)
        attention_mask[0, :5] = 0
        attention_mask[2, :11] = 0
    results = {}
    for attention in ("sdpa", "eager"):
        model = tiny_model(attention_implementation=attention)
        results[attention] = run_with_gradients(model, x, labels, attention_mask=attention_mask)
    (sdpa, sdpa_grads), (eager, eager_grads) = results["sdpa"], results["eager"]
    # Eager's softmax is float32 (the reference's); SDPA's follows the float64 input.
    assert_close(sdpa.loss, eager.loss, **FLOAT32_ROUNDING)
    for horizon in (1, 4, 8):
        assert_close(sdpa.predictions[horizon], eager.predictions[horizon], **FLOAT32_ROUNDING)
    assert_gradients_close(sdpa_grads, eager_grads, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "dtype, tolerance",
    [(torch.float64, EXACT), (torch.float32, dict(rtol=1e-5, atol=1e-5))],
    ids=["float64", "float32"],
)
def test_loop_and_grouped_expert_kernels_agree_on_outputs_and_gradients(dtype, tolerance):
    x, labels = series(3, 32, dtype=dtype), 3 * series(3, 32, seed=2, dtype=dtype)
    (loop, loop_grads), (grouped, grouped_grads) = run_each_expert_kernel(x, labels, dtype)
    assert_all_experts_used(loop.router_logits, 2, 4)
    assert_close(grouped.loss, loop.loss, **tolerance)
    for horizon in (1, 4, 8):
        assert_close(grouped.predictions[horizon], loop.predictions[horizon], **tolerance)
    assert_gradients_close(grouped_grads, loop_grads, **tolerance)


@pytest.mark.parametrize(
    "dtype, tolerance",
    [(torch.float64, EXACT), (torch.float32, dict(rtol=1e-5, atol=1e-5))],
    ids=["float64", "float32"],
)
def test_expert_kernels_agree_when_experts_receive_no_tokens(dtype, tolerance):
    x, labels = series(2, 24, dtype=dtype), 3 * series(2, 24, seed=2, dtype=dtype)

    def zero_routers(model):
        # A zero router ties every expert, so every token makes the same two choices.
        for layer in model.model.layers:
            layer.ffn_layer.gate.weight.zero_()

    (loop, loop_grads), (grouped, grouped_grads) = run_each_expert_kernel(x, labels, dtype, prepare=zero_routers)
    chosen = torch.topk(loop.router_logits[0], 2, dim=-1).indices.reshape(-1)
    unused = torch.bincount(chosen, minlength=4) == 0
    assert int(unused.sum()) == 2
    for horizon in (1, 4, 8):
        assert_close(grouped.predictions[horizon], loop.predictions[horizon], **tolerance)
    assert_gradients_close(grouped_grads, loop_grads, **tolerance)
    for grads in (loop_grads, grouped_grads):
        for layer in range(2):
            for name in ("gate_proj", "up_proj", "down_proj"):
                stacked = grads[f"model.layers.{layer}.ffn_layer.experts.{name}"]
                assert torch.count_nonzero(stacked[unused]) == 0
                assert torch.count_nonzero(stacked[~unused]) > 0


def naive_experts(x, expert_index, expert_weight, gate_proj, up_proj, down_proj):
    """For each token, the sum over its k choices of weight * SwiGLU of that expert."""
    rows = []
    for token in range(x.shape[0]):
        total = torch.zeros_like(x[token])
        for choice in range(expert_index.shape[1]):
            e = int(expert_index[token, choice])
            hidden = F.silu(gate_proj[e] @ x[token]) * (up_proj[e] @ x[token])
            total = total + expert_weight[token, choice] * (down_proj[e] @ hidden)
        rows.append(total)
    return torch.stack(rows)


def kernel_inputs(dtype, tokens: int = 13, experts: int = 5, top_k: int = 2, never_chosen: int | None = 3):
    generator = torch.Generator().manual_seed(5)
    allowed = [e for e in range(experts) if e != never_chosen]
    index = torch.stack(
        [torch.tensor(allowed)[torch.randperm(len(allowed), generator=generator)[:top_k]] for _ in range(tokens)]
    )
    weight = torch.rand(tokens, top_k, generator=generator, dtype=dtype)
    x, gate, up, down = (
        torch.randn(*shape, generator=generator, dtype=dtype)
        for shape in ((tokens, 8), (experts, 12, 8), (experts, 12, 8), (experts, 8, 12))
    )
    return x, index, weight, gate, up, down


@pytest.mark.parametrize("kernel", [loop_experts, grouped_experts], ids=["loop", "grouped"])
@pytest.mark.parametrize(
    "dtype, tolerance",
    [(torch.float64, EXACT), (torch.float32, dict(rtol=1e-5, atol=1e-5))],
    ids=["float64", "float32"],
)
@pytest.mark.parametrize("top_k, never_chosen", [(2, 3), (3, None), (1, 0)], ids=["top2-gap", "top3", "top1-gap"])
def test_expert_kernels_equal_a_naive_per_token_sum(kernel, dtype, tolerance, top_k, never_chosen):
    inputs = kernel_inputs(dtype, top_k=top_k, never_chosen=never_chosen)
    inputs = [t.requires_grad_(t.is_floating_point()) for t in inputs]
    upstream = series(13, 8, seed=6, dtype=dtype)
    actual = kernel(*inputs)
    actual_grads = torch.autograd.grad((actual * upstream).sum(), [t for t in inputs if t.requires_grad])
    expected = naive_experts(*inputs)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [t for t in inputs if t.requires_grad])
    assert_close(actual, expected, **tolerance)
    for name, got, want in zip(["x", "weight", "gate", "up", "down"], actual_grads, expected_grads, strict=True):
        assert_close(got, want, **tolerance, msg=name)


@pytest.mark.parametrize(
    "kernel, dtype",
    [
        (loop_experts, torch.float32),
        (loop_experts, torch.float64),
        (grouped_experts, torch.float32),
        (grouped_experts, torch.float64),
    ],
    ids=["loop-float32", "loop-float64", "grouped-float32", "grouped-float64"],
)
def test_expert_kernels_return_zeros_for_an_empty_token_batch(kernel, dtype):
    x, index, weight, gate, up, down = kernel_inputs(dtype)
    out = kernel(x[:0], index[:0], weight[:0], gate, up, down)
    assert out.shape == (0, 8)
    assert out.dtype == dtype


def test_grouped_kernel_runs_any_valid_expert_width_in_float32():
    # intermediate_size 60 over top-2 gives experts of width 30: a valid config.
    x, labels = series(2, 16, dtype=torch.float32), 3 * series(2, 16, seed=2, dtype=torch.float32)
    (loop, loop_grads), (grouped, grouped_grads) = run_each_expert_kernel(
        x, labels, torch.float32, intermediate_size=60
    )
    assert_close(grouped.loss, loop.loss, rtol=1e-5, atol=1e-5)
    assert_gradients_close(grouped_grads, loop_grads, rtol=1e-5, atol=1e-5)


# --- generate ------------------------------------------------------------------------------------
def naive_generate(model: TimeMoE, context: torch.Tensor, steps: int) -> torch.Tensor:
    """Full forward over the whole sequence at every step, no cache."""
    horizons = model.config.horizon_lengths
    sequence, remaining = context, steps
    while remaining > 0:
        fitting = [h for h in horizons if h <= remaining]
        horizon = max(fitting) if fitting else min(horizons)
        forecast = model(sequence).predictions[horizon][:, -1, :remaining]
        sequence = torch.cat([sequence, forecast], dim=1)
        remaining -= forecast.shape[1]
    return sequence


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "horizons, steps",
    [([1, 4, 8], 1), ([1, 4, 8], 7), ([1, 4, 8], 21), ([4, 8], 3), ([4, 8], 11)],
    ids=["1-4-8:1", "1-4-8:7", "1-4-8:21", "4-8:3", "4-8:11"],
)
def test_generate_with_kv_cache_equals_naive_full_recompute(attention, horizons, steps):
    model = tiny_model(attention_implementation=attention, horizon_lengths=horizons)
    context = series(2, 16)
    with torch.no_grad():
        generated = model.generate(context, steps)
        expected = naive_generate(model, context, steps)
    assert generated.shape == (2, 16 + steps)
    assert torch.equal(generated[:, :16], context)
    assert_close(generated, expected, **EXACT)


def test_generate_multichannel_equals_each_channel_alone():
    model = tiny_model()
    context = series(2, 16, 3)
    with torch.no_grad():
        generated = model.generate(context, 10)
        for channel in range(3):
            assert_close(generated[..., channel], model.generate(context[..., channel], 10), **EXACT)
    assert generated.shape == (2, 26, 3)
    assert torch.equal(generated[:, :16], context)


# --- activation checkpointing --------------------------------------------------------------------
def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    x, labels = series(2, 24), 3 * series(2, 24, seed=2)
    loss_masks = torch.ones(2, 24)
    loss_masks[0, 19:] = 0
    results, layer_calls = {}, {}
    for checkpointing in (False, True):
        model = tiny_model(activation_checkpointing=checkpointing).train()
        calls = []
        model.model.layers[0].register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        results[checkpointing] = run_with_gradients(model, x, labels, loss_masks=loss_masks)
        layer_calls[checkpointing] = len(calls)
    # The recomputation in backward is what shows checkpointing really ran.
    assert layer_calls == {False: 1, True: 2}
    (plain, plain_grads), (checkpointed, checkpointed_grads) = results[False], results[True]
    assert_close(checkpointed.loss, plain.loss, **EXACT)
    for name in plain_grads:
        assert_close(checkpointed_grads[name], plain_grads[name], **EXACT, msg=name)


# --- init ----------------------------------------------------------------------------------------
def test_router_init_std_scales_only_the_router():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**{**TINY, "num_hidden_layers": 4, "router_init_std": 1e-4}))
    routers = torch.cat([layer.ffn_layer.gate.weight.flatten() for layer in model.model.layers])
    others = torch.cat(
        [
            module.weight.flatten()
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith("ffn_layer.gate")
        ]
        + [layer.ffn_layer.experts.gate_proj.flatten() for layer in model.model.layers]
    )
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    biases = [module.bias for module in linears if module.bias is not None]
    assert 0.85e-4 < routers.std().item() < 1.15e-4
    assert 0.0195 < others.std().item() < 0.0205
    assert len(biases) == 4 * 3
    assert all(torch.count_nonzero(bias) == 0 for bias in biases)


def test_router_init_defaults_to_initializer_range():
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**{**TINY, "num_hidden_layers": 4}))
    routers = torch.cat([layer.ffn_layer.gate.weight.flatten() for layer in model.model.layers])
    assert 0.017 < routers.std().item() < 0.023


# --- aux loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_experts, top_k, layers", [(4, 2, 2), (8, 2, 1), (8, 3, 3), (4, 1, 2)])
def test_uniform_router_logits_give_aux_loss_equal_to_top_k(num_experts, top_k, layers):
    logits = [torch.zeros(37, num_experts, dtype=torch.float64) for _ in range(layers)]
    assert load_balancing_loss(logits, top_k).item() == top_k


def test_aux_loss_with_all_tokens_marked_real_equals_the_unmasked_aux_loss():
    logits = [series(40, 4, seed=seed) for seed in (1, 2)]
    assert_close(load_balancing_loss(logits, 2, torch.ones(4, 10)), load_balancing_loss(logits, 2), **EXACT)


def real_rows_aux_loss(out, real: torch.Tensor) -> torch.Tensor:
    keep = real.reshape(-1).bool()
    return load_balancing_loss([logits[keep] for logits in out.router_logits], 2)


@pytest.mark.parametrize("mask_kind", ["attention_mask", "loss_masks"])
def test_aux_loss_counts_only_real_tokens_when_asked(mask_kind):
    model = tiny_model(aux_loss_real_tokens_only=True)
    x = series(3, 24)
    real = torch.ones(3, 24)
    real[0, :9] = 0
    real[2, :4] = 0
    with torch.no_grad():
        out = model(x, **{mask_kind: real})
    assert_close(out.aux_loss, real_rows_aux_loss(out, real), **EXACT)
    assert (out.aux_loss - load_balancing_loss(out.router_logits, 2)).abs() > 1e-3


def test_aux_loss_counts_padding_by_default():
    model = tiny_model()
    x = series(3, 24)
    real = torch.ones(3, 24)
    real[0, :9] = 0
    real[2, :4] = 0
    with torch.no_grad():
        out = model(x, attention_mask=real, loss_masks=real)
    assert_close(out.aux_loss, load_balancing_loss(out.router_logits, 2), **EXACT)
    assert (out.aux_loss - real_rows_aux_loss(out, real)).abs() > 1e-3


# --- training loss -------------------------------------------------------------------------------
def test_loss_is_mean_head_loss_plus_scaled_aux_loss():
    model = tiny_model(router_aux_loss_factor=0.5)
    x, labels = series(2, 24), 3 * series(2, 24, seed=2)
    with torch.no_grad():
        out = model(x, labels=labels)
    assert sorted(out.head_losses) == [1, 4, 8]
    expected = torch.stack(list(out.head_losses.values())).mean() + 0.5 * out.aux_loss
    assert_close(out.loss, expected, **EXACT)
    assert out.aux_loss > 1.0


def test_loss_without_aux_is_the_plain_mean_of_head_losses():
    model = tiny_model(apply_aux_loss=False)
    x, labels = series(2, 24), 3 * series(2, 24, seed=2)
    with torch.no_grad():
        out = model(x, labels=labels)
    assert out.aux_loss is not None
    assert_close(out.loss, torch.stack(list(out.head_losses.values())).mean(), **EXACT)


def test_head_losses_are_huber_against_zero_padded_and_masked_targets():
    model = tiny_model()
    length = 12
    x, labels = series(2, length), 3 * series(2, length, seed=2)
    loss_masks = torch.ones(2, length, dtype=torch.float64)
    loss_masks[1, 9:] = 0
    loss_masks[0, 3] = 0
    with torch.no_grad():
        unmasked = model(x, labels=labels)
        masked = model(x, labels=labels, loss_masks=loss_masks)
    for horizon in (1, 4, 8):
        prediction = masked.predictions[horizon]
        target = torch.zeros(2, length, horizon, dtype=torch.float64)
        mask = torch.zeros(2, length, horizon, dtype=torch.float64)
        for t in range(length):
            for j in range(horizon):
                if t + j < length:
                    target[:, t, j], mask[:, t, j] = labels[:, t + j], loss_masks[:, t + j]
        losses = huber(prediction, target)
        assert_close(unmasked.head_losses[horizon], losses.mean(), **EXACT)
        assert_close(masked.head_losses[horizon], (losses * mask).sum() / mask.sum(), **EXACT)


def test_all_ones_loss_mask_matches_no_mask_only_for_horizon_one():
    # Targets past the window are zeros: counted without a mask, masked out with one.
    model = tiny_model()
    x, labels = series(2, 24), 3 * series(2, 24, seed=2)
    with torch.no_grad():
        unmasked = model(x, labels=labels)
        ones = model(x, labels=labels, loss_masks=torch.ones(2, 24))
    assert_close(ones.head_losses[1], unmasked.head_losses[1], **EXACT)
    for horizon in (4, 8):
        assert (ones.head_losses[horizon] - unmasked.head_losses[horizon]).abs() > 1e-4


def test_dense_model_has_no_router_logits_and_no_aux_loss():
    model = tiny_model(use_dense=True)
    x, labels = series(2, 24), 3 * series(2, 24, seed=2)
    with torch.no_grad():
        out = model(x, labels=labels)
    assert out.router_logits == []
    assert out.aux_loss is None
    assert_close(out.loss, torch.stack(list(out.head_losses.values())).mean(), **EXACT)
    assert not any("experts" in name for name, _ in model.named_parameters())


def test_grouped_kernel_runs_grouped_mm_in_the_autocast_dtype(monkeypatch):
    import tsmoe.model.experts as experts_module

    seen = []
    real_grouped_mm = F.grouped_mm

    def recording_grouped_mm(a, b, **kwargs):
        seen.append((a.dtype, b.dtype))
        return real_grouped_mm(a, b, **kwargs)

    monkeypatch.setattr(experts_module.F, "grouped_mm", recording_grouped_mm)
    model = tiny_model(dtype=torch.float32, expert_implementation="grouped")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(series(2, 16, dtype=torch.float32))
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}


def test_expert_kernels_agree_under_bfloat16_autocast():
    x, labels = series(2, 32, dtype=torch.float32), series(2, 32, seed=2, dtype=torch.float32)
    (loop, loop_grads), (grouped, grouped_grads) = run_each_expert_kernel(
        x, labels, torch.float32, autocast_dtype=torch.bfloat16
    )
    assert torch.isfinite(grouped.loss)
    assert_close(grouped.loss, loop.loss, rtol=2e-2, atol=2e-2)
    assert_gradients_close(grouped_grads, loop_grads, rtol=5e-2, atol=5e-3)


def test_fused_projections_equal_the_three_linears_and_leave_watched_linears_to_run_themselves():
    model = tiny_model(attention_implementation="sdpa")
    x = series(2, 24)
    with torch.no_grad():
        fused = model(x)
        calls = []
        handle = model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *_: calls.append(1))
        watched = model(x)
        handle.remove()
    assert calls == [1]  # the hooked layer ran its own linears (a guard's hook, a LoRA layer, would see them)
    for horizon in (1, 4, 8):
        assert_close(fused.predictions[horizon], watched.predictions[horizon], **EXACT)


@pytest.mark.parametrize("query_block", [128, 5], ids=["one-block", "blocks-of-5"])
@pytest.mark.parametrize("with_mask", [False, True], ids=["causal", "left-padded"])
def test_fast_attention_in_bfloat16_rounds_as_the_reference_eager_attention(with_mask, query_block):
    generator = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 24, 16, generator=generator).to(torch.bfloat16) for _ in range(3))
    mask = None
    if with_mask:
        padding = torch.ones(2, 24, dtype=torch.bool)
        padding[1, :7] = False
        own_key = torch.eye(24, dtype=torch.bool)
        mask = torch.ones(24, 24, dtype=torch.bool).tril()[None, None] & (padding[:, None, None, :] | own_key)
    fast = Attention._matmul_attention(q, k, v, mask, query_block=query_block)
    reference = Attention._eager(q, k, v, mask)
    assert fast.dtype == torch.bfloat16
    # Both round the same float32 softmax to bfloat16 once: at most a unit in the last place apart.
    assert_close(fast.float(), reference.float(), rtol=2**-7, atol=1e-3)


@pytest.mark.parametrize("with_padding", [False, True], ids=["causal", "left-padded"])
def test_fast_attention_in_query_blocks_equals_one_block_with_and_without_cached_keys(with_padding):
    generator = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 3, 24, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    q = q[..., 13:, :]  # 11 new queries after 13 cached keys, as a generate step with the KV cache has
    padding = None
    if with_padding:
        padding = torch.ones(2, 24)
        padding[0, :4] = 0
    mask = _attention_mask(padding, length=11, start=13, device=q.device)
    whole = Attention._matmul_attention(q, k, v, mask, query_block=11)
    reference = Attention._eager(q, k, v, mask)
    assert_close(whole, reference, rtol=1e-5, atol=1e-6)  # the reference's softmax runs in float32
    for query_block in (1, 4, 10):
        blocked = Attention._matmul_attention(q, k, v, mask, query_block=query_block)
        assert_close(blocked, whole, **EXACT)
    # Without cached keys or padding the mask is None: the blocks build the causal mask themselves.
    q, k, v = (torch.randn(2, 3, 24, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    reference = Attention._eager(q, k, v, None)
    for query_block in (1, 7, 24):
        assert_close(
            Attention._matmul_attention(q, k, v, None, query_block=query_block), reference, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("with_padding", [False, True], ids=["causal", "left-padded"])
@pytest.mark.parametrize("cached_keys", [0, 13], ids=["no-cache", "cached-keys"])
def test_fast_attention_gradients_in_query_blocks_equal_autograd_of_the_reference_attention(with_padding, cached_keys):
    generator = torch.Generator().manual_seed(7)
    keys, length = 24, 24 - cached_keys
    q, k, v = (torch.randn(2, 3, keys, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    q = q[..., cached_keys:, :].contiguous()
    grad = torch.randn(2, 3, length, 8, generator=generator, dtype=torch.float64)
    padding = None
    if with_padding:
        padding = torch.ones(2, keys)
        padding[0, :4] = 0
    mask = _attention_mask(padding, length=length, start=cached_keys, device=q.device)

    def gradients(attention):
        inputs = [tensor.clone().requires_grad_() for tensor in (q, k, v)]
        attention(*inputs, mask).backward(grad)
        return [tensor.grad for tensor in inputs]

    reference = gradients(Attention._eager)
    for query_block in (1, 4, 7, length):
        blocked = gradients(functools.partial(Attention._matmul_attention, query_block=query_block))
        for got, expected in zip(blocked, reference, strict=True):
            assert_close(got, expected, rtol=1e-5, atol=1e-6)  # the reference's softmax runs in float32


def test_fast_attention_gradients_in_bfloat16_follow_the_float64_gradients():
    generator = torch.Generator().manual_seed(8)
    q, k, v, grad = (torch.randn(2, 4, 300, 16, generator=generator, dtype=torch.float64) for _ in range(4))

    def gradients(dtype, attention):
        inputs = [tensor.detach().to(dtype).requires_grad_() for tensor in (q, k, v)]
        attention(*inputs, None).backward(grad.to(dtype))
        return [tensor.grad.double() for tensor in inputs]

    exact = gradients(torch.float64, Attention._eager)
    blocked = gradients(torch.bfloat16, functools.partial(Attention._matmul_attention, query_block=128))
    eager = gradients(torch.bfloat16, Attention._eager)
    for got, reference_in_bfloat16, expected in zip(blocked, eager, exact, strict=True):
        # bfloat16 rounding, the blocks' partial sums included, stays within the reference's own error.
        error = (got - expected).norm() / expected.norm()
        reference_error = (reference_in_bfloat16 - expected).norm() / expected.norm()
        assert error < 2 * reference_error + 1e-3


def test_norm_feeding_a_matmul_returns_autocast_dtype_and_the_plain_norm_otherwise():
    norm = RMSNorm(32, 1e-6)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2)
    x = series(4, 32, dtype=torch.float32).to(torch.bfloat16)
    plain = norm(x)
    assert plain.dtype == torch.float32  # a bfloat16 input scaled by the float32 weight, as the reference does
    assert_close(norm(x, matmul_input=True), plain, **EXACT)  # without autocast, nothing changes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = norm(x, matmul_input=True)
    assert fused.dtype == torch.bfloat16
    assert_close(fused.float(), plain, rtol=2**-7, atol=1e-3)


@pytest.mark.parametrize("with_mask", [False, True], ids=["causal", "left-padded"])
def test_fast_layout_follows_the_reference_layout_under_bfloat16_autocast(with_mask):
    x, labels = series(3, 32, dtype=torch.float32), series(3, 32, seed=2, dtype=torch.float32)
    attention_mask = None
    if with_mask:
        attention_mask = torch.ones(3, 32)
        attention_mask[0, :5] = 0
    results = {}
    for layout, attention, experts in (("reference", "eager", "loop"), ("fast", "sdpa", "grouped")):
        model = tiny_model(dtype=torch.float32, attention_implementation=attention, expert_implementation=experts)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[layout] = run_with_gradients(model, x, labels, attention_mask=attention_mask)
    (reference, reference_grads), (fast, fast_grads) = results["reference"], results["fast"]
    assert torch.isfinite(fast.loss)
    assert_close(fast.loss, reference.loss, rtol=2e-2, atol=2e-2)
    for horizon in (1, 4, 8):
        assert_close(fast.predictions[horizon], reference.predictions[horizon], rtol=5e-2, atol=5e-2)
    assert_gradients_close(fast_grads, reference_grads, rtol=5e-2, atol=5e-3)


@pytest.mark.parametrize(
    "x_shape, argument, shape, message",
    [
        ((2, 16), "labels", (2, 15), r"labels has shape \[2, 15\], expected \[2, 16\] to match x"),
        ((2, 16, 3), "labels", (2, 16), r"labels has shape \[2, 16\], expected \[2, 16, 3\] to match x"),
        ((2, 16), "loss_masks", (2, 8), r"loss_masks has shape \[2, 8\], expected \[2, 16\] to match x"),
        ((2, 16, 3), "attention_mask", (2, 16, 2), r"expected \[2, 16\] or \[2, 16, 3\] to match x"),
    ],
)
def test_mismatched_shapes_are_rejected_naming_the_argument(x_shape, argument, shape, message):
    model = tiny_model()
    x = series(*x_shape)
    with pytest.raises(ValueError, match=message):
        model(x, **{argument: torch.ones(shape, dtype=x.dtype)})


def test_input_of_the_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match=r"x must be \[batch, length\] or \[batch, length, channels\]"):
        tiny_model()(series(16))


# --- attention window (scoring) -------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_one_layer_model_with_a_window_sees_what_it_sees_of_the_window_alone(attention):
    model = tiny_model(num_hidden_layers=1, attention_implementation=attention)
    x = series(2, 24)
    window = 6
    # RoPE is relative, so only the float32 rounding of the absolute angles differs.
    close = dict(rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        banded = model(x, attention_window=window)
        for last in (window - 1, 13, 23):
            alone = model(x[:, last - window + 1 : last + 1])
            assert_close(banded.last_hidden_state[:, last], alone.last_hidden_state[:, -1], **close)
            for horizon in (1, 4, 8):
                assert_close(banded.predictions[horizon][:, last], alone.predictions[horizon][:, -1], **close)


@pytest.mark.parametrize(
    ("attention", "dtype"), [("eager", torch.float64), ("sdpa", torch.float64), ("sdpa", torch.bfloat16)]
)
def test_with_a_window_a_change_reaches_at_most_layers_times_window_minus_one_points_ahead(attention, dtype):
    model = tiny_model(attention_implementation=attention, dtype=dtype)  # 2 layers
    x = series(2, 24, dtype=dtype)
    changed = x.clone()
    changed[:, 5] += 3.0
    window = 4
    with torch.no_grad():
        before = model(x, attention_window=window).last_hidden_state
        after = model(changed, attention_window=window).last_hidden_state
        plain_after = model(changed).last_hidden_state
        plain_before = model(x).last_hidden_state
    reach = 5 + model.config.num_hidden_layers * (window - 1)  # 11: 5 -> 8 in layer 1, 8 -> 11 in layer 2
    assert torch.equal(after[:, :5], before[:, :5])
    assert (after[:, reach] - before[:, reach]).abs().max() > 0
    assert torch.equal(after[:, reach + 1 :], before[:, reach + 1 :])
    # Without the window the change reaches every later point.
    assert (plain_after[:, -1] - plain_before[:, -1]).abs().max() > 0


def test_a_window_that_holds_the_whole_series_changes_nothing():
    model = tiny_model()
    x = series(2, 16, 3)
    with torch.no_grad():
        plain = model(x)
        whole = model(x, attention_window=16)
        shorter = model(x, attention_window=15)
    assert torch.equal(whole.last_hidden_state, plain.last_hidden_state)
    assert not torch.equal(shorter.last_hidden_state, plain.last_hidden_state)
    assert torch.equal(shorter.last_hidden_state[:, :15], plain.last_hidden_state[:, :15])


def test_an_attention_window_must_hold_the_position_and_belongs_to_the_forecast_pass():
    model = tiny_model(reconstruction_head=True)
    x = series(2, 16)
    with pytest.raises(ValueError, match="attention_window 0: must be at least 1"):
        model(x, attention_window=0)
    with pytest.raises(ValueError, match="forecast pass alone"):
        model(x, reconstruction_mask=_hidden(x.shape, 4, 8), attention_window=4)


# --- masked reconstruction (the tsmoe extension) ----------------------------------------------------
def _hidden(shape, start: int, stop: int) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, start:stop] = True
    return mask


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_reconstruction_sees_later_points_while_the_forecast_stays_causal(attention):
    model = tiny_model(reconstruction_head=True, attention_implementation=attention)
    x = series(2, 16)
    later = x.clone()
    later[:, 12] += 3.0
    hidden = _hidden(x.shape, 4, 8)
    # A point after the gap changes the gap's reconstruction: attention looks both ways.
    assert (model.reconstruct(later, hidden)[:, 4:8] - model.reconstruct(x, hidden)[:, 4:8]).abs().min() > 1e-6
    # The forecast pass of the same model still sees only the past.
    with torch.no_grad():
        assert_close(model(later).predictions[8][:, :12], model(x).predictions[8][:, :12], **EXACT)


def test_a_hidden_points_value_never_reaches_the_reconstruction():
    model = tiny_model(reconstruction_head=True)
    x = series(2, 16)
    changed = x.clone()
    changed[:, 5] = 100.0
    hidden = _hidden(x.shape, 4, 8)
    assert torch.equal(model.reconstruct(changed, hidden), model.reconstruct(x, hidden))


def test_the_reconstruction_path_adds_two_keys_and_leaves_the_reference_init_alone():
    torch.manual_seed(0)
    plain = TimeMoE(TimeMoEConfig(**TINY)).to(torch.float64).eval()
    torch.manual_seed(0)
    extended = TimeMoE(TimeMoEConfig(**TINY, reconstruction_head=True)).to(torch.float64).eval()
    plain_state, extended_state = plain.state_dict(), extended.state_dict()
    assert sorted(set(extended_state) - set(plain_state)) == ["mask_embedding", "reconstruction_head.out_layer.weight"]
    assert extended_state["mask_embedding"].shape == (TINY["hidden_size"],)
    for name, tensor in plain_state.items():
        assert torch.equal(extended_state[name], tensor), name
    x = series(2, 12)
    assert_close(extended(x).predictions[4], plain(x).predictions[4], **EXACT)


def test_a_model_without_the_reconstruction_path_refuses_to_reconstruct():
    with pytest.raises(ValueError, match="reconstruction_head is false"):
        tiny_model().reconstruct(series(1, 8), torch.ones(1, 8, dtype=torch.bool))


def test_masked_huber_loss_counts_the_hidden_points_only():
    reconstruction = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    hidden = torch.tensor([[False, True, True, False]])
    # Huber(delta 2) of the hidden errors 1 and 5: 0.5 * 1 and 2 * (5 - 1); the visible 2.0 counts for nothing.
    assert masked_huber_loss(reconstruction, torch.zeros(1, 4), hidden).item() == pytest.approx((0.5 + 8.0) / 2)


def test_total_loss_sums_the_objectives_and_adds_the_aux_loss_once():
    heads = {1: torch.tensor(1.0), 8: torch.tensor(3.0)}
    aux = torch.tensor(2.0)
    assert total_loss(heads, aux, 0.1).item() == pytest.approx(2.2)
    assert total_loss(heads, aux, 0.1, torch.tensor(0.5)).item() == pytest.approx(2.7)
    assert total_loss({}, aux, 0.1, torch.tensor(0.5)).item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="head losses, a reconstruction loss"):
        total_loss({}, aux, 0.1)


@pytest.mark.parametrize("forecast", [True, False], ids=["both", "reconstruction-only"])
def test_the_joint_forward_loss_is_the_sum_of_its_parts(forecast):
    model = tiny_model(reconstruction_head=True)
    x = series(3, 16, seed=2)
    labels = series(3, 16, seed=3)
    hidden = _hidden(x.shape, 2, 10)
    with torch.no_grad():
        output = model(x, labels=labels if forecast else None, reconstruction_mask=hidden, forecast=forecast)
        alone = model(x, labels=labels)
    assert output.reconstruction is not None and output.reconstruction_loss is not None
    assert_close(output.reconstruction_loss, huber(output.reconstruction, x)[hidden].mean(), **EXACT)
    layers = TINY["num_hidden_layers"]
    # Each layer's logits hold the tokens of both passes (3 series of 16 points each).
    assert [logits.shape[0] for logits in output.router_logits] == [(2 if forecast else 1) * 3 * 16] * layers
    # One aux loss over the tokens of both passes, not one per pass.
    aux = load_balancing_loss(output.router_logits, TINY["num_experts_per_tok"])
    assert_close(output.aux_loss, aux, **EXACT)
    forecast_part = torch.stack(list(alone.head_losses.values())).mean() if forecast else 0.0
    expected = forecast_part + output.reconstruction_loss + model.config.router_aux_loss_factor * aux
    assert_close(output.loss, expected, **EXACT)
    if forecast:
        assert_close(output.predictions[8], alone.predictions[8], **EXACT)
    else:
        assert output.predictions == {}


def test_both_attention_kernels_reconstruct_alike_and_padding_stays_out():
    x = series(2, 16)
    hidden = _hidden(x.shape, 3, 7)
    eager = tiny_model(reconstruction_head=True, attention_implementation="eager")
    sdpa = tiny_model(reconstruction_head=True, attention_implementation="sdpa")
    assert_close(sdpa.reconstruct(x, hidden), eager.reconstruct(x, hidden), **FLOAT32_ROUNDING)
    # Right padding: what the padded points hold never reaches the real points' reconstruction.
    real = torch.ones(2, 16)
    real[:, 12:] = 0
    changed = x.clone()
    changed[:, 12:] = 50.0
    assert_close(
        eager.reconstruct(changed, hidden, attention_mask=real)[:, :12],
        eager.reconstruct(x, hidden, attention_mask=real)[:, :12],
        **EXACT,
    )
