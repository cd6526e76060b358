"""Ray Train's backend for torch.distributed, without torch outside the training workers.

Ray's `TorchConfig` lives in a module that imports torch, so every process that unpickles it imports torch:
a sweep trial's driver, which builds the trainer, and Ray Train's controller, which starts the workers and
sets up their process group. On a small machine each import is one to two seconds on the critical path of
every trial (docs/performance.md), for processes that never run torch. This backend does the same set-up
as Ray's torch backend for the cases tsmoe trains in (gloo on CPUs, NCCL on GPUs, the `env://` rendezvous),
from a module that imports no torch: the functions it sends to the workers import torch there, where the
training needs it anyway.

On start: worker 0's address and a free port become the rendezvous (MASTER_ADDR, MASTER_PORT), every
worker gets the torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK), and
each joins the process group with its world rank. While the training function runs, a GPU worker's
current CUDA device is its own. On shutdown: the process group is destroyed (more than one worker) and
cached CUDA memory released.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.train._internal.utils import get_address_and_port
from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.util import TrainingFramework

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Seconds the shutdown waits for the workers to leave the process group (Ray's torch backend waits as long).
SHUTDOWN_TIMEOUT_S = 30


@dataclass
class ProcessGroupConfig(BackendConfig):
    """torch.distributed for Ray Train's workers: `backend` gloo (CPU) or nccl (GPU), rendezvous over env://."""

    backend: str = "gloo"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[Backend]:
        return _ProcessGroupBackend

    @property
    def train_func_context(self) -> type:
        return _WorkerDevice

    @property
    def framework(self) -> TrainingFramework:
        # Ray Train records the framework's version from worker 0 (which imports torch to train anyway).
        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "timeout_s": self.timeout_s}


def worker_device() -> torch.device:
    """In a worker: the device it trains on, the GPU Ray gave it or else the CPU. Ray's torch module (a fifth
    of a second to import, on every trial's critical path) is imported only where there is a GPU to find."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


class _WorkerDevice:
    """Around the training function: a GPU worker's current CUDA device is the one Ray gave it."""

    def __enter__(self) -> None:
        import torch

        device = worker_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)

    def __exit__(self, *exception: object) -> None:
        return None


def _join_process_group(address: str, port: int, rank: int, backend: str, timeout_s: int) -> None:
    """In a worker: set the rendezvous and torchrun-style variables, then join the group as `rank`."""
    from datetime import timedelta

    import torch.distributed

    context = ray.train.get_context()
    os.environ.update(
        {
            "MASTER_ADDR": address,
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(context.get_world_size()),
            "LOCAL_RANK": str(context.get_local_rank()),
            "LOCAL_WORLD_SIZE": str(context.get_local_world_size()),
            "NODE_RANK": str(context.get_node_rank()),
        }
    )
    if backend == "nccl":
        # A collective that hangs fails after timeout_s instead of blocking forever (as Ray's backend sets it).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    torch.distributed.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=context.get_world_size(),
        timeout=timedelta(seconds=timeout_s),
    )


def _leave_process_group(destroy: bool) -> None:
    """In a worker: leave the process group (when there is one to leave) and release cached GPU memory."""
    import torch
    import torch.distributed

    if destroy and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _ProcessGroupBackend(Backend):
    """Runs in Ray Train's controller: it only tells the workers what to do."""

    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        assert isinstance(backend_config, ProcessGroupConfig)
        address, port = worker_group.execute_single(0, get_address_and_port)
        # Positional: the worker group's own first parameter is named rank.
        joined = [
            worker_group.execute_single_async(
                rank, _join_process_group, address, port, rank, backend_config.backend, backend_config.timeout_s
            )
            for rank in range(len(worker_group))
        ]
        ray.get(joined)

    def on_shutdown(self, worker_group: Any, backend_config: BackendConfig) -> None:
        left = worker_group.execute_async(_leave_process_group, destroy=len(worker_group) > 1)
        try:
            ray.get(left, timeout=SHUTDOWN_TIMEOUT_S)
        except GetTimeoutError:
            logger.warning("the workers did not leave the process group within %s s", SHUTDOWN_TIMEOUT_S)
        except RayActorError:
            # A worker already gone (its trial stopped by early stopping, or it crashed: the run reports that
            # itself) has no group left to leave; Ray would print a traceback for it in the middle of a sweep.
            logger.debug("a worker had exited before it could leave the process group")
