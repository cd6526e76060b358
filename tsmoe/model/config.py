"""The Time-MoE model configuration: the reference's fields plus the options tsmoe adds.

Field names match the reference's `config.json` so that published checkpoints load as they are and
ours load in the reference. The options tsmoe adds (router init and balancing, aux-loss masking, attention and
expert kernels, activation checkpointing) are written to `config.json` too; the reference ignores
keys it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Keys a reference `config.json` carries that describe Hugging Face bookkeeping, not the model.
# They are dropped on load instead of being rejected as unknown.
_HUGGING_FACE_KEYS = {
    "architectures",
    "auto_map",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "cross_attention_hidden_size",
    "add_cross_attention",
    "tie_encoder_decoder",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "finetuning_task",
    "id2label",
    "label2id",
    "tokenizer_class",
    "prefix",
    "bos_token_id",
    "pad_token_id",
    "eos_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "task_specific_params",
    "problem_type",
    "name_or_path",
    "_name_or_path",
    "_attn_implementation_autoset",
    "_attn_implementation",
    "output_router_logits",
}


class TimeMoEConfig(BaseModel):
    """Shape and behaviour of a Time-MoE model (defaults: the published TimeMoE-50M)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- reference fields -------------------------------------------------------------------
    input_size: Literal[1] = 1  # one scalar per token; channels are run independently
    hidden_size: int = Field(384, gt=0)
    intermediate_size: int = Field(1536, gt=0)
    num_hidden_layers: int = Field(12, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    num_key_value_heads: int | None = Field(None, gt=0)
    hidden_act: Literal["silu"] = "silu"
    num_experts: int = Field(8, gt=0)
    num_experts_per_tok: int = Field(2, gt=0)
    horizon_lengths: list[int] = Field(default_factory=lambda: [1, 8, 32, 64], min_length=1)
    max_position_embeddings: int = Field(4096, gt=0)
    initializer_range: float = Field(0.02, gt=0)
    rms_norm_eps: float = Field(1e-6, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    attention_dropout: float = Field(0.0, ge=0, le=0)  # the reference defines it but never uses it
    use_dense: bool = False
    apply_aux_loss: bool = True
    router_aux_loss_factor: float = Field(0.02, ge=0)

    # --- tsmoe options ----------------------------------------------------------------------
    # Std of the router's init; None uses initializer_range. A small value keeps the first
    # routing decisions near uniform instead of sending every token to the same experts.
    router_init_std: float | None = Field(None, gt=0)
    # Count only real tokens (attention_mask, else loss_masks) in the aux loss. The reference
    # counts padding too, so this is off by default.
    aux_loss_real_tokens_only: bool = False
    # "sdpa": torch's scaled_dot_product_attention (fast); "eager": the reference's matmul-softmax.
    attention_implementation: Literal["sdpa", "eager"] = "sdpa"
    # "grouped": tokens sorted by expert, one grouped matmul per projection (no Python loop over
    # experts when torch has grouped_mm); "loop": one matmul per expert, as the reference does.
    expert_implementation: Literal["grouped", "loop"] = "grouped"
    # Recompute each decoder layer in backward instead of storing its activations.
    activation_checkpointing: bool = False

    # --- routing options (docs/routing.md); the defaults route exactly as the reference does ---
    # Auxiliary-loss-free balancing (Wang et al. 2024, DeepSeek-V3): a per-expert bias, added to the
    # router logits only to choose the top-k experts (never to the gate weights), moves by this much
    # after every optimizer step towards the experts that received fewer tokens than the mean. 0: off.
    router_bias_update_rate: float = Field(0.0, ge=0)
    # Normalise the router's input per feature over the tokens ("batch": batch norm without scale or
    # shift, running statistics in eval). At init every token's hidden state points nearly the same way,
    # so the raw router gives all tokens the same experts; removing what they share lets their
    # differences choose. "none": the reference's router.
    router_input_norm: Literal["none", "batch"] = "none"

    # --- the masked-reconstruction path (docs/detection.md); off, the model is exactly the reference's ---
    # A learned mask embedding and a reconstruction head (hidden -> 1) beside the forecast heads, used by a
    # second, bidirectional pass over the same blocks. In a run config it follows training.loss (set there).
    reconstruction_head: bool = False
    # The masks it was trained with (copied from training.mask_ratio and mask_span by the run config): the
    # reconstruction score hides spans of this length, ceil(1 / ratio) passes so every point is hidden once.
    reconstruction_mask_ratio: float = Field(0.25, gt=0, lt=1)
    reconstruction_mask_span: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check_shapes(self) -> TimeMoEConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.key_value_heads})"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("head dimension (hidden_size / num_attention_heads) must be even for RoPE")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must be at most num_experts ({self.num_experts})"
            )
        if not self.use_dense and self.intermediate_size < self.num_experts_per_tok:
            raise ValueError("intermediate_size must be at least num_experts_per_tok")
        if sorted(set(self.horizon_lengths)) != self.horizon_lengths or self.horizon_lengths[0] < 1:
            raise ValueError(f"horizon_lengths must be positive and strictly increasing, got {self.horizon_lengths}")
        return self

    # --- derived sizes ----------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def key_value_heads(self) -> int:
        """Number of key/value heads (the reference falls back to the query head count)."""
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def expert_intermediate_size(self) -> int:
        """Width of one routed expert: the reference splits intermediate_size across top-k."""
        return self.intermediate_size // self.num_experts_per_tok

    # --- reference config.json ----------------------------------------------------------------
    @classmethod
    def from_reference_dict(cls, values: dict[str, Any]) -> TimeMoEConfig:
        """Build from a reference `config.json` dict, dropping Hugging Face bookkeeping keys."""
        model_type = values.get("model_type", "time_moe")
        if model_type != "time_moe":
            raise ValueError(f"model_type is {model_type!r}, expected 'time_moe'")
        return cls(**{key: value for key, value in values.items() if key not in _HUGGING_FACE_KEYS})

    def to_reference_dict(self) -> dict[str, Any]:
        """The dict to write as `config.json`, loadable by the reference's TimeMoeConfig."""
        values = self.model_dump()
        values["num_key_value_heads"] = self.key_value_heads
        values.update(
            model_type="time_moe",
            architectures=["TimeMoeForPrediction"],
            torch_dtype="float32",
            use_cache=True,
            tie_word_embeddings=False,
        )
        return values

    def to_dict(self) -> dict[str, Any]:
        """The reference config as a dict, under the name Hugging Face tools (peft) look for."""
        return self.to_reference_dict()

    # --- size accounting ------------------------------------------------------------------------
    def parameter_counts(self) -> tuple[int, int]:
        """(total, active per token) parameter counts, without building the model."""
        hidden, layers = self.hidden_size, self.num_hidden_layers
        kv_width = self.key_value_heads * self.head_dim
        attention = hidden * hidden + hidden + 2 * (hidden * kv_width + kv_width) + hidden * hidden
        norms = 2 * hidden
        if self.use_dense:
            ffn_total = ffn_active = 3 * hidden * self.intermediate_size
        else:
            expert = 3 * hidden * self.expert_intermediate_size
            shared = 3 * hidden * self.intermediate_size + hidden
            router = hidden * self.num_experts
            ffn_total = router + self.num_experts * expert + shared
            ffn_active = router + self.num_experts_per_tok * expert + shared
        embedding = 2 * hidden
        heads = hidden * sum(self.horizon_lengths)
        if self.reconstruction_head:
            heads += 2 * hidden  # the mask embedding and the reconstruction head
        outside_layers = embedding + hidden + heads
        total = outside_layers + layers * (attention + norms + ffn_total)
        active = outside_layers + layers * (attention + norms + ffn_active)
        return total, active

    def training_flops_per_token(self, context_length: int) -> int:
        """Model FLOPs of one training token (forward + backward), the PaLM convention.

        6 * active parameters for the matmuls, plus 12 * layers * hidden * context for attention
        scores and values (counted in full, as that convention does, although causal attention
        needs half). The basis of throughput-in-FLOPs and model FLOP utilisation figures.
        """
        _, active = self.parameter_counts()
        return 6 * active + 12 * self.num_hidden_layers * self.hidden_size * context_length


PRESETS: dict[str, dict[str, Any]] = {
    "TimeMoE-50M": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=12),
    "TimeMoE-200M": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "TimeMoE-2.4B": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=36, num_attention_heads=16),
}


def preset(name: str, **overrides: Any) -> TimeMoEConfig:
    """The published shape called `name` (see PRESETS), with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return TimeMoEConfig(**{**PRESETS[name], **overrides})
