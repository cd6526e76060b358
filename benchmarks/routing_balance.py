"""Routing balance over whole epochs: every expert's share of each MoE layer's top-k choices, counted over
every training step of each epoch (not the epoch's last micro-batch), with loss, NaN steps and validation.

    python benchmarks/routing_balance.py configs/quickstart.yaml --set model.num_experts_per_tok=1
    python benchmarks/routing_balance.py configs/quickstart.yaml --set model.num_experts=8 \\
        --set model.router_input_norm=none --set model.router_bias_update_rate=0 --metrics runs/loads

Trains in this process through the same `Trainer` that `tsmoe train` runs in its Ray worker (one worker),
and prints one JSON line per epoch: the busiest expert's share over the epoch (`epoch_max_load_share`),
the mean over steps of the busiest expert's share within each micro-batch (`mean_batch_max_share`: 1.0
when every micro-batch sends all its tokens to one expert, even if the expert changes between batches),
the shares, loss, nan_steps and val_auroc. `--metrics DIR` also writes DIR/metrics.jsonl with per-expert
shares, which `tsmoe report DIR` draws. Figures are in docs/routing.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tsmoe.config import load_run_config, with_field
from tsmoe.model.timemoe import SparseMoE
from tsmoe.training.finetune import base_model
from tsmoe.training.trainer import Trainer


def main() -> None:
    """Train the config and print per-epoch routing balance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument(
        "--set", action="append", default=[], help="a dotted field and its value, e.g. model.num_experts=8"
    )
    parser.add_argument("--metrics", type=Path, help="also write per-expert shares to DIR/metrics.jsonl")
    args = parser.parse_args()
    run = load_run_config(args.config)
    for assignment in args.set:
        run = with_field(run, assignment)

    trainer = Trainer(run)
    layers = [module for module in base_model(trainer.module).modules() if isinstance(module, SparseMoE)]
    experts, top_k = run.model.num_experts, run.model.num_experts_per_tok
    counts = [torch.zeros(experts) for _ in layers]
    batch_max_shares: list[float] = []

    def count_choices(index: int):
        def hook(module: SparseMoE, inputs, output) -> None:
            if not module.training:
                return
            logits = output[1].detach().float()
            if module.bias_update_rate > 0:  # the experts the layer chose, as its route() chose them
                logits = logits + module.expert_bias
            chosen = torch.bincount(logits.topk(top_k, dim=-1).indices.reshape(-1), minlength=experts).float()
            counts[index] += chosen
            batch_max_shares.append(float(chosen.max() / chosen.sum()))

        return hook

    for index, layer in enumerate(layers):
        layer.register_forward_hook(count_choices(index))
    lines = []
    for _ in range(run.training.epochs):
        for layer_counts in counts:
            layer_counts.zero_()
        batch_max_shares.clear()
        metrics = trainer.train_epoch() | trainer.validate()
        shares = [(layer_counts / layer_counts.sum()).tolist() for layer_counts in counts]
        figures = {
            "epoch": metrics["epoch"],
            "epoch_max_load_share": round(max(max(layer_shares) for layer_shares in shares), 3),
            "mean_batch_max_share": round(sum(batch_max_shares) / len(batch_max_shares), 3),
            "shares": [[round(share, 3) for share in layer_shares] for layer_shares in shares],
            "loss": round(metrics["loss"], 4),
            "nan_steps": metrics["nan_steps"],
            "val_auroc": round(metrics["val_auroc"], 4),
        }
        print(json.dumps(figures), flush=True)
        line = {"epoch": metrics["epoch"], "routing_max_load_share": figures["epoch_max_load_share"]}
        for layer, layer_shares in enumerate(shares):
            line |= {
                f"routing_load_share_layer{layer}_expert{expert}": share for expert, share in enumerate(layer_shares)
            }
        lines.append(json.dumps(line))
    if args.metrics is not None:
        args.metrics.mkdir(parents=True, exist_ok=True)
        (args.metrics / "metrics.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
