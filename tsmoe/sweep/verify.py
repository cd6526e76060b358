"""`tsmoe export --verify-seeds N`: retrain the exported trial's config with N new seeds, as Ray Tune trials.

Each seed is a trial of a small Tune run over a grid of seeds, trained by the sweep's own trainable
(`tsmoe.sweep.trial.run_trial`: the same Ray Train run with the sweep's resources), as many at once as
the sweep ran, so that throughput is measured under the sweep's conditions. The seeds are new ones
(the trial's seed + 1, + 2, ...): the trial's own seed is the one that won the selection. Figures reach
this process through Tune's reports, as in the sweep. Everything goes into a new directory of the sweep:

    SWEEP/verify_seeds_TRIAL_ID/    (then _2, _3, ...: an earlier verification is never overwritten)
        seeds.csv                   one row per seed: its Tune trial, status, epochs and both objectives
        summary.json                the pick, its seeds, the spread of both objectives, its leads on the front
        tune/                       Tune's experiment
        trials/TUNE_TRIAL_ID/       each seed's run, as `tsmoe train` writes it
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from tsmoe.config import RunConfig
from tsmoe.sweep.object_storage import is_uri, join
from tsmoe.sweep.pareto import COMPLETED, ERROR, QUALITY, STATUS, STOPPED, TRIAL_ID, pareto_front
from tsmoe.sweep.runner import StoredSweep
from tsmoe.sweep.seed_spread import MIN_SEEDS, Lead, Spread, leads_over_neighbours, spread_table

SEED = "training.seed"
DIRECTORY_PREFIX = "verify_seeds_"
SEEDS_CSV, SUMMARY_JSON, TUNE_DIR = "seeds.csv", "summary.json", "tune"


def check_seed_count(count: int) -> None:
    """Refuse a seed count that cannot give a spread, before anything is written or started."""
    if count < MIN_SEEDS:
        raise ValueError(
            f"--verify-seeds: needs at least {MIN_SEEDS} seeds to measure a spread, got {count}; 3 to 5 show it better"
        )


def new_seeds(seed: int, count: int) -> list[int]:
    """`count` seeds after the trial's own one, which won the selection and would bias the spread."""
    return [seed + offset for offset in range(1, count + 1)]


def fresh_directory(sweep_directory: Path, trial_id: str) -> Path:
    """A new directory for this verification: verify_seeds_TRIAL, else the first free _2, _3, ..."""
    for attempt in range(1, 1000):
        suffix = "" if attempt == 1 else f"_{attempt}"
        directory = sweep_directory / f"{DIRECTORY_PREFIX}{trial_id}{suffix}"
        try:
            directory.mkdir()  # atomic: two verifications at once never share a directory
        except FileExistsError:
            continue
        return directory
    raise FileExistsError(f"{sweep_directory}: {DIRECTORY_PREFIX}{trial_id}_2 to _999 are all taken")


