"""Run a :class:`kai_drive.distributed.sweep.plan.SweepPlan` (on Ray Tune, or serially in this process) and
write the summary.

Sweep folder (``runs/sweeps/<name>/``)::

    sweep.json            the command (what --resume re-reads), the engine, what made it (sweep / ablation)
    runs/<trial>/         each trial's --log-folder: <alias>/<algo>_1/ (a normal run folder), train.log, trial.json
    <trial>/              Ray Tune's own trial records (result.json, params.json)        (Ray engine only)
    tuner.pkl, experiment_state-*.json, ...   Ray Tune's experiment state (Tuner.restore)   (Ray engine only)
    summary.json, summary.md   per configuration: success rate / return over seeds (mean, IQM, 95 % CIs)
    best_recipe.yaml      the best configuration's recipe, keyed by env id (kai_drive.train --recipe)
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kai_drive.distributed.cluster import ray_session, resolve_address
from kai_drive.distributed.sweep.trial import run_trial, train_trial, trial_folder, trial_name, trial_overrides
from kai_drive.stats import aggregate
from kai_drive.training.runs import RunFolder, write_json, write_text


def _resources(plan: Any, cluster: dict) -> dict[str, float]:
    cpus_total = float(cluster.get("CPU", 1.0))
    gpus_total = float(cluster.get("GPU", 0.0))
    cpus = plan.cpus_per_trial if plan.cpus_per_trial is not None else min(plan.default_cpus, cpus_total)
    if cpus > cpus_total:
        print(f"warning: --cpus-per-trial {cpus:g} > the cluster's {cpus_total:g} CPUs; trials wait for a bigger node",
              file=sys.stderr)
    if plan.gpus_per_trial is not None:
        gpus = plan.gpus_per_trial
    elif gpus_total > 0:
        fit = max(1, int(cpus_total // cpus))
        gpus = math.floor(min(1.0, gpus_total / fit) * 1e4) / 1e4
    else:
        gpus = 0.0
    return {"cpu": cpus, "gpu": gpus}


class Progress:
    """A ray.tune Callback (built lazily: ray is imported only when a sweep runs)."""

    @staticmethod
    def make(total: int | None) -> Any:
        from ray import tune

        class _Progress(tune.Callback):
            def __init__(self) -> None:
                self.done: set[str] = set()
                self.t0 = time.perf_counter()

            def _head(self) -> str:
                tot = f"/{total}" if total else ""
                return f"[{time.perf_counter() - self.t0:6.0f} s {len(self.done)}{tot} done]"

            def on_trial_result(self, iteration, trials, trial, result, **info):
                name = result.get("trial", trial.trial_id)
                fields = (f"success {100 * result.get('success_rate', float('nan')):.0f} %, "
                          f"return {result.get('mean_return', float('nan')):.1f}")
                if result.get("finished"):
                    self.done.add(name)
                    held = result.get("final_success_rate")
                    extra = f"; held-out success {100 * held:.0f} %" if held is not None else ""
                    print(f"{self._head()} {name} finished at {result.get('timesteps', 0):,} steps: {fields}{extra}"
                          f"  ({result.get('wall_time_s', 0):.0f} s)", flush=True)
                else:
                    print(f"{self._head()} {name} eval @ {result.get('timesteps', 0):,} steps: {fields}", flush=True)

            def on_trial_start(self, iteration, trials, trial, **info):
                print(f"{self._head()} {trial} started", flush=True)

            def on_trial_error(self, iteration, trials, trial, **info):
                print(f"{self._head()} {trial} failed (retried while --max-failures allows; "
                      f"see its train.log)", flush=True)

            def on_trial_complete(self, iteration, trials, trial, **info):
                res = trial.last_result or {}
                if not res.get("finished"):
                    print(f"{self._head()} {res.get('trial', str(trial))} stopped early at "
                          f"{res.get('timesteps', 0):,} steps (ASHA)", flush=True)

        return _Progress()


def run_sweep(plan: Any, command: str) -> int:
    """Run the plan's trials (``plan.engine``: ``ray`` -- Ray Tune, parallel, search + ASHA, clusters -- or
    ``serial`` -- one trial after the other in this process, no Ray needed), write summary.json / summary.md /
    best_recipe.yaml. Exit status: 0 done, 1 some trials failed, 130 interrupted (resumable)."""
    sweep_dir: Path = plan.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not plan.resume:
        write_json(sweep_dir / "sweep.json", {"argv": plan.argv, "command": command, "env_id": plan.env_id,
                                              "algo": plan.algo, "engine": plan.engine, "made_by": plan.made_by,
                                              "created": _now()})
    t0 = time.perf_counter()
    total = len(plan.grid_trials) if plan.grid_trials is not None else plan.trials
    if plan.engine == "serial":
        results, interrupted = _run_serial(plan, total)
        grid = results
    else:
        grid, results, interrupted = _run_ray(plan, total)
    finished = [r for r in results if r["state"] == "finished"]
    failed = [r for r in results if r["state"] == "error"]
    unfinished = [r for r in results if r["state"] in ("pending", "running")]
    if grid is not None and not failed and len(finished) + len([r for r in results if r["state"] == "stopped"]) < total:
        interrupted = True
    summary = write_summary(plan, results, command, time.perf_counter() - t0, interrupted or bool(unfinished))
    _print_summary(summary, sweep_dir)
    if interrupted or unfinished:
        print(f"\nsweep interrupted: {len(finished)}/{total} trials finished; continue with: {plan.resume_command}")
        return 130
    return 1 if failed else 0


def _spec(plan: Any, device_args: list[str]) -> dict[str, Any]:
    """What every trial needs to know (:func:`kai_drive.distributed.sweep.trial.run_trial`)."""
    return {
        "sweep_dir": str(plan.sweep_dir), "env": plan.env_id, "algo": plan.algo, "seed": plan.args.seed,
        "train_args": plan.train_args + ([] if plan.device_given else device_args),
        "resume_args": plan.resume_args + ([] if plan.device_given else device_args),
        "poll_s": plan.args.poll,
    }


def _run_serial(plan: Any, total: int) -> tuple[list[dict], bool]:
    """The grid's trials one after the other in this process, each in its own training subprocess (so a wall
    clock measured per run is that run's alone). A failed trial is recorded and the next one runs; Ctrl-C
    stops the running trial at a checkpoint (resumable) and ends the sweep."""
    spec = _spec(plan, [])  # each training picks its own device (train's --device auto)
    print(f"sweep {plan.sweep_dir}: {total} trial(s) of {plan.env_id} / {plan.algo}, one at a time in this process"
          f"{' (resumed)' if plan.resume else ''}", flush=True)
    print(f"  tensorboard --logdir {plan.sweep_dir / 'runs'}", flush=True)
    t0, done, results = time.perf_counter(), 0, []
    for i, t in enumerate(plan.grid_trials):
        name, over, seed = t["name"], dict(t["overrides"]), int(t["seed"])

        def report(m: dict[str, Any], name: str = name) -> None:
            head = f"[{time.perf_counter() - t0:6.0f} s {done}/{total} done]"
            if not m.get("finished"):
                print(f"{head} {name} eval @ {m.get('timesteps', 0):,} steps: success "
                      f"{100 * m.get('success_rate', float('nan')):.0f} %, return {m.get('mean_return', float('nan')):.1f}",
                      flush=True)

        print(f"[{time.perf_counter() - t0:6.0f} s {done}/{total} done] {name} started", flush=True)
        record = {"trial": name, "overrides": over, "seed": seed, "state": "pending", "metrics": {}, "error": None,
                  "label": t.get("label")}
        try:
            rec = run_trial(name, over, seed, spec, report)
        except KeyboardInterrupt:
            results.append(record)
            results += [{"trial": u["name"], "overrides": dict(u["overrides"]), "seed": int(u["seed"]),
                         "state": "pending", "metrics": {}, "error": None, "label": u.get("label")}
                        for u in plan.grid_trials[i + 1:]]
            return sorted(results, key=lambda r: r["trial"]), True
        except RuntimeError as exc:
            print(f"  {name} failed (see {trial_folder(spec, name) / 'train.log'})", flush=True)
            record.update(state="error", error=str(exc)[-2000:])
        else:
            done += 1
            record.update(state="finished", metrics={**rec["metrics"], "run_dir": rec["run_dir"],
                                                     "wall_time_s": rec["wall_time_s"]})
            held = rec["metrics"].get("final_success_rate")
            print(f"[{time.perf_counter() - t0:6.0f} s {done}/{total} done] {name} finished at "
                  f"{rec['metrics'].get('timesteps', 0):,} steps" + (f": held-out success {100 * held:.0f} %" if held
                                                                     is not None else "")
                  + (" (finished before: reused)" if rec.get("reused") else ""), flush=True)
        results.append(record)
    return sorted(results, key=lambda r: r["trial"]), False


def _run_ray(plan: Any, total: int) -> tuple[Any, list[dict], bool]:
    from ray import tune

    sweep_dir: Path = plan.sweep_dir
    address = resolve_address(plan.args.address)
    num_cpus = plan.args.num_cpus if not address else None
    interrupted = False
    with ray_session(address, num_cpus=num_cpus, what="python -m kai_drive.sweep") as cluster:
        res = _resources(plan, cluster)
        where = f"Ray cluster {address}" if address else f"local Ray ({cluster.get('CPU', 0):g} CPUs)"
        print(f"sweep {sweep_dir}: {total} trial(s) of {plan.env_id} / {plan.algo} on {where}, "
              f"{res['cpu']:g} CPU + {res['gpu']:g} GPU per trial{' (resumed)' if plan.resume else ''}", flush=True)
        print(f"  tensorboard --logdir {sweep_dir / 'runs'}", flush=True)
        spec = _spec(plan, ["--device", "cuda" if res["gpu"] > 0 else "cpu"])
        trainable = tune.with_resources(functools.partial(train_trial, spec=spec), res)
        run_config = tune.RunConfig(
            name=sweep_dir.name,
            storage_path=str(sweep_dir.parent),
            failure_config=tune.FailureConfig(max_failures=plan.args.max_failures),
            callbacks=[Progress.make(total)],
            verbose=0,
        )
        if plan.resume and tune.Tuner.can_restore(str(sweep_dir)):
            tuner = tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True, restart_errored=False)
        else:
            tuner = tune.Tuner(trainable, param_space=_param_space(plan), tune_config=_tune_config(plan),
                               run_config=run_config)
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
            grid = None
        results = _collect(grid, sweep_dir, plan)
    return grid, results, interrupted


def _param_space(plan: Any) -> dict:
    from ray import tune

    if plan.grid_trials is not None:
        return {"_trial": tune.grid_search(plan.grid_trials)}
    return {d.key: d.tune_domain() for d in plan.search}


def _tune_config(plan: Any) -> Any:
    from ray import tune

    def name(trial: Any) -> str:
        return trial_name(trial.config, trial.trial_id)

    kwargs: dict[str, Any] = {"trial_name_creator": name, "trial_dirname_creator": name,
                              "max_concurrent_trials": plan.args.max_concurrent}
    if plan.search:
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        kwargs.update(metric=plan.metric, mode="max", num_samples=plan.trials,
                      search_alg=OptunaSearch(seed=plan.args.search_seed))
        if plan.early_stop:
            kwargs["scheduler"] = ASHAScheduler(time_attr="timesteps", max_t=plan.max_t + 1,  # +1: never cut the final eval
                                                grace_period=min(plan.grace, plan.max_t), reduction_factor=2)
    return tune.TuneConfig(**kwargs)


def _collect(grid: Any, sweep_dir: Path, plan: Any) -> list[dict]:
    """One record per trial, from Ray's results (or, after a hard interrupt, from the trial.json files)."""
    out: list[dict] = []
    if grid is not None:
        for r in grid:
            m = dict(r.metrics or {})
            cfg = dict(r.config or {})
            over, seed = trial_overrides(cfg)
            name = m.get("trial") or (cfg["_trial"]["name"] if "_trial" in cfg else Path(r.path).name)
            if r.error is not None:
                state = "error"
            elif m.get("finished"):
                state = "finished"
            elif m:
                state = "stopped" if plan.search and plan.early_stop else "running"
            else:
                state = "pending"
            out.append({"trial": name, "overrides": over, "seed": plan.args.seed if seed is None else seed,
                        "state": state, "metrics": m, "error": None if r.error is None else str(r.error)[-2000:],
                        "label": cfg["_trial"].get("label") if "_trial" in cfg else None})
    else:
        for path in sorted((sweep_dir / "runs").glob("*/trial.json")):
            rec = json.loads(path.read_text())
            out.append({"trial": rec["trial"], "overrides": rec["overrides"], "seed": rec["seed"], "state": "finished",
                        "metrics": {**rec["metrics"], "run_dir": rec["run_dir"], "wall_time_s": rec["wall_time_s"]},
                        "error": None})
    return sorted(out, key=lambda r: r["trial"])


