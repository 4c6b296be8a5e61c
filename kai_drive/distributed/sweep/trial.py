"""A sweep trial: one ``python -m kai_drive.train`` run in a subprocess, in a deterministic folder (on Ray Tune
or, with the serial engine, in the sweep's own process).

``<sweep>/runs/<trial name>/`` is the trial's ``--log-folder``, so its run folder is
``<sweep>/runs/<trial name>/<env alias>/<algo>_1/`` -- a normal run folder (TensorBoard events, checkpoints,
evaluations.json, final_eval.json) whatever happens to the trial. The trial function

1. resumes the run (``--resume``) when the folder already holds a checkpoint (a retry after a worker
   died, a resumed sweep), or only re-reports it when the run had already finished;
2. polls ``evaluations.json`` and reports every new periodic evaluation (to Ray Tune: ``tune.report``):
   ``timesteps``, ``success_rate``, ``mean_return``, ``route_completion`` -- what ASHA and Optuna see;
3. reports a last result with ``finished: True`` and the held-out ``final_*`` metrics;
4. stops the subprocess (SIGTERM: checkpoint and exit 130) if the trial is stopped, and raises if it
   fails so Ray retries the trial (``FailureConfig(max_failures=...)``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from kai_drive.distributed.watchdog import FLAG
from kai_drive.files import read_json, write_json
from kai_drive.training.runs import RunFolder

POLL_S = 1.0
TRIAL_FILE = "trial.json"


def trial_name(config: dict[str, Any], trial_id: str | None = None) -> str:
    """Grid / seed trials carry their name in the config (``c01_seed2``); search trials are named by their Ray
    trial id (``t_<id>``: stable when the sweep is resumed)."""
    if "_trial" in config:
        return config["_trial"]["name"]
    return f"t_{trial_id}"


def trial_overrides(config: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """``({dotted recipe key: value}, seed or None)`` of a trial config."""
    if "_trial" in config:
        return dict(config["_trial"]["overrides"]), int(config["_trial"]["seed"])
    return {k: _plain(v) for k, v in config.items() if not k.startswith("_")}, None


def _plain(value: Any) -> Any:
    """numpy scalars (from samplers) -> Python numbers, so YAML/JSON write them as plain numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


def set_flags(overrides: dict[str, Any]) -> list[str]:
    """``{"hyperparams.learning_rate": 1e-4}`` -> ``["--set", "hyperparams.learning_rate=0.0001"]``
    (values as JSON, which kai_drive.train parses as YAML)."""
    out: list[str] = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def _driving_only(entry: dict[str, Any], key: str) -> float:
    """A driving metric (grasp evaluations have no route): NaN when absent, which the summary drops."""
    value = entry.get(key)
    return float("nan") if value is None else float(value)


def eval_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "timesteps": int(entry["timesteps"]),
        "success_rate": float(entry["success_rate"]),
        "mean_return": float(entry["mean_return"]),
        "route_completion": _driving_only(entry, "route_completion_mean"),
        "eval_episodes": int(entry["episodes"]),
    }


def final_metrics(run: RunFolder, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last result of a finished run: the last periodic evaluation + the held-out final evaluation."""
    out: dict[str, Any] = eval_metrics(history[-1]) if history else {}
    status = run.status()
    final = run.final_eval()
    if final:
        out.update({
            "final_success_rate": float(final["success_rate"]),
            "final_success_rate_ci95": list(final["success_rate_ci95"]),
            "final_mean_return": float(final["mean_return"]),
            "final_route_completion": _driving_only(final, "route_completion_mean"),
            "final_episodes": int(final["episodes"]),
        })
        if not history:  # no periodic evaluation: the final one is all there is
            out.update({"success_rate": out["final_success_rate"], "mean_return": out["final_mean_return"],
                        "route_completion": out["final_route_completion"]})
    out["timesteps"] = int(status.get("timesteps", out.get("timesteps", 0)))
    out["train_wall_time_s"] = float(status.get("train_wall_time_s", float("nan")))
    return out


class _Proc:
    """The training subprocess (own session, so Ray's signals to the worker do not reach it)."""

    def __init__(self, argv: list[str], log_folder: Path) -> None:
        log_folder.mkdir(parents=True, exist_ok=True)
        self.log_path = log_folder / "train.log"
        self.pid_path = log_folder / "train.pid"
        _wait_for_previous(self.pid_path)
        self._log = open(self.log_path, "a")
        self._log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: "
                        f"python -m kai_drive.train {' '.join(argv)}\n")
        self._log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "kai_drive.train", FLAG, str(os.getpid()), *argv],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        self.pid_path.write_text(json.dumps({"host": socket.gethostname(), "pid": self.popen.pid}))

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self, grace_s: float = 60.0) -> None:
        """SIGTERM (kai_drive.train saves a checkpoint and exits 130), SIGKILL after ``grace_s``."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
            except ProcessLookupError:
                pass
        self.close()

    def close(self) -> None:
        if not self._log.closed:
            self._log.close()
        try:
            self.pid_path.unlink()
        except FileNotFoundError:
            pass

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""


def _wait_for_previous(pid_path: Path, timeout_s: float = 90.0) -> None:
    """A retried trial must not train in the same folder as its predecessor's subprocess, which may still
    be saving its checkpoint after the launcher's SIGTERM (same host only; another host's is gone)."""
    info = read_json(pid_path, corrupt_ok=True)
    if not info or info.get("host") != socket.gethostname():
        return
    pid = int(info["pid"])
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by a dead parent) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def train_trial(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """Ray Tune function trainable (bound to ``spec`` with functools.partial / tune.with_parameters): runs
    :func:`run_trial` and reports to Ray Tune (``tune.report``), which ASHA and Optuna read."""
    from ray import tune

    name = trial_name(config, tune.get_context().get_trial_id())
    overrides, seed = trial_overrides(config)
    run_trial(name, overrides, spec.get("seed", 0) if seed is None else seed, spec, tune.report)


def trial_folder(spec: dict[str, Any], name: str) -> Path:
    """The trial's ``--log-folder``: ``<sweep>/runs/<trial name>``."""
    return Path(spec["sweep_dir"]) / "runs" / name


