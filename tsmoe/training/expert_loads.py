"""The per-expert load plot of a run: which share of each MoE layer's tokens every expert took, epoch by epoch.

Reads the per-expert load shares that the trainer writes to a run's metrics.jsonl (one line per epoch, keys
`routing_load_share_layer{L}_expert{E}`: the expert's share of the layer's top-k choices over the epoch)
and draws one panel per layer: a stacked bar per epoch, one colour per expert, with the balanced share
1/E marked. A collapsed layer shows one colour filling its bars; a balanced one, equal bands.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "expert_loads.png"
_SHARE_KEY = re.compile(r"^routing_load_share_layer(\d+)_expert(\d+)$")


def read_expert_loads(metrics_path: str | Path) -> tuple[list[int], list[list[list[float]]]]:
    """(epochs, shares[layer][epoch][expert]) from a metrics.jsonl; a ValueError when it has no shares."""
    path = Path(metrics_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is this a run directory of `tsmoe train`?)")
    epochs: list[int] = []
    per_epoch: list[dict[tuple[int, int], float]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            metrics = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not JSON ({error})") from None
        shares = {}
        for key, value in metrics.items():
            match = _SHARE_KEY.match(key)
            if match and isinstance(value, (int, float)) and math.isfinite(value):
                shares[(int(match[1]), int(match[2]))] = float(value)
        if shares:
            epochs.append(int(metrics.get("epoch", len(epochs) + 1)))
            per_epoch.append(shares)
    if not per_epoch:
        raise ValueError(
            f"{path}: no per-expert load shares (routing_load_share_layerL_expertE); the run has no MoE layers "
            "or was trained before the trainer reported them"
        )
    layers = 1 + max(layer for shares in per_epoch for layer, _ in shares)
    experts = 1 + max(expert for shares in per_epoch for _, expert in shares)
    loads = [
        [[shares.get((layer, expert), 0.0) for expert in range(experts)] for shares in per_epoch]
        for layer in range(layers)
    ]
    return epochs, loads


def plot_expert_loads(metrics_path: str | Path, output: str | Path, title: str = "") -> Path:
    """Draw the per-expert load plot of the run whose metrics.jsonl is `metrics_path` into `output` (PNG)."""
    epochs, loads = read_expert_loads(metrics_path)
    experts = len(loads[0][0])
    figure = Figure(figsize=(max(4.0, 0.5 * len(epochs) + 2.5), 2.2 * len(loads) + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(loads), 1, squeeze=False)[:, 0]
    colours = [f"C{expert % 10}" for expert in range(experts)]
    for layer, (axis, shares) in enumerate(zip(axes, loads, strict=True)):
        bottom = [0.0] * len(epochs)
        for expert in range(experts):
            heights = [epoch_shares[expert] for epoch_shares in shares]
            axis.bar(epochs, heights, bottom=bottom, color=colours[expert], label=f"expert {expert}")
            bottom = [below + height for below, height in zip(bottom, heights, strict=True)]
        for level in range(1, experts):  # where the bands would meet if every expert took 1/E
            axis.axhline(level / experts, color="black", linewidth=0.5, linestyle=":")
        worst = max(max(epoch_shares) for epoch_shares in shares)
        axis.set_title(f"layer {layer}: busiest expert {worst:.2f} of the choices (balanced {1 / experts:.2f})")
        axis.set_ylabel("share of top-k choices")
        axis.set_ylim(0, 1)
        axis.set_xticks(epochs)
    axes[-1].set_xlabel("epoch")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if title:
        figure.suptitle(title)
    output = Path(output)
    figure.savefig(output, dpi=100)
    return output
