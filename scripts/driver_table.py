"""One markdown table per evaluated driver: every condition of a suite's result.json, beside its baselines.

    python scripts/driver_table.py runs/s8/eval-follow-quick/result.json [more result.json ...]

For each result file (``python -m kai_drive.evaluate ... --out DIR`` writes ``DIR/result.json``):

* safety (full episodes) and the ``stop`` / ``constant`` baselines on the same seeds: success, collisions,
  lane invasions (episodes with at least one), route completion, driving score, min TTC;
* every robustness condition (clean re-run and each shift / fault / attack, on the same seeds, episodes cut
  at the suite's horizon, so success there means "finished within the horizon"): **failure** (collision,
  off-road or a lane invasion; in an env that allows lane changes, e.g. highway, collision or off-road) with its
  Wilson 95 % interval, route completion and driving score within
  the horizon, min TTC;
* the causal verdicts.

Rates: count/n [Wilson 95 %]; means: mean [bootstrap 95 %] (kai_drive.stats).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kai_drive.files import read_json
from kai_drive.stats import rate, summarize


def _rate(flags) -> str:
    r = rate(flags)
    lo, hi = r["ci95"]
    return f"{r['count']}/{r['n']} [{100 * lo:.0f}, {100 * hi:.0f}] %"


def _mean(values) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    s = summarize(vals)
    lo, hi = s["mean_ci95"]
    return f"{s['mean']:.2f} [{lo:.2f}, {hi:.2f}]"


def _failed(ep: dict, lane_changes: bool) -> bool:
    lane = bool(ep.get("lane_invasion_events", 0)) and not lane_changes
    return bool(ep.get("collision", 0) or ep.get("off_road", 0) or lane)


def lane_changes_allowed(d: dict) -> bool:
    """True when the evaluated env lets the car change lanes (``task.terminate_on_lane_invasion: false``, e.g.
    highway): a lane invasion is then a lane change, not a failure."""
    from kai_drive.catalog import env_yaml
    from kai_drive.specs import load_env_spec

    task = load_env_spec(env_yaml(d["env_id"]), d.get("env_config") or {}).task
    return not getattr(task, "terminate_on_lane_invasion", True)


def _row(name: str, eps: list[dict], failure: bool = False, lane_changes: bool = False) -> str:
    col = lambda k: [e.get(k) for e in eps]  # noqa: E731
    first = _rate([_failed(e, lane_changes) for e in eps]) if failure else _rate(col("success"))
    return (f"| {name} | {first} | {_rate(col('collision'))} | {_rate([bool(e.get('lane_invasion_events')) for e in eps])} "
            f"| {_mean(col('route_completion'))} | {_mean(col('driving_score'))} | {_mean(col('min_ttc_s'))} |")


def table(path: Path) -> str:
    d = read_json(path)
    out = [f"### `{d['policy']}` on `{d['env_id']}` (suite `{d['suite']}`)", "",
           f"`{d.get('command', '')}` · {d.get('created', '')} · {(d.get('wall_s') or {}).get('total', 0):.0f} s", ""]
    if "safety" in d:
        out += ["| policy (full episodes) | success | collision | lane invasion | route completion | driving score | min TTC (s) |",
                "|---|---|---|---|---|---|---|", _row(f"**{d['policy']}**", d["safety"]["per_episode"])]
        for name, base in (d.get("baselines") or {}).items():
            if isinstance(base, dict) and "per_episode" in base:
                out.append(_row(f"`{name}`", base["per_episode"]))
        out.append("")
    rob = d.get("robustness") or {}
    conds = [k for k, v in rob.items() if isinstance(v, dict) and "per_episode" in v]
    if conds:
        lanes = lane_changes_allowed(d)
        failure = "failure (collision or off-road; lane changes allowed here)" if lanes else \
            "failure (collision, off-road or lane invasion)"
        out += [f"Robustness (same seeds, episodes cut at {rob.get('horizon_s')} s):", "",
                f"| condition | {failure} | collision | lane invasion | route completion | driving score | min TTC (s) |",
                "|---|---|---|---|---|---|---|"]
        out += [_row(c, rob[c]["per_episode"], failure=True, lane_changes=lanes) for c in conds]
        out.append("")
    causal = d.get("causal") or {}
    verdicts = [(k, v.get("verdict")) for k, v in (causal.get("interventions") or causal).items()
                if isinstance(v, dict) and v.get("verdict")]
    if verdicts:
        out += ["Causal verdicts: " + "; ".join(f"{k}: {v}" for k, v in verdicts), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="result.json files of kai_drive.evaluate")
    args = ap.parse_args(argv)
    np.seterr(all="ignore")
    print("\n".join(table(p) for p in args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
