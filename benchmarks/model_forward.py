"""CrossEarth forward cost per 512 x 512 tile, by preset, side by side in one run.

Each preset runs in its own child process (so peak memory is its own): random weights, a
warm-up pass, then timed passes. Reported: seconds per tile, tiles/s, peak RSS (CPU) or peak
allocated memory (CUDA), the share of time spent in multi-scale deformable attention, and the
throughput relative to the first preset. On CUDA also bf16/fp16 autocast, torch.compile,
channels-last memory format, and the fraction of the GPU's dense peak FLOP/s reached (FLOPs
counted by torch's FlopCounterMode).

Usage: .venv/bin/python benchmarks/model_forward.py [--device cpu|cuda] [--repeats N]
       [--presets tiny,vit-ti,vit-s,vit-l-512] [--batch B] [--precisions fp32,bf16,fp16]
       [--compile] [--channels-last]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Area per 512 px tile at stride 341 (the official sliding window) and 0.3 m pixels: what
# km^2/s a tile rate is for sub-metre imagery.
KM2_PER_TILE = (341 * 0.3 / 1000) ** 2

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s, for the GPUs we report on.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "RTX 4090": 165e12}


def child(args: argparse.Namespace) -> None:
    import resource

    import torch

    from engine.crossearth import deform_attn
    from engine.crossearth.model import CrossEarth
    from engine.crossearth.presets import architecture_config

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = architecture_config(args.child, num_classes=6)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = CrossEarth(config)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.02)
    model.eval()
    spent = {"msda": 0.0}
    original = deform_attn.multi_scale_deformable_attention

    def timed(*a, **k):  # time inside deformable attention (synchronised on CUDA)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = original(*a, **k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        spent["msda"] += time.perf_counter() - start
        return out

    deform_attn.multi_scale_deformable_attention = timed
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    forward = torch.compile(model) if args.compile else model

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
        ):
            forward(x).float().sum().item()

    run()  # warm-up (and compilation)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    spent["msda"] = 0.0
    start = time.perf_counter()
    for _ in range(args.repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / (args.repeats * args.batch)
    flops = None
    if device.type == "cuda" and not args.compile:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            run()
        flops = counter.get_total_flops() / args.batch
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    print(
        json.dumps(
            {
                "seconds_per_tile": seconds,
                "msda_share": spent["msda"] / (seconds * args.repeats * args.batch),
                "peak_mb": peak,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "flops_per_tile": flops,
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", default="tiny,vit-ti,vit-s,vit-l-512")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma-separated fp32, bf16, fp16 (default: fp32 on CPU, all three on CUDA)",
    )
    parser.add_argument("--compile", action="store_true", help="also run torch.compile")
    parser.add_argument(
        "--channels-last", action="store_true", help="also run in channels-last memory format"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    default = "fp32,bf16,fp16" if args.device.startswith("cuda") else "fp32"
    precisions = (args.precisions or default).split(",")
    unknown = sorted(set(precisions) - {"fp32", "bf16", "fp16"})
    if unknown:
        parser.error(f"unknown precision(s) {', '.join(unknown)}; use fp32, bf16, fp16")
    runs = [(p, False, False) for p in precisions]
    if args.compile:
        runs += [(p, True, False) for p, _, _ in list(runs)]
    if args.channels_last:
        runs += [(p, c, True) for p, c, _ in list(runs)]
    print(f"device {args.device}, {args.size} x {args.size} tiles, batch {args.batch}")
    header = (
        f"{'preset':<10} {'mode':<15} {'s/tile':>8} {'tiles/s':>8} {'vs first':>8} "
        f"{'MSDA %':>7} {'peak MB':>8} {'params M':>8} {'km2/s*':>7}"
    )
    print(header + ("  % peak FLOP/s" if args.device.startswith("cuda") else ""))
    print("  * km2/s at 0.3 m pixels with 512 px tiles at stride 341 (one tile per 341^2 px)")
    baseline = None
    for preset in args.presets.split(","):
        for precision, compiled, channels_last in runs:
            command = [
                sys.executable,
                __file__,
                "--child",
                preset,
                "--device",
                args.device,
                "--size",
                str(args.size),
                "--batch",
                str(args.batch),
                "--repeats",
                str(args.repeats),
                "--precision",
                precision,
            ]
            if args.threads:
                command += ["--threads", str(args.threads)]
            if compiled:
                command.append("--compile")
            if channels_last:
                command.append("--channels-last")
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                print(
                    f"{preset:<10} {precision:<12} failed: "
                    f"{result.stderr.strip().splitlines()[-1:]}"
                )
                continue
            r = json.loads(result.stdout.strip().splitlines()[-1])
            rate = 1 / r["seconds_per_tile"]
            baseline = baseline or rate
            mode = precision + (" compiled" if compiled else "") + (" CL" if channels_last else "")
            line = (
                f"{preset:<10} {mode:<15} {r['seconds_per_tile']:8.3f} {rate:8.2f} "
                f"{rate / baseline:8.3f} {100 * r['msda_share']:6.1f}% {r['peak_mb']:8.0f} "
                f"{r['params_m']:8.1f} {rate * KM2_PER_TILE:7.3f}"
            )
            if r["flops_per_tile"] and r["gpu"]:
                peak = next((v for k, v in GPU_PEAK_FLOPS.items() if k in r["gpu"]), None)
                if peak:
                    line += f"  {100 * r['flops_per_tile'] * rate / peak:5.1f}% of {r['gpu']}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
