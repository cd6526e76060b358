"""`tsmoe sweep --address` on a cluster of two nodes, with a DDP trial whose two workers sit on both."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pandas as pd
import pytest

from tests.sweep.conftest import TRIAL_ID_AS_TEXT
from tests.sweep.test_definition import write_sweep
from tests.training.test_loop import synthetic_data
from tsmoe.training.loopback import LOCAL_ONLY_VARIABLE

# Two Ray nodes on this machine, two CPUs each, and the sweep joined to them through the CLI. It runs in a
# process of its own: the cluster's head belongs to the process that starts it, and this one must not
# inherit Ray state from other tests, nor leave its nodes to them. Its own Ray temp directory (RAY_TMPDIR)
# keeps the address file that `Cluster` writes (ray_current_cluster) from other processes on the machine: a
# `ray.init()` without an address connects to the cluster named there, so another test's or another
# user's local Ray would otherwise join this one while it runs.
TWO_NODE_SWEEP = """
import json
import sys
from ray.cluster_utils import Cluster
from tsmoe.cli.main import main

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
try:
    code = main(["sweep", sys.argv[1], "--address", cluster.address])
    # The check a joined sweep makes first, on a path no node has: each node is named.
    import ray
    from tsmoe.sweep.cluster import missing_on_nodes

    ray.init(address=cluster.address)
    print("MISSING " + json.dumps(missing_on_nodes({"dataset.path": sys.argv[2]})))
    ray.shutdown()
finally:
    cluster.shutdown()
sys.exit(code)
"""


@pytest.mark.slow
def test_a_sweep_joined_to_a_two_node_cluster_runs_a_ddp_trial_across_both_nodes(tmp_path):
    data = synthetic_data(tmp_path / "data")
    definition = write_sweep(
        tmp_path,
        data,
        # Batches of 2 on each of 2 workers: 4 steps in the epoch of 16 segments, enough for a throughput.
        base={
            "data": {"path": str(data), "batch_size": 2, "num_workers": 0},
            "training": {"epochs": 1, "warmup_steps": 1, "log_every_steps": 1000},
        },
        space={"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        num_trials=1,
        # 1.5 CPUs a worker: a node of 2 holds the trial's driver and one worker, never both workers.
        resources={"workers": 2, "cpus_per_worker": 1.5},
        early_stopping={"scheduler": "none"},
        storage=f"file://{tmp_path}/shared",
    )
    # Short, so that the sockets Ray puts under it stay within the 107 characters a Unix socket path allows.
    ray_temp = tempfile.mkdtemp(prefix="tsmoe-ray-")
    process = subprocess.Popen(
        [sys.executable, "-c", TWO_NODE_SWEEP, str(definition), str(tmp_path / "nowhere")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ray's local-only switch: both nodes listen on the loopback interface, as a local sweep's node does.
        env=os.environ | {"RAY_TMPDIR": ray_temp, LOCAL_ONLY_VARIABLE: "0"},
        start_new_session=True,
    )
    try:
        # About a minute on an idle 2-core machine; the margin is for a machine shared with other work.
        stdout, stderr = process.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the nodes it started, not only the driver
        stdout, stderr = process.communicate()
        pytest.fail("the two-node sweep did not finish in 480 s:\n" + stdout[-3000:] + stderr[-3000:])
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "1 trials: 1 completed" in stdout

    # Everything the driver read came from Tune's reports and the Train run's checkpoints in the storage.
    directory = tmp_path / "shared" / "tiny"
    table = pd.read_csv(directory / "trials.csv", dtype=TRIAL_ID_AS_TEXT)
    assert table["status"].tolist() == ["completed"]
    # Rank 0 gathered every rank's Ray node id: the two workers ran on the two different nodes.
    assert table["worker_nodes"].tolist() == [2]
    assert table["samples_s"].gt(0).all() and table["best_val_auroc"].between(0, 1).all()
    trial = directory / "trials" / table["trial_id"][0]
    assert (trial / "model" / "config.json").is_file() and (trial / "metrics.jsonl").is_file()

    # Every node was asked whether it sees a path, and each that does not is named.
    missing = json.loads(stdout.split("MISSING ", 1)[1].splitlines()[0])
    assert len(missing) == 2 and len({line.split(" does not see ")[0] for line in missing}) == 2
    assert all(line.endswith(f"does not see dataset.path {tmp_path / 'nowhere'}") for line in missing)
