"""Is the loader ever the bottleneck? Segments per second from the store against what training consumes.

Three figures at the same batch and crop length:
1. the loader alone (memory-mapped store -> crops -> normalised batches, N worker processes);
2. the training step alone (forward all heads + aux loss, backward, clip, AdamW) on a batch held in memory;
3. a real training run through `fit`, loader and step together, and its data_wait_frac.

    python benchmarks/data_throughput.py --segment-length 2048 --batch 8 --workers 2

Without --data it writes the built-in synthetic dataset to a temporary directory first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tsmoe.config import RunConfig
from tsmoe.data.config import DataConfig
from tsmoe.data.loader import build_train_loader
from tsmoe.data.store import open_dataset
from tsmoe.data.synth import generate_synthetic_dataset
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.config import TrainingConfig
from tsmoe.training.loop import fit
from tsmoe.training.optim import build_optimizer
from tsmoe.training.trainer import series_batch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a dataset directory (default: synthesize one)")
    parser.add_argument("--segments", type=int, default=64, help="training segments to synthesize")
    parser.add_argument("--segment-length", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="segments per batch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loader-batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def loader_rate(dataset, config: DataConfig, batches: int) -> float:
    """Segments per second the loader delivers with nothing else running, after its workers start."""
    loader = build_train_loader(dataset.split("train"), dataset.normalization, config, epochs=1000)
    delivered, epoch = 0, 0
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started = time.perf_counter()
    while delivered < batches:
        try:
            batch = next(iterator).segments
        except StopIteration:
            epoch += 1
            loader.batch_sampler.set_epoch(epoch)
            iterator = iter(loader)
            continue
        delivered += 1
    return delivered * batch.shape[0] / (time.perf_counter() - started)


def step_rate(model: TimeMoE, batch: torch.Tensor, steps: int) -> float:
    """Segments per second the training step consumes on an in-memory batch."""
    optimizer = build_optimizer(model, TrainingConfig())
    inputs, labels = series_batch(batch, "cpu")
    masks = torch.ones_like(labels)

    def step():
        model(inputs, labels=labels, loss_masks=masks).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch.shape[0] / (time.perf_counter() - started)


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
        dataset = open_dataset(directory)
        length = dataset.meta.segment_length
        config = DataConfig(path=directory, batch_size=args.batch, num_workers=args.workers)
        model_config = TimeMoEConfig(
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_experts=args.experts,
            num_experts_per_tok=2,
        )
        loaded = loader_rate(dataset, config, args.loader_batches)
        batch = next(
            iter(
                build_train_loader(
                    dataset.split("train"),
                    dataset.normalization,
                    config.model_copy(update={"num_workers": 0}),
                    epochs=1,
                )
            )
        ).segments
        torch.manual_seed(0)
        consumed = step_rate(TimeMoE(model_config), batch, args.steps)
        # Two epochs: the first pays for starting the workers, the second is the figure.
        _, reports = fit(RunConfig(model=model_config, data=config, training=TrainingConfig(epochs=2)))
        figures = {
            "segment_length": length,
            "channels": dataset.meta.num_channels,
            "batch_segments": args.batch,
            "workers": args.workers,
            "model": f"hidden {args.hidden}, {args.layers} layers, {args.experts} experts top-2",
            "loader_segments_s": round(loaded, 1),
            "step_segments_s": round(consumed, 2),
            "loader_headroom": round(loaded / consumed, 1),
            "fit_samples_s": round(reports[-1]["samples_s"], 2),
            "fit_data_wait_frac": round(reports[-1]["data_wait_frac"], 4),
        }
    for name, value in figures.items():
        print(f"{name}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
