"""The GPU acceptance run: every GPU claim of the project checked in one go, figures into docs/figures.

Run through `benchmarks/gpu_acceptance.sh` (one H100/H200, about 5 minutes). Steps, each in its own process
with its own time limit, so one failure is reported and the rest still run:

1. parity: the reference fixture's outputs on the device in float32 (relative error < 1e-4), `generate`
   included (the key/value-cache path), for the fast layout and the reference layout;
2. train_step: `benchmarks/train_step.py`, TimeMoE-50M at context 2048, micro-batch 8, bfloat16 (tokens/s,
   MFU against the card's dense bf16 peak, peak memory);
3. train_throughput: `benchmarks/train_throughput.py`, the whole trainer with its loader (data_wait_frac);
4. deepspeed: one `tsmoe train` epoch under DeepSpeed ZeRO-2 (one worker);
5. sweep: `sweeps/gpu_acceptance.yaml`, two trials at once, each on half of the GPU.

`--dry-run` runs the same steps on the CPU at tiny shapes (and the sweep without GPUs), so the script itself
is tested on machines without one. It writes docs/figures/gpu_acceptance[_dry_run].json (a summary) next to
each step's own JSON, and exits non-zero if any step failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "timemoe_parity_tiny.pt"
# Dense bfloat16 peaks (TFLOP/s, without sparsity) for model FLOP utilisation, by device name.
PEAK_BFLOAT16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
TIMEMOE_50M = ["--hidden", "384", "--layers", "12", "--heads", "12", "--experts", "8", "--top-k", "2"]
TINY = ["--hidden", "32", "--layers", "2", "--heads", "4", "--experts", "4", "--top-k", "2"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on CPU at tiny shapes")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    parser.add_argument("--only", nargs="+", help="run only these steps (parity train_step ...)")
    return parser.parse_args(argv)


def peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak, from its name; None where unknown (MFU is then not reported)."""
    for name, peak in PEAK_BFLOAT16_TFLOPS.items():
        if name in device_name:
            return peak
    return None


# --- step 1: parity, in this process -------------------------------------------------------------------
def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double().cpu(), torch.as_tensor(expected).double()
    return ((actual - expected).norm() / expected.norm()).item()


def parity(device: torch.device, fixture_path: Path) -> dict:
    """Worst relative error of every float32 fixture output, per layout, on `device`."""
    from tsmoe.model.checkpoint import build_from_reference, to_reference_names

    fixture = torch.load(fixture_path, weights_only=False)
    expected = fixture["fp32"]
    x, labels, masks = (fixture[key].float().to(device) for key in ("input_ids", "labels", "loss_masks"))
    layouts = {"fast": ("sdpa", "grouped"), "reference": ("eager", "loop")}
    result = {}
    for layout, (attention, experts) in layouts.items():
        model = build_from_reference(
            fixture["config"], fixture["state_dict"], attention_implementation=attention, expert_implementation=experts
        )
        model = model.float().to(device).eval()
        out = model(x, labels=labels, loss_masks=masks)
        out.loss.backward()
        grads = to_reference_names({name: p.grad for name, p in model.named_parameters()})
        errors = {
            "loss": relative_error(out.loss, expected["loss"]),
            "last_hidden_state": relative_error(out.last_hidden_state, expected["last_hidden_state"]),
            "grad_global_norm": abs(
                math.sqrt(sum(g.double().pow(2).sum().item() for g in grads.values())) / expected["grad_global_norm"]
                - 1
            ),
        }
        for horizon, prediction in expected["predictions"].items():
            errors[f"predictions[{horizon}]"] = relative_error(out.predictions[horizon], prediction)
        with torch.no_grad():
            context = x[:, : expected["generate_context"]]
            for steps, forecast in expected["generate"].items():
                generated = model.generate(context, steps)
                assert generated.device.type == device.type, f"generate returned a tensor on {generated.device}"
                errors[f"generate[{steps}]"] = relative_error(generated, forecast)
        worst = max(errors, key=errors.get)
        result[layout] = {"worst_field": worst, "worst_relative_error": errors[worst], "errors": errors}
        print(f"parity {layout} on {device}: worst {worst} {errors[worst]:.2e}")
    result["passed"] = all(result[layout]["worst_relative_error"] < 1e-4 for layout in layouts)
    return result


# --- steps 2-5: subprocesses ---------------------------------------------------------------------------
# A dry run shares a small CPU with whatever else runs there: its steps get this many times the GPU limits.
DRY_RUN_SLACK = 10


def run_command(command: list[str], timeout_s: float, environment: dict[str, str] | None = None) -> dict:
    """Run one step; its exit status, time and the last lines of its output."""
    if DRY_RUN:
        timeout_s *= DRY_RUN_SLACK
    started = time.perf_counter()
    print("$ " + " ".join(command), flush=True)
    try:
        completed = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **(environment or {})},
        )
        status, output = completed.returncode, completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as error:
        streams = (error.stdout or b"", error.stderr or b"")
        status = "timeout"
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part for part in streams)
    tail = "\n".join(output.strip().splitlines()[-8:])
    print(tail, flush=True)
    return {"command": command, "status": status, "seconds": round(time.perf_counter() - started, 1), "tail": tail}


