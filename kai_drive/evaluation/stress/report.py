"""Writes a stress test: ``failures/*.json`` (one scenario record per failure, replayable), ``result.json``
(schema ``kai-drive-stress/1``), ``failure_map.png`` over the two most influential factors, a GIF per
analysed failure mode, and ``report.md``."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kai_drive.evaluation.report import to_jsonable
from kai_drive.evaluation.rollout import rollout

__all__ = ["write_stress_outputs"]


def _episodes_table(res: dict) -> list[dict]:
    found = res["_search"]
    x = found.space.to_x(found.z) if len(found.episodes) else np.zeros((0, found.space.dim))
    return [{"seed": e["seed"], "phase": found.phase[i], "outcome": e["outcome"], "severity": e["severity"],
             "min_ttc_s": e["min_ttc_s"], "max_abs_lateral_m": e["max_abs_lateral_m"],
             "factors": dict(zip(found.space.names, x[i].tolist()))} for i, e in enumerate(found.episodes)]


def _failure_files(res: dict, out: Path) -> list[str]:
    found = res["_search"]
    (out / "failures").mkdir(parents=True, exist_ok=True)
    names = []
    for f in res["failure_list"]:
        name = f"failures/{f['index']:04d}_{f['outcome'].replace(':', '-')}.json"
        doc = {"env_id": res["env_id"], "env_config": res["env_config"], "policy": res["policy"],
               "outcome": f["outcome"], "steps": found.episodes[f["index"]]["steps"],
               "max_steps": res["config"]["max_steps"], "mode": f["mode"], "log_likelihood": f["log_likelihood"],
               "factors": f["factors"], "scenario": found.episodes[f["index"]]["record"],
               "replay": "env.reset(options={'scenario': doc['scenario']}) (or python -m kai_drive.stress --replay FILE --policy P)"}
        (out / name).write_text(json.dumps(to_jsonable(doc), indent=1))
        names.append(name)
    return names


def _failure_map(res: dict, out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = res["_search"]
    if found.space.dim < 1 or not found.episodes:
        return None
    names = res["most_influential"] if found.space.dim > 1 else res["most_influential"] * 2
    idx = [found.space.names.index(n) for n in names]
    x = found.space.to_x(found.z)
    failed = np.asarray([e["failed"] for e in found.episodes], bool)
    sev = np.asarray([e["severity"] for e in found.episodes], float)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    sc = ax.scatter(x[~failed, idx[0]], x[~failed, idx[1]], c=sev[~failed], cmap="viridis", vmin=0, vmax=1, s=14,
                    label="no failure (colour: severity)")
    ax.scatter(x[failed, idx[0]], x[failed, idx[1]], marker="x", c="red", s=30, label="failure")
    for m in res["modes"]:
        r = m["representative"]
        ax.annotate(f"mode {m['mode']}", (x[r, idx[0]], x[r, idx[1]]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    f0, f1 = found.space.factors[idx[0]], found.space.factors[idx[1]]
    ax.set_xlim(f0.low, f0.high)
    ax.set_ylim(f1.low, f1.high)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"{res['env_alias']}, {res['policy']}: {res['failures']} failures in {res['episodes']} episodes")
    fig.colorbar(sc, ax=ax, label="severity")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "failure_map.png", dpi=100)
    plt.close(fig)
    return "failure_map.png"


def _gifs(res: dict, out: Path, size: tuple[int, int] = (128, 96), every: int = 2, n_frames: int = 40) -> dict[int, str]:
    import imageio.v2 as imageio

    found = res["_search"]
    gifs = {}
    env = None
    for m in res["modes"]:
        if "replay" not in m:
            continue
        env = env or res["_make_env"]()
        ep = found.episodes[m["representative"]]
        tr = rollout(env, res["_policy"], ep["seed"], ep["record"], max_steps=res["config"]["max_steps"],
                     frames_every=every, frame_size=size)
        name = f"mode{m['mode']}.gif"
        imageio.mimsave(out / name, tr.frames[-n_frames:], duration=every * res["dt_s"], loop=0)
        gifs[m["mode"]] = name
    if env is not None:
        env.close()
    return gifs


def _mode_lines(res: dict, gifs: dict[int, str]) -> list[str]:
    lines = ["## Failure modes", ""]
    if not res["modes"]:
        return lines + ["No failure found.", ""]
    for m in res["modes"]:
        lines.append(f"### Mode {m['mode']}: {m['outcome']}, {m['size']} failure(s)")
        lines.append("")
        lines.append(f"Most plausible member: episode {m['representative']} (road seed {m['representative_seed']}, "
                     f"log-likelihood {m['log_likelihood']:.2f}); factors: "
                     + ", ".join(f"`{k}` {v:.3g}" for k, v in m["factors"].items()))
        if "replay" in m:
            lines.append(f"Replay of its record: {m['replay']['outcome']} after {m['replay']['steps']} steps "
                         f"({'identical' if m['replay']['same'] else 'DIFFERENT'}).")
            sc = m["smallest_change"]
            best = sc["smallest"]
            if best is None:
                lines.append("No single factor moved to its median removes the failure.")
            else:
                lines.append(f"**Smallest single-factor change that removes it**: `{best['factor']}` "
                             f"{best['failure_value']:.3g} -> {best['changed_value']:.3g} ({best['change_sigma']:.2f} "
                             f"latent sd toward the median; {sc['episodes']} replays).")
            lines.append("")
            lines.append("| factor | failure value | median | removes it alone | smallest change (value, sd) |")
            lines.append("|---|---|---|---|---|")
            for r in sc["factors"]:
                ch = f"{r['changed_value']:.3g} ({r['change_sigma']:.2f})" if "changed_value" in r else "-"
                lines.append(f"| {r['factor']} | {r['failure_value']:.3g} | {r['median_value']:.3g} | "
                             f"{'yes' if r['removes_failure'] else 'no'} | {ch} |")
            if m.get("but_for"):
                lines.append("")
                lines.append("But-for causes (kai_drive.evaluation.causal.but_for, 1.5 s before the failure): "
                             + (", ".join(m["but_for"]["but_for_causes"]) or "none"))
            if m["mode"] in gifs:
                lines.append("")
                lines.append(f"![mode {m['mode']}]({gifs[m['mode']]})")
        lines.append("")
    return lines


def _markdown(res: dict, fig: str | None, gifs: dict[int, str], command: str | None) -> str:
    est = res.get("estimate")
    lines = [f"# Stress test: {res['policy']} on {res['env_id']}", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += [f"{res['created']}, {res['machine']}; {res['wall_s']['total']:.0f} s.", "",
              f"Method **{res['config']['method']}**, {res['episodes']} episodes ({res['search_episodes']} search), "
              f"seed {res['config']['seed']}; {len(res['factors'])} factors searched: "
              + ", ".join(f"`{f['name']}` [{f['low']:.3g}, {f['high']:.3g}]" for f in res["factors"]), "",
              "| episodes | failures | distinct failures | distinct per 100 episodes | modes | most influential |",
              "|---|---|---|---|---|---|",
              f"| {res['episodes']} | {res['failures']} | {res['distinct_failures']} | "
              f"{res['distinct_failures_per_100']:.1f} | {len(res['modes'])} | {', '.join(res['most_influential'])} |", "",
              "Outcomes: " + ", ".join(f"{k} {v}" for k, v in res["outcomes"].items()), ""]
    if est:
        lines += [f"**Failure probability under the nominal scenario distribution**: {est['p']:.4g} "
                  f"(95 % CI [{est['ci95'][0]:.4g}, {est['ci95'][1]:.4g}], {est['n']} episodes, {est['failures']} failures; "
                  f"{est['method']}).", ""]
    if fig:
        lines += ["## Failure map", "", f"![failure map]({fig})", ""]
    lines += _mode_lines(res, gifs)
    lines += ["Every failure's scenario record is in `failures/`; `reset(options={'scenario': record})` replays it.", ""]
    return "\n".join(lines)


def write_stress_outputs(res: dict, out_dir: str | Path, command: str | None = None, gifs: bool = True) -> dict[str, Any]:
    """Write everything into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    res["machine"] = f"{platform.machine()}, {platform.system()}, python {platform.python_version()}"
    res["command"] = command
    files = _failure_files(res, out)
    fig = _failure_map(res, out)
    vids = _gifs(res, out) if gifs else {}
    doc = to_jsonable({k: v for k, v in res.items() if not k.startswith("_")})
    doc["episode_list"] = to_jsonable(_episodes_table(res))
    (out / "result.json").write_text(json.dumps(doc, indent=1))
    (out / "report.md").write_text(_markdown(res, fig, vids, command))
    return {"result": out / "result.json", "report": out / "report.md", "failures": files, "figure": fig, "gifs": vids}
