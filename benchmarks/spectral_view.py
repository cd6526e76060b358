"""What the spectral view costs a training step: computing it, and the extra series the model then trains on.

Side by side in one process, interleaved, on one batch held in memory (normalised noise, B segments of C
channels and `--crop` points), with the quickstart's model shape:
1. the view alone (`SeriesViews` on [B, C, crop] -> [B, C * (1 + bands), crop]);
2. a training step (forward all heads + aux loss, backward) on the time series alone;
3. the same step on the series the view makes.

    python benchmarks/spectral_view.py --batch 4 --channels 3 --crop 512 --window 64 --bands 4

Prints the median seconds of each over `--repeats` rounds and their ratios to step 2.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tsmoe.data.views import SeriesViews
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.trainer import series_batch

# configs/quickstart.yaml's model.
QUICKSTART_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "horizon_lengths": [1, 8, 32],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    return parser.parse_args()


def step(model: TimeMoE, batch: torch.Tensor) -> None:
    """Forward all heads with labels, backward; gradients dropped."""
    inputs, labels = series_batch(batch, "cpu")
    model(inputs, labels=labels, loss_masks=torch.ones_like(labels)).loss.backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    arguments = parse_args()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**QUICKSTART_MODEL))
    batch = torch.randn(arguments.batch, arguments.channels, arguments.crop)
    # Statistics that leave the series O(1); their values do not change the cost.
    shape = (arguments.channels, arguments.bands)
    views = SeriesViews(arguments.window, arguments.bands, torch.zeros(shape), torch.ones(shape))
    expanded = views(batch)
    tasks: dict[str, Callable[[], object]] = {
        "view alone": lambda: views(batch),
        "step, time series": lambda: step(model, batch),
        "step, time + spectrum": lambda: step(model, expanded),
    }
    for task in tasks.values():
        task()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(arguments.repeats):
        for name, task in tasks.items():
            started = time.perf_counter()
            task()
            seconds[name].append(time.perf_counter() - started)
    reference = statistics.median(seconds["step, time series"])
    print(
        f"batch {arguments.batch} x {arguments.channels} channels x {arguments.crop} points, window "
        f"{arguments.window}, {arguments.bands} bands ({expanded.shape[1]} series), {arguments.threads} threads, "
        f"torch {torch.__version__}"
    )
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:24s} {median * 1000:9.1f} ms  {median / reference:6.2f}x the time-series step")


if __name__ == "__main__":
    main()