def train_step(args: argparse.Namespace, device_name: str) -> dict:
    output = args.figures / ("dry_run_train_step.json" if args.dry_run else "gpu_50m_2048_bf16_train_step.json")
    if args.dry_run:
        shape = [*TINY, "--intermediate", "64", "--ctx", "64", "--batch", "2", "--device", "cpu", "--dtype", "best"]
    else:
        shape = [*TIMEMOE_50M, "--intermediate", "1536", "--ctx", "2048", "--batch", "8", "--dtype", "bfloat16"]
        peak = peak_tflops(device_name)
        shape += ["--peak-tflops", str(peak)] if peak else []
    command = [sys.executable, "benchmarks/train_step.py", *shape, "--implementation", "fast", "--steps", "10"]
    result = run_command([*command, "--warmup", "3", "--json", str(output)], timeout_s=120)
    if result["status"] == 0:
        result["figures"] = json.loads(output.read_text())[0]
    return result


def train_throughput(args: argparse.Namespace) -> dict:
    output = args.figures / ("dry_run_train_throughput.json" if args.dry_run else "gpu_50m_2048_train_throughput.json")
    if args.dry_run:
        shape = ["--segment-length", "64", "--segments", "16", "--batch", "2", "--steps", "6", "--warmup", "2"]
        shape += ["--device", "cpu", "--workers", "1"]
    else:
        # 3 channels a segment: 3 segments make 9 series of 2048 points a micro-batch, about the 50M goal's 8.
        shape = ["--preset", "TimeMoE-50M", "--segment-length", "2048", "--segments", "96", "--batch", "3"]
        shape += ["--steps", "40", "--warmup", "5", "--workers", "4"]
    result = run_command(
        [sys.executable, "benchmarks/train_throughput.py", *shape, "--json", str(output)], timeout_s=150
    )
    if result["status"] == 0:
        result["figures"] = json.loads(output.read_text())
    return result


def tiny_config(scratch: Path, dry_run: bool, **training) -> Path:
    """configs/quickstart.yaml on a small synthesized dataset, with `training` overrides."""
    from tsmoe.data.synth import generate_synthetic_dataset

    data = scratch / "data"
    if not data.exists():
        generate_synthetic_dataset(data, train_segments=16, val_segments=8, test_segments=0, segment_length=128)
    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    config["data"].update(path=str(data), num_workers=0)
    config["training"].update(epochs=1, log_every_steps=1000, **training)
    config["evaluation"]["statistics_segments"] = 4
    path = scratch / f"config_{len(list(scratch.glob('config_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def deepspeed_step(args: argparse.Namespace, scratch: Path) -> dict:
    config = tiny_config(scratch, args.dry_run, strategy="deepspeed", deepspeed={"stage": 2})
    output = scratch / "deepspeed_run"
    result = run_command(
        [sys.executable, "-m", "tsmoe.cli.main", "train", str(config), "--output", str(output), "--workers", "1"],
        timeout_s=120,
    )
    metrics = output / "metrics.jsonl"
    if result["status"] == 0 and metrics.is_file():
        result["figures"] = [json.loads(line) for line in metrics.read_text().splitlines()]
    return result


def sweep(args: argparse.Namespace, scratch: Path) -> dict:
    definition = yaml.safe_load((ROOT / "sweeps" / "gpu_acceptance.yaml").read_text())
    # Resolve the definition's relative paths from sweeps/, and keep the results out of the repository.
    for key in ("base_config", "search_space"):
        definition[key] = str((ROOT / "sweeps" / definition[key]).resolve())
    definition["dataset"]["path"] = str(scratch / "sweep_data")
    definition["storage"] = str(scratch / "sweeps")
    if args.dry_run:
        definition["resources"]["gpus_per_worker"] = 0
        definition["resources"]["cpus_per_worker"] = 1
    path = scratch / "gpu_acceptance_sweep.yaml"
    path.write_text(yaml.safe_dump(definition))
    result = run_command([sys.executable, "-m", "tsmoe.cli.main", "sweep", str(path)], timeout_s=240)
    trials = scratch / "sweeps" / definition["name"] / "trials.csv"
    if trials.is_file():
        result["trials_csv"] = trials.read_text()
    return result


DRY_RUN = False
STEPS = ("parity", "train_step", "train_throughput", "deepspeed", "sweep")


def main(argv: list[str] | None = None) -> int:
    global DRY_RUN
    args = parse_args(argv)
    DRY_RUN = args.dry_run
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_acceptance: no CUDA device (torch.cuda.is_available() is False); --dry-run runs it on CPU")
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    device_name = "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(device)
    args.figures.mkdir(parents=True, exist_ok=True)
    steps = args.only or list(STEPS)
    summary: dict = {"device": device_name, "torch": torch.__version__, "dry_run": args.dry_run, "steps": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        for step in steps:
            print(f"== {step}", flush=True)
            try:
                if step == "parity":
                    result = parity(device, args.fixture)
                    result["status"] = 0 if result["passed"] else "parity above 1e-4"
                elif step == "train_step":
                    result = train_step(args, device_name)
                elif step == "train_throughput":
                    result = train_throughput(args)
                elif step == "deepspeed":
                    result = deepspeed_step(args, scratch)
                else:
                    result = sweep(args, scratch)
            except Exception as error:  # one broken step must not hide the others' figures
                result = {"status": f"{type(error).__name__}: {error}"}
            summary["steps"][step] = result
    summary["seconds"] = round(time.perf_counter() - started, 1)
    failed = [step for step, result in summary["steps"].items() if result.get("status") != 0]
    summary["failed"] = failed
    output = args.figures / ("gpu_acceptance_dry_run.json" if args.dry_run else "gpu_acceptance.json")
    output.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"gpu_acceptance: {len(steps) - len(failed)}/{len(steps)} steps passed in {summary['seconds']} s; {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
