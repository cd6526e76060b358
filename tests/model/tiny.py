"""The tiny Time-MoE shape the model tests share: small enough to run in milliseconds."""

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_experts=4,
    num_experts_per_tok=2,
    horizon_lengths=[1, 4, 8],
)
