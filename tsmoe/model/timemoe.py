"""Time-MoE: a decoder-only, sparse mixture-of-experts time-series transformer.

Read top to bottom: input embedding, RMSNorm, rotary embedding, attention, SwiGLU expert, sparse MoE
layer, decoder layer, the model with its forecast heads and losses, then `generate`.

One extension is not the reference's and exists only when `reconstruction_head` is set: a masked-reconstruction
pass over the same blocks (a mask embedding replaces the hidden points' inputs, attention sees both sides, a
reconstruction head reads each point's value back). Without it the parameters and every computation are the
reference's; see docs/design.md section 2. Scoring may also band the causal mask (`attention_window`), which
adds no parameter and, left unset, leaves the mask the reference's.

Every definition follows the public reference implementation (Time-MoE, ICLR 2025) so that its
checkpoints load and give the same numbers; see docs/design.md section 2. One token per time point
(no patching). Inputs are [B, L] for one channel or [B, L, C] for C channels, which are run
independently as B*C series (channel independence).

Module and parameter names match the reference's checkpoint keys, except that routed experts are
stored stacked ([E, ...] per projection) so that expert compute can be one grouped matmul;
`tsmoe.model.checkpoint` converts between the two layouts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.experts import EXPERT_KERNELS

HUBER_DELTA = 2.0


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The aux loss's softmax runs in float32 for half types and in the input dtype otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class InputEmbedding(nn.Module):
    """Scalar -> hidden: silu(gate(x)) * emb(x), both bias-free linears."""

    def __init__(self, config: TimeMoEConfig):
        super().__init__()
        self.emb_layer = nn.Linear(config.input_size, config.hidden_size, bias=False)
        self.gate_layer = nn.Linear(config.input_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, 1] -> [N, L, H]
        return F.silu(self.gate_layer(x)) * self.emb_layer(x)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (also for float64 input, as the reference does)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor, matmul_input: bool = False) -> torch.Tensor:
        """Normalise x; with `matmul_input` under autocast, return it in autocast's dtype for the linears that
        read it, from one fused float32 kernel and one cast (the reference rounds the normalised value to x's
        dtype, scales it by the float32 weight, and each linear casts the float32 product again)."""
        if matmul_input and torch.is_autocast_enabled(x.device.type):
            normalised = F.rms_norm(x.float(), (x.shape[-1],), self.weight, self.eps)
            return normalised.to(torch.get_autocast_dtype(x.device.type))
        wide = x.float()
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * wide.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos and sin [L, head_dim] of the rotary angles, in the `rotate_half` layout.

    Computed in float32 whatever `dtype` is: the reference does, and its checkpoints were trained so.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = torch.outer(positions.float(), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys [N, heads, L, D] by their positions' angles [L, D], in x's dtype.

    The reference casts cos and sin to the projections' dtype (bfloat16 under autocast); float32 angles
    would instead promote q and k to float32 and add two casts per layer.
    """
    return x * cos.to(x.dtype) + _rotate_half(x) * sin.to(x.dtype)


@dataclass
class KVCache:
    """Keys and values seen so far, per layer, for incremental decoding in `generate`."""

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]

    @classmethod
    def empty(cls, layers: int) -> KVCache:
        return cls([None] * layers, [None] * layers)

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]


# Queries per block in the fast layout's matmul attention (`Attention._matmul_attention`): 96 to 256 ran
# within 20% of each other at contexts 512 and 2048 on a 2-core CPU; 128 was fastest at 512.
ATTENTION_QUERY_BLOCK = 128


