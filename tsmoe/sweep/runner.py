"""`tsmoe sweep`: start (or join) Ray with its dashboard, run Tune with Optuna over the trainer, write results.

The sweep directory (STORAGE/NAME) holds Tune's experiment (its state, one folder per trial), each trial's
training run under trials/, the Optuna study (optuna.db), the stop ledger, a copy of the definition, base
config and search space as run (so `tsmoe report` and `tsmoe export` need nothing else), and the results.
A sweep whose driver died resumes with `--resume`: Tune restores finished trials as they were and
continues unfinished ones from their last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from tsmoe.config import RunConfig, dump_run_config, load_run_config
from tsmoe.sweep.definition import Sweep, SweepConfig, parse_sweep_config
from tsmoe.sweep.lock import LOCK_FILE, sweep_lock
from tsmoe.sweep.object_storage import is_uri
from tsmoe.sweep.pareto import COMPLETED, ERROR, FEASIBLE, OUTPUT, STATUS, STOPPED, TRIAL_ID
from tsmoe.sweep.space import SearchSpace, load_search_space
from tsmoe.training.loopback import Binding

STORED_SWEEP, STORED_BASE, STORED_SPACE, STORED_FACTS = (
    "sweep.yaml",
    "base_config.yaml",
    "search_space.yaml",
    "sweep_facts.json",
)
# A custom Ray resource held by each trial's own function: it uses no CPU of its own (the Train workers
# do the work), and the pool of them caps how many trials run at once.
TRIAL_DRIVER = "tsmoe_trial_driver"


@dataclass
class SweepOutcome:
    """A finished (or time-budgeted) sweep: its directory, trial table and Pareto front."""

    directory: Path
    table: pd.DataFrame
    front: pd.DataFrame
    plots: dict[str, Path]
    hypervolume: str = ""  # the hypervolume line of `tsmoe report`


def _store_definition(sweep: Sweep, segment_length: int) -> None:
    directory = sweep.config.directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STORED_SWEEP).write_text(yaml.safe_dump(sweep.config.model_dump(mode="json"), sort_keys=False))
    dump_run_config(sweep.base, directory / STORED_BASE)
    shutil.copyfile(sweep.space.source, directory / STORED_SPACE)
    facts = {"segment_length": segment_length, "epochs": sweep.base.training.epochs}
    (directory / STORED_FACTS).write_text(json.dumps(facts) + "\n")


def _check_directory(sweep: Sweep, resume: bool) -> bool:
    """Whether Tune has a sweep to restore here; refuses to mix two sweeps in one directory."""
    from ray import tune

    directory = sweep.config.directory
    stored = directory / STORED_SWEEP
    experiment = sweep.config.experiment_location
    if is_uri(experiment):
        restorable = tune.Tuner.can_restore(str(experiment))  # looks for Tune's state in the bucket itself
    else:
        restorable = directory.is_dir() and tune.Tuner.can_restore(str(directory))
    if stored.is_file():
        before = parse_sweep_config(yaml.safe_load(stored.read_text()), str(stored))
        # Tune restores a sweep with the settings it started with; only where to find the cluster may change.
        changed = [
            field
            for field in SweepConfig.model_fields
            if field != "address" and getattr(before, field) != getattr(sweep.config, field)
        ]
        if changed:
            raise FileExistsError(
                f"{directory}: holds a sweep with other settings ({', '.join(changed)} differ); "
                f"change name or storage to start a new one"
            )
        base_before = load_run_config(directory / STORED_BASE)
        if base_before != sweep.base:
            raise FileExistsError(f"{directory}: holds a sweep of another base config than {sweep.config.base_config}")
    if restorable and not resume:
        raise FileExistsError(
            f"{directory}: holds a sweep already; pass --resume to continue it, or change the "
            f"sweep's name or storage to start a new one"
        )
    held = directory.is_dir() and any(path.name != LOCK_FILE for path in directory.iterdir())
    if not restorable and held and not stored.is_file():
        raise FileExistsError(f"{directory}: exists, is not empty and holds no tsmoe sweep")
    return restorable


def start_ray(config: SweepConfig, binding: Binding) -> dict:
    """Start a local Ray with the dashboard (on the loopback interface with `binding`), or join
    config.address; print how to reach the dashboard."""
    import ray

    from tsmoe.training.launch import worker_environment

    local = config.address is None
    environment = worker_environment(use_gpu=config.resources.gpus_per_worker > 0, local_cluster=local)
    # The Train controller reads these in the driver and in trial processes.
    os.environ.update({key: value for key, value in environment.items() if key.startswith("RAY_")})
    context = ray.init(
        address=config.address,
        include_dashboard=True if local else None,
        dashboard_host="127.0.0.1",
        runtime_env={"env_vars": environment, **binding.runtime_env},
        **binding.init_arguments,
        resources={TRIAL_DRIVER: config.max_concurrent_trials} if local else None,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    url = context.dashboard_url
    if url:
        print(f"Ray dashboard: http://{url}")
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            print(
                "  token authentication is on: log in with the token that `ray get-auth-token` prints "
                "(kept in ~/.ray/auth_token); RAY_AUTH_MODE=disabled turns it off"
            )
    return ray.cluster_resources()


def check_resources(config: SweepConfig, cluster: dict, source: str = "sweep") -> dict:
    """Fail before any trial when one trial can never fit the cluster; the trial driver's own bundle."""
    resources = config.resources
    cpus = resources.workers * resources.cpus_per_worker
    if cpus > cluster.get("CPU", 0):
        raise ValueError(
            f"{source}: field resources: a trial needs {resources.workers} workers x "
            f"{resources.cpus_per_worker:g} CPUs = {cpus:g}, the cluster has {cluster.get('CPU', 0):g}; "
            f"lower resources.workers or resources.cpus_per_worker"
        )
    gpus = resources.workers * resources.gpus_per_worker
    if gpus > cluster.get("GPU", 0):
        raise ValueError(
            f"{source}: field resources: a trial needs {gpus:g} GPUs, the cluster has {cluster.get('GPU', 0):g}; "
            f"set resources.gpus_per_worker to 0 to train on CPUs"
        )
    if cluster.get(TRIAL_DRIVER):
        return {TRIAL_DRIVER: 1}
    # A cluster started without tsmoe's resource: the trial's function takes a sliver of a CPU.
    return {"CPU": 0.01}


