"""Time Time-MoE training steps: forward over all heads + aux loss, backward, clip, AdamW.

Prints tokens/s (median over timed steps, after warm-up) and peak memory for one shape, for each layout
and precision asked for. Several layouts or precisions are timed in ONE process, their steps interleaved
round-robin, so that a shared or throttled machine slows them alike and their ratio holds.
`--implementation reference` runs the reference's layout (eager attention, a Python loop over experts,
foreach AdamW); `fast` runs tsmoe's (attention kernel chosen per device and dtype, grouped experts, fused
AdamW). `--dtype best` is what `training.precision: auto` picks on the device. `--matmul-ceiling` reads
`benchmarks/matmul_ceiling.py`'s JSON and adds each case's share of its dtype's measured matmul ceiling. Example:

    python benchmarks/train_step.py --implementation reference fast --dtype float32 best \\
        --hidden 256 --layers 4 --heads 4 --experts 8 --top-k 2 --intermediate 1024 --ctx 512 --batch 8
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tsmoe.model import TimeMoEConfig, timemoe
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.precision import choose_precision

IMPLEMENTATIONS = {
    "reference": dict(attention_implementation="eager", expert_implementation="loop"),
    "fast": dict(attention_implementation="sdpa", expert_implementation="grouped"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# --attention-kernel: the fast layout's attention, forced for a measurement (auto: timemoe.sdpa_pays decides).
ATTENTION_KERNELS = {
    "auto": timemoe.sdpa_pays,
    "sdpa": lambda device, dtype: True,
    "matmul": lambda device, dtype: False,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--ctx", type=int, default=512, help="context length (points per series)")
    parser.add_argument("--batch", type=int, default=8, help="series per step")
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=[*sorted(DTYPES), "best"],
        default=["float32"],
        help="compute dtypes: bfloat16/float16 run under autocast with float32 weights; best = what auto picks",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--implementation", nargs="+", choices=sorted(IMPLEMENTATIONS), default=["fast"])
    parser.add_argument(
        "--attention-kernel",
        nargs="+",
        choices=list(ATTENTION_KERNELS),
        default=["auto"],
        help="the fast layout's attention: auto (the per-device, per-dtype rule), or forced, to measure the rule",
    )
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument(
        "--compile",
        nargs="*",
        choices=["eager", "compiled"],
        default=["eager"],
        help="eager, compiled (torch.compile) or both, as cases side by side; --compile alone: compiled",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense peak for --dtype, for model FLOP utilisation (MFU)"
    )
    parser.add_argument(
        "--matmul-ceiling",
        type=Path,
        help="a benchmarks/matmul_ceiling.py JSON of this device: also report each case's share of its dtype's ceiling",
    )
    parser.add_argument("--json", type=Path, help="also write the figures (a list, one entry per case) to this file")
    return parser.parse_args(argv)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class Case:
    """One layout at one precision: its model, optimizer, step function and step times."""

    def __init__(
        self,
        args: argparse.Namespace,
        device: torch.device,
        implementation: str,
        dtype_name: str,
        attention: str,
        mode: str = "eager",
    ):
        torch.manual_seed(args.seed)
        self.implementation, self.dtype_name, self.attention, self.mode = implementation, dtype_name, attention, mode
        self.config = TimeMoEConfig(
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_experts=args.experts,
            num_experts_per_tok=args.top_k,
            intermediate_size=args.intermediate,
            activation_checkpointing=args.activation_checkpointing,
            **IMPLEMENTATIONS[implementation],
        )
        self.model = TimeMoE(self.config).to(device).train()
        self.step_model = torch.compile(self.model) if mode == "compiled" else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=implementation == "fast")
        dtype = DTYPES[dtype_name]
        self.autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        series = torch.randn(args.batch, args.ctx + 1, device=device).cumsum(-1) * 0.1
        self.x, self.labels = series[:, :-1], series[:, 1:]
        self.times: list[float] = []

    def step(self) -> float:
        """One full training step; returns its wall time (`.item()` synchronises, so all of it is timed)."""
        timemoe.sdpa_pays = ATTENTION_KERNELS[self.attention]
        start = time.perf_counter()
        with self.autocast:
            loss = self.step_model(self.x, labels=self.labels).loss
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    best = choose_precision(device).name
    dtypes = list(dict.fromkeys(best if name == "best" else name for name in args.dtype))
    modes = args.compile or ["compiled"]  # a bare --compile compiles every case
    cases = [
        Case(args, device, implementation, name, attention, mode)
        for mode in modes
        for name in dtypes
        for implementation in args.implementation
        # The reference layout always runs its eager attention.
        for attention in (args.attention_kernel if implementation == "fast" else ["auto"])
    ]
    for _ in range(args.warmup):
        for case in cases:
            case.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.steps):
        for case in cases:  # round-robin: a slow spell of a shared machine hits every case alike
            case.times.append(case.step())
    ceilings = json.loads(args.matmul_ceiling.read_text()) if args.matmul_ceiling else {}
    results = [report(args, device, case, best, ceilings) for case in cases]
    if len(cases) > 1:
        print_ratios(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def report(args: argparse.Namespace, device: torch.device, case: Case, best: str, ceilings: dict) -> dict:
    """The figures of one case, printed as one line; with a measured matmul ceiling, the step's share of it."""
    step_s = statistics.median(case.times)
    total, active = case.config.parameter_counts()
    result = {
        "implementation": case.implementation,
        "device": str(device),
        "dtype": case.dtype_name,
        "best_dtype_here": best,
        "attention_kernel": case.attention,
        "mode": case.mode,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shape": dict(
            hidden=args.hidden,
            layers=args.layers,
            heads=args.heads,
            experts=args.experts,
            top_k=args.top_k,
            intermediate=args.intermediate,
            ctx=args.ctx,
            batch=args.batch,
        ),
        "parameters_total": total,
        "parameters_active": active,
        "step_s_median": step_s,
        "step_s_all": case.times,
        "tokens_s": args.batch * args.ctx / step_s,
        # Every case of a run shares the process: on CPU this is their common peak.
        "peak_memory_gib": peak_memory_gib(device),
        "steps": args.steps,
        "warmup": args.warmup,
    }
    result["model_tflops_s"] = result["tokens_s"] * case.config.training_flops_per_token(args.ctx) / 1e12
    result["mfu"] = result["model_tflops_s"] / args.peak_tflops if args.peak_tflops else None
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
    ceiling = ceilings.get(case.dtype_name, {}).get("ceiling_gflop_s")
    result["matmul_ceiling_gflop_s"] = ceiling
    result["matmul_ceiling_share"] = result["model_tflops_s"] * 1000 / ceiling if ceiling else None
    if result["matmul_ceiling_share"] is not None:
        mfu += f", {result['matmul_ceiling_share']:.0%} of the {ceiling:,.0f} GFLOP/s matmul ceiling"
    print(
        f"{case.implementation:>9} {case.mode} {case.dtype_name} attention {case.attention} {device}: "
        f"{result['tokens_s']:,.0f} tokens/s, "
        f"{result['model_tflops_s'] * 1000:,.1f} model GFLOP/s{mfu} (median step {step_s * 1000:.0f} ms "
        f"over {args.steps}), peak memory {result['peak_memory_gib']:.2f} GiB"
    )
    return result


def print_ratios(results: list[dict]) -> None:
    """Each case against the reference layout at its best precision, the issue's yardstick."""
    references = [result for result in results if result["implementation"] == "reference"]
    if not references:
        return
    best_reference = max(references, key=lambda result: result["tokens_s"])
    for result in results:
        ratio = result["tokens_s"] / best_reference["tokens_s"]
        result["vs_best_reference"] = ratio
        print(
            f"{result['implementation']:>9} {result['mode']} {result['dtype']} attention {result['attention_kernel']}: "
            f"{ratio:.2f}x the reference at its best ({best_reference['mode']} {best_reference['dtype']})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
