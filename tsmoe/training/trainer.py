"""The Time-MoE trainer: one rank's model, optimizer, data and loop, the same with 1 process or N.

`Trainer` runs inside every Ray Train worker (see `worker.py`) and, with world size 1, in a plain process
(`loop.fit`, tests, benchmarks). One optimizer step:

    for each of `gradient_accumulation` micro-batches:
        forward all heads under the precision's autocast
        loss = mean head loss + aux factor (warming up from 0) x aux loss
        all ranks agree whether the loss is finite; if so, backward (gradient all-reduce only on the last)
    unscale, clip; a non-finite loss or gradient skips the update and is counted by the guard
    optimizer and schedule step

Checkpoints hold everything a resumed run needs to continue exactly: model, optimizer, schedule, loss
scaler, guard counters, the epoch reached, RNG states and the metrics so far.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tsmoe.config import RunConfig, dump_run_config
from tsmoe.data.loader import build_train_loader
from tsmoe.data.store import open_dataset
from tsmoe.evaluation.evaluate import validation_metrics
from tsmoe.model.checkpoint import save_pretrained
from tsmoe.training.balancing import update_expert_bias
from tsmoe.training.finetune import base_model, build_model, export_model
from tsmoe.training.guard import NonFiniteGuard, first_nonfinite_module
from tsmoe.training.optim import build_optimizer, build_scheduler
from tsmoe.training.precision import choose_precision, enable_tf32
from tsmoe.training.routing import routing_health
from tsmoe.training.throughput import EpochClock, now, peak_flops, peak_memory_mib

STATE_FILE = "trainer_state.pt"
SUMMARY_FILE = "trainer_state.json"  # epoch and metrics, readable without torch
MODEL_DIR = "model"  # the model in the reference format, adapters merged


def series_batch(batch: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels [B*C, crop-1] from a [B, C, crop] batch: labels are the inputs shifted by one."""
    series = batch.reshape(-1, batch.shape[-1]).to(device, non_blocking=True)
    return series[:, :-1], series[:, 1:]


def aux_loss_factor(step: int, target: float, warmup_steps: int) -> float:
    """The aux-loss factor at optimizer step `step`: linear from 0 to `target` over `warmup_steps`."""
    if warmup_steps == 0:
        return target
    return target * min(1.0, step / warmup_steps)