def sdpa_pays(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `scaled_dot_product_attention` beats the plain matmul-softmax-matmul path here.

    On GPUs its flash and memory-efficient kernels win at every dtype. On CPUs its flash kernel wins in
    float32 (causal blocks skipped, no [L, L] scores); in bfloat16 a profile put about a quarter of the step
    in it, and two oneDNN bfloat16 matmuls around a bfloat16 softmax (`Attention._matmul_attention`) are
    used instead. `benchmarks/train_step.py --attention-kernel auto sdpa` times this rule against forcing
    SDPA (docs/performance.md).
    """
    return device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16)


def _matmul_input(x: torch.Tensor) -> torch.Tensor:
    """x cast once to autocast's dtype, so the linears that share it do not each cast it (and each cast
    their input gradient back) under autocast; unchanged without autocast."""
    if torch.is_autocast_enabled(x.device.type) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def _plain_linear(module: nn.Module) -> bool:
    """A bare nn.Linear with no forward hooks: its call may be replaced by a matmul of its weights."""
    return type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks)


class Attention(nn.Module):
    """Causal multi-head attention with RoPE; q/k/v linears carry a bias, the output does not."""

    def __init__(self, config: TimeMoEConfig, layer_index: int):
        super().__init__()
        self.config = config
        self.layer_index = layer_index
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.key_value_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # [N, L, H]
        cos: torch.Tensor,  # [L, D]
        sin: torch.Tensor,  # [L, D]
        mask: torch.Tensor | None,  # [N, 1, L, S] bool (True = attend), or None for plain causal
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        n, length, _ = x.shape
        if self.config.attention_implementation == "sdpa":
            x = _matmul_input(x)  # the fast layout: one cast for q, k and v
        q, k, v = self._projections(x)
        q = q.view(n, length, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(n, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(n, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            cached_keys, cached_values = cache.keys[self.layer_index], cache.values[self.layer_index]
            if cached_keys is not None and cached_values is not None:
                k = torch.cat((cached_keys, k), dim=2)
                v = torch.cat((cached_values, v), dim=2)
            cache.keys[self.layer_index], cache.values[self.layer_index] = k, v
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if self.config.attention_implementation == "eager":
            out = self._eager(q, k, v, mask)
        elif sdpa_pays(q.device, q.dtype):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            out = self._matmul_attention(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(n, length, self.heads * self.head_dim))

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k and v of x, [N, L, heads * D] and [N, L, kv_heads * D] twice.

        The fast layout runs the three linears as one matmul over their stacked weights: x is read once, and
        backward takes one input-gradient matmul instead of three and two adds. Linears that something else
        wraps or watches (peft's LoRA layers, the non-finite guard's forward hooks) are called as themselves.
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if self.config.attention_implementation == "sdpa" and all(map(_plain_linear, projections)):
            weight = torch.cat([projection.weight for projection in projections])
            bias = torch.cat([projection.bias for projection in projections])
            return F.linear(x, weight, bias).split([projection.out_features for projection in projections], -1)
        return tuple(projection(x) for projection in projections)

    @staticmethod
    def _eager(q, k, v, mask):
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [N, heads, L, S]
        if mask is None:
            length, keys = scores.shape[-2:]
            mask = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril(keys - length)
        scores = scores.masked_fill(~mask, float("-inf"))
        return F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v

    @staticmethod
    def _matmul_attention(q, k, v, mask, query_block: int | None = None):
        """The fast layout's attention where SDPA does not pay (half types on CPUs): the reference's matmul,
        mask and softmax, kept in q's dtype, a block of queries at a time (`_BlockedMatmulAttention`)."""
        return _BlockedMatmulAttention.apply(q, k, v, mask, query_block or ATTENTION_QUERY_BLOCK)


def _query_blocks(length: int, keys: int, query_block: int) -> Iterator[tuple[int, int, int]]:
    """(first, last, visible) of each block of `query_block` queries: its queries [first, last) see at most
    the first `visible` keys (the mask is causal: `_attention_mask`; cached keys come before the queries)."""
    for first in range(0, length, query_block):
        last = min(first + query_block, length)
        yield first, last, keys - length + last


