"""Routing health: whether the router still spreads tokens over its experts.

Router collapse, where every token goes to one or two experts, is what precedes a loss that sits at 0
and a NaN gradient norm: the other experts stop learning and the busy ones overflow. Two figures per
MoE layer make it visible before it happens:

- load shares: the fraction of top-k assignments each expert receives (1/E each when balanced);
- routing entropy: the mean entropy of the router's softmax over experts, divided by log(E), so 1 is a
  uniform router and 0 a router that always picks one expert with certainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RoutingHealth:
    """Per-layer load shares [layers][E] and normalised routing entropy [layers]."""

    load_shares: list[list[float]]
    entropy: list[float]

    @property
    def max_load_share(self) -> float:
        """The busiest expert's share in any layer: 1/E when balanced, 1.0 when collapsed (top-1)."""
        return max(max(shares) for shares in self.load_shares)

    def metrics(self) -> dict[str, float]:
        """Flat scalars for a metrics line: routing_entropy_min, routing_max_load_share, per-layer entropy."""
        values = {"routing_entropy_min": min(self.entropy), "routing_max_load_share": self.max_load_share}
        values.update({f"routing_entropy_layer{index}": value for index, value in enumerate(self.entropy)})
        return values


@torch.no_grad()
def routing_health(router_logits: list[torch.Tensor], top_k: int) -> RoutingHealth:
    """Routing health of one forward pass from its router logits (one [T, E] tensor per MoE layer)."""
    if not router_logits:
        raise ValueError("no router logits: the model has no MoE layers")
    shares, entropies = [], []
    for logits in router_logits:
        experts = logits.shape[-1]
        probabilities = torch.softmax(logits.float(), dim=-1)
        chosen = probabilities.topk(top_k, dim=-1).indices.reshape(-1)
        counts = torch.bincount(chosen, minlength=experts).float()
        shares.append((counts / counts.sum()).tolist())
        entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=-1).mean()
        entropies.append(float(entropy / math.log(experts)) if experts > 1 else 0.0)
    return RoutingHealth(load_shares=shares, entropy=entropies)