def run_trial(name: str, overrides: dict[str, Any], seed: int, spec: dict[str, Any],
              report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """One trial, on Ray or in this process (the serial engine): a ``python -m kai_drive.train`` subprocess in
    the trial's folder; every new periodic evaluation and the final result are passed to ``report``. Returns
    the trial record (also written to ``trial.json``); raises RuntimeError when the training fails.

    ``spec`` keys: ``sweep_dir`` (absolute), ``env``, ``algo``, ``train_args`` (pass-through flags for a
    new run), ``resume_args`` (flags for ``--resume``), ``seed`` (search trials), ``poll_s``.
    """
    t0 = time.perf_counter()
    log_folder = trial_folder(spec, name)
    algo = spec["algo"]

    run = RunFolder.newest(log_folder, algo)
    resumed = False
    if run is not None:
        if run.status().get("state") == "finished" and run.final_eval_done():  # done before: report, don't retrain
            return _report_finished(run, log_folder, name, overrides, seed, t0, report, reused=True)
        # (finished but its final evaluation was cut short: --resume trains nothing and redoes only that)
        if run.latest_checkpoint() is None:  # died before its first checkpoint: start afresh, same name
            shutil.rmtree(run.path)
            run = None
    if run is not None:
        argv = ["--resume", str(run.path), *spec["resume_args"]]
        resumed = True
    else:
        argv = ["--env", spec["env"], "--algo", algo, "--seed", str(seed), "--log-folder", str(log_folder),
                *set_flags(overrides), *spec["train_args"]]
    proc = _Proc(argv, log_folder)
    reported = 0
    try:
        while True:
            rc = proc.poll()
            if run is None:
                run = RunFolder.newest(log_folder, algo)
            if run is not None:
                history = run.evaluations()
                for entry in history[reported:]:
                    report({**eval_metrics(entry), "finished": False, "trial": name,
                            "run_dir": str(run.path), "resumed": resumed})
                reported = max(reported, len(history))
            if rc is not None:
                break
            time.sleep(spec.get("poll_s", POLL_S))
    finally:
        proc.stop()
    if rc != 0 or run is None:
        raise RuntimeError(f"trial {name}: kai_drive.train exited with {rc} ({proc.log_path}):\n{proc.tail()}")
    return _report_finished(run, log_folder, name, overrides, seed, t0, report, reused=False, resumed=resumed)


def _report_finished(run: RunFolder, log_folder: Path, name: str, overrides: dict, seed: int, t0: float,
                     report: Callable[[dict[str, Any]], None], reused: bool, resumed: bool = False) -> dict[str, Any]:
    metrics = final_metrics(run, run.evaluations())
    record = read_json(log_folder / TRIAL_FILE, {}, corrupt_ok=True) or {}
    wall = record.get("wall_time_s", 0.0) if reused else record.get("wall_time_s", 0.0) + time.perf_counter() - t0
    record = {"trial": name, "overrides": overrides, "seed": seed, "run_dir": str(run.path), "wall_time_s": wall,
              "resumed": bool(record.get("resumed")) or resumed, "metrics": metrics}
    if not reused:
        write_json(log_folder / TRIAL_FILE, record)
    report({**metrics, "finished": True, "trial": name, "run_dir": str(run.path), "wall_time_s": wall,
            "resumed": record["resumed"], "reused": reused})
    return {**record, "reused": reused}
