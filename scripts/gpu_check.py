"""GPU check: what a machine with an NVIDIA GPU changes (run by scripts/gpu_check.sh, < 8 minutes).

1. env speed of lane-keep (camera + lidar + state) with TinyRenderer vs the EGL renderer;
2. EGL images under a light change: does EGL honour PyBullet's light arguments? (kai-drive refuses a
   non-default light factor under EGL because it did not; this measures it again);
3. encoder throughput (frames/s) on cuda, batch 1..4096;
4. 20k steps of the default lane-keep training on cuda, with its held-out evaluation.

Writes one JSON (``--out``, default gpu_check.json) and prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def env_speed(renderer: str, seconds: float) -> dict:
    import gymnasium

    import kai_drive  # noqa: F401

    try:
        env = gymnasium.make("KaiDrive/LaneKeep-v0", config={"world.renderer": renderer})
    except RuntimeError as exc:  # EGL did not load: the reason is in the message
        return {"renderer": renderer, "error": str(exc)}
    resolved = env.unwrapped.renderer
    env.reset(seed=0)
    env.action_space.seed(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        n += 1
        if term or trunc:
            env.reset()
    rate = n / (time.perf_counter() - t0)
    env.close()
    return {"renderer": resolved, "steps_per_s": rate, "steps": n}


def light_change(renderer: str) -> dict:
    """Mean |pixel difference| of one camera view with and without a dim warm light under ``renderer``
    (TinyRenderer honours the light; the question is whether EGL does)."""
    import gymnasium

    import kai_drive  # noqa: F401
    from kai_drive.sensors.camera import full_light

    dim = full_light({"lightAmbientCoeff": 0.27, "lightDiffuseCoeff": 0.16, "lightColor": [1.0, 0.75, 0.55],
                      "lightDirection": [60.0, -40.0, 40.0]})
    try:
        env = gymnasium.make("KaiDrive/LaneKeep-v0", config={"world.renderer": renderer})
    except RuntimeError as exc:
        return {"error": str(exc)}
    u = env.unwrapped
    env.reset(seed=0)
    cam = u.sensors[0]
    mount = u.task.sensor_mount(u.world)
    base = np.asarray(cam.capture(u.world, mount)[0], dtype=np.float32)
    cam.set_light(dim)
    shifted = np.asarray(cam.capture(u.world, mount)[0], dtype=np.float32)
    refused = None
    try:
        env.reset(seed=0, options={"scenario": {"light": {"intensity": 0.45}}})
    except ValueError as exc:
        refused = str(exc)
    out = {"renderer": u.renderer, "mean_abs_pixel_change": float(np.abs(base - shifted)[..., :3].mean()),
           "light_factor_refused": refused}
    env.close()
    return out


def isolated(part: str, out_dir: Path, *args: str) -> dict:
    """Run one part in a subprocess: a renderer crash (PyBullet's EGL plugin has segfaulted on Mesa's
    software EGL) is recorded instead of ending the whole check."""
    path = out_dir / f"{part}.json"
    try:
        proc = subprocess.run([sys.executable, __file__, "--part", part, "--part-out", str(path), *args],
                              capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return {"error": "no answer within 180 s"}
    if proc.returncode != 0 or not path.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        return {"error": f"exit code {proc.returncode}", "output_tail": tail}
    return json.loads(path.read_text())


def encoder_throughput(out_dir: Path) -> dict:
    path = out_dir / "encoder.json"
    subprocess.run([sys.executable, "-m", "kai_drive.perception.bench", "--batches", "1", "4", "16", "64", "256",
                    "1024", "4096", "--seconds", "1", "--json", str(path)], check=True)
    return json.loads(path.read_text())


def train_cuda(out_dir: Path, timesteps: int) -> dict:
    t0 = time.perf_counter()
    log = out_dir / "train.log"
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "kai_drive.train", "--env", "lane-keep", "--device", "cuda",
                             "--timesteps", str(timesteps), "--final-eval", "20", "--no-progress",
                             "--log-folder", str(out_dir / "runs")], stdout=f, stderr=subprocess.STDOUT).returncode
    res = {"returncode": rc, "wall_s": time.perf_counter() - t0, "timesteps": timesteps, "log": str(log)}
    for p in (out_dir / "runs").rglob("final_eval.json"):
        res["final_eval"] = json.loads(p.read_text())
    for p in (out_dir / "runs").rglob("status.json"):
        res["status"] = json.loads(p.read_text())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and logs")
    ap.add_argument("--seconds", type=float, default=20.0, help="timing per renderer")
    ap.add_argument("--timesteps", type=int, default=20_000)
    ap.add_argument("--part", choices=["tiny", "egl", "light_tiny", "light_egl"], help=argparse.SUPPRESS)
    ap.add_argument("--part-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:  # one isolated part (see isolated())
        if args.part.startswith("light_"):
            res = light_change(args.part.removeprefix("light_"))
        else:
            res = env_speed(args.part, args.seconds)
        Path(args.part_out).write_text(json.dumps(res))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(), "python": sys.version.split()[0],
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    res["env_speed"] = [dict(isolated(r, out, "--seconds", str(args.seconds)), requested=r) for r in ("tiny", "egl")]
    res["light_change"] = {r: isolated(f"light_{r}", out) for r in ("tiny", "egl")}
    res["encoder"] = encoder_throughput(out)
    res["train_cuda"] = train_cuda(out, args.timesteps)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str))

    print(f"\n## GPU check {res['date']} on {res['gpu']} (torch {res['torch']})\n")
    print("| check | result |\n|---|---|")
    for s in res["env_speed"]:
        got = f"{s['steps_per_s']:.0f} (renderer {s['renderer']})" if "steps_per_s" in s else f"failed: {s}"
        print(f"| lane-keep steps/s, renderer {s['requested']} asked | {got} |")
    for r, v in res["light_change"].items():
        got = f"{v['mean_abs_pixel_change']:.1f}" if "mean_abs_pixel_change" in v else f"failed: {v}"
        print(f"| light change under {r} asked: mean pixel change (0..255) | {got} |")
    for dev, row in res["encoder"]["frames_per_s"].items():
        print(f"| encoder frames/s on {dev} | " + ", ".join(f"b{b}: {x:,.0f}" for b, x in row.items()) + " |")
    t = res["train_cuda"]
    fe = t.get("final_eval", {})
    print(f"| 20k-step training on cuda | rc {t['returncode']}, {t['wall_s']:.0f} s, "
          f"held-out success {fe.get('success_rate', fe.get('successes', '?'))} |")
    print(f"\nJSON: {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
