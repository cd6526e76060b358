"""The loopback-only local cluster: what it sets, what it puts back, and the DDP store on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest
import torch.distributed as dist
from ray._private import ray_constants

from tsmoe.training.loopback import (
    LOCAL_ONLY_VARIABLE,
    PROCESS_GROUP_VARIABLE,
    is_loopback,
    keep_process_group_on_loopback,
    loopback_cluster,
    loopback_environment,
)


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("node-1", False),
    ],
)
def test_loopback_addresses_are_told_from_the_others(host, expected):
    assert is_loopback(host) is expected


def test_the_loopback_cluster_sets_ray_local_only_mode_and_puts_everything_back(monkeypatch):
    monkeypatch.delenv(LOCAL_ONLY_VARIABLE, raising=False)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")
    switch = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_cluster() as binding:
        assert binding.init_arguments == {"_node_ip_address": "127.0.0.1"}
        assert binding.runtime_env["worker_process_setup_hook"].endswith("keep_process_group_on_loopback")
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        for name, value in loopback_environment().items():
            assert os.environ[name] == value
        from ray._private.services import get_node_ip_address

        assert get_node_ip_address() == "127.0.0.1"  # what a new local node takes as its address
    assert ray_constants.ENABLE_RAY_CLUSTER is switch
    assert LOCAL_ONLY_VARIABLE not in os.environ and os.environ["GLOO_SOCKET_IFNAME"] == "eth7"


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_process_group_on_a_loopback_master_listens_on_loopback_only(monkeypatch):
    monkeypatch.setattr(dist, "init_process_group", dist.init_process_group)  # undone after the test
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv(PROCESS_GROUP_VARIABLE, "1")  # as in a Ray Train worker
    keep_process_group_on_loopback()
    keep_process_group_on_loopback()  # a second call (a reused worker process) wraps nothing twice
    assert dist.init_process_group.keeps_loopback
    assert not getattr(dist.init_process_group.__wrapped__, "keeps_loopback", False)
    # As Ray Train calls it.
    dist.init_process_group(backend="gloo", init_method="env://", rank=0, world_size=1)
    try:
        listening = [
            connection.laddr
            for connection in psutil.Process().net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN
        ]
        assert any(address.port == int(os.environ["MASTER_PORT"]) for address in listening)
        assert [address for address in listening if not is_loopback(address.ip)] == []
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_the_setup_hook_leaves_processes_that_create_no_process_group_without_torch():
    # Every process of the cluster runs the hook; only Train's workers may pay for importing torch.
    probe = (
        "import sys; from tsmoe.training.loopback import keep_process_group_on_loopback as hook; hook(); "
        "print(sorted(name for name in ('torch', 'torch.distributed') if name in sys.modules))"
    )
    environment = {name: value for name, value in os.environ.items() if name != PROCESS_GROUP_VARIABLE}
    bare = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    environment[PROCESS_GROUP_VARIABLE] = "1"
    worker = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    assert bare.stdout.split() == ["[]"]
    assert worker.stdout.strip() == "['torch', 'torch.distributed']"
