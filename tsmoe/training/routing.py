"""Routing health: whether the router still spreads tokens over its experts.

Router collapse, where every token goes to one or two experts, is what precedes a loss that sits at 0
and a NaN gradient norm: the other experts stop learning and the busy ones overflow. Two figures per
MoE layer make it visible before it happens:

- load shares: the fraction of top-k assignments each expert receives (1/E each when balanced);
- routing entropy: the mean entropy of the router's softmax over experts, divided by log(E), so 1 is a
  uniform router and 0 a router that always picks one expert with certainty.

`RoutingTally` adds them up over every micro-batch of an epoch (and, under DDP, over every rank), so an
epoch's figures describe all its tokens rather than its last batch.
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
        """Flat scalars for a metrics line: routing_entropy_min, routing_max_load_share, per-layer entropy and
        `routing_load_share_layer{i}_expert{e}`, one column per expert (what a per-expert load plot reads)."""
        values = {"routing_entropy_min": min(self.entropy), "routing_max_load_share": self.max_load_share}
        values.update({f"routing_entropy_layer{index}": value for index, value in enumerate(self.entropy)})
        for layer, shares in enumerate(self.load_shares):
            values.update(
                {f"routing_load_share_layer{layer}_expert{expert}": share for expert, share in enumerate(shares)}
            )
        return values


class RoutingTally:
    """Top-k assignment counts per layer and expert, and summed normalised entropy, over many forward passes."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self.counts: torch.Tensor | None = None  # [layers, E] top-k assignments
        self.entropy_sum: torch.Tensor | None = None  # [layers] sum over tokens of the normalised entropy
        self.tokens = 0  # tokens seen per layer

    @torch.no_grad()
    def add(
        self,
        router_logits: list[torch.Tensor] | tuple[torch.Tensor, ...],
        selection_logits: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        """Count one forward pass's routing (one [T, E] logits tensor per MoE layer).

        `selection_logits`, where a layer chooses its experts from other scores than its router's (a
        balancing bias), decide the counts; entropy is always the router's own.
        """
        if not router_logits:
            raise ValueError("no router logits: the model has no MoE layers")
        choosing = router_logits if selection_logits is None else selection_logits
        counts, entropy = [], []
        for logits, choice_logits in zip(router_logits, choosing, strict=True):
            experts = logits.shape[-1]
            probabilities = torch.softmax(logits.detach().float(), dim=-1)
            chosen = choice_logits.detach().float().topk(self.top_k, dim=-1).indices.reshape(-1)
            counts.append(torch.bincount(chosen, minlength=experts))  # int64: exact over long epochs
            token_entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=-1)
            normaliser = math.log(experts) if experts > 1 else math.inf  # one expert: entropy 0
            entropy.append(token_entropy.double().sum() / normaliser)
        batch_counts, batch_entropy = torch.stack(counts), torch.stack(entropy)
        if self.counts is None or self.entropy_sum is None:
            self.counts, self.entropy_sum = batch_counts, batch_entropy
        else:
            self.counts += batch_counts
            self.entropy_sum += batch_entropy
        self.tokens += router_logits[0].shape[0]

    def all_reduce(self, device: torch.device) -> None:
        """Sum the tally over every rank (a collective: every rank calls it), so each holds the global one."""
        if self.counts is None or self.entropy_sum is None:
            raise ValueError("an empty routing tally: no forward pass was counted")
        tokens = torch.tensor([self.tokens], dtype=torch.int64, device=device)
        counts = torch.cat([self.counts.reshape(-1).to(device), tokens])
        entropy_sum = self.entropy_sum.to(device)
        torch.distributed.all_reduce(counts)
        torch.distributed.all_reduce(entropy_sum)
        self.counts = counts[:-1].reshape(self.counts.shape)
        self.entropy_sum = entropy_sum
        self.tokens = int(counts[-1].item())

    def health(self) -> RoutingHealth:
        """The routing health of everything counted."""
        if self.counts is None or self.entropy_sum is None:
            raise ValueError("an empty routing tally: no forward pass was counted")
        counts = self.counts.double()
        shares = counts / counts.sum(dim=-1, keepdim=True)
        entropy = self.entropy_sum / self.tokens
        return RoutingHealth(load_shares=shares.tolist(), entropy=entropy.tolist())


def routing_health(router_logits: list[torch.Tensor], top_k: int) -> RoutingHealth:
    """Routing health of one forward pass from its router logits (one [T, E] tensor per MoE layer)."""
    tally = RoutingTally(top_k)
    tally.add(router_logits)
    return tally.health()
