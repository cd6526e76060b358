"""Training in this process, without Ray: the trainer's loop for tests, benchmarks and notebooks.

`tsmoe train` runs the same `Trainer` inside Ray Train workers (see `launch.py`); this entry point is
the world-size-1 case of that loop, with no checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tsmoe.config import RunConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.trainer import Metrics, Trainer


def fit(
    run: RunConfig,
    device: torch.device | str = "cpu",
    validate: bool = False,
    on_epoch: Callable[[Metrics], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[TimeMoE, list[Metrics]]:
    """Train for `run.training.epochs` epochs; returns the trained model (adapters merged) and epoch metrics."""
    trainer = Trainer(run, device, log=log)
    history: list[Metrics] = []
    for _ in range(run.training.epochs):
        metrics = trainer.train_epoch()
        if validate:
            metrics.update(trainer.validate())
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    model = trainer.trained_model()
    model.eval()
    return model, history
