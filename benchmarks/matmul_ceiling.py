"""The CPU's (or GPU's) measured matmul ceiling at a training step's shapes, in float32 and bfloat16.

A training step's model FLOP/s divided by this ceiling says how much of the arithmetic the hardware can do
the step actually gets; what is left over is the other work (attention softmax, norms, gathers, optimizer).
Shapes default to the small benchmark shape (hidden 256, 8 experts top-2, ff 1024, 4,096 tokens a step):
the shared expert, an attention projection, and one routed expert's rows. Example:

    python benchmarks/matmul_ceiling.py --json docs/figures/cpu_matmul_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step (context x batch)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=1024, help="shared-expert width")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def gflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Median GFLOP/s of torch.mm [m, k] @ [k, n]."""
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times[1:]) / 1e9


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    expert_width = args.intermediate // args.top_k
    expert_rows = args.tokens * args.top_k // args.experts
    shapes = {
        "shared expert up": (args.tokens, args.hidden, args.intermediate),
        "attention projection": (args.tokens, args.hidden, args.hidden),
        "routed expert up": (expert_rows, args.hidden, expert_width),
        "routed expert down": (expert_rows, expert_width, args.hidden),
    }
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}
    for name, dtype in DTYPES.items():
        figures = {shape: gflops(*dims, dtype, device, args.repeats) for shape, dims in shapes.items()}
        result[name] = {"per_shape_gflop_s": figures, "ceiling_gflop_s": max(figures.values())}
        listed = ", ".join(f"{shape} {value:,.0f}" for shape, value in figures.items())
        print(f"{name}: ceiling {max(figures.values()):,.0f} GFLOP/s ({listed})")
    result["bfloat16_over_float32"] = result["bfloat16"]["ceiling_gflop_s"] / result["float32"]["ceiling_gflop_s"]
    print(f"bfloat16 / float32: {result['bfloat16_over_float32']:.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