def run_sweep(
    sweep: Sweep,
    resume: bool = False,
    callbacks: list | None = None,
    warm_start: list[Path] | None = None,
    verbose: bool = False,
) -> SweepOutcome:
    """Run the sweep, or with `resume` continue the one in its directory if there is one; returns its
    results once every trial has ended or the time budget ran out. `callbacks` (Tune callbacks) and
    `warm_start` (earlier sweep directories whose trials the study starts from) apply to a new sweep; a
    restored one keeps those it was started with. One sweep runs in a directory at a time. The terminal
    shows tsmoe's compact live table, or with `verbose` Tune's own output."""
    from tsmoe.sweep.records import write_results
    from tsmoe.training.loopback import UNCHANGED, loopback_cluster

    config = sweep.config
    with contextlib.ExitStack() as stack:
        # Taken first, so a second sweep into a running one is refused naming it, before anything is read.
        stack.enter_context(sweep_lock(config.directory))
        binding = stack.enter_context(loopback_cluster()) if config.address is None else UNCHANGED
        _run_locked(sweep, resume, callbacks, binding, warm_start or [], verbose)
    from tsmoe.sweep.hypervolume import HYPERVOLUME_PNG, write_hypervolume

    table, front, plots = write_results(
        config.directory, config, sweep.base.training.epochs, sweep.space.optuna_distributions()
    )
    hypervolume = write_hypervolume(config.directory, config.name, config.objectives.throughput)
    plots[HYPERVOLUME_PNG.removesuffix(".png")] = config.directory / HYPERVOLUME_PNG
    return SweepOutcome(config.directory, table, front, plots, hypervolume.line())


