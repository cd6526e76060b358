"""Time one Time-MoE training step: forward over all heads + aux loss, backward, clip, AdamW.

Prints tokens/s (median over timed steps, after warm-up) and peak memory for one shape and one
implementation. `--implementation reference` runs the reference's layout (eager attention, a Python
loop over experts); `fast` runs SDPA attention and grouped expert compute. Example:

    python benchmarks/train_step.py --hidden 256 --layers 4 --heads 4 --experts 8 --top-k 2 \\
        --intermediate 1024 --ctx 512 --batch 8 --implementation fast
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

from tsmoe.model import TimeMoE, TimeMoEConfig

IMPLEMENTATIONS = {
    "reference": dict(attention_implementation="eager", expert_implementation="loop"),
    "fast": dict(attention_implementation="sdpa", expert_implementation="grouped"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        choices=sorted(DTYPES),
        default="float32",
        help="compute dtype: bfloat16/float16 run under autocast with float32 weights",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--implementation", choices=sorted(IMPLEMENTATIONS), default="fast")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense peak for --dtype, for model FLOP utilisation (MFU)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = TimeMoEConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        intermediate_size=args.intermediate,
        activation_checkpointing=args.activation_checkpointing,
        **IMPLEMENTATIONS[args.implementation],
    )
    model = TimeMoE(config).to(device).train()
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.implementation == "fast")
    dtype = DTYPES[args.dtype]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    series = torch.randn(args.batch, args.ctx + 1, device=device).cumsum(-1) * 0.1
    x, labels = series[:, :-1], series[:, 1:]

    def step() -> float:
        with autocast:
            loss = step_model(x, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() synchronises, so the step is fully timed

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    total, active = config.parameter_counts()
    result = {
        "implementation": args.implementation,
        "device": str(device),
        "dtype": args.dtype,
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
        "tokens_s": args.batch * args.ctx / step_s,
        "peak_memory_gib": peak_memory_gib(device),
        "steps": args.steps,
        "warmup": args.warmup,
    }
    result["model_tflops_s"] = result["tokens_s"] * config.training_flops_per_token(args.ctx) / 1e12
    result["mfu"] = result["model_tflops_s"] / args.peak_tflops if args.peak_tflops else None
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
    print(
        f"{args.implementation:>9} {args.dtype} {device}: {result['tokens_s']:,.0f} tokens/s, "
        f"{result['model_tflops_s'] * 1000:,.1f} model GFLOP/s{mfu} (median step {step_s * 1000:.0f} ms "
        f"over {args.steps}), peak memory {result['peak_memory_gib']:.2f} GiB"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
