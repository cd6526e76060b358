"""Routed-expert compute: the swappable kernel behind the sparse MoE layer.

Every kernel computes, for tokens x [T, H] routed to experts `expert_index` [T, k] with weights
`expert_weight` [T, k] (not renormalised), the sum over a token's k choices of
`weight * down(silu(gate(x)) * up(x))` with that expert's weights. They differ only in how the work
is laid out:

- `loop_experts` mirrors the reference: a Python loop over experts, gathering each one's tokens.
  Parity tests pin it.
- `grouped_experts` sorts the (token, choice) pairs by expert once and runs each projection as one
  grouped matmul over all experts (`torch.nn.functional.grouped_mm`, the grouped-GEMM path on GPUs),
  with no Python loop and no host sync. Where torch has no grouped_mm it falls back to a loop over
  the sorted groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_HAS_GROUPED_MM = hasattr(F, "grouped_mm")


def _grouped_mm_supports(device: torch.device, dtype: torch.dtype, widths: tuple[int, ...]) -> bool:
    """grouped_mm runs float32/bfloat16 on CPU; on CUDA and under torch.compile it takes bfloat16 only.

    Both also need every row to start on a 16-byte boundary.
    """
    if not _HAS_GROUPED_MM:
        return False
    if any((width * dtype.itemsize) % 16 for width in widths):
        return False
    if torch.compiler.is_compiling() and dtype != torch.bfloat16:
        return False  # the compiler's shape-checking kernel accepts bfloat16 only, even on CPU
    if device.type == "cpu":
        return dtype in (torch.float32, torch.bfloat16)
    return device.type == "cuda" and dtype == torch.bfloat16


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's where it is on (grouped_mm is not an autocast op)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def loop_experts(
    x: torch.Tensor,  # [T, H]
    expert_index: torch.Tensor,  # [T, k]
    expert_weight: torch.Tensor,  # [T, k]
    gate_proj: torch.Tensor,  # [E, I, H]
    up_proj: torch.Tensor,  # [E, I, H]
    down_proj: torch.Tensor,  # [E, H, I]
) -> torch.Tensor:
    """Reference layout: one gather, three matmuls and one scatter-add per expert."""
    out = torch.zeros_like(x)
    for expert in range(gate_proj.shape[0]):
        token, choice = torch.where(expert_index == expert)
        if token.numel() == 0:
            continue
        tokens = x[token]
        hidden = F.silu(tokens @ gate_proj[expert].T) * (tokens @ up_proj[expert].T)
        expert_out = (hidden @ down_proj[expert].T).to(x.dtype)  # autocast may run it in half precision
        out.index_add_(0, token, expert_out * expert_weight[token, choice, None])
    return out


class _RowsByExpert(torch.autograd.Function):
    """x's row for each (token, choice) pair, pairs in expert order: `rows[i] = x[order[i] // k]`.

    Autograd's own backward of that gather (of index_select or advanced indexing) scatter-adds each row's
    gradient into x, a slow kernel on CPUs (4% of a bfloat16 training step, measured). The pairs are a
    permutation, so the backward here gathers the gradients back into pair order with the inverse permutation
    and sums each token's k rows instead.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, top_k: int) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.top_k = top_k
        return x.index_select(0, torch.div(order, top_k, rounding_mode="floor"))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        by_pair = grad.index_select(0, inverse).view(-1, ctx.top_k, grad.shape[-1])  # [T, k, H]
        return by_pair.sum(1), None, None, None


def grouped_experts(
    x: torch.Tensor,  # [T, H]
    expert_index: torch.Tensor,  # [T, k]
    expert_weight: torch.Tensor,  # [T, k]
    gate_proj: torch.Tensor,  # [E, I, H]
    up_proj: torch.Tensor,  # [E, I, H]
    down_proj: torch.Tensor,  # [E, H, I]
) -> torch.Tensor:
    """Sort (token, choice) pairs by expert and run each projection as one grouped matmul.

    Rows move by gathers and a permuting index_copy, forward and backward (`_RowsByExpert`; advanced indexing
    would backpropagate through an accumulating index_put, which sorts its indices).
    Under autocast, tokens are cast to the matmul dtype once, before they are copied k times, and the
    expert outputs stay in that dtype up to the weighted sum over each token's k choices, a batched matmul
    that accumulates in float32.
    """
    num_experts, top_k = gate_proj.shape[0], expert_index.shape[1]
    tokens = x.shape[0]
    sorted_expert, order = torch.sort(expert_index.reshape(-1), stable=True)  # [T*k]
    positions = torch.arange(order.shape[0], device=order.device)
    inverse = torch.empty_like(order).index_copy_(0, order, positions)  # where each pair landed in the sort
    # Each expert's end offset in the sorted rows; the shape stays [E] whatever the routing, which
    # torch.compile needs to trace the grouped path without a graph break.
    boundaries = torch.arange(1, num_experts + 1, device=x.device, dtype=sorted_expert.dtype)
    ends = torch.searchsorted(sorted_expert, boundaries - 1, right=True, out_int32=True)
    dtype = _compute_dtype(x)
    rows = _RowsByExpert.apply(x.to(dtype), order, inverse, top_k)  # [T*k, H], grouped by expert
    if _grouped_mm_supports(x.device, dtype, (x.shape[-1], gate_proj.shape[1])):
        gate, up, down = (weight.to(dtype).transpose(1, 2) for weight in (gate_proj, up_proj, down_proj))
        hidden = F.silu(F.grouped_mm(rows, gate, offs=ends)) * F.grouped_mm(rows, up, offs=ends)
        expert_out = F.grouped_mm(hidden, down, offs=ends)  # [T*k, H]
    else:
        # float64 (parity tests), fp16/fp32 on GPUs, odd widths and older torch: a matmul per group.
        counts = torch.diff(ends, prepend=ends.new_zeros(1)).tolist()
        pieces = []
        for expert, group in enumerate(torch.split(rows, counts)):
            hidden = F.silu(group @ gate_proj[expert].T.to(dtype)) * (group @ up_proj[expert].T.to(dtype))
            pieces.append(hidden @ down_proj[expert].T.to(dtype))
        expert_out = torch.cat(pieces)
    # Back to token order ([T, k, H]; row i of the sorted rows is pair order[i]), then each token's weighted
    # sum over its k choices.
    by_token = expert_out.new_empty(expert_out.shape).index_copy(0, order, expert_out).view(tokens, top_k, x.shape[-1])
    combined = torch.bmm(expert_weight.to(by_token.dtype).unsqueeze(1), by_token).squeeze(1)  # [T, H]
    return combined.to(x.dtype)


EXPERT_KERNELS = {"loop": loop_experts, "grouped": grouped_experts}
