"""Before a sweep runs on a cluster of several machines: every node must see the dataset and the storage.

A trial's process and its Train workers may run on any node. The workers read the dataset from its path,
and the trial's process writes the run's config and outputs into the sweep directory (unless the storage is
object storage, which every node reaches by its URI), where Ray Train also keeps the checkpoints that carry
each epoch's results to the driver. A node that sees neither at the path the driver gave would fail every
trial placed on it, one after another; this check names the node and the path before the first trial
instead.
"""

from __future__ import annotations

from pathlib import Path


def missing_on_nodes(paths: dict[str, Path]) -> list[str]:
    """For every alive node of the connected Ray cluster, the `paths` (named by the setting they come
    from) that do not exist there, as lines naming the node; empty when every node sees them all."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def missing_here(checked: dict[str, str]) -> list[str]:
        return [name for name, path in checked.items() if not Path(path).exists()]

    checked = {name: str(path) for name, path in paths.items()}
    nodes = [node for node in ray.nodes() if node["Alive"]]
    pending = [
        missing_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            checked
        )
        for node in nodes
    ]
    problems = []
    for node, missing in zip(nodes, ray.get(pending), strict=True):
        where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        problems += [f"{where} does not see {name} {checked[name]}" for name in missing]
    return problems


def check_nodes_see(paths: dict[str, Path], source: str) -> None:
    """Raise a ValueError naming every node that cannot see one of `paths` and what a cluster needs."""
    problems = missing_on_nodes(paths)
    if problems:
        raise ValueError(
            f"{source}: " + "; ".join(problems) + ". On several machines the dataset and the storage must be "
            "on a filesystem every node mounts at the same path (docs/sweeps.md, 'Many machines')"
        )
