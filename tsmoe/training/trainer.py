"""The Time-MoE trainer: one rank's model, optimizer, data and loop, the same with 1 process or N.

`Trainer` runs inside every Ray Train worker (see `worker.py`) and, with world size 1, in a plain process
(`loop.fit`, tests, benchmarks). One optimizer step:

    for each of `gradient_accumulation` micro-batches:
        forward all heads (and, with a reconstruction objective, the masked pass) under the precision's autocast
        loss = `total_loss` (mean head loss and/or reconstruction loss + aux factor, warming up from 0, x aux loss)
        all ranks agree whether the loss is finite; if so, backward (gradients synchronised on the last)
        the micro-batch's routing is added to the epoch's routing tally
    unscale, clip; a non-finite loss or gradient skips the update and is counted by the guard
    optimizer and schedule step (the schedule advances on a skipped step too)

How the backward and the step are done is the strategy's job (`strategy.py`: DDP, one process included;
`deepspeed_strategy.py`: ZeRO); the loop above is the same for both.

Checkpoints hold everything a resumed run needs to continue exactly: model, optimizer, schedule, loss
scaler, guard counters, the epoch reached, RNG states and the metrics so far.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tsmoe.config import RunConfig, dump_detector, dump_run_config
from tsmoe.data.curriculum import crop_lengths
from tsmoe.data.loader import CropBatchSampler, build_train_loader
from tsmoe.data.store import open_dataset
from tsmoe.data.views import fit_views
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.evaluate import validation_metrics
from tsmoe.model.checkpoint import save_pretrained
from tsmoe.model.masking import span_mask, training_generator
from tsmoe.model.timemoe import TimeMoE, TimeMoEOutput, total_loss
from tsmoe.training.balancing import selection_logits, update_expert_bias
from tsmoe.training.checkpoint_files import CHOSEN_DETECTOR_FILE, MODEL_DIR, SUMMARY_FILE
from tsmoe.training.finetune import base_model, build_model, export_model
from tsmoe.training.guard import NonFiniteGuard, first_nonfinite_module
from tsmoe.training.precision import choose_precision, enable_tf32
from tsmoe.training.routing import RoutingTally
from tsmoe.training.strategy import DDPStrategy, Strategy, all_ranks_agree
from tsmoe.training.throughput import EpochClock, now, peak_flops, peak_memory_mib
from tsmoe.training.weight_average import build_weight_average

# An epoch's metrics: numbers, and the precision's name ("float32", "bfloat16", "float16").
Metrics = dict[str, Any]


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
        self.log: Callable[[str], None] = log if log is not None and rank == 0 else (lambda line: None)
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
        if not isinstance(self.loader.batch_sampler, CropBatchSampler):
            raise TypeError("build_train_loader must batch with a CropBatchSampler (the trainer sets its epoch)")
        self.sampler: CropBatchSampler = self.loader.batch_sampler
        # The same statistics on every rank (a function of the training split), so nothing here is rank-specific.
        self.views = fit_views(run.data, self.dataset.split("train"), self.dataset.normalization).to(self.device)
        self.steps_per_epoch = len(self.loader) // training.gradient_accumulation
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.loader)} batches per epoch on each of {world_size} worker(s) make no optimizer step of "
                f"{training.gradient_accumulation} micro-batches; lower training.gradient_accumulation or "
                f"data.batch_size"
            )
        self.total_steps = self.steps_per_epoch * training.epochs
        if training.loss != "forecast":
            _check_mask_fits(run, self.dataset.meta.segment_length)

        self.precision = choose_precision(self.device, training.precision)
        if self.device.type == "cuda":
            enable_tf32()
        self.module = build_model(run.model, training.finetune, training.loss).to(self.device)
        self.model_config = base_model(self.module).config
        self.strategy = self._build_strategy()
        self.average = build_weight_average(base_model(self.module), training.ema_decay)
        self.guard = NonFiniteGuard(training.max_consecutive_nonfinite_steps)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken (skipped ones included)
        self.history: list[Metrics] = []
        self.peak_flops = peak_flops(self.device)

    def _build_strategy(self) -> Strategy:
        if self.training.strategy == "deepspeed":
            from tsmoe.training.deepspeed_strategy import DeepSpeedStrategy

            series = self.run.data.batch_size * self.views.series_count(self.dataset.meta.num_channels)
            return DeepSpeedStrategy(
                self.module, self.training, self.precision, series, self.world_size, self.total_steps
            )
        return DDPStrategy(self.module, self.training, self.precision, self.device, self.world_size, self.total_steps)

    # --- one step ---------------------------------------------------------------------------------
    def _loss(self, inputs: torch.Tensor, labels: torch.Tensor, micro: int) -> tuple[torch.Tensor, TimeMoEOutput]:
        objective = self.training.loss
        with self.precision.autocast():
            if objective == "forecast":
                output: TimeMoEOutput = self.strategy.model(inputs, labels=labels, loss_masks=torch.ones_like(labels))
            else:
                forecast = objective == "both"
                output = self.strategy.model(
                    inputs,
                    labels=labels if forecast else None,
                    loss_masks=torch.ones_like(labels) if forecast else None,
                    reconstruction_mask=self._reconstruction_mask(inputs, micro),
                    forecast=forecast,
                )
        aux_loss = output.aux_loss.float() if output.aux_loss is not None and self.model_config.apply_aux_loss else None
        factor = aux_loss_factor(
            self.step, self.model_config.router_aux_loss_factor, self.training.aux_loss_warmup_steps
        )
        head_losses = {horizon: value.float() for horizon, value in output.head_losses.items()}
        reconstruction_loss = None if output.reconstruction_loss is None else output.reconstruction_loss.float()
        return total_loss(head_losses, aux_loss, factor, reconstruction_loss), output

    def _reconstruction_mask(self, inputs: torch.Tensor, micro: int) -> torch.Tensor:
        """The points the reconstruction pass hides in this micro-batch: the same on a rerun or resume."""
        generator = training_generator(self.training.seed, self.rank, self.step, micro)
        mask = span_mask(inputs.shape[0], inputs.shape[1], self.training.mask_ratio, self.training.mask_span, generator)
        return mask.to(self.device, non_blocking=True)

    def after_optimizer_step(self, applied: bool) -> None:
        """Hook point right after every optimizer step (skipped ones included; `applied` says which).

        Model-side routing balance (a per-expert bias updated from the observed load, as in
        auxiliary-loss-free balancing) moves here, on every rank, after skipped steps too: the load was
        observed either way.
        """
        update_expert_bias(base_model(self.module), self.distributed)
        if applied and self.average is not None:
            self.average.update(base_model(self.module))

    # --- one epoch --------------------------------------------------------------------------------
    def train_epoch(self) -> Metrics:
        """Train one epoch; returns its training metrics (no validation)."""
        self.strategy.model.train()
        accumulation = self.training.gradient_accumulation
        self.sampler.set_epoch(self.epoch)
        clock = EpochClock(warmup_steps=self.training.throughput_warmup_steps if self.epoch == 0 else 0)
        losses: list[float] = []
        reconstruction_losses: list[float] = []
        nonfinite_before, crop = self.guard.total, 0
        routing = RoutingTally(self.model_config.num_experts_per_tok)
        batches = iter(self.loader)
        for step_in_epoch in range(self.steps_per_epoch):
            started, waited, samples, tokens, losses_finite = now(), 0.0, 0, 0, True
            for micro in range(accumulation):
                wait_started = now()
                crops = next(batches)
                waited += now() - wait_started
                # The crop's extra views, computed on the training device; tokens below count every series.
                batch = self.views(
                    crops.segments.to(self.device, non_blocking=True), crops.runs.to(self.device, non_blocking=True)
                )
                inputs, labels = series_batch(batch, self.device)
                crop = batch.shape[-1]
                with self.strategy.accumulating(last_micro_batch=micro == accumulation - 1):
                    loss, output = self._loss(inputs, labels, micro)
                    finite = all_ranks_agree(bool(torch.isfinite(loss.detach())), self.device)
                    if finite:
                        self.strategy.backward(loss)
                        losses.append(loss.item())
                        if output.reconstruction_loss is not None:
                            reconstruction_losses.append(output.reconstruction_loss.item())
                    else:
                        self.strategy.skip_backward()
                    losses_finite = losses_finite and finite
                if output.router_logits:
                    # Loads count the experts actually chosen: a balancing bias moves the choice.
                    routing.add(output.router_logits, selection_logits(base_model(self.module), output.router_logits))
                samples += batch.shape[0]
                tokens += batch.shape[0] * batch.shape[1] * batch.shape[2]
            step_finite = self.strategy.step(losses_finite)
            self.after_optimizer_step(applied=step_finite)
            self.guard.record(
                step_finite,
                diagnose=functools.partial(
                    first_nonfinite_module, base_model(self.module), inputs, labels, self.precision.autocast
                ),
            )
            self.step += 1
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            clock.add_step(now() - started, waited, samples, tokens, accumulation)
            if self.step % self.training.log_every_steps == 0:
                self._log_progress(step_in_epoch, losses, clock)
        del batches
        figures = clock.figures(self.world_size)
        metrics: Metrics = {
            "epoch": self.epoch + 1,
            "step": self.step,
            # A NaN mean is reported as NaN, never as 0: losses holds finite values only, and an epoch
            # without any reports NaN.
            "loss": float(np.mean(losses)) if losses else math.nan,
            "nan_steps": self.guard.total - nonfinite_before,
            "nan_steps_total": self.guard.total,
            "crop_length": crop,
            "learning_rate": self.learning_rate(),
            "aux_loss_factor": aux_loss_factor(
                self.step, self.model_config.router_aux_loss_factor, self.training.aux_loss_warmup_steps
            ),
            "precision": self.precision.name,
            "peak_memory_mib": peak_memory_mib(self.device),
            **figures,
        }
        if self.training.loss != "forecast":
            # The reconstruction objective's own share of the loss (its Huber loss over the hidden points).
            metrics["reconstruction_loss"] = (
                float(np.mean(reconstruction_losses)) if reconstruction_losses else math.nan
            )
        if routing.counts is not None:
            if self.distributed:
                routing.all_reduce(self.device)  # every rank has counted: rank 0 reports the global figures
            metrics.update(routing.health().metrics())
        if self.peak_flops is not None and math.isfinite(figures["tokens_s"]):
            flops_per_token = self.model_config.training_flops_per_token(crop)
            metrics["mfu"] = figures["tokens_s"] / self.world_size * flops_per_token / self.peak_flops
        self.epoch += 1
        return metrics

    def learning_rate(self) -> float:
        """The learning rate of the next optimizer step."""
        return float(self.strategy.scheduler.get_last_lr()[0])

    def _log_progress(self, step_in_epoch: int, losses: list[float], clock: EpochClock) -> None:
        figures = clock.figures(1)
        remaining_steps = self.total_steps - self.step
        eta = remaining_steps / figures["it_s"] if math.isfinite(figures["it_s"]) else math.nan
        recent = np.mean(losses[-self.training.log_every_steps :]) if losses else math.nan
        self.log(
            f"epoch {self.epoch + 1}/{self.training.epochs} step {step_in_epoch + 1}/{self.steps_per_epoch} "
            f"loss {recent:.4f} lr {self.learning_rate():.2e} {figures['it_s']:.2f} it/s "
            f"nan_steps {self.guard.total} eta {_duration(eta)}"
        )

    def validate(self) -> dict[str, float]:
        """Validation figures of the current model, or of its weight average where there is one."""
        model = self.average.model if self.average is not None else base_model(self.module)
        model.eval()
        with self.precision.autocast():
            metrics = validation_metrics(model, self.dataset, self.run.detector_settings(), views=self.views)
        if self.average is None:
            model.train()
        return metrics

    def chosen_detector(self) -> EvaluationConfig | None:
        """The detector the latest validation chose among the evaluation section's candidates; None without
        alternatives or before any validation."""
        index = self.history[-1].get("val_detector") if self.history else None
        if index is None or not math.isfinite(index):
            return None
        return self.run.detector_settings().candidates()[int(index)]

    def trained_model(self) -> TimeMoE:
        """The model a run saves and evaluates: the weight average where there is one, adapters merged."""
        return self.average.exported() if self.average is not None else export_model(self.module)

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str | Path) -> None:
        """Write what this rank must save to resume (rank 0 writes the model and summary too)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        trainer_state = {
            "epoch": self.epoch,
            "step": self.step,
            "guard": self.guard.state_dict(),
            "history": self.history,
            "rng": rng_state(self.device),
            "weight_average": self.average.state_dict() if self.average is not None else None,
        }
        self.strategy.save_checkpoint(directory, trainer_state, self.rank)
        if self.rank == 0:
            save_pretrained(self.trained_model(), directory / MODEL_DIR)
            chosen = self.chosen_detector()
            if chosen is not None:
                dump_detector(chosen, directory / MODEL_DIR / CHOSEN_DETECTOR_FILE)
            dump_run_config(self.run, directory / "config.yaml")
            summary = {
                "epoch": self.epoch,
                "step": self.step,
                "precision": self.precision.name,
                "history": self.history,
            }
            (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote; training continues where it stopped."""
        trainer_state = self.strategy.load_checkpoint(Path(directory))
        self.epoch, self.step = trainer_state["epoch"], trainer_state["step"]
        self.guard.load_state_dict(trainer_state["guard"])
        self.history = trainer_state["history"]
        if self.average is not None and trainer_state.get("weight_average") is not None:
            self.average.load_state_dict(trainer_state["weight_average"])
        set_rng_state(trainer_state["rng"], self.device)


def _check_mask_fits(run: RunConfig, segment_length: int) -> None:
    """Every crop's inputs must hide a span and keep a point visible; the error names the fields to change."""
    shortest = min(crop_lengths(run.data.crop_schedule, segment_length)) - 1  # inputs are a crop minus one point
    if shortest < run.training.mask_span + 1:
        raise ValueError(
            f"training.mask_span {run.training.mask_span}: the shortest crop of data.crop_schedule gives "
            f"{shortest} input points, too few to hide one span and keep a point visible; lower mask_span"
        )


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random generator's state as tensors, numbers and lists, which `torch.load(weights_only=True)`
    accepts (numpy's own state holds an array and python's a tuple of ints: both are converted)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore the generators from `rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
