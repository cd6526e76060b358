"""Keep a local Ray cluster on the loopback interface, so a one-machine run opens nothing to the network.

Ray 2.60 binds its gRPC servers (GCS, raylet, object manager, core workers, among them the Train
controller and workers) and its agents to the node's IP address, and a local `ray.init` picks the
machine's network address for it even when told 127.0.0.1: it treats a loopback `_node_ip_address` as a
request for "this machine" and resolves it to a reachable address. Ray keeps one switch for local-only
clusters, the one it sets on macOS and Windows: with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` the node's
address is the loopback address, and every server binds there. Processes that Ray starts inherit the
variable. Two kinds of server are not Ray's: the sockets of gloo and NCCL (told the loopback interface by
GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME), and the TCPStore that rank 0 of a DDP process group hosts,
which torch binds to every interface whatever the master address; a Ray worker setup hook hands it a
socket bound to the master address instead when that address is a loopback one. The hook runs in every
process of the cluster, but only Ray Train's workers create process groups: it patches torch in the
processes whose environment holds PROCESS_GROUP_VARIABLE (`build_torch_trainer` gives it to the workers)
and returns at once in the others (trial drivers, Train's controller and helper actors), which would
otherwise import torch for it, seconds of CPU each on a small machine.

A cluster joined with `--address` is left as its owner started it.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

LOOPBACK_ADDRESS = "127.0.0.1"
# Ray reads this once, at import, into ray._private.ray_constants.ENABLE_RAY_CLUSTER.
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
WORKER_SETUP_HOOK = f"{__name__}.keep_process_group_on_loopback"
# Set to "1" in the environment of the processes that create a DDP process group (Ray Train's workers).
PROCESS_GROUP_VARIABLE = "TSMOE_PROCESS_GROUP_WORKER"


@dataclass(frozen=True)
class Binding:
    """What `ray.init` needs to start a loopback-only node: its own arguments and runtime-env fields."""

    init_arguments: dict[str, Any] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)


# A joined cluster (--address) is left as it is.
UNCHANGED = Binding()


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback IP address (IPv4, IPv6 or IPv4-mapped IPv6)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def loopback_interface() -> str:
    """The name of the loopback network interface ("lo" on Linux, "lo0" on macOS and BSDs)."""
    return "lo0" if sys.platform == "darwin" or sys.platform.startswith("freebsd") else "lo"


def loopback_environment() -> dict[str, str]:
    """Environment variables that keep Ray's servers and the DDP process group on the loopback interface."""
    return {
        LOCAL_ONLY_VARIABLE: "0",
        # gloo's and NCCL's bootstrap sockets bind to this interface's address instead of the network's.
        "GLOO_SOCKET_IFNAME": loopback_interface(),
        "NCCL_SOCKET_IFNAME": loopback_interface(),
    }


@contextlib.contextmanager
def loopback_cluster() -> Iterator[Binding]:
    """While open, a Ray node started by this process binds to the loopback interface only; yields the
    `ray.init` arguments and runtime-env fields that go with it (the dashboard's host is the caller's:
    127.0.0.1 in tsmoe). Close it after `ray.shutdown()`.

    The variables go into os.environ, which every process Ray starts inherits. Ray may already have been
    imported in this process (a test, a notebook) and read the switch, so its constant is set as well;
    both are put back on exit.
    """
    from ray._private import ray_constants

    saved_environment = {name: os.environ.get(name) for name in loopback_environment()}
    saved_switch = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(loopback_environment())
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield Binding({"_node_ip_address": LOOPBACK_ADDRESS}, {"worker_process_setup_hook": WORKER_SETUP_HOOK})
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_switch
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def loopback_store(address: str, port: int, rank: int, world_size: int, timeout: timedelta):
    """The TCPStore of a process group whose master is on this machine: rank 0 serves it on a socket bound
    to `address` only (torch would bind its own to every interface), the other ranks connect to it."""
    import torch.distributed as dist

    listening = None
    if rank == 0:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen()
        listening = listener.detach()  # the store's server owns the socket from here
    return dist.TCPStore(address, port, world_size, is_master=rank == 0, timeout=timeout, master_listen_fd=listening)


def keep_process_group_on_loopback() -> None:
    """Ray worker setup hook: in a process that creates a process group (PROCESS_GROUP_VARIABLE set), an
    `env://` process group whose MASTER_ADDR is a loopback address gets its store from `loopback_store`;
    any other process group is set up as torch does. Other processes are left as they are."""
    if os.environ.get(PROCESS_GROUP_VARIABLE) != "1":
        return
    import torch.distributed as dist

    original = dist.init_process_group
    if getattr(original, "keeps_loopback", False):
        return

    @functools.wraps(original)
    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        master = os.environ.get("MASTER_ADDR", "")
        by_environment = kwargs.get("init_method") == "env://" and kwargs.get("store") is None
        if by_environment and not args[1:] and is_loopback(master) and "rank" in kwargs and "world_size" in kwargs:
            timeout = kwargs.get("timeout") or timedelta(minutes=30)
            kwargs["store"] = loopback_store(
                master, int(os.environ["MASTER_PORT"]), kwargs["rank"], kwargs["world_size"], timeout
            )
            del kwargs["init_method"]
            kwargs["timeout"] = timeout
        return original(*args, **kwargs)

    init_process_group.keeps_loopback = True  # type: ignore[attr-defined]
    dist.init_process_group = init_process_group