class Trainer:
    """One rank of a training run; see the module docstring."""

    def __init__(
        self,
        run: RunConfig,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        log: Callable[[str], None] | None = None,
    ):
        self.run = run
        self.training = training = run.training
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.log = log if log is not None and rank == 0 else (lambda line: None)
        self.distributed = world_size > 1
        if self.distributed and not dist.is_initialized():
            raise RuntimeError("world_size > 1 needs an initialised torch.distributed process group")
        torch.manual_seed(training.seed)

        self.dataset = open_dataset(run.data.path)
        self.loader = build_train_loader(
            self.dataset.split("train"),
            self.dataset.normalization,
            run.data,
            training.epochs,
            rank,
            world_size,
            pin_memory=self.device.type == "cuda",
        )
        self.steps_per_epoch = len(self.loader) // training.gradient_accumulation
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.loader)} batches per epoch on each of {world_size} worker(s) make no optimizer step of "
                f"{training.gradient_accumulation} micro-batches; lower training.gradient_accumulation or "
                f"data.batch_size"
            )
        self.total_steps = self.steps_per_epoch * training.epochs

        self.precision = choose_precision(self.device, training.precision)
        if self.device.type == "cuda":
            enable_tf32()
        self.module = build_model(run.model, training.finetune).to(self.device)
        self.model_config = base_model(self.module).config
        self.deepspeed = training.strategy == "deepspeed"
        if self.deepspeed:
            from tsmoe.training.deepspeed_strategy import build_engine

            series = run.data.batch_size * self.dataset.meta.num_channels
            self.engine = build_engine(self.module, training, self.precision, series, world_size, self.total_steps)
            self.model = self.engine
            self.optimizer, self.scheduler = self.engine.optimizer, self.engine.lr_scheduler
            self.scaler = None
        else:
            self.engine = None
            self.optimizer = build_optimizer(self.module, training)
            self.scheduler = build_scheduler(self.optimizer, self.total_steps, training)
            self.scaler = self.precision.grad_scaler()
            model = self.module
            if self.distributed:
                model = DistributedDataParallel(
                    model, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
            self.ddp_model = model if self.distributed else None
            self.model = torch.compile(model) if training.compile else model
        self.guard = NonFiniteGuard(training.max_consecutive_nonfinite_steps)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken (skipped ones included)
        self.history: list[dict[str, float]] = []
        self.peak_flops = peak_flops(self.device)

    # --- one step ---------------------------------------------------------------------------------
    def _loss(self, inputs: torch.Tensor, labels: torch.Tensor):
        with self.precision.autocast():
            output = self.model(inputs, labels=labels, loss_masks=torch.ones_like(labels))
        loss = torch.stack([value.float() for value in output.head_losses.values()]).mean()
        if output.aux_loss is not None and self.model_config.apply_aux_loss:
            factor = aux_loss_factor(
                self.step, self.model_config.router_aux_loss_factor, self.training.aux_loss_warmup_steps
            )
            loss = loss + factor * output.aux_loss.float()
        return loss, output

    def _all_finite(self, value: torch.Tensor) -> bool:
        """Whether `value` is finite on every rank: all ranks must skip a step together."""
        finite = torch.isfinite(value.detach()).all().to(torch.int32).reshape(1)
        if self.distributed:
            finite = finite.to(self.device)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _sync_context(self, last_micro_batch: bool):
        # Accumulating micro-batches skip DDP's gradient all-reduce; only the last one pays for it.
        if self.distributed and not self.deepspeed and not last_micro_batch:
            return self.ddp_model.no_sync()
        return contextlib.nullcontext()

    def _optimizer_step(self, losses_finite: bool) -> bool:
        """Clip and step when everything is finite; returns whether the step counted as finite."""
        if self.deepspeed:
            return losses_finite  # the engine steps itself at the accumulation boundary
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        finite = losses_finite
        if losses_finite:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.training.gradient_clip)
            gradients_finite = bool(torch.isfinite(norm))
            # Under float16 loss scaling an overflowing gradient is routine: the scaler skips the step and
            # lowers the scale. Only without scaling is it a step the guard must count.
            if self.scaler.is_enabled() or gradients_finite:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            finite = gradients_finite or self.scaler.is_enabled()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # A skipped step still advances the schedule, so it stays aligned with the data; torch warns
            # about a scheduler step without an optimizer step, which here is intended.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        return finite

    # --- one epoch --------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """Train one epoch; returns its training metrics (no validation)."""
        self.model.train()
        accumulation = self.training.gradient_accumulation
        sampler = self.loader.batch_sampler
        sampler.set_epoch(self.epoch)
        clock = EpochClock(warmup_steps=self.training.throughput_warmup_steps if self.epoch == 0 else 0)
        losses, nonfinite_before, crop = [], self.guard.total, 0
        batches = iter(self.loader)
        health = None
        for step_in_epoch in range(self.steps_per_epoch):
            started, waited, samples, tokens, finite_losses = now(), 0.0, 0, 0, True
            for micro in range(accumulation):
                wait_started = now()
                batch = next(batches)
                waited += now() - wait_started
                inputs, labels = series_batch(batch, self.device)
                crop = batch.shape[-1]
                with self._sync_context(micro == accumulation - 1):
                    loss, output = self._loss(inputs, labels)
                    finite = self._all_finite(loss)
                    if finite:
                        if self.deepspeed:
                            self.engine.backward(loss)
                            self.engine.step()
                        else:
                            self.scaler.scale(loss / accumulation).backward()
                        losses.append(loss.item())
                    finite_losses = finite_losses and finite
                samples += batch.shape[0]
                tokens += batch.shape[0] * batch.shape[1] * batch.shape[2]
            step_finite = self._optimizer_step(finite_losses)
            update_expert_bias(base_model(self.module), self.distributed)
            self.guard.record(
                step_finite, diagnose=functools.partial(first_nonfinite_module, base_model(self.module), inputs, labels)
            )
            self.step += 1
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            clock.add_step(now() - started, waited, samples, tokens, accumulation)
            if step_in_epoch == self.steps_per_epoch - 1:
                health = (
                    routing_health(output.router_logits, self.model_config.num_experts_per_tok)
                    if output.router_logits
                    else None
                )
            if self.step % self.training.log_every_steps == 0:
                self._log_progress(step_in_epoch, losses, clock)
        del batches
        figures = clock.figures(self.world_size)
        metrics = {
            "epoch": self.epoch + 1,
            "step": self.step,
            # A NaN mean is reported as NaN, never as 0: losses holds finite values only, and an epoch
            # without any reports NaN.
            "loss": float(np.mean(losses)) if losses else math.nan,
            "nan_steps": self.guard.total - nonfinite_before,
            "nan_steps_total": self.guard.total,
            "crop_length": crop,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "aux_loss_factor": aux_loss_factor(
                self.step, self.model_config.router_aux_loss_factor, self.training.aux_loss_warmup_steps
            ),
            "peak_memory_mib": peak_memory_mib(self.device),
            **figures,
        }
        if health is not None:
            metrics.update(health.metrics())
        if self.peak_flops is not None and math.isfinite(figures["tokens_s"]):
            flops_per_token = self.model_config.training_flops_per_token(crop)
            metrics["mfu"] = figures["tokens_s"] / self.world_size * flops_per_token / self.peak_flops
        self.epoch += 1
        return metrics

    def _log_progress(self, step_in_epoch: int, losses: list[float], clock: EpochClock) -> None:
        figures = clock.figures(1)
        remaining_steps = self.total_steps - self.step
        eta = remaining_steps / figures["it_s"] if math.isfinite(figures["it_s"]) else math.nan
        recent = np.mean(losses[-self.training.log_every_steps :]) if losses else math.nan
        self.log(
            f"epoch {self.epoch + 1}/{self.training.epochs} step {step_in_epoch + 1}/{self.steps_per_epoch} "
            f"loss {recent:.4f} lr {self.scheduler.get_last_lr()[0]:.2e} {figures['it_s']:.2f} it/s "
            f"nan_steps {self.guard.total} eta {_duration(eta)}"
        )

    def validate(self) -> dict[str, float]:
        """Validation figures of the current model (full segments, training-error statistics)."""
        model = base_model(self.module)
        model.eval()
        with self.precision.autocast():
            metrics = validation_metrics(model, self.dataset, self.run.evaluation)
        model.train()
        return metrics

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str | Path) -> None:
        """Write what this rank must save to resume (rank 0 writes the model and summary too)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        trainer_state = {
            "epoch": self.epoch,
            "step": self.step,
            "guard": self.guard.state_dict(),
            "history": self.history,
            "rng": rng,
        }
        if self.deepspeed:
            # ZeRO partitions optimizer state by rank: every rank writes its own shard.
            self.engine.save_checkpoint(
                str(directory / "deepspeed"), tag="state", client_state={"trainer": trainer_state}
            )
        elif self.rank == 0:
            torch.save(
                {
                    "model": self.module.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "trainer": trainer_state,
                },
                directory / STATE_FILE,
            )
        if self.rank == 0:
            save_pretrained(export_model(self.module), directory / MODEL_DIR)
            dump_run_config(self.run, directory / "config.yaml")
            summary = {"epoch": self.epoch, "step": self.step, "history": self.history}
            (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote; training continues where it stopped."""
        directory = Path(directory)
        if self.deepspeed:
            _, client = self.engine.load_checkpoint(str(directory / "deepspeed"), tag="state")
            trainer_state = client["trainer"]
        else:
            state = torch.load(directory / STATE_FILE, map_location=self.device, weights_only=False)
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            trainer_state = state["trainer"]
        self.epoch, self.step = trainer_state["epoch"], trainer_state["step"]
        self.guard.load_state_dict(trainer_state["guard"])
        self.history = trainer_state["history"]
        rng = trainer_state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