def _run_locked(
    sweep: Sweep, resume: bool, callbacks: list | None, binding: Binding, warm_start: list[Path], verbose: bool
) -> None:
    """Check the directory, start Ray and run Tune to the end (the caller holds the sweep lock)."""
    import ray
    from ray import tune

    from tsmoe.data.store import open_dataset
    from tsmoe.sweep.loggers import logger_callbacks
    from tsmoe.sweep.stopping import NUM_EXPERTS, TOP_K, build_early_stopping
    from tsmoe.sweep.trial import TrialSetup, run_trial

    config = sweep.config
    directory = config.directory
    restorable = _check_directory(sweep, resume)
    segment_length = open_dataset(config.dataset.path).meta.segment_length
    _store_definition(sweep, segment_length)
    epochs = sweep.base.training.epochs
    try:
        cluster = start_ray(config, binding)
        driver_bundle = check_resources(config, cluster, str(sweep.source))
        if config.address is not None:
            from tsmoe.sweep.cluster import check_nodes_see

            # A joined cluster may span machines: each must see the data and the storage (and the copy of
            # the definition just written there) at the driver's paths.
            seen = {"dataset.path": config.dataset.path}
            if not is_uri(config.storage):
                seen["storage"] = directory / STORED_SWEEP
            check_nodes_see(seen, str(sweep.source))
        setup = TrialSetup(
            base=sweep.base,
            space=sweep.space,
            experiment=config.experiment_location,
            workers=config.resources.workers,
            cpus_per_worker=config.resources.cpus_per_worker,
            gpus_per_worker=config.resources.gpus_per_worker,
        )
        trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), driver_bundle)
        if restorable:
            print(f"resuming the sweep in {config.experiment_location}")
            if warm_start:
                print("  --warm-start ignored: the resumed study holds the trials it was started with")
            tuner = tune.Tuner.restore(
                str(config.experiment_location),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            # The collapse rule's defaults for trials that do not sample top-k or the expert count.
            routing = {TOP_K: sweep.base.model.num_experts_per_tok, NUM_EXPERTS: sweep.base.model.num_experts}
            scheduler, stopper = build_early_stopping(
                config.early_stopping, directory, epochs, config.objectives.throughput, routing=routing
            )
            search = _start_search(sweep, warm_start, routing)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search,
                    scheduler=scheduler,
                    num_samples=config.num_trials,
                    max_concurrent_trials=config.max_concurrent_trials,
                    time_budget_s=config.time_budget_s,
                ),
                run_config=tune.RunConfig(
                    name=config.name,
                    storage_path=str(config.storage),
                    stop=stopper,
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                    callbacks=[*(callbacks or []), *logger_callbacks(config), *_terminal_callbacks(sweep, verbose)],
                    verbose=1 if verbose else 0,
                ),
            )
        tuner.fit()
    finally:
        ray.shutdown()


def _terminal_callbacks(sweep: Sweep, verbose: bool) -> list:
    """What shows the sweep's progress: nothing of ours when Tune's own output is asked for."""
    if verbose:
        return []
    from tsmoe.sweep.live_table import LiveTable

    config = sweep.config
    return [
        LiveTable(
            config.name,
            config.objectives.throughput,
            sweep.base.training.epochs,
            config.num_trials,
            config.max_concurrent_trials,
            config.time_budget_s,
        )
    ]


def _start_search(sweep: Sweep, warm_start: list[Path], routing: dict[str, int]):
    """The sweep's Optuna searcher, its study holding the earlier sweeps' trials that fit and the
    definition's enqueued configs first in line."""
    from tsmoe.sweep.searcher import SweepSearch
    from tsmoe.sweep.warm_start import add_earlier_trials, enqueued_points

    config = sweep.config
    points = enqueued_points(config.enqueue, sweep.space) if config.enqueue else None
    search = SweepSearch(config, sweep.space, config.directory, points_to_evaluate=points, routing=routing)
    if warm_start:
        added = add_earlier_trials(search.study, warm_start, sweep.space, sweep.base, config.objectives.throughput)
        print(added.lines())
    return search


