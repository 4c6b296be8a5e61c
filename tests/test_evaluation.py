"""Evaluation: metric formulas on hand-built trajectories, statistics on known samples, and the causal
engine separating a policy that watches the lead car from one that ignores it (on the real follow env)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kai_drive import stats
from kai_drive.evaluation import check_thresholds
from kai_drive.evaluation.causal import Intervention, but_for, run_interventions
from kai_drive.metrics import DrivingMetricConfig, driving_metrics, grasp_metrics, savgol_derivative
from kai_drive.evaluation.rollout import make_env, rollout, sensor_transform

DT = 0.05


def _infos(n, **cols):
    out = []
    for i in range(n):
        d = {"route_completion": 0.5, "distance_m": 100.0, "speed_mps": 10.0, "yaw_rate_radps": 0.0,
             "ttc_s": math.inf, "headway_s": math.inf, "collision": False, "off_road": False, "cost": 0.0}
        for k, v in cols.items():
            d[k] = v[i] if isinstance(v, (list, np.ndarray)) else v
        out.append(d)
    return out


# -- metric formulas -----------------------------------------------------------------------------
def test_known_jerk_and_accel_from_speed():
    t = np.arange(200) * DT
    jerk = 1.5
    v = 10.0 + 0.5 * jerk * t ** 2  # a = jerk * t, constant jerk
    assert np.allclose(savgol_derivative(v, DT, 1), jerk * t, atol=1e-6)
    assert np.allclose(savgol_derivative(v, DT, 2), jerk, atol=1e-6)
    m = driving_metrics(_infos(200, speed_mps=v), DT)
    assert m["max_abs_jerk_mps3"] == pytest.approx(jerk, abs=1e-6)
    assert m["max_lon_accel_mps2"] == pytest.approx(jerk * t[-1], abs=1e-6)
    # a = 1.5 t exceeds nuPlan's 2.40 m/s^2 after t = 1.6 s: comfortable only before
    assert m["comfortable"] == 0.0
    assert m["comfort_frac"] == pytest.approx(np.mean(jerk * t <= 2.40), abs=0.01)


def test_lateral_accel_and_yaw_rate_bounds():
    m = driving_metrics(_infos(50, speed_mps=10.0, yaw_rate_radps=0.6), DT)  # a_lat = 6 m/s^2 > 4.89
    assert m["max_abs_lat_accel_mps2"] == pytest.approx(6.0)
    assert m["comfortable"] == 0.0 and m["comfort_frac"] == 0.0
    m = driving_metrics(_infos(50, speed_mps=10.0, yaw_rate_radps=0.3), DT)
    assert m["comfortable"] == 1.0


def test_known_ttc_exposure_and_headway():
    ttc = [math.inf] * 10 + [3.0, 2.0, 1.4, 1.0, 0.8, 1.2, 1.6] + [math.inf] * 3
    hw = [math.inf] * 10 + [1.0] * 10
    m = driving_metrics(_infos(20, ttc_s=ttc, headway_s=hw), DT)
    assert m["min_ttc_s"] == pytest.approx(0.8)
    assert m["ttc_exposed_s"] == pytest.approx(4 * DT)  # 1.4, 1.0, 0.8, 1.2 are below 1.5 s
    assert m["mean_headway_s"] == pytest.approx(1.0)
    assert driving_metrics(_infos(5), DT)["min_ttc_s"] == pytest.approx(10.0)  # capped when never closing


def test_driving_score_penalties():
    coll = [False] * 5 + [True, True] + [False] * 3 + [True] + [False]
    kind = [""] * 5 + ["pedestrian", "pedestrian"] + [""] * 3 + ["vehicle"] + [""]
    m = driving_metrics(_infos(12, collision=coll, collision_with=kind, route_completion=0.8), DT)
    assert m["collisions_pedestrian"] == 1 and m["collisions_vehicle"] == 1 and m["collisions_static"] == 0
    assert m["driving_score"] == pytest.approx(0.8 * 0.5 * 0.6)
    m = driving_metrics(_infos(3, collision=[False, True, True], collision_with=["", "barrier", "barrier"],
                                route_completion=1.0), DT)
    assert m["driving_score"] == pytest.approx(0.65)
    cfg = DrivingMetricConfig.from_dict({"penalties": {"static": 0.5}})
    assert driving_metrics(_infos(3, collision=[False, True, True], collision_with="obstacle", route_completion=1.0),
                           DT, cfg)["driving_score"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown keys"):
        DrivingMetricConfig.from_dict({"penalties": {"cyclist": 0.5}})


def test_cost_budget_and_grasp_metrics():
    m = driving_metrics(_infos(4, cost=[0, 1, 1, 0]), DT, DrivingMetricConfig(cost_budget=1.0))
    assert m["cost"] == 2.0 and m["within_budget"] == 0.0
    g = grasp_metrics([{"grasped": False}, {"grasped": True}, {"grasped": False, "table_contacts": 2,
                       "peak_contact_force_n": 30.0, "objects_out": 1}], DT)
    assert g["drops"] == 1 and g["table_contacts"] == 2 and g["peak_contact_force_n"] == 30.0 and g["objects_out"] == 1


# -- statistics ------------------------------------------------------------------------------------
def test_iqm_of_known_samples():
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)
    assert stats.iqm([1, 2, 3, 4, 1000]) == pytest.approx(3.0)  # n=5: one cut each side
    assert stats.iqm([0, 0, 0, 0, 0, 0, 0, 1e6]) == 0.0  # an outlier does not move it


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, big = rng.normal(2.0, 1.0, 20), rng.normal(2.0, 1.0, 500)
    for x in (small, big):
        s = stats.summarize(x)
        assert s["mean_ci95"][0] < s["mean"] < s["mean_ci95"][1]
        assert s["iqm_ci95"][0] < s["iqm"] < s["iqm_ci95"][1]
    w = lambda x: np.diff(stats.bootstrap_ci(x))[0]  # noqa: E731
    assert w(big) < 0.5 * w(small)
    # coverage: the true mean lies in ~95 % of the intervals
    hits = sum(lo <= 2.0 <= hi for lo, hi in (stats.bootstrap_ci(rng.normal(2.0, 1.0, 30), n_boot=400, seed=i)
                                              for i in range(200)))
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_difference_and_rates():
    c = np.arange(10.0)
    d = stats.paired_difference(c + 1.0, c)
    assert d["ate"] == pytest.approx(1.0) and d["ci95"] == pytest.approx([1.0, 1.0]) and d["significant"]
    assert not stats.paired_difference(c, c)["significant"]
    r = stats.rate([1, 0, 0, 0])
    assert r["rate"] == 0.25 and r["ci95"][0] < 0.25 < r["ci95"][1]
    assert stats.ratio_summary([1, 0, 1], [0.5, 0.5, 1.0])["per_km"] == pytest.approx(1.0)


def test_thresholds():
    res = check_thresholds({"safety": {"collision": {"rate": 0.3}}}, {"safety.collision.rate": "<= 0.2",
                                                                       "safety.nothing.mean": ">= 1"})
    assert [t["passed"] for t in res] == [False, False]
    assert check_thresholds({"a": {"b": 0.1}}, {"a.b": "<= 0.2"})[0]["passed"]
    assert check_thresholds({"a": {"b": 0.1}}, {"a.b": "<=0.2"})[0]["passed"]  # no space: was an IndexError
    with pytest.raises(ValueError, match="threshold a.b"):
        check_thresholds({"a": {"b": 0.1}}, {"a.b": "about 0.2"})


# -- causal engine on the real env ------------------------------------------------------------------
FAST = {"sensors": {"camera": {"enabled": False}, "lidar": {"beams": 16}}, "road": {"max_curvature": 1e-6}}
# straight start, fixed lead: the two arms differ only in the lead's hard brake at 0.5 s
BASE = {"start_offset_m": 0.0, "start_heading_rad": 0.0, "start_speed_mps": 8.0, "lead.gap_m": 20.0,
        "lead.speed_mps": 8.0, "lead.speed_amplitude_mps": 0.0}
IVS = [
    Intervention("lead_brake", base=BASE, control={"lead.brake_at_s": None}, requires=["lead"],
                 treatment={"lead.brake_at_s": 0.5, "lead.brake_decel_mps2": 8.0, "lead.brake_duration_s": 3.0}),
    Intervention("distractor_colour", expect="ignore",
                 base={**BASE, "distractors": [{"s_m": "+15", "side": -1, "distance_m": 1.0, "size_m": 1.5,
                                                "color": [0.5, 0.5, 0.5, 1.0]}]},
                 treatment={"distractors.0.color": [1.0, 0.0, 0.0, 1.0]}),
]


def watcher(obs):
    """Brakes when the forward lidar beam sees something within 12 m (lidar range 40 m)."""
    front = float(obs["lidar"][len(obs["lidar"]) // 2]) * 40.0
    return np.array([0.0, -1.0 if front < 12.0 else 0.15], np.float32)


def ignorer(obs):
    return np.array([0.0, 0.15], np.float32)


@pytest.fixture(scope="module")
def causal_results():
    mk = lambda: make_env("follow", FAST)  # noqa: E731
    seeds = [11, 12, 13]
    return {name: run_interventions(mk, pol, IVS, seeds, max_steps=70) for name, pol in
            (("watcher", watcher), ("ignorer", ignorer))}


def test_causal_separates_a_policy_that_watches_the_lead(causal_results):
    w, i = causal_results["watcher"], causal_results["ignorer"]
    assert w["lead_brake"]["responds"] and w["lead_brake"]["verdict"].startswith("responds (as it should)")
    assert w["lead_brake"]["effects"]["braking_onset_s"]["ate"] < -1.0  # brakes earlier when the lead brakes
    assert w["lead_brake"]["effects"]["braking_onset_s"]["significant"]
    assert not i["lead_brake"]["responds"] and i["lead_brake"]["action_divergence"]["mean"] == 0.0
    assert "does NOT respond" in i["lead_brake"]["verdict"]
    # the ignorer's outcomes still change (it closes in on the braking lead): outcome effect != response
    assert i["lead_brake"]["effects"]["min_ttc_s"]["ate"] < 0
    for r in (w, i):  # nobody should care about a roadside box's colour
        assert not r["distractor_colour"]["responds"]
        assert r["distractor_colour"]["verdict"] == "ignores (as it should)"


def test_pairs_differ_only_in_the_factor():
    env = make_env("follow", FAST)
    a = rollout(env, ignorer, 11, None, max_steps=5)
    b = rollout(env, ignorer, 11, None, max_steps=5)
    assert a.scenario == b.scenario and [x["s_m"] for x in a.infos] == [x["s_m"] for x in b.infos]
    env.close()


def test_but_for_finds_the_lead_as_cause():
    mk = lambda: make_env("follow", FAST)  # noqa: E731
    env = mk()
    _, info = env.reset(seed=11, options={"road_seed": 11, "noise_seed": 11})
    from kai_drive.evaluation.rollout import apply_overrides, scenario_context

    rec = apply_overrides(info["scenario"], {**BASE, "lead.brake_at_s": 0.5, "lead.brake_decel_mps2": 8.0,
                                             "lead.brake_duration_s": 5.0}, scenario_context(env, info["scenario"], info))
    tr = rollout(env, ignorer, 11, rec, max_steps=200)
    env.close()
    assert tr.infos[-1]["collision"] and tr.infos[-1]["collision_with"] == "vehicle"
    (res,) = but_for(mk, ignorer, [tr], branch_s=1.0, post_s=2.0)
    rows = {r["cause"]: r for r in res["causes"]}
    assert rows["lead vehicle (removed)"]["averted"] and rows["lead vehicle (removed)"]["history_consistent"]
    assert rows["the policy's own actions (emergency brake, straight)"]["averted"] in (True, False)
    assert "lead vehicle (removed)" in res["but_for_causes"]


def test_sensor_transform():
    o = {"camera": np.full((4, 4, 3), 100, np.uint8), "lidar": np.full(8, 0.5, np.float32), "state": np.ones(3, np.float32)}
    assert not sensor_transform({"camera": "black"}, 0)(o, 0)["camera"].any()
    assert (sensor_transform({"lidar": "missing"}, 0)(o, 0)["lidar"] == 1.0).all()
    n = sensor_transform({"noise": {"lidar": 0.1}}, 0)(o, 0)["lidar"]
    assert n.min() >= 0 and n.max() <= 1 and not np.allclose(n, 0.5)
    with pytest.raises(ValueError, match="sensor transform"):
        sensor_transform({"lidar": "blue"}, 0)(o, 0)


def test_adversarial_attack_stays_in_budget_and_beats_random_noise():
    torch = pytest.importorskip("torch")
    from stable_baselines3 import PPO

    from kai_drive.evaluation.adapters import SB3Policy
    from kai_drive.evaluation.robustness import AdversarialPolicy

    torch.manual_seed(0)
    env = make_env("follow", FAST)
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, device="cpu", seed=0)
    pol = SB3Policy(model)
    obs, _ = env.reset(seed=3)
    adv = AdversarialPolicy(pol, {"lidar": 0.05}, "pgd", steps=5, seed=0)
    o_adv = adv.perturb(obs)
    assert np.abs(o_adv["lidar"] - obs["lidar"]).max() <= 0.05 + 1e-6
    a0 = pol(obs)
    rng = np.random.default_rng(0)
    rand = [np.abs(pol({**obs, "lidar": np.clip(obs["lidar"] + rng.uniform(-0.05, 0.05, 16), 0, 1).astype(np.float32)}) - a0).sum()
            for _ in range(5)]
    assert np.abs(pol(o_adv) - a0).sum() > max(rand)
    env.close()


# -- Ray is optional: never imported by the core, a clear message when --ray lacks it ------------------
def test_evaluation_never_imports_ray():
    import subprocess
    import sys

    code = ("import sys, kai_drive.evaluate, kai_drive.evaluation, kai_drive.evaluation.core, kai_drive.evaluation.report; "
            "assert 'ray' not in sys.modules, 'ray imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_evaluate_ray_without_ray_gives_install_command(monkeypatch, capsys):
    import sys

    from kai_drive.evaluate import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["--env", "follow", "--policy", "scripted", "--ray", "--out", "/nonexistent/x"]) == 2
    assert 'pip install "kai-drive[ray]"' in capsys.readouterr().err
    assert main(["--env", "follow", "--policy", "scripted", "--num-cpus", "2"]) == 2  # --num-cpus without --ray
    assert "go with --ray" in capsys.readouterr().err


def test_ray_refuses_a_policy_workers_cannot_rebuild():
    pytest.importorskip("ray")
    import threading

    from kai_drive.evaluation import evaluate

    lock = threading.Lock()  # not picklable: the policy cannot travel to a worker

    def locked(obs):
        with lock:
            return np.zeros(2, np.float32)

    with pytest.raises(ValueError, match=r"cannot be sent to Ray workers.*--run RUN_DIR, --model PATH, --policy scripted"):
        evaluate(locked, "follow", {"seeds": 1}, ray=True)


# -- grasping: the quick suite end to end (driving-only parts skipped cleanly) ---------------------------
def test_grasp_quick_suite_end_to_end(tmp_path):
    import json

    from kai_drive.evaluation import evaluate, write_outputs
    from kai_drive.evaluation.jobs import _WORKER_ENVS

    res = evaluate("scripted", "grasp", "quick", seeds=3)
    assert not _WORKER_ENVS  # a serial run closes the envs it made
    s = res["safety"]["summary"]
    for k in ("drops", "table_contacts", "peak_contact_force_n", "objects_out"):
        assert s[k]["n"] == 3
    assert s["success"]["n"] == 3 and s["peak_contact_force_n"]["mean"] > 0  # the fingers did touch something
    assert "driving_score" not in s and "causal" not in res  # nothing to intervene on in the grasp env
    rob = res["robustness"]
    assert "no scenario factors" in rob["light_shift"]["note"] and "no scenario factors" in rob["colour_shift"]["note"]
    # the suite's grasp thresholds are checked (success on the test objects, drops, peak force) and pass
    checked = [t["path"] for t in res["thresholds"] if t["passed"] is not None]
    assert {"safety.success.rate", "safety.drops.mean", "safety.peak_contact_force_n.max"} <= set(checked)
    assert res["passed"] is True and res["renderer"] in ("tiny", "egl", "opengl")
    assert res["baselines"]["stop"]["passed"] is False  # the zero action lifts nothing
    paths = write_outputs(res, tmp_path, make_env=None, videos=0)
    md = paths["report"].read_text()
    assert "| condition | success | drops | peak contact force (N) | objects out |" in md
    assert "| policy | success | drops | peak contact force (N) | objects out | thresholds |" in md
    assert json.loads(paths["json"].read_text())["renderer"] == res["renderer"]
    assert json.loads(paths["json"].read_text())["safety"]["summary"]["drops"]["mean"] == s["drops"]["mean"]


def test_thresholds_scoped_by_task():
    from kai_drive.evaluation.suite import thresholds_for

    th = {"safety.collision.rate": "<= 0.2", "safety.success.rate": ">= 0.5", "safety.typo.mean": ">= 1",
          "grasp": {"safety.drops.mean": "<= 0.1"}, "driving": {"safety.driving_score.mean": ">= 0.5"}}
    flat, skipped = thresholds_for(th, "grasp")
    assert flat == {"safety.success.rate": ">= 0.5", "safety.typo.mean": ">= 1", "safety.drops.mean": "<= 0.1"}
    assert [t["path"] for t in skipped] == ["safety.collision.rate"]  # a driving metric: not applicable
    flat, skipped = thresholds_for(th, "driving")
    assert "safety.driving_score.mean" in flat and "safety.drops.mean" not in flat and not skipped


# -- one metrics module: training tallies, outcomes and summaries per task family ----------------------
def test_training_tallies_and_summaries_per_family():
    from kai_drive.metrics import FAMILIES, episode_outcome, family_of, final_summary_line, is_failure, summarize_episodes

    assert family_of("lane-keep").name == "driving" and family_of("KaiDrive/Grasp-v0").name == "grasp"
    infos = [{"grasped": t in (3, 4), "peak_contact_force_n": float(t), "max_lift_m": 0.01 * t, "cost": 0.5,
              "table_contacts": 1, "objects_out": 0, "joint_limit_hits": 0, "is_success": False} for t in range(8)]
    tally = FAMILIES["grasp"].tally()
    for i in infos:
        tally.step(1.0, i)
    ep = tally.finish(infos[-1], False, True, road_seed=7)
    ref = grasp_metrics(infos, 0.05)
    assert {k: ep[k] for k in ref if k not in ("steps", "duration_s")} == {k: v for k, v in ref.items() if k not in ("steps", "duration_s")}
    assert ep["return"] == 8.0 and ep["length"] == 8 and ep["truncated"] and ep["outcome"] == "timeout"
    res = summarize_episodes([ep, {**ep, "success": 1.0, "drops": 0.0}], "grasp")
    assert res["success_rate"] == 0.5 and res["drops_mean"] == 0.5 and res["timeout_rate"] == 1.0
    assert "route_completion_mean" not in res and "drops" in final_summary_line(res, "grasp")

    drive = FAMILIES["driving"].tally()
    for t in range(4):
        drive.step(0.5, {"lateral_offset_m": 0.1 * t, "speed_mps": 10.0, "cost": 0.0, "collision": t == 3,
                         "collision_with": "vehicle"})
    ep = drive.finish({"collision": True, "collision_with": "vehicle", "route_completion": 0.4}, True, False, 3)
    assert ep["mean_speed_mps"] == 10.0 and ep["collision"] == 1.0 and ep["outcome"] == "collision:vehicle"
    res = summarize_episodes([ep], "driving")
    assert res["collisions"] == 1 and res["route_completion_mean"] == 0.4 and res["timeout_rate"] == 0.0
    assert episode_outcome({"lane_invasion": True}, True, False) == "lane_invasion" and is_failure("lane_invasion")
    assert episode_outcome({"lane_invasion": True}, False, True) == "timeout" and not is_failure("timeout")
