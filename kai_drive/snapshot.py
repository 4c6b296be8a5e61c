"""Picture of an env: chase camera, the agent's camera and a lidar plot, side by side.

    python -m kai_drive.snapshot --env lane-keep --seed 0 --steps 40 --out docs/images/lane-keep.png

The car is driven by a simple scripted lane follower (privileged Frenet info, for the picture only)
for ``--steps`` control steps before the picture is taken.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def lane_follower(info: dict) -> np.ndarray:
    """Proportional lane follower on the env's info (for pictures and smoke tests only)."""
    steer = -0.6 * info.get("lateral_offset_m", 0.0) - 1.5 * info.get("heading_error_rad", 0.0)
    throttle = 0.4 if info.get("speed_mps", 0.0) < 10.0 else 0.0
    return np.clip(np.array([steer, throttle], dtype=np.float32), -1, 1)


def snapshot(env_name: str, seed: int, steps: int, out: str, config: dict | None = None) -> str:
    import gymnasium
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import kai_drive  # noqa: F401
    from kai_drive.catalog import resolve_env

    env_id, alias = resolve_env(env_name)
    env = gymnasium.make(env_id, render_mode="rgb_array", config=config or {})
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        obs, _, term, trunc, info = env.step(lane_follower(info))
        if term or trunc:
            break
    chase = env.render()
    agent_view = obs["camera"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    axes[0].imshow(chase)
    axes[0].set_title("chase camera (render)")
    axes[1].imshow(agent_view, interpolation="nearest")
    axes[1].set_title(f"agent camera {agent_view.shape[1]}x{agent_view.shape[0]}")
    for ax in axes[:2]:
        ax.axis("off")
    lidar = env.unwrapped.sensors[[type(s).__name__ for s in env.unwrapped.sensors].index("Lidar")]
    rng_m = obs["lidar"] * lidar.spec.range_m
    ang = lidar.angles
    ax = axes[2]
    ax.scatter(rng_m * np.sin(ang) * -1, rng_m * np.cos(ang), s=8, c=obs["lidar"], cmap="viridis_r")
    ax.add_patch(plt.Rectangle((-0.9, -2.25), 1.8, 4.5, color="tab:blue"))
    ax.set_aspect("equal")
    ax.set_xlim(-lidar.spec.range_m / 2, lidar.spec.range_m / 2)
    ax.set_ylim(-lidar.spec.range_m / 2, lidar.spec.range_m)
    ax.set_title(f"lidar {len(ang)} beams (car frame, forward up)")
    ax.set_xlabel("right  [m]")
    ax.set_ylabel("forward  [m]")
    fig.suptitle(f"{env_id} — seed {seed}, step {steps}, speed {info.get('speed_mps', 0):.1f} m/s")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.snapshot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="lane-keep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="snapshot.png")
    args = ap.parse_args(argv)
    print(snapshot(args.env, args.seed, args.steps, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