@dataclass
class StoredSweep:
    """A sweep as it was run, read back from its directory."""

    directory: Path
    config: SweepConfig
    base: RunConfig
    space: SearchSpace
    epochs: int
    segment_length: int


def read_stored_sweep(directory: str | Path) -> StoredSweep:
    """The definition, base config and search space a sweep directory was run with."""
    directory = Path(directory).resolve()
    stored = directory / STORED_SWEEP
    if not stored.is_file():
        raise FileNotFoundError(
            f"{directory}: not a sweep directory (no {STORED_SWEEP}); a sweep's directory is its storage/name"
        )
    config = parse_sweep_config(yaml.safe_load(stored.read_text()), str(stored))
    base = load_run_config(directory / STORED_BASE)
    facts = json.loads((directory / STORED_FACTS).read_text())
    space = load_search_space(directory / STORED_SPACE, base, facts["segment_length"])
    return StoredSweep(directory, config, base, space, facts["epochs"], facts["segment_length"])


def report(directory: str | Path, stream=None) -> SweepOutcome:
    """Rebuild a sweep's table, front and plots from its directory, and print the front (to stdout
    unless `stream` is given)."""
    stream = stream or sys.stdout
    from tsmoe.sweep.hypervolume import HYPERVOLUME_PNG, write_hypervolume
    from tsmoe.sweep.records import format_front, write_results

    stored = read_stored_sweep(directory)
    table, front, plots = write_results(
        stored.directory, stored.config, stored.epochs, stored.space.optuna_distributions()
    )
    hypervolume = write_hypervolume(stored.directory, stored.config.name, stored.config.objectives.throughput)
    plots[HYPERVOLUME_PNG.removesuffix(".png")] = stored.directory / HYPERVOLUME_PNG
    print(summary_lines(table, stored.config.objectives.throughput), file=stream)
    print(hypervolume.line(), file=stream)
    print(format_front(front, stored.config.objectives.throughput), file=stream)
    loads = pick_expert_loads(stored.directory, table, stored.config.objectives.throughput)
    if isinstance(loads, Path):
        plots["expert_loads"] = loads
    else:
        print(f"no expert load plot: {loads}", file=stream)
    return SweepOutcome(stored.directory, table, front, plots, hypervolume.line())


def pick_expert_loads(directory: Path, table: pd.DataFrame, throughput: str) -> Path | str:
    """The per-expert load plot of the trial `tsmoe export` picks by default (the knee), in the sweep
    directory; or why there is none (no completed feasible trial, a dense model, an older run)."""
    from tsmoe.sweep.policies import choose_trial
    from tsmoe.sweep.records import EXPERT_LOADS_PLOT
    from tsmoe.training.expert_loads import METRICS_FILE, plot_expert_loads

    try:
        pick = choose_trial(table, "knee", throughput)
        title = f"trial {pick[TRIAL_ID]} (the knee of the front)"
        return plot_expert_loads(Path(pick[OUTPUT]) / METRICS_FILE, directory / EXPERT_LOADS_PLOT, title)
    except (ValueError, FileNotFoundError) as error:
        return str(error)


def summary_lines(table: pd.DataFrame, throughput: str) -> str:
    """How many trials ended which way, and why the stopped and failed ones did."""
    counts = table[STATUS].value_counts().to_dict() if not table.empty else {}
    lines = [f"{len(table)} trials: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))]
    for _, row in table[table[STATUS].isin([STOPPED, ERROR])].iterrows():
        # Out of memory and diverged trials were told to Optuna as infeasible; say so beside the reason.
        teaching = row.get("failure") in ("out_of_memory", "diverged")
        failure = f" ({str(row['failure']).replace('_', ' ')})" if teaching else ""
        lines.append(f"  {row['trial_id']} {row['status']}{failure} after epoch {row['epochs']}: {row['stop_reason']}")
    infeasible = table[(table[STATUS] == COMPLETED) & ~table[FEASIBLE].astype(bool)]
    for _, row in infeasible.iterrows():
        lines.append(f"  {row['trial_id']} infeasible: {row['infeasible_reason']}")
    return "\n".join(lines)
