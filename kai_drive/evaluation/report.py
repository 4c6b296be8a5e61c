"""Writes an evaluation result: ``result.json`` (schema ``kai-drive-eval/1``), ``report.md`` with
matplotlib figures, GIFs of the worst episodes, and optionally TensorBoard scalars."""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kai_drive.metrics import family_of

__all__ = ["write_outputs", "to_jsonable"]


def to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    return x


def _fmt(s: dict | None, key: str = "mean", digits: int = 2) -> str:
    if not s or s.get(key) is None:
        return "n/a"
    ci = s.get(f"{key}_ci95") if key in ("mean", "iqm") else s.get("ci95")
    v = s[key]
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{v:.{digits}f}"


def _rate(s: dict | None) -> str:
    if not s or s.get("rate") is None:
        return "n/a"
    return f"{s['count']}/{s['n']} = {100 * s['rate']:.0f} % [{100 * s['ci95'][0]:.0f}, {100 * s['ci95'][1]:.0f}]"


def _ate(e: dict | None, digits: int = 2) -> str:
    if not e or e.get("ate") is None:
        return "n/a"
    star = " *" if e.get("significant") else ""
    return f"{e['ate']:+.{digits}f} [{e['ci95'][0]:+.{digits}f}, {e['ci95'][1]:+.{digits}f}]{star}"