class _BlockedMatmulAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(D), masked) v over blocks of queries, with a backward that knows the blocks.

    The CPU softmax kernel accumulates a bfloat16 row in float32 and rounds its output once, as the
    reference's float32 softmax followed by a cast does, without two casts of the [N, heads, L, S] scores
    each way. The scale goes on q ([L, D], not [L, S]; exact where head_dim is a power of 4), and the mask
    is filled in place into the fresh scores.

    A block of queries only scores the keys its last query may see (the mask is causal: `_attention_mask`),
    so the causal upper triangle is mostly never computed, and each block's scores stay small enough for
    the cache. Without a mask only the block's diagonal square holds keys after some query, so only it is
    filled. Every output row is computed as the whole-matrix version computes it.

    Autograd's own backward of the blocks would give every block's key and value slice a full-size zero
    gradient and add them up (and the same for the queries); this backward writes each block's query
    gradient into its rows and adds its key and value gradients into the visible prefix only. Measured on a
    2-core AVX512-BF16 CPU, forward and backward in bfloat16: [8, 4, 512, 64] 42 -> 32 ms, [2, 4, 2048, 64]
    141 -> 97 ms (docs/performance.md).
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, query_block):
        offset = k.shape[-2] - q.shape[-2]  # query i sits at key offset + i (cached keys come first)
        scale = 1.0 / math.sqrt(q.shape[-1])
        q = q * scale
        outputs, probabilities = [], []
        for first, last, visible in _query_blocks(q.shape[-2], k.shape[-2], query_block):
            scores = q[..., first:last, :] @ k[..., :visible, :].transpose(-2, -1)  # [N, heads, B, visible]
            if mask is None:
                square = torch.ones(last - first, last - first, dtype=torch.bool, device=q.device).triu(1)
                scores[..., offset + first :].masked_fill_(square, float("-inf"))
            else:
                scores.masked_fill_(~mask[..., first:last, :visible], float("-inf"))
            block_probabilities = F.softmax(scores, dim=-1)
            outputs.append(block_probabilities @ v[..., :visible, :])
            probabilities.append(block_probabilities)
        ctx.save_for_backward(q, k, v, *probabilities)
        ctx.query_block, ctx.scale = query_block, scale
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-2)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, *probabilities = ctx.saved_tensors  # q already scaled
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        blocks = _query_blocks(q.shape[-2], k.shape[-2], ctx.query_block)
        for (first, last, visible), block_probabilities in zip(blocks, probabilities, strict=True):
            block_grad = grad[..., first:last, :]
            grad_v[..., :visible, :] += block_probabilities.transpose(-2, -1) @ block_grad
            grad_scores = torch._softmax_backward_data(
                block_grad @ v[..., :visible, :].transpose(-2, -1), block_probabilities, -1, block_probabilities.dtype
            )
            grad_q[..., first:last, :] = grad_scores @ k[..., :visible, :]
            grad_k[..., :visible, :] += grad_scores.transpose(-2, -1) @ q[..., first:last, :]
        return grad_q.mul_(ctx.scale), grad_k, grad_v, None, None


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), bias-free: the shared expert (and the dense FFN)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RoutedExperts(nn.Module):
    """E SwiGLU experts of width intermediate_size // top_k, weights stacked per projection."""

    def __init__(self, config: TimeMoEConfig):
        super().__init__()
        experts, hidden, width = config.num_experts, config.hidden_size, config.expert_intermediate_size
        self.gate_proj = nn.Parameter(torch.empty(experts, width, hidden))
        self.up_proj = nn.Parameter(torch.empty(experts, width, hidden))
        self.down_proj = nn.Parameter(torch.empty(experts, hidden, width))
        self.kernel = EXPERT_KERNELS[config.expert_implementation]

    def forward(self, x, expert_index, expert_weight):  # [T, H], [T, k], [T, k] -> [T, H]
        return self.kernel(x, expert_index, expert_weight, self.gate_proj, self.up_proj, self.down_proj)