def _value(m: dict, key: str) -> float:
    """Held-out final evaluation when the run has one, else its last periodic evaluation."""
    v = m.get(f"final_{key}", m.get(key))
    return float("nan") if v is None else float(v)


def write_summary(plan: Any, results: list[dict], command: str, wall_s: float, incomplete: bool) -> dict:

    sweep_dir: Path = plan.sweep_dir
    groups: dict[str, dict] = {}
    for r in results:
        key = json.dumps(r["overrides"], sort_keys=True, default=str)
        g = groups.setdefault(key, {"overrides": r["overrides"], "label": r.get("label"), "trials": []})
        g["trials"].append(r)
    configs = []
    for g in groups.values():
        done = [t for t in g["trials"] if t["state"] == "finished"]
        walls = [float(t["metrics"].get("wall_time_s", float("nan"))) for t in done]
        configs.append({
            "label": g["label"],  # an ablation's arm name (None for grid configurations)
            "overrides": g["overrides"],
            "trials": [t["trial"] for t in g["trials"]],
            "seeds": [t["seed"] for t in done],
            "finished": len(done),
            "states": {s: sum(t["state"] == s for t in g["trials"]) for s in sorted({t["state"] for t in g["trials"]})},
            "success_rate": aggregate([_value(t["metrics"], "success_rate") for t in done]),
            "mean_return": aggregate([_value(t["metrics"], "mean_return") for t in done]),
            "route_completion": aggregate([_value(t["metrics"], "route_completion") for t in done]),
            "timesteps": [int(t["metrics"].get("timesteps", 0)) for t in done],
            "wall_time_s": {"sum": round(sum(walls), 2), "max": round(max(walls, default=0.0), 2)},
            "run_dirs": [t["metrics"].get("run_dir") for t in done],
        })

    def rank(c: dict) -> tuple:
        m, r = c[plan.metric]["mean"], c["mean_return"]["mean"]
        return (c["finished"] > 0, -math.inf if math.isnan(m) else m, -math.inf if math.isnan(r) else r)

    configs.sort(key=rank, reverse=True)
    best = None
    if configs and configs[0]["finished"]:
        best = {"overrides": configs[0]["overrides"], "recipe_file": None}
        path = write_best_recipe(plan, configs[0])
        if path is not None:
            best["recipe_file"] = str(path)
            best["train_command"] = (f"python -m kai_drive.train --env {plan.alias} --algo {plan.algo} "
                                     f"--recipe {path}")
    summary = {
        "sweep": str(sweep_dir),
        "command": command,
        "env_id": plan.env_id,
        "algo": plan.algo,
        "metric": plan.metric,
        "value_source": "final_eval.json (held-out roads) when the run has one, else its last periodic evaluation",
        "aggregates": "over seeds: mean and IQM (middle 50 %) with 95 % percentile-bootstrap intervals (2000 resamples)",
        "complete": not incomplete,
        "wall_time_s": round(wall_s, 2),
        "trials": results,
        "configs": configs,
        "best": best,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu(s)",
        "date": _now(),
    }
    write_json(sweep_dir / "summary.json", summary)
    write_text(sweep_dir / "summary.md", _markdown(summary))
    return summary


