"""Trainer throughput: the whole training loop (loader, curriculum, precision, guard, optimizer) for a few
hundred steps, with the figures a run reports: it_s, samples_s, tokens_s, data_wait_frac, step time, MFU.

    python benchmarks/train_throughput.py                       # small CPU config, about 2 minutes
    python benchmarks/train_throughput.py --preset TimeMoE-50M --segment-length 2048 --batch 8 \\
        --steps 300 --precision auto --device cuda               # the GPU figure in docs/performance.md

It writes the built-in synthetic dataset to a temporary directory (or uses --data) and trains in this
process, through the same `Trainer` a Ray Train worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from tsmoe.config import RunConfig
from tsmoe.data.config import DataConfig
from tsmoe.data.synth import generate_synthetic_dataset
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.model.config import TimeMoEConfig, preset
from tsmoe.training.config import TrainingConfig
from tsmoe.training.trainer import Trainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a dataset directory (default: synthesize one)")
    parser.add_argument("--segments", type=int, default=128, help="training segments to synthesize")
    parser.add_argument("--segment-length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8, help="segments per micro-batch")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps to run (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the figures")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--preset", help="a published shape, e.g. TimeMoE-50M (default: a small CPU model)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def model_config(args: argparse.Namespace) -> TimeMoEConfig:
    if args.preset:
        return preset(args.preset)
    return TimeMoEConfig(
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_experts=args.experts,
        num_experts_per_tok=2,
    )


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.data
        if directory is None:
            directory = Path(scratch) / "synthetic"
            generate_synthetic_dataset(
                directory,
                train_segments=args.segments,
                val_segments=8,
                test_segments=0,
                segment_length=args.segment_length,
            )
        run = RunConfig(
            model=model_config(args),
            data=DataConfig(path=directory, batch_size=args.batch, num_workers=args.workers),
            training=TrainingConfig(
                epochs=10**6,
                gradient_accumulation=args.accumulation,
                precision=args.precision,
                compile=args.compile,
                throughput_warmup_steps=args.warmup,
                log_every_steps=10**9,
            ),
            evaluation=EvaluationConfig(baselines=[]),
        )
        trainer = Trainer(run, args.device)
        # Sampler epochs are short; the figures gather over as many as it takes to reach --steps.
        totals = {"steps": 0, "seconds": 0.0, "samples": 0.0, "tokens": 0.0, "wait": 0.0}
        last: dict[str, float] = {}
        while totals["steps"] < args.steps:
            last = trainer.train_epoch()
            seconds = last["measured_s"]
            if last["measured_steps"] == 0:
                continue  # the whole epoch was warm-up
            totals["steps"] += last["measured_steps"]
            totals["seconds"] += seconds
            totals["samples"] += last["samples_s"] * seconds
            totals["tokens"] += last["tokens_s"] * seconds
            totals["wait"] += last["data_wait_frac"] * seconds
    figures = {
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "precision": trainer.precision.name,
        "model": args.preset or f"hidden {args.hidden}, {args.layers} layers, {args.experts} experts top-2",
        "segment_length": trainer.dataset.meta.segment_length,
        "channels": trainer.dataset.meta.num_channels,
        "batch_segments": args.batch,
        "accumulation": args.accumulation,
        "loader_workers": args.workers,
        "steps": totals["steps"],
        "it_s": round(totals["steps"] / totals["seconds"], 3),
        "samples_s": round(totals["samples"] / totals["seconds"], 2),
        "tokens_s": round(totals["tokens"] / totals["seconds"], 1),
        "data_wait_frac": round(totals["wait"] / totals["seconds"], 4),
        "step_time_s": round(totals["seconds"] / totals["steps"], 4),
        "peak_memory_mib": round(last.get("peak_memory_mib", float("nan")), 1),
    }
    if "mfu" in last:
        figures["mfu"] = round(last["mfu"], 4)
    for name, value in figures.items():
        print(f"{name}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