class SparseMoE(nn.Module):
    """Top-k routed experts (weights not renormalised) plus a sigmoid-gated shared expert.

    The router is a bias-free linear to E logits; the gate weights are the softmax of those logits at
    the chosen experts. With the default config it routes exactly as the reference. Two options help
    it use every expert from the first step (docs/routing.md):

    - balancing bias (`router_bias_update_rate` > 0): `expert_bias` [E] is added to the logits only to
      choose the top-k, never to the gate weights, so it changes which experts a token visits and not
      how their outputs are weighed. `tsmoe.training.balancing.update_expert_bias` moves it after each
      optimizer step from the tokens each expert received (`tokens_per_expert`).
    - input norm (`router_input_norm: batch`): the router sees its input normalised per feature over
      the tokens (running statistics in eval). At init every token's hidden state is nearly the same
      vector (the scalar embedding is ~x^2 times one direction), so without it all tokens pick the
      same experts whatever the bias; with it, what differs between tokens decides.
    """

    expert_bias: torch.Tensor  # [E], only with the balancing bias
    tokens_per_expert: torch.Tensor  # [E], only with the balancing bias

    def __init__(self, config: TimeMoEConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)  # the router
        self.experts = RoutedExperts(config)
        self.shared_expert = SwiGLU(config.hidden_size, config.intermediate_size)
        self.shared_expert_gate = nn.Linear(config.hidden_size, 1, bias=False)
        # Identity holds no state, so a reference-configured layer has exactly the reference's parameters.
        # Batch norm's statistics count every token, padding included, as the reference's aux loss does.
        batch_norm = config.router_input_norm == "batch"
        self.router_norm = nn.BatchNorm1d(config.hidden_size, affine=False) if batch_norm else nn.Identity()
        self.bias_update_rate = config.router_bias_update_rate
        if self.bias_update_rate > 0:
            # A buffer, so checkpoints keep it and a resumed or exported model chooses as it trained.
            # Reference checkpoints have none; loading one starts it at zero.
            self.register_buffer("expert_bias", torch.zeros(config.num_experts))
            # Choices per expert since the last bias update, summed over micro-batches. A plain tensor,
            # not a buffer: DDP copies rank 0's buffers to every rank before each forward.
            self.tokens_per_expert = torch.zeros(config.num_experts)

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits [T, E], gate weights [T, k] (float32) and chosen experts [T, k] of tokens [T, H]."""
        router_logits = self.gate(self.router_norm(tokens))  # [T, E]
        probabilities = F.softmax(router_logits, dim=-1, dtype=torch.float32)
        if self.bias_update_rate == 0:
            expert_weight, expert_index = torch.topk(probabilities, self.top_k, dim=-1)
            return router_logits, expert_weight, expert_index
        # The bias picks the experts; the weights stay the router's own probabilities.
        expert_index = torch.topk(router_logits.detach().float() + self.expert_bias, self.top_k, dim=-1).indices
        expert_weight = probabilities.gather(-1, expert_index)
        if self.training:
            # Under activation checkpointing the recomputed forward counts again: every count of the
            # step doubles, which leaves sign(mean - count), all the update reads, unchanged.
            counts = torch.bincount(expert_index.reshape(-1), minlength=router_logits.shape[-1])
            self.tokens_per_expert = self.tokens_per_expert.to(counts.device) + counts
        return router_logits, expert_weight, expert_index

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # [T, H]
        router_logits, expert_weight, expert_index = self.route(tokens)
        routed = self.experts(tokens, expert_index, expert_weight.to(x.dtype))
        shared = torch.sigmoid(self.shared_expert_gate(tokens)) * self.shared_expert(tokens)
        return (routed + shared).view(shape), router_logits


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: TimeMoEConfig, layer_index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn_layer = SwiGLU(config.hidden_size, config.intermediate_size) if config.use_dense else SparseMoE(config)
        # The grouped layout casts the feed-forward input once under autocast: the router, the shared expert,
        # its gate and the routed experts all read the same bfloat16 copy, which autocast would make 4 times.
        self.cast_ffn_input_once = config.expert_implementation == "grouped"
        # Likewise the fast attention reads q, k and v's input in autocast's dtype, straight from its norm.
        self.cast_attention_input_once = config.attention_implementation == "sdpa"

    def forward(self, x, cos, sin, mask, cache=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_input = self.input_layernorm(x, matmul_input=self.cast_attention_input_once)
        x = x + self.self_attn(attention_input, cos, sin, mask, cache)
        ffn_input = self.post_attention_layernorm(x, matmul_input=self.cast_ffn_input_once)
        ffn_out = self.ffn_layer(_matmul_input(ffn_input) if self.cast_ffn_input_once else ffn_input)
        if isinstance(ffn_out, tuple):
            ffn_out, router_logits = ffn_out
            return x + ffn_out, router_logits
        return x + ffn_out, None


class Backbone(nn.Module):
    """Embedding, decoder layers and the final norm (the reference's `model.` prefix)."""

    def __init__(self, config: TimeMoEConfig):
        super().__init__()
        self.embed_layer = InputEmbedding(config)
        self.layers = nn.ModuleList(DecoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class OutputHead(nn.Module):
    """One forecast head: hidden -> the next `horizon` values, bias-free."""

    def __init__(self, config: TimeMoEConfig, horizon: int):
        super().__init__()
        self.out_layer = nn.Linear(config.hidden_size, config.input_size * horizon, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(x)


@dataclass
class TimeMoEOutput:
    """What a forward pass returns. Shapes are for [B, L] input; [B, L, C] input adds C after L."""

    predictions: dict[int, torch.Tensor]  # horizon h -> [B, L, h]; position t predicts x[t+1..t+h]
    router_logits: list[torch.Tensor]  # one [B*L, E] per MoE layer (B*C*L for C channels)
    aux_loss: torch.Tensor | None  # load-balancing loss (unscaled), None for dense models
    last_hidden_state: torch.Tensor  # [B, L, H] after the final norm
    loss: torch.Tensor | None = None  # mean head loss + router_aux_loss_factor * aux_loss
    head_losses: dict[int, torch.Tensor] = field(default_factory=dict)  # horizon -> Huber loss
    # Only with a reconstruction mask: every point's value read back by the bidirectional pass, [B, L], and
    # the Huber loss over the hidden points. Each layer's router_logits then hold both passes' tokens (forecast
    # pass first, [2 * B*L, E]), and aux_loss and loss count every token of both passes once. Without a
    # forecast pass, predictions is empty and last_hidden_state is the reconstruction pass's.
    reconstruction: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    # Only with state_layer: that layer's states, shaped like last_hidden_state: the input embedding (0) or
    # decoder layer i's output (i, before the final norm).
    layer_state: torch.Tensor | None = None


class TimeMoE(nn.Module):
    """Time-MoE with one forecast head per horizon; see the module docstring."""

    mask_embedding: nn.Parameter  # [H], only with reconstruction_head
    reconstruction_head: OutputHead  # hidden -> 1, only with reconstruction_head

    def __init__(self, config: TimeMoEConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_heads = nn.ModuleList(OutputHead(config, horizon) for horizon in config.horizon_lengths)
        self.apply(self._init_weights)
        if config.reconstruction_head:
            # Built once the reference's modules are initialised, so that a seed still gives those their values.
            self.mask_embedding = nn.Parameter(torch.empty(config.hidden_size).normal_(0.0, config.initializer_range))
            self.reconstruction_head = OutputHead(config, 1)
            self.reconstruction_head.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RoutedExperts):
            for weight in (module.gate_proj, module.up_proj, module.down_proj):
                nn.init.normal_(weight, mean=0.0, std=std)
        elif isinstance(module, SparseMoE) and self.config.router_init_std is not None:
            # SparseMoE is visited after its router (apply is post-order), so this wins.
            nn.init.normal_(module.gate.weight, mean=0.0, std=self.config.router_init_std)

    # --- checkpoints (reference format) ------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, **overrides) -> TimeMoE:
        """Load a checkpoint directory in the reference format (config.json + weights)."""
        from tsmoe.model.checkpoint import load_pretrained

        return load_pretrained(path, **overrides)

    def save_pretrained(self, path) -> None:
        """Write config.json and model.safetensors in the reference format."""
        from tsmoe.model.checkpoint import save_pretrained

        save_pretrained(self, path)

    # --- forward -----------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,  # [B, L] or [B, L, C]
        labels: torch.Tensor | None = None,  # same shape as x; labels[:, t] is the value after x[:, t]
        loss_masks: torch.Tensor | None = None,  # [B, L] or like labels; 0 excludes a target
        attention_mask: torch.Tensor | None = None,  # [B, L]; 0 marks padding
        reconstruction_mask: torch.Tensor | None = None,  # [B, L] or like x; True hides a point (bool)
        forecast: bool = True,  # False: the reconstruction pass alone (needs reconstruction_mask)
        state_layer: int | None = None,  # also return this layer's states (forecast pass only): 0 is the embedding
        attention_window: int | None = None,  # forecast pass only: each position sees itself and the window - 1 before
    ) -> TimeMoEOutput:
        """Predict every horizon at every position; with labels, also the training loss.

        With `reconstruction_mask`, also the masked-reconstruction pass (`_with_reconstruction`); one forward
        call runs both, so DDP sees every parameter the step uses.

        With `attention_window` w (not in the reference; scoring only), every layer's attention at a position sees
        that position and the w - 1 before it, so what lies further back reaches it only through the layers
        below, at most num_hidden_layers * (w - 1) points back: an anomaly stops shaping the states and forecasts
        of the points after it once it is that far behind them.
        """
        if reconstruction_mask is not None or not forecast:
            if state_layer is not None or attention_window is not None:
                raise ValueError(
                    "state_layer and attention_window are for the forecast pass alone, without reconstruction_mask"
                )
            return self._with_reconstruction(x, labels, loss_masks, attention_mask, reconstruction_mask, forecast)
        _check_shapes(x, labels=labels, loss_masks=loss_masks, attention_mask=attention_mask)
        channels = x.shape[2] if x.dim() == 3 else None
        series = _to_series(x)  # [N, L]
        if attention_mask is not None:
            attention_mask = _to_series(_broadcast_channels(attention_mask, channels))
        if loss_masks is not None:
            loss_masks = _to_series(_broadcast_channels(loss_masks, channels))
        if state_layer is not None and not 0 <= state_layer <= self.config.num_hidden_layers:
            raise ValueError(
                f"state_layer {state_layer}: the model has layers 0 (embedding) to {self.config.num_hidden_layers}"
            )
        if attention_window is not None and attention_window < 1:
            raise ValueError(f"attention_window {attention_window}: must be at least 1 (the position itself)")
        kept: list[torch.Tensor] = []
        hidden, router_logits = self._backbone(
            series, attention_mask, keep_layer=state_layer, kept=kept, attention_window=attention_window
        )
        series_predictions = [head(hidden) for head in self.lm_heads]  # [N, L, h] each
        predictions = {
            horizon: _from_series(prediction, channels)
            for horizon, prediction in zip(self.config.horizon_lengths, series_predictions, strict=True)
        }
        aux_loss = None
        if router_logits:
            real_tokens = None
            if self.config.aux_loss_real_tokens_only:
                real_tokens = attention_mask if attention_mask is not None else loss_masks
            aux_loss = load_balancing_loss(router_logits, self.config.num_experts_per_tok, real_tokens)
        output = TimeMoEOutput(predictions, router_logits, aux_loss, _from_series(hidden, channels))
        if kept:
            output.layer_state = _from_series(kept[0], channels)
        if labels is not None:
            targets = _to_series(labels)
            output.head_losses = {
                horizon: forecast_loss(prediction, targets, loss_masks)
                for horizon, prediction in zip(self.config.horizon_lengths, series_predictions, strict=True)
            }
            output.loss = total_loss(
                output.head_losses,
                aux_loss if self.config.apply_aux_loss else None,
                self.config.router_aux_loss_factor,
            )
        return output

    def embed(self, series: torch.Tensor) -> torch.Tensor:
        """The input embedding [N, L, H] of values [N, L]: layer 0's states, each point's own value alone, so
        they need no pass through the decoder layers."""
        return self.model.embed_layer(series.unsqueeze(-1))

    def _backbone(
        self,
        series,
        attention_mask,
        cache: KVCache | None = None,
        hidden_points=None,
        keep_layer=None,
        kept=None,
        attention_window: int | None = None,
    ):
        """[N, L] values -> final hidden states [N, L, H] and per-layer router logits.

        With `hidden_points` ([N, L] bool), the reconstruction pass: those points enter as the mask embedding
        and attention is bidirectional (an explicit all-keys mask, which every attention kernel honours).
        With `keep_layer` i, the list `kept` receives that layer's states [N, L, H] (0: the embedding); only
        that one is kept, so scoring a deep model holds one layer's states, not all. With `attention_window` w,
        each position attends to itself and the w - 1 positions before it (`_attention_mask`).
        """
        start = 0 if cache is None else cache.length
        hidden = self.embed(series)
        if hidden_points is not None:
            hidden = torch.where(hidden_points.unsqueeze(-1), self.mask_embedding.to(hidden.dtype), hidden)
        positions = torch.arange(start, start + series.shape[1], device=series.device)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, hidden.dtype)
        if hidden_points is None:
            mask = _attention_mask(attention_mask, series.shape[1], start, series.device, attention_window)
        else:
            mask = _bidirectional_mask(attention_mask, series.shape[1], series.device)
        router_logits = []
        if keep_layer == 0:
            kept.append(hidden)
        for number, layer in enumerate(self.model.layers, start=1):
            if self.config.activation_checkpointing and self.training and torch.is_grad_enabled():
                hidden, logits = checkpoint(layer, hidden, cos, sin, mask, use_reentrant=False)
            else:
                hidden, logits = layer(hidden, cos, sin, mask, cache)
            if logits is not None:
                router_logits.append(logits)
            if number == keep_layer:
                kept.append(hidden)
        return self.model.norm(hidden), router_logits

    # --- masked reconstruction (not in the reference; only with reconstruction_head) -----------
    def _with_reconstruction(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        loss_masks: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        reconstruction_mask: torch.Tensor | None,
        forecast: bool,
    ) -> TimeMoEOutput:
        """The forecast pass (unless `forecast` is False) and the reconstruction pass, with their joint loss."""
        if not self.config.reconstruction_head:
            raise ValueError(
                "this model has no reconstruction path (model.reconstruction_head is false; a run config sets it "
                "when training.loss is masked_reconstruction or both)"
            )
        if reconstruction_mask is None:
            raise ValueError("forecast=False runs the reconstruction pass alone: give a reconstruction_mask")
        _check_shapes(x, attention_mask=attention_mask, reconstruction_mask=reconstruction_mask)
        channels = x.shape[2] if x.dim() == 3 else None
        output = self.forward(x, labels, loss_masks, attention_mask) if forecast else None
        series = _to_series(x)
        hidden_points = _to_series(_broadcast_channels(reconstruction_mask, channels)).bool()
        real_points = None if attention_mask is None else _to_series(_broadcast_channels(attention_mask, channels))
        # The hidden values never enter the pass: zeroed before the embedding, whose output is replaced anyway.
        hidden, router_logits = self._backbone(series.masked_fill(hidden_points, 0.0), real_points, None, hidden_points)
        reconstruction = self.reconstruction_head(hidden).squeeze(-1)  # [N, L]
        scored = hidden_points if real_points is None else hidden_points & real_points.bool()
        reconstruction_loss = masked_huber_loss(reconstruction, series, scored)
        passes = 1
        if output is None:
            output = TimeMoEOutput({}, router_logits, None, _from_series(hidden, channels))
        elif router_logits:
            passes = 2
            output.router_logits = [torch.cat(pair) for pair in zip(output.router_logits, router_logits, strict=True)]
        output.aux_loss = None
        if output.router_logits:
            real_tokens = None
            if self.config.aux_loss_real_tokens_only:
                real_tokens = real_points if real_points is not None else _forecast_loss_tokens(loss_masks, channels)
            if real_tokens is not None:
                real_tokens = real_tokens.repeat(passes, 1)  # the tokens of each pass, in the logits' order
            output.aux_loss = load_balancing_loss(output.router_logits, self.config.num_experts_per_tok, real_tokens)
        output.reconstruction = _from_series(reconstruction, channels)
        output.reconstruction_loss = reconstruction_loss
        output.loss = total_loss(
            output.head_losses,
            output.aux_loss if self.config.apply_aux_loss else None,
            self.config.router_aux_loss_factor,
            reconstruction_loss,
        )
        return output

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, hidden_points: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every point's value read back by the bidirectional pass with `hidden_points` (True = hidden) masked:
        [B, L] or [B, L, C] like x. Only a hidden point's value is a reconstruction; the others saw themselves."""
        reconstruction = self.forward(
            x, attention_mask=attention_mask, reconstruction_mask=hidden_points, forecast=False
        )
        assert reconstruction.reconstruction is not None
        return reconstruction.reconstruction

    # --- forecasting -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, context: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Forecast `max_new_tokens` points after `context` ([B, L] or [B, L, C]) -> [B, L + n].

        Multi-resolution decoding, as the reference does: at each step, use the longest horizon
        that fits in what is left, append that head's forecast from the last position, continue
        with the key/value cache.
        """
        channels = context.shape[2] if context.dim() == 3 else None
        series = _to_series(context)
        cache = KVCache.empty(self.config.num_hidden_layers)
        step_input, produced = series, []
        remaining = max_new_tokens
        while remaining > 0:
            hidden, _ = self._backbone(step_input, None, cache)
            fitting = [h for h in self.config.horizon_lengths if h <= remaining]
            horizon = fitting[-1] if fitting else self.config.horizon_lengths[0]
            head = self.lm_heads[self.config.horizon_lengths.index(horizon)]
            step_input = head(hidden[:, -1])[:, :remaining]  # [N, min(h, remaining)]
            produced.append(step_input)
            remaining -= step_input.shape[1]
        return _from_series(torch.cat([series, *produced], dim=1), channels)


# --- losses ---------------------------------------------------------------------------------
def forecast_loss(prediction: torch.Tensor, labels: torch.Tensor, loss_masks: torch.Tensor | None) -> torch.Tensor:
    """Huber(delta 2) of one head's forecasts [N, L, h] against labels [N, L].

    Position t's forecast covers labels[t .. t+h-1]; targets past the window are zero (and, with a
    loss mask, masked out), exactly as the reference builds them.
    """
    horizon = prediction.shape[-1]
    targets = F.pad(labels, (0, horizon - 1)).unfold(-1, horizon, 1)  # [N, L, h]
    losses = F.huber_loss(prediction, targets, reduction="none", delta=HUBER_DELTA)
    if loss_masks is None:
        return losses.mean()
    masks = F.pad(loss_masks.to(losses.dtype), (0, horizon - 1)).unfold(-1, horizon, 1)
    return (losses * masks).sum() / masks.sum()


def masked_huber_loss(reconstruction: torch.Tensor, values: torch.Tensor, hidden_points: torch.Tensor) -> torch.Tensor:
    """Huber (delta 2, as the forecast heads') of reconstructions [N, L] against values [N, L], over the hidden
    points only: sum(loss * hidden) / sum(hidden)."""
    losses = F.huber_loss(reconstruction, values.to(reconstruction.dtype), reduction="none", delta=HUBER_DELTA)
    weights = hidden_points.to(losses.dtype)
    return (losses * weights).sum() / weights.sum()


def total_loss(
    head_losses: dict[int, torch.Tensor],
    aux_loss: torch.Tensor | None,
    aux_factor: float,
    reconstruction_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss: the mean of the horizons' losses, plus the masked-reconstruction loss (when there is
    one), plus `aux_factor` x the aux loss (when there is one). Either objective may be absent, not both.

    The model's forward uses it with `router_aux_loss_factor`; the trainer with its warmed-up factor.
    """
    objectives = []
    if head_losses:
        objectives.append(torch.stack(list(head_losses.values())).mean())
    if reconstruction_loss is not None:
        objectives.append(reconstruction_loss)
    if not objectives:
        raise ValueError("total_loss needs forecast head losses, a reconstruction loss or both")
    loss = objectives[0] if len(objectives) == 1 else objectives[0] + objectives[1]
    if aux_loss is not None:
        loss = loss + aux_factor * aux_loss
    return loss


def load_balancing_loss(
    router_logits: list[torch.Tensor], top_k: int, real_tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """Switch-style aux loss over all layers: E * sum_{j,e} f[j, e] * mean p[:, e].

    f[j, e] is the share of tokens whose j-th choice is expert e. There is no 1/top_k factor, so a
    uniform router scores top_k. `real_tokens` ([N, L], 1 = count) restricts both averages.
    """
    logits = torch.cat(router_logits, dim=0)  # [layers*T, E]
    num_experts = logits.shape[-1]
    probabilities = F.softmax(logits, dim=-1, dtype=_at_least_float32(logits.dtype))
    # Token shares are float32 even for float64 logits: the reference counts them so.
    choices = F.one_hot(torch.topk(probabilities, top_k, dim=-1).indices, num_experts).float()  # [T, k, E]
    if real_tokens is None:
        tokens_per_expert = choices.mean(dim=0)  # [k, E]
        probability_per_expert = probabilities.mean(dim=0)  # [E]
    else:
        weights = real_tokens.reshape(-1).float().repeat(len(router_logits))  # [layers*T]
        tokens_per_expert = (choices * weights[:, None, None]).sum(0) / weights.sum()
        weights = weights.to(probabilities.dtype)
        probability_per_expert = (probabilities * weights[:, None]).sum(0) / weights.sum()
    return num_experts * (tokens_per_expert * probability_per_expert).sum()


# --- shape helpers ----------------------------------------------------------------------------
def _check_shapes(x: torch.Tensor, **companions: torch.Tensor | None) -> None:
    """Fail with the argument's name and both shapes instead of deep inside a matmul."""
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be [batch, length] or [batch, length, channels], got shape {tuple(x.shape)}")
    for name, tensor in companions.items():
        if tensor is None:
            continue
        allowed = {tuple(x.shape), tuple(x.shape[:2])} if name != "labels" else {tuple(x.shape)}
        if tuple(tensor.shape) not in allowed:
            expected = " or ".join(str(list(shape)) for shape in sorted(allowed, key=len))
            raise ValueError(f"{name} has shape {list(tensor.shape)}, expected {expected} to match x")


def _to_series(x: torch.Tensor) -> torch.Tensor:
    """[B, L] stays; [B, L, C] -> [B*C, L] (channel independence); [B, L, C, h] -> [B*C, L, h]."""
    if x.dim() == 2:
        return x
    if x.dim() == 3:
        return x.transpose(1, 2).reshape(-1, x.shape[1])
    return x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3])