def write_best_recipe(plan: Any, config: dict) -> Path | None:
    """The recipe a best-configuration run actually trained with (its config.yaml), keyed by env id."""

    for run_dir in config["run_dirs"]:
        run = RunFolder(run_dir or "")
        if run.is_run():
            cfg = run.config()
            path = plan.sweep_dir / "best_recipe.yaml"
            head = (f"# best configuration of sweep {plan.sweep_dir.name} ({plan.metric}): {json.dumps(config['overrides'])}\n"
                    f"# recipe as trained in {run_dir}\n"
                    f"# python -m kai_drive.train --env {plan.alias} --algo {plan.algo} --recipe {path}\n")
            body = yaml.safe_dump({plan.env_id: cfg["recipe"]}, sort_keys=False, default_flow_style=None, width=110)
            write_text(path, head + body)
            return path
    return None


def _fmt(agg: dict, pct: bool) -> str:
    if not agg["n"]:
        return "-"
    k = 100.0 if pct else 1.0
    u = " %" if pct else ""
    lo, hi = agg["mean_ci95"]
    ilo, ihi = agg["iqm_ci95"]
    return (f"{k * agg['mean']:.1f}{u} [{k * lo:.1f}, {k * hi:.1f}] / "
            f"IQM {k * agg['iqm']:.1f} [{k * ilo:.1f}, {k * ihi:.1f}]")