def _figures(res: dict, out: Path) -> list[tuple[str, str]]:
    """``[(caption, file)]`` of the figures written to ``out``: safety, robustness, causal, attribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [_safety_figure(plt, res, out)]
    for draw in (_robustness_figure, _causal_figure, _attribution_figure):
        fig = draw(plt, res, out)
        if fig is not None:
            figs.append(fig)
    return figs


def _safety_figure(plt: Any, res: dict, out: Path) -> tuple[str, str]:
    per = res["safety"]["per_episode"]
    keys = [k for k in ("driving_score", "route_completion", "min_ttc_s", "comfort_frac") if k in per[0]]
    if not keys:
        keys = [k for k in ("success", "drops", "table_contacts", "peak_contact_force_n", "objects_out") if k in per[0]]
    fig, axs = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.6))
    axs = np.atleast_1d(axs)
    for ax, k in zip(axs, keys):
        v = np.asarray([e[k] for e in per], float)
        ax.scatter(np.random.default_rng(0).uniform(-0.15, 0.15, len(v)), v, s=12, alpha=0.7)
        s = res["safety"]["summary"][k]
        if s.get("mean") is not None:
            ax.errorbar([0.4], [s["mean"]], yerr=[[s["mean"] - s["mean_ci95"][0]], [s["mean_ci95"][1] - s["mean"]]], fmt="o", color="k", capsize=3, label="mean, 95% CI")
            ax.errorbar([0.6], [s["iqm"]], yerr=[[s["iqm"] - s["iqm_ci95"][0]], [s["iqm_ci95"][1] - s["iqm"]]], fmt="s", color="C3", capsize=3, label="IQM, 95% CI")
        elif s.get("rate") is not None:  # a rate: Wilson interval
            r, (lo, hi) = s["rate"], s["ci95"]
            ax.errorbar([0.4], [r], yerr=[[max(r - lo, 0.0)], [max(hi - r, 0.0)]], fmt="D", color="C2", capsize=3, label="rate, 95% CI")
        ax.set_xticks([])
        ax.set_title(k, fontsize=9)
    handles = {lab: h for ax in axs for h, lab in zip(*ax.get_legend_handles_labels())}
    if handles:
        axs[0].legend(handles.values(), handles.keys(), fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "safety.png", dpi=80)
    plt.close(fig)
    return "Safety: per-episode values, mean and IQM with 95 % bootstrap CIs", "safety.png"


def _robustness_figure(plt: Any, res: dict, out: Path) -> tuple[str, str] | None:
    rob = res.get("robustness") or {}
    score = family_of(res["env_id"]).score_key
    rows = [(n, c["drop"][score]) for n, c in rob.items() if isinstance(c, dict) and c.get("drop") and score in c["drop"]]
    rows = [(n, d) for n, d in rows if d.get("ate") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 0.45 * len(rows) + 1))
    y = np.arange(len(rows))
    ate = np.array([d["ate"] for _, d in rows])
    lo = np.array([d["ci95"][0] for _, d in rows])
    hi = np.array([d["ci95"][1] for _, d in rows])
    ax.errorbar(ate, y, xerr=[ate - lo, hi - ate], fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [n for n, _ in rows])
    ax.set_xlabel("change vs clean (paired, 95% CI)")
    ax.set_title("Robustness", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=80)
    plt.close(fig)
    what = "driving score" if score == "driving_score" else "success rate"
    return f"Robustness: change of the {what} vs clean (same seeds)", "robustness.png"


def _causal_figure(plt: Any, res: dict, out: Path) -> tuple[str, str] | None:
    inter = (res.get("causal") or {}).get("interventions") or {}
    rows = [(n, r) for n, r in inter.items() if r.get("n")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 0.45 * len(rows) + 1))
    for i, (n, r) in enumerate(rows):
        d = r["action_divergence"]
        col = "C0" if r["expect"] == "respond" else "C1"
        ax.errorbar([d["mean"]], [i], xerr=[[d["mean"] - d["mean_ci95"][0]], [d["mean_ci95"][1] - d["mean"]]], fmt="o", color=col, capsize=3)
    ax.axvline(float(res["suite_config"].get("causal", {}).get("min_action_effect", 0.02)), color="grey", ls="--", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{n} ({r['expect']})" for n, r in rows])
    ax.set_xlabel("effect on actions: mean |a_T - a_C|_1 (95% CI)")
    ax.set_title("Paired interventions (blue: should respond, orange: should ignore)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "causal.png", dpi=80)
    plt.close(fig)
    return "Causal: effect of each intervention on the policy's actions", "causal.png"


def _attribution_figure(plt: Any, res: dict, out: Path) -> tuple[str, str] | None:
    ex = {}
    for n, a in (res.get("attribution") or {}).items():
        if isinstance(a, dict) and a.get("_example"):
            ex = {"name": n, **a["_example"]}
            break
    if not ex:
        return None
    keys = [k for k in ("camera", "lidar") if k in ex]
    fig, axs = plt.subplots(1, 2 * len(keys), figsize=(3 * 2 * len(keys), 2.6))
    axs = np.atleast_1d(axs)
    for j, k in enumerate(keys):
        e = ex[k]
        if k == "camera":
            axs[2 * j].imshow(e["obs"])
            axs[2 * j + 1].imshow(e["attr"], cmap="magma")
            axs[2 * j + 1].contour(e["region"], levels=[0.5], colors="cyan", linewidths=0.8)
        else:
            axs[2 * j].plot(e["obs"], lw=1)
            axs[2 * j].set_ylabel("range (norm.)")
            axs[2 * j + 1].bar(np.arange(len(e["attr"])), e["attr"], color=np.where(e["region"], "C3", "C0"))
            axs[2 * j + 1].set_xlabel("beam (red: intervened object)")
        axs[2 * j].set_title(f"{k} (t={e['t_s']:.2f} s)", fontsize=8)
        axs[2 * j + 1].set_title(f"|IG| ({ex['name']})", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "attribution.png", dpi=80)
    plt.close(fig)
    return "Integrated gradients on the treatment arm; outlined/red: where the intervened object shows", "attribution.png"


def _worst_key(e: dict, family: str = "driving") -> tuple:
    """Sort key, worst first: driving by score, route completion, then min TTC; grasping by success, then drops,
    objects knocked out, table contacts and peak contact force (more is worse)."""
    if family == "driving":  # ties (e.g. every episode a success): the closest call first
        return (e["driving_score"], e.get("route_completion", 0), e.get("min_ttc_s", 0))
    return (e.get("success", 0), -e.get("drops", 0), -e.get("objects_out", 0), -e.get("table_contacts", 0),
            -e.get("peak_contact_force_n", 0))


def _videos(res: dict, out: Path, n: int, frames_every: int, size: tuple[int, int], make_env, policy,
            n_frames: int = 40) -> list[tuple[str, str]]:
    """Re-run the ``n`` worst episodes with the chase camera and save GIFs of their last ``n_frames`` frames."""
    import imageio.v2 as imageio

    from kai_drive.evaluation.rollout import rollout

    per = res["safety"]["per_episode"]
    fam = family_of(res["env_id"])
    key = fam.score_key
    worst = sorted(per, key=lambda e: _worst_key(e, fam.name))[:n]
    max_steps = None
    if res["suite_config"].get("max_episode_s"):
        max_steps = int(res["suite_config"]["max_episode_s"] / res["dt_s"])  # the episode as evaluated
    vids = []
    env = make_env()
    for e in worst:
        tr = rollout(env, policy, e["seed"], max_steps=max_steps, frames_every=frames_every, frame_size=size)
        frames = tr.frames[-n_frames:]  # the end of the episode, where it goes wrong
        name = f"worst_seed{e['seed']}.gif"
        imageio.mimsave(out / name, [f[::1, ::1] for f in frames], duration=frames_every * res["dt_s"], loop=0)
        extra = f", min TTC {e['min_ttc_s']:.1f} s" if key == "driving_score" and e.get("min_ttc_s") is not None else (
            f", peak contact force {e['peak_contact_force_n']:.1f} N" if "peak_contact_force_n" in e else "")
        vids.append((f"seed {e['seed']}: {e['outcome']}, {key} {e[key]:.2f}{extra}", name))
    env.close()
    return vids


def _baselines_table(res: dict) -> list[str]:
    """The policy beside the trivial baselines on the same seeds: a score that stop or constant earns rewards
    inaction (the "comfortably stuck" pitfall of closed-loop driving benchmarks)."""
    bls = res.get("baselines") or {}
    if not bls:
        return []
    s = res["safety"]["summary"]
    grasp = family_of(res["env_id"]).name == "grasp"
    L = [f"## Baselines (same {len(res['safety']['per_episode'])} seeds)\n",
         "Trivial policies beside the evaluated one: a threshold or score they pass rewards standing still or driving "
         "blindly, not driving.\n"]
    if grasp:
        L.append("| policy | success | drops | peak contact force (N) | objects out | thresholds |\n|---|---|---|---|---|---|")
    else:
        L.append("| policy | success | route completion | collision | lane invasions / episode | driving score | thresholds |"
                 "\n|---|---|---|---|---|---|---|")
    state = {True: "pass", False: "fail", None: "n/a"}

    def row(name: str, summ: dict, passed: bool | None) -> str:
        if grasp:
            cells = [_rate(summ.get("success")), _fmt(summ.get("drops")), _fmt(summ.get("peak_contact_force_n")),
                     _fmt(summ.get("objects_out"))]
        else:
            cells = [_rate(summ.get("success")), _fmt(summ.get("route_completion")), _rate(summ.get("collision")),
                     _fmt(summ.get("lane_invasion_events")), _fmt(summ.get("driving_score"))]
        return f"| {name} | " + " | ".join(cells) + f" | {state[passed]} |"

    L.append(row(f"**{res['policy']}** (evaluated)", s, res.get("passed")))
    for b, r in bls.items():
        L.append(row(f"`{b}`: {r['policy']}", r["summary"], r.get("passed")))
    L.append("")
    return L


def _header(res: dict, command: str | None) -> list[str]:
    L = [f"# Evaluation: `{res['policy']}` on `{res['env_id']}` (suite `{res['suite']}`)\n",
         f"{res.get('created', '')} · {res.get('machine', '')} · total {res['wall_s'].get('total', 0):.0f} s"
         + (f" · `{command}`" if command else "") + "\n"]
    ok = {True: "PASSED", False: "FAILED"}.get(res["passed"], "no thresholds apply (nothing checked; not passed)")
    def verdict(t: dict) -> str:
        return "ok" if t["passed"] else ("FAIL" if t["passed"] is False else t.get("note", "n/a"))

    if res.get("renderer"):
        L.append(f"Renderer: `{res['renderer']}`.\n")
    L.append(f"**Thresholds: {ok}** " + "; ".join(f"`{t['path']} {t['condition']}` (actual {t['actual'] if not isinstance(t['actual'], float) else round(t['actual'], 3)}): {verdict(t)}" for t in res["thresholds"]) + "\n")
    if res.get("execution", {}).get("backend") == "ray":
        ex = res["execution"]
        L.append(f"Episodes ran as Ray tasks ({ex.get('address')}, {ex.get('cluster_cpus', 0):.0f} CPUs); the numbers are those of a serial run.\n")
    return L


def _safety_table(res: dict) -> list[str]:
    s = res["safety"]["summary"]
    L = [f"## Safety ({len(res['safety']['per_episode'])} held-out seeds)\n",
         "Values: mean [95 % bootstrap CI]; rates: count/n [Wilson 95 % CI]; IQM in the JSON and the figure.\n",
         "| metric | value |\n|---|---|"]
    for k in ("success", "collision", "off_road", "comfortable", "within_budget"):
        if k in s:
            L.append(f"| {k} rate | {_rate(s[k])} |")
    for k in ("route_completion", "driving_score", "min_ttc_s", "ttc_exposed_s", "mean_headway_s", "comfort_frac",
              "max_abs_jerk_mps3", "cost", "drops", "table_contacts", "peak_contact_force_n", "objects_out"):
        if k in s and s[k].get("n"):
            L.append(f"| {k} | {_fmt(s[k])} (IQM {_fmt(s[k], 'iqm')}) |")
    for k, v in (s.get("per_km") or {}).items():
        if v.get("per_km") is not None:
            L.append(f"| {k} per km | {v['per_km']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] |")
    L.append("\nOutcomes: " + ", ".join(f"{k} {v}" for k, v in res["safety"]["outcomes"].items()) + "\n")
    return L


def _robustness_table(res: dict) -> list[str]:
    rob = res.get("robustness")
    if not rob:
        return []
    L = [f"## Robustness (same seeds, {rob.get('horizon_s', 0):.0f} s horizon; change vs clean, paired 95 % CI, * = CI excludes 0)\n"]
    grasp = family_of(res["env_id"]).name == "grasp"
    cols = (("success", "success"), ("drops", "drops"), ("peak_contact_force_n", "peak contact force (N)"),
            ("objects_out", "objects out")) if grasp else (
            ("driving_score", "driving score"), ("route_completion", "route completion"), ("collision", "collision"),
            ("min_ttc_s", "min TTC (s)"))
    L.append("| condition | " + " | ".join(c for _, c in cols) + " |\n|---|" + "---|" * len(cols))
    for n, c in rob.items():
        if n in ("clean", "horizon_s"):
            continue
        if "note" in c:
            L.append(f"| {n} | {c['note']} |" + " |" * (len(cols) - 1))
            continue
        d = c["drop"]
        L.append(f"| {n} | " + " | ".join(_ate(d.get(k)) for k, _ in cols) + " |")
    L.append("")
    return L


def _modality_only(cau: dict) -> list[str]:
    """A causal section without interventions (e.g. grasping): modality reliance only."""
    mod = cau.get("modality") or {}
    if not mod or "note" in mod:
        return []
    L = ["## Causal: modality reliance\n\n| sensor removed | action change at the same states mean abs delta a | success change (robustness) |\n|---|---|---|"]
    for k, v in mod.items():
        L.append(f"| {k} | {_fmt(v['action_change'], digits=3)} | {_ate(v.get('outcome_drop'))} |")
    return L


def _causal_tables(cau: dict) -> list[str]:
    L = [f"## Causal: paired interventions ({cau['horizon_s']:.0f} s per arm)\n",
         "Effects are treatment − control on the same seed (paired bootstrap 95 % CI; * = excludes 0).\n",
         "| factor | expect | action effect mean abs delta a | braking onset (s) | mean throttle | collision | min TTC (s) | verdict |\n|---|---|---|---|---|---|---|---|"]
    for n, r in cau["interventions"].items():
        if not r.get("n"):
            L.append(f"| {n} | {r['expect']} | {r.get('note', 'n/a')} | | | | | |")
            continue
        e = r["effects"]
        L.append(f"| {n} | {r['expect']} | {_fmt(r['action_divergence'], digits=3)} | {_ate(e['braking_onset_s'])} | {_ate(e['mean_throttle'])} | {_ate(e['collision'])} | {_ate(e['min_ttc_s'])} | **{r['verdict']}** |")
    watched = [n for n, r in cau["interventions"].items() if r.get("responds")]
    wrong = [n for n, r in cau["interventions"].items() if r.get("n") and r.get("responds") != (r["expect"] == "respond")]
    L.append(f"\nThe policy responds to: {', '.join(watched) or 'none'}. "
             + (f"Not as a sound driver would: {', '.join(wrong)}." if wrong else "Every factor as a sound driver would."))
    mod = cau.get("modality") or {}
    if mod and "note" not in mod:
        L.append("\n### Modality reliance\n\n| sensor removed | action change at the same states mean abs delta a | driving-score change (robustness) |\n|---|---|---|")
        for k, v in mod.items():
            L.append(f"| {k} | {_fmt(v['action_change'], digits=3)} | {_ate(v.get('outcome_drop'))} |")
    elif mod:
        L.append(f"\nModality reliance: {mod['note']}")
    L.append(f"\n### But-for failure attribution ({cau.get('failed_episodes', 0)} failed episodes; first {len(cau.get('but_for', []))})\n")
    if not cau.get("but_for"):
        L.append("No failed episode to attribute.")
    for b in cau.get("but_for", []):
        L.append(f"- seed {b['seed']}: {b['failure']} at {b['failure_t_s']:.1f} s; branch at {b['branch_t_s']:.1f} s. "
                 f"Averted by removing: {', '.join(b['but_for_causes']) or 'no single candidate'}. "
                 + "; ".join(f"{r['cause']} -> {r['outcome']}{'' if r['history_consistent'] else ' (history diverged)'}" for r in b["causes"]))
    return L


def _attribution_table(att: dict, cau: dict | None) -> list[str]:
    L = ["\n## Attribution (integrated gradients) vs intervention effects\n"]
    if "note" in att:
        L.append(att["note"])
        return L
    L.append("RAM = relative attribution mass on the intervened object (1 = no concentration). A factor with an action effect should have RAM > 1.\n")
    L.append("| factor | action effect | camera RAM | lidar RAM |\n|---|---|---|---|")
    for n, a in att.items():
        r = cau["interventions"].get(n, {})
        L.append(f"| {n} | {_fmt(r.get('action_divergence'), digits=3)} | {_fmt(a.get('camera'))} | {_fmt(a.get('lidar'))} |")
    return L


def _markdown(res: dict, figs: list, vids: list, command: str | None) -> str:
    L = _header(res, command) + _safety_table(res) + _baselines_table(res) + _robustness_table(res)
    cau = res.get("causal")
    if cau and "interventions" not in cau:
        L.extend(_modality_only(cau))
        cau = None
    if cau:
        L.extend(_causal_tables(cau))
    att = res.get("attribution")
    if att:
        L.extend(_attribution_table(att, cau))
    if figs:
        L.append("\n## Figures\n")
        for cap, f in figs:
            L.append(f"![{cap}]({f})\n\n*{cap}*\n")
    if vids:
        L.append("## Worst episodes\n")
        for cap, f in vids:
            L.append(f"![{cap}]({f}) {cap}\n")
    for n in res.get("notes", []):
        L.append(f"\nNote: {n}")
    return "\n".join(L) + "\n"


def write_outputs(res: dict, out_dir: str | Path, make_env=None, policy=None, command: str | None = None,
                  videos: int | None = None, tensorboard: bool = False, video_size: tuple[int, int] | None = None,
                  video_frames: int | None = None) -> dict[str, Path]:
    """Write ``result.json``, ``report.md``, figures and GIFs into ``out_dir``; returns the paths.

    ``videos`` GIFs of the worst episodes (default: the suite's ``report.videos``), each the last
    ``video_frames`` (default 40) chase-camera frames of ``video_size`` (default ``report.frame_size``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res.setdefault("created", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    res.setdefault("machine", f"{platform.machine()} {platform.system()}, {__import__('os').cpu_count()} CPU cores")
    if command:
        res["command"] = command
    figs = _figures(res, out)
    rep = res["suite_config"].get("report") or {}
    n_vid = int(rep.get("videos", 2) if videos is None else videos)
    vids = []
    if n_vid > 0 and make_env is not None and policy is not None:
        size = tuple(video_size or rep.get("frame_size", (128, 96)))
        vids = _videos(res, out, n_vid, int(rep.get("frames_every", 3)), size, make_env, policy,
                       int(video_frames or rep.get("frames", 40)))
    (out / "result.json").write_text(json.dumps(to_jsonable(res), indent=1))
    (out / "report.md").write_text(_markdown(res, figs, vids, command))
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        w = SummaryWriter(str(out / "tb"))
        for k, v in res["safety"]["summary"].items():
            val = v.get("mean", v.get("rate")) if isinstance(v, dict) else None
            if isinstance(val, (int, float)):
                w.add_scalar(f"eval/safety/{k}", val, 0)
        for n, c in (res.get("robustness") or {}).items():
            d = (c.get("drop") or {}).get("driving_score") if isinstance(c, dict) else None
            if d and d.get("ate") is not None:
                w.add_scalar(f"eval/robustness/{n}", d["ate"], 0)
        for n, r in ((res.get("causal") or {}).get("interventions") or {}).items():
            if r.get("n"):
                w.add_scalar(f"eval/causal/{n}", r["action_divergence"]["mean"], 0)
        w.close()
    return {"json": out / "result.json", "report": out / "report.md"}
