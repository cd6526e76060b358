"""Which floating-point precision a run trains in, chosen for the hardware it runs on.

bfloat16 only pays where the GPU has bfloat16 tensor cores (compute capability 8.0 and later: A100, H100,
RTX 30xx and newer). Older cards such as the T4 or V100 accept bfloat16 but emulate it, which is slower
than float32 and was one cause of users' unstable runs; there `auto` picks float16 with dynamic loss
scaling instead. TF32 matmuls are switched on for every CUDA run: they keep float32 weights and speed up
the float32 parts (norms, softmaxes, the optimizer's master copies).

CPUs follow the same rule: bfloat16 autocast where oneDNN computes bfloat16 in hardware (x86 cores with
AVX512-BF16 or AMX; on the 2-core development EPYC a bfloat16 matmul runs about 5x a float32 one, see
docs/performance.md), float32 elsewhere, where oneDNN would emulate bfloat16 through float32 and gain nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

NATIVE_BFLOAT16_CAPABILITY = (8, 0)
_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The resolved precision: the autocast dtype (None for plain float32) and whether loss scaling is on."""

    name: str  # float32, bfloat16 or float16
    device_type: str  # cpu or cuda
    reason: str  # why this precision, for the run's log

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    @property
    def loss_scaling(self) -> bool:
        """float16 overflows and underflows gradients without a dynamic loss scale; bfloat16 does not."""
        return self.name == "float16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes (a no-op in float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only when this precision needs loss scaling."""
        return torch.amp.GradScaler(self.device_type, enabled=self.loss_scaling)


def has_native_bfloat16(device: torch.device) -> bool:
    """Whether a CUDA device computes bfloat16 in hardware (not emulated)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= NATIVE_BFLOAT16_CAPABILITY


def cpu_bfloat16_instructions() -> str | None:
    """The instructions oneDNN computes bfloat16 matmuls with on this CPU (AMX or AVX512-BF16), or None.

    oneDNN's own check (`_is_mkldnn_bf16_supported`) also accepts plain AVX512, where bfloat16 is converted to
    float32 and back around every dot product; only the bfloat16 dot-product instructions make it pay.
    """
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def _cpu_precision(requested: str) -> Precision:
    if requested == "float16":
        raise ValueError("training.precision: float16 needs a CUDA GPU; on CPU use float32 or bfloat16")
    if requested != "auto":
        return Precision(requested, "cpu", f"CPU: {requested} as configured")
    instructions = cpu_bfloat16_instructions()
    if instructions is not None:
        return Precision("bfloat16", "cpu", f"CPU computes bfloat16 natively ({instructions}): bfloat16 autocast")
    return Precision("float32", "cpu", "CPU without native bfloat16 (no AVX512-BF16 or AMX): float32")


def choose_precision(device: torch.device | str, requested: str = "auto") -> Precision:
    """Resolve `training.precision` for `device`; impossible requests fail naming the field."""
    device = torch.device(device)
    if requested not in ("auto", *_DTYPES):
        raise ValueError(f"training.precision: expected auto, float32, bfloat16 or float16, got {requested!r}")
    if device.type == "cpu":
        return _cpu_precision(requested)
    if device.type != "cuda":
        raise ValueError(f"training.precision: devices of type {device.type!r} are not supported (cpu or cuda)")
    native = has_native_bfloat16(device)
    major, minor = torch.cuda.get_device_capability(device)
    capability = f"{major}.{minor}"
    if requested == "auto":
        if native:
            return Precision("bfloat16", "cuda", f"GPU compute capability {capability}: native bfloat16")
        return Precision(
            "float16", "cuda", f"GPU compute capability {capability} emulates bfloat16: float16 with loss scaling"
        )
    reason = f"{requested} as configured"
    if requested == "bfloat16" and not native:
        reason += f" (compute capability {capability} emulates bfloat16: expect it slower than float32)"
    return Precision(requested, "cuda", reason)


def enable_tf32() -> None:
    """Let float32 matmuls and convolutions use TF32 tensor cores (no effect on CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