def _markdown(s: dict) -> str:
    lines = [f"# Sweep {Path(s['sweep']).name}", "", f"`{s['command']}`", "",
             f"{s['env_id']} / {s['algo']}; ranked by {s['metric']}; {s['date']}; {s['machine']}; "
             f"wall time {s['wall_time_s']:.0f} s{'' if s['complete'] else ' (INCOMPLETE: resume the sweep)'}.", "",
             f"Values: {s['value_source']}. Aggregates {s['aggregates']}.", "",
             "| # | configuration | seeds done | success rate: mean [95 % CI] / IQM [95 % CI] | return: mean [CI] / IQM [CI] "
             "| wall time s (sum / max) |",
             "|---|---|---|---|---|---|"]
    for i, c in enumerate(s["configs"]):
        over = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in c["overrides"].items()) or "(recipe as is)"
        over = f"**{c['label']}**: {over}" if c.get("label") else over
        lines.append(f"| {i + 1} | {over} | {c['finished']}/{len(c['trials'])} | {_fmt(c['success_rate'], True)} | "
                     f"{_fmt(c['mean_return'], False)} | {c['wall_time_s']['sum']:.0f} / {c['wall_time_s']['max']:.0f} |")
    if s["best"]:
        lines += ["", f"Best: {json.dumps(s['best']['overrides'])} -> `{s['best']['recipe_file']}`", "",
                  f"    {s['best'].get('train_command', '')}"]
    lines += ["", "Trials:", "", "| trial | seed | state | success | return | steps | run folder |", "|---|---|---|---|---|---|---|"]
    for t in s["trials"]:
        m = t["metrics"]
        lines.append(f"| {t['trial']} | {t['seed']} | {t['state']} | {_value(m, 'success_rate'):.2f} | "
                     f"{_value(m, 'mean_return'):.1f} | {m.get('timesteps', '-')} | {m.get('run_dir', '-')} |")
    return "\n".join(lines) + "\n"


def _print_summary(s: dict, sweep_dir: Path) -> None:
    print(f"\nsweep summary ({s['metric']}; {s['value_source']}):")
    for i, c in enumerate(s["configs"]):
        over = c.get("label") or ", ".join(f"{k}={json.dumps(v)}" for k, v in c["overrides"].items()) or "(recipe as is)"
        print(f"  {i + 1}. {over}: {c['finished']}/{len(c['trials'])} seeds; success {_fmt(c['success_rate'], True)}; "
              f"return {_fmt(c['mean_return'], False)}; wall {c['wall_time_s']['sum']:.0f} s")
    if s["best"] and s["best"].get("recipe_file"):
        print(f"best recipe -> {s['best']['recipe_file']}")
    print(f"-> {sweep_dir / 'summary.md'}, {sweep_dir / 'summary.json'}  (wall time {s['wall_time_s']:.0f} s)")


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
