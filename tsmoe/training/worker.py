"""The function every Ray Train worker runs: one DDP (or DeepSpeed) rank of a training run.

Each epoch: train, validate on rank 0, then every rank calls `ray.train.report` with a checkpoint of
what it must save (rank 0 the model and trainer state; every rank its ZeRO shard under DeepSpeed). A
restarted run, or a sweep trial restored after its driver died, finds the latest checkpoint through
`ray.train.get_checkpoint()` and continues from the epoch after it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import ray
import ray.train

from tsmoe.config import RunConfig
from tsmoe.training.checkpoint_files import usable_checkpoint, write_checkpoint
from tsmoe.training.epoch_choice import SELECTION_SCORE, selection_score

if TYPE_CHECKING:
    import torch

    from tsmoe.training.trainer import Metrics


def _say(line: str) -> None:
    # Ray Train replaces print() in workers with a logger that, with Ray's own stdout capture, shows every
    # line twice; writing to the stream shows it once.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _quiet_report_lines() -> None:
    """Ray Train logs every report with its whole metrics dict at INFO, under a logger named by file path."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # a Ray version without this module logs differently
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_worker(loop_config: dict) -> None:
    """Ray Train's `train_loop_per_worker`: `loop_config["run"]` is the validated RunConfig, and
    `loop_config["resume_from"]` a checkpoint directory to continue from when Ray has none."""
    # Imported here: the process that builds the trainer (a sweep's trial driver) imports this module only
    # to name this function, and would otherwise import torch (seconds), and with the trainer scikit-learn
    # and SciPy (a second of CPU), for nothing.
    from tsmoe.training.process_group import worker_device
    from tsmoe.training.trainer import Trainer

    run: RunConfig = loop_config["run"]
    _quiet_report_lines()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    trainer = Trainer(run, worker_device(), rank, world_size, log=_say)
    worker_nodes = _count_worker_nodes(world_size, trainer.device)
    checkpoint = ray.train.get_checkpoint()
    offered = checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(None)
    with offered as offered_directory:
        # Ray offers its latest checkpoint; a broken one gives way to the latest intact one the driver found.
        resume_from = usable_checkpoint(
            offered_directory, loop_config.get("resume_from"), log=_say if rank == 0 else None
        )
        if resume_from is not None:
            trainer.load_checkpoint(resume_from)
            if rank == 0:
                _say(f"resumed from the checkpoint after epoch {trainer.epoch}")
    if trainer.epoch >= run.training.epochs and trainer.history:
        # A run that finished but whose driver died before it heard so (a sweep trial restored after a
        # crash) reports its last epoch again, so the driver records the finished result.
        ray.train.report(trainer.history[-1])
    while trainer.epoch < run.training.epochs:
        epoch_started = time.perf_counter()
        metrics = trainer.train_epoch()
        if rank == 0:
            started = time.perf_counter()
            metrics.update(trainer.validate())
            metrics["validation_s"] = time.perf_counter() - started
            metrics["epoch_s"] = time.perf_counter() - epoch_started  # training and validation, without the checkpoint
            # The quality objective of a sweep, and what early stopping and the plots read.
            metrics["best_val_auroc"] = _best_auroc([*trainer.history, metrics])
            # Ranks the checkpoints Ray Train keeps: the epoch whose model the run keeps must not be deleted.
            metrics[SELECTION_SCORE] = selection_score([*trainer.history, metrics])
            metrics["epochs_planned"] = run.training.epochs
            metrics["worker_nodes"] = worker_nodes
            trainer.history.append(metrics)
            _say(_epoch_line(metrics))
        with tempfile.TemporaryDirectory() as directory:
            write_checkpoint(trainer, directory)
            keeps_files = rank == 0 or trainer.strategy.every_rank_saves
            ray.train.report(
                metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if keeps_files else None
            )


def _count_worker_nodes(world_size: int, device: torch.device) -> int:
    """How many Ray nodes (machines) the run's ranks are on: a DDP run may span several, and only rank 0's
    figures reach the driver. Every rank must call it. Ray Train's node rank cannot say: it groups
    workers by IP address, which the nodes of a one-machine test cluster share; Ray's node id tells them
    apart."""
    import torch
    import torch.distributed

    node = bytes.fromhex(ray.get_runtime_context().get_node_id())
    if world_size == 1:
        return 1
    # A tensor on the run's own device, so that NCCL can gather it as well as gloo.
    mine = torch.tensor(list(node), dtype=torch.uint8, device=device)
    gathered = [torch.empty_like(mine) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, mine)
    return len({bytes(tensor.cpu().tolist()) for tensor in gathered})


def _best_auroc(history: list[Metrics]) -> float:
    aurocs = [metrics["val_auroc"] for metrics in history if math.isfinite(metrics.get("val_auroc", math.nan))]
    return max(aurocs) if aurocs else math.nan


def _epoch_line(metrics: Metrics) -> str:
    def show(key: str, digits: int = 3) -> str:
        value = metrics.get(key, math.nan)
        return f"{key} {value:.{digits}f}"

    # Which of the evaluation section's candidates validation chose (0: the section as written), where it has some.
    chosen = [f"detector {metrics['val_detector']:.0f}"] if "val_detector" in metrics else []
    return ", ".join(
        [
            f"epoch {metrics['epoch']}",
            show("loss", 4),
            show("val_auroc"),
            *chosen,
            show("it_s", 2),
            show("samples_s", 1),
            show("data_wait_frac"),
            f"nan_steps {metrics['nan_steps']}",
            f"crop {metrics['crop_length']}",
            show("routing_entropy_min"),
        ]
    )
