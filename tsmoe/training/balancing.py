"""Auxiliary-loss-free load balancing: the per-expert routing bias and its update after each step.

Each MoE layer with `router_bias_update_rate` > 0 adds a bias [E] to its router logits to choose the
top-k experts (see `SparseMoE` in tsmoe/model/timemoe.py). After every optimizer step each expert's bias
moves by the update rate towards balance:

    bias[e] += rate * sign(mean over experts of tokens - tokens[e])

so an expert that received more than its share becomes less likely to be chosen, one that received less
more likely (Wang et al. 2024, used by DeepSeek-V3). Under DDP the token counts are summed over the ranks
first, so every rank makes the same update and the biases stay identical without a broadcast.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from tsmoe.model.timemoe import SparseMoE


def balanced_layers(model: torch.nn.Module) -> list[SparseMoE]:
    """The MoE layers of `model` that carry a balancing bias, in order."""
    return [module for module in model.modules() if isinstance(module, SparseMoE) and module.bias_update_rate > 0]


@torch.no_grad()
def update_expert_bias(model: torch.nn.Module, distributed: bool = False) -> None:
    """Move every balancing bias of `model` from the tokens counted since the last call, then reset the counts.

    Call it on every rank right after each optimizer step (all ranks together under DDP: the counts are
    all-reduced). A model without balancing bias is left alone.
    """
    layers = balanced_layers(model)
    if not layers:
        return
    device = layers[0].expert_bias.device
    counts = torch.stack([layer.tokens_per_expert.to(device, torch.float32) for layer in layers])  # [layers, E]
    if distributed:
        dist.all_reduce(counts)
    for layer, layer_counts in zip(layers, counts, strict=True):
        if layer_counts.sum() > 0:  # a layer that saw no token this step keeps its bias
            layer.expert_bias += layer.bias_update_rate * torch.sign(layer_counts.mean() - layer_counts)
        layer.tokens_per_expert = torch.zeros_like(layer_counts)


def selection_logits(model: torch.nn.Module, router_logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """The logits each MoE layer chose its experts from: the router logits plus the layer's balancing bias.

    Load shares must be counted from these (the router logits alone do not say which experts a biased
    layer chose); entropy stays a property of the router logits.
    """
    layers = [module for module in model.modules() if isinstance(module, SparseMoE)]
    if len(layers) != len(router_logits):
        raise ValueError(f"{len(router_logits)} router logits for {len(layers)} MoE layers")
    return [
        logits + layer.expert_bias.to(logits.dtype) if layer.bias_update_rate > 0 else logits
        for layer, logits in zip(layers, router_logits, strict=True)
    ]
