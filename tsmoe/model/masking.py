"""Which points the masked-reconstruction pass hides: random spans in training, a fixed rotation in scoring.

Training hides `round(ratio * L / span)` spans of `span` points per series, never overlapping, placed uniformly
at random, so the hidden share is the ratio up to one span and at least one point stays visible. The masks are
drawn from a generator seeded by (training seed, rank, optimizer step, micro-batch): a run, or a resumed run,
hides the same points, and DDP ranks hide different ones as their data differs.

Scoring hides every point exactly once: pass p of P = ceil(1 / ratio) hides the points t with
(t // span) mod P == p, spans of the training length, about the training share per pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def span_mask(series: int, length: int, ratio: float, span: int, generator: torch.Generator) -> torch.Tensor:
    """[series, length] bool, True = hidden: non-overlapping spans of `span` points covering about `ratio`.

    Placing k spans in L points is choosing k of the L - k * (span - 1) slots that remain when each span
    counts as one: sorted slots s_0 < s_1 < ... map to starts s_i + i * (span - 1), which never overlap.
    """
    if length < span + 1:
        raise ValueError(f"a series of {length} points cannot hide a span of {span} and keep a point visible")
    spans = min(max(1, round(ratio * length / span)), (length - 1) // span)
    slots = length - spans * (span - 1)
    chosen = torch.rand(series, slots, generator=generator).argsort(dim=1)[:, :spans].sort(dim=1).values
    starts = chosen + torch.arange(spans) * (span - 1)  # [series, spans]
    positions = (starts.unsqueeze(-1) + torch.arange(span)).reshape(series, -1)  # [series, spans * span]
    mask = torch.zeros(series, length, dtype=torch.bool)
    mask.scatter_(1, positions, True)
    return mask


def training_generator(seed: int, rank: int, step: int, micro_batch: int) -> torch.Generator:
    """The generator of one micro-batch's masks, from the training seed, the rank, the step and the micro-batch."""
    state = np.random.SeedSequence([seed, rank, step, micro_batch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def scoring_passes(ratio: float) -> int:
    """Passes of the reconstruction score: ceil(1 / ratio), each hiding about the training share."""
    return math.ceil(1.0 / ratio - 1e-9)  # 1 / 0.25 may round to 4.000000000000001


def scoring_masks(length: int, span: int, passes: int) -> torch.Tensor:
    """[passes, length] bool: pass p hides the points t with (t // span) mod passes == p; each point once."""
    blocks = torch.arange(length) // span % passes
    return blocks.unsqueeze(0) == torch.arange(passes).unsqueeze(1)
