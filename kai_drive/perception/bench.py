"""Encoder throughput (frames/s) at several batch sizes, on cpu and on cuda when present.

    python -m kai_drive.perception.bench                       # lane-keep spec, batches 1..256
    python -m kai_drive.perception.bench --batches 1 16 256 --seconds 2 --fusion attention --json out.json

Frames/s = batch x forward passes per second, inference only (``torch.no_grad``, eval mode), inputs
already on the device as uint8 (the EncodedVecEnv path). Machine load changes the figures: record it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import gymnasium
import numpy as np
import torch

import kai_drive  # noqa: F401  (registers the envs)
from kai_drive.catalog import resolve_env
from kai_drive.perception.encoders import MultiModalEncoder


def bench_encoder(encoder, space, batches=(1, 4, 16, 64, 256), device="cpu", seconds: float = 1.0) -> dict[int, float]:
    """``{batch: frames_per_s}`` of ``encoder`` on ``device``."""
    encoder = encoder.to(device).eval()
    out: dict[int, float] = {}
    space.seed(0)
    for b in batches:
        obs = {}
        for k in encoder.keys:
            sp = space.spaces[k]
            if np.issubdtype(sp.dtype, np.integer):
                obs[k] = torch.randint(0, 256, (b, *sp.shape), dtype=torch.uint8, device=device)
            else:
                obs[k] = torch.rand((b, *sp.shape), device=device)
        with torch.no_grad():
            encoder(obs)  # warm-up
            if device != "cpu":
                torch.cuda.synchronize()
            n, t0 = 0, time.perf_counter()
            while True:
                encoder(obs)
                n += 1
                if device != "cpu":
                    torch.cuda.synchronize()
                if time.perf_counter() - t0 >= seconds and n >= 3:
                    break
        out[b] = b * n / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.perception.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="lane-keep")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per batch size")
    ap.add_argument("--fusion", default="concat", choices=["concat", "attention"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = gymnasium.make(resolve_env(args.env)[0])
    space = env.observation_space
    env.close()
    enc = MultiModalEncoder(space, {"fusion": args.fusion})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    res = {"env": args.env, "fusion": args.fusion, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": f"{platform.processor() or platform.machine()}",
           "date": time.strftime("%Y-%m-%d"), "frames_per_s": {}}
    for dev in devices:
        res["frames_per_s"][dev if dev == "cpu" else torch.cuda.get_device_name(0)] = bench_encoder(
            enc, space, args.batches, dev, args.seconds)
    print("| device | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|" + "---:|" * len(args.batches))
    for dev, row in res["frames_per_s"].items():
        print(f"| {dev} | " + " | ".join(f"{row[b]:,.0f}" for b in args.batches) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