def _from_series(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Inverse of _to_series: [B*C, L, ...] -> [B, L, C, ...]."""
    if channels is None:
        return x
    x = x.reshape(-1, channels, *x.shape[1:])
    return x.transpose(1, 2)


def _broadcast_channels(mask: torch.Tensor, channels: int | None) -> torch.Tensor:
    """A [B, L] mask applies to every channel of a [B, L, C] input."""
    if channels is not None and mask.dim() == 2:
        return mask.unsqueeze(-1).expand(*mask.shape, channels)
    return mask


def _forecast_loss_tokens(loss_masks: torch.Tensor | None, channels: int | None) -> torch.Tensor | None:
    """The forward's fallback for real tokens: loss masks as series [N, L], or None."""
    return None if loss_masks is None else _to_series(_broadcast_channels(loss_masks, channels))


def _bidirectional_mask(attention_mask: torch.Tensor | None, length: int, device: torch.device) -> torch.Tensor:
    """Boolean mask of the reconstruction pass: every query sees every key, [1, 1, L, L], or [N, 1, L, L] with
    padding keys hidden (a padding query keeps its own key, as in `_attention_mask`)."""
    mask = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if attention_mask is not None:
        own_key = torch.eye(length, dtype=torch.bool, device=device)
        mask = mask & (attention_mask.bool()[:, None, None, :] | own_key)
    return mask


def _attention_mask(
    attention_mask: torch.Tensor | None,
    length: int,
    start: int,
    device: torch.device,
    window: int | None = None,
) -> torch.Tensor | None:
    """Boolean [N, 1, L, start+L] mask (causal, padding keys hidden) on `device`, or None for plain causal.

    With `window` w, query i (at key start + i) also loses every key before start + i - w + 1: a band of w keys
    ending at its own. `device` is the inputs' device: without a padding mask (every cached `generate` step)
    nothing else says where the mask belongs, and one built on the default device would fail or copy on every
    GPU step.
    """
    keys = start + length
    if window is not None and window >= keys:
        window = None  # a window that holds every key leaves the mask causal
    if attention_mask is None and start == 0 and window is None:
        return None
    mask = torch.ones(length, keys, dtype=torch.bool, device=device).tril(start)
    if window is not None:
        mask = mask.triu(start - window + 1)
    mask = mask[None, None]
    if attention_mask is not None:
        # A padding query keeps its own key (query i sits at key start + i) so its softmax row is never empty.
        own_key = torch.arange(keys, device=device)[None, :] == torch.arange(start, keys, device=device)[:, None]
        mask = mask & (attention_mask.bool()[:, None, None, :] | own_key)
    return mask