@dataclass
class Verification:
    """The seed runs of one pick, their spread, and the pick's leads over its neighbours on the front."""

    directory: Path
    pick: str
    policy: str
    seeds: list[int]
    runs: pd.DataFrame  # one row per seed
    spreads: dict[str, Spread]
    sweep_figures: dict[str, float]  # the pick's own figures in the sweep
    leads: list[Lead]
    front: pd.DataFrame

    @property
    def warnings(self) -> list[str]:
        """The warning lines: one per neighbour whose gap to the pick is within the seed spread."""
        return [lead.line(self.pick) for lead in self.leads if lead.within_spread]

    def lines(self, throughput: str) -> str:
        """What `tsmoe export` prints: the spread, the front with the pick marked, and the leads."""
        finished = int(self.runs[STATUS].eq(COMPLETED).sum())
        seeds = ", ".join(map(str, self.seeds))
        lines = [
            f"trial {self.pick} ({self.policy}) retrained with {len(self.seeds)} new seeds ({seeds}): "
            f"{finished} finished; {self.directory}",
            spread_table(self.spreads, self.sweep_figures),
            f"Pareto front (best validation AUROC against {throughput}), the pick marked *:",
        ]
        shown = self.front[[TRIAL_ID, QUALITY, throughput]].copy()
        shown.insert(0, "", ["*" if trial_id == self.pick else "" for trial_id in shown[TRIAL_ID]])
        lines.append(shown.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
        for _, run in self.runs[~self.runs[STATUS].eq(COMPLETED)].iterrows():
            lines.append(f"seed {run['seed']} {run[STATUS]}: {run['reason']}")
        if not self.leads:
            lines.append("the front holds the pick alone: no neighbour to compare with")
        lines += [lead.line(self.pick) for lead in self.leads]
        return "\n".join(lines)

    def summary(self) -> dict:
        """summary.json: what was verified and what came out."""
        return {
            "pick": self.pick,
            "policy": self.policy,
            "seeds": self.seeds,
            "sweep_figures": self.sweep_figures,
            "spreads": {objective: asdict(spread) for objective, spread in self.spreads.items()},
            "leads": [asdict(lead) | {"within_spread": lead.within_spread} for lead in self.leads],
            "warnings": self.warnings,
        }


def verify_pick(
    stored: StoredSweep,
    table: pd.DataFrame,
    trial: pd.Series,
    run: RunConfig,
    policy: str,
    count: int,
    address: str | None = None,
) -> Verification:
    """Retrain `run` (the config of `trial`, the pick among `table`) with `count` new seeds, and compare
    the spread of its figures with its leads on the front. `address` joins a Ray cluster; without it a
    local one is started, as `tsmoe sweep` does."""
    check_seed_count(count)
    throughput = stored.config.objectives.throughput
    pick = str(trial[TRIAL_ID])
    seeds = new_seeds(run.training.seed, count)
    directory = fresh_directory(stored.directory, pick)
    runs = _train_seeds(stored, run, seeds, directory, address)
    runs.to_csv(directory / SEEDS_CSV, index=False)
    finite = runs[QUALITY].map(math.isfinite) & runs[throughput].map(math.isfinite)
    finished = runs[runs[STATUS].eq(COMPLETED) & finite]
    if len(finished) < MIN_SEEDS:
        raise ValueError(
            f"{directory / SEEDS_CSV}: {len(finished)} of {count} seed runs finished with both objectives "
            f"finite; a spread needs {MIN_SEEDS}"
        )
    spreads = {objective: Spread.of(finished[objective]) for objective in (QUALITY, throughput)}
    front = pareto_front(table, QUALITY, throughput)
    verification = Verification(
        directory=directory,
        pick=pick,
        policy=policy,
        seeds=seeds,
        runs=runs,
        spreads=spreads,
        sweep_figures={objective: float(trial[objective]) for objective in (QUALITY, throughput)},
        leads=leads_over_neighbours(front, pick, spreads, QUALITY, throughput),
        front=front,
    )
    (directory / SUMMARY_JSON).write_text(json.dumps(verification.summary(), indent=2) + "\n")
    return verification


def _train_seeds(
    stored: StoredSweep, run: RunConfig, seeds: list[int], directory: Path, address: str | None
) -> pd.DataFrame:
    """Run one Tune trial per seed with the sweep's trainable and resources; one row per seed."""
    import ray
    from ray import tune

    from tsmoe.sweep.live_table import LiveTable
    from tsmoe.sweep.runner import STORED_SWEEP, check_resources, start_ray
    from tsmoe.sweep.space import parse_search_space
    from tsmoe.sweep.trial import TrialSetup, run_trial
    from tsmoe.training.loopback import UNCHANGED, loopback_cluster

    throughput = stored.config.objectives.throughput
    concurrent = min(len(seeds), stored.config.max_concurrent_trials)
    config = stored.config.model_copy(update={"address": address, "max_concurrent_trials": concurrent})
    space = parse_search_space(
        {"parameters": {SEED: {"type": "categorical", "choices": seeds}}},
        run,
        stored.segment_length,
        source=f"--verify-seeds of {stored.directory}",
    )
    resources = config.resources
    with contextlib.ExitStack() as stack:
        binding = stack.enter_context(loopback_cluster()) if address is None else UNCHANGED
        try:
            cluster = start_ray(config, binding)
            driver_bundle = check_resources(config, cluster, str(stored.directory / STORED_SWEEP))
            # The seed runs go where the sweep's trials went: beside the sweep directory's copy, or into the
            # sweep's object storage (their figures come back in Tune's results either way).
            storage = stored.config.storage
            runs_at = join(stored.config.experiment_location, directory.name) if is_uri(storage) else directory
            if address is not None:
                from tsmoe.sweep.cluster import check_nodes_see

                seen = {"data.path": run.data.path} | ({} if is_uri(storage) else {"storage": directory})
                check_nodes_see(seen, "--verify-seeds")
            setup = TrialSetup(
                base=run,
                space=space,
                experiment=runs_at,
                workers=resources.workers,
                cpus_per_worker=resources.cpus_per_worker,
                gpus_per_worker=resources.gpus_per_worker,
            )
            trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), driver_bundle)
            print(f"training {len(seeds)} seeds, {concurrent} at a time, into {directory}")
            results = tune.Tuner(
                trainable,
                param_space={SEED: tune.grid_search(seeds)},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
                run_config=tune.RunConfig(
                    name=TUNE_DIR,
                    storage_path=str(runs_at),
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                    # The sweep's compact table: one row per seed, its epoch and figures as they come.
                    callbacks=[
                        LiveTable(
                            f"{config.name} seeds of {directory.name.removeprefix(DIRECTORY_PREFIX)}",
                            throughput,
                            run.training.epochs,
                            len(seeds),
                            concurrent,
                            time_budget_s=None,
                        )
                    ],
                    verbose=0,
                ),
            ).fit()
        finally:
            ray.shutdown()
    rows = []
    for index in range(len(results)):  # ResultGrid is indexable; its iteration is not typed
        result = results[index]
        metrics = result.metrics or {}
        epochs = int(metrics.get("epoch", 0))
        if result.error is not None:
            status, reason = ERROR, str(result.error).strip().splitlines()[0]
        elif epochs < run.training.epochs:
            status, reason = STOPPED, f"stopped after epoch {epochs} of {run.training.epochs}"
        else:
            status, reason = COMPLETED, ""
        rows.append(
            {
                "seed": int((result.config or {})[SEED]),
                TRIAL_ID: metrics.get("trial_id", ""),
                STATUS: status,
                "reason": reason,
                "epochs": epochs,
                QUALITY: float(metrics.get(QUALITY, math.nan)),
                throughput: float(metrics.get(throughput, math.nan)),
            }
        )
    return pd.DataFrame(rows).sort_values("seed", ignore_index=True)
