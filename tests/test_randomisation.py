"""Domain randomisation as data (issue 16, item 1): named training distributions in each driving env's
``scenario.presets``, switched on with ``scenario.use`` for the training envs only; the ``shift`` suite's
conditions lie outside them; default episodes are exactly what they were before presets existed."""

from __future__ import annotations

import hashlib
import json
import math

import gymnasium
import numpy as np
from digests import obs_digest
import pytest

import kai_drive  # noqa: F401  (registers the envs)
from kai_drive.catalog import env_yaml
from kai_drive.config import SpecError
from kai_drive.evaluation import evaluate
from kai_drive.evaluation.suite import load_suite
from kai_drive.sim.scenario import CameraPose, ScenarioSpec, light_angles_deg
from kai_drive.specs import load_env_spec
from kai_drive.training.recipe import env_config_for, load_recipe, parse_set

DRIVING = {"KaiDrive/LaneKeep-v0": "lane-keep", "KaiDrive/Follow-v0": "follow", "KaiDrive/Highway-v0": "highway",
           "KaiDrive/Crossing-v0": "crossing"}
GO = np.array([0.05, 0.4], np.float32)

# sha256[:16] of info["scenario"] (json, sorted keys; without the later `camera_pose` entry) for seeds
# 0..5, and of the observations of a reset + 5 steps of GO for seeds 0 and 3, computed with the code
# before presets and camera pose jitter existed (commit 00ae1e0, default env configs).
GOLDEN = {
    "KaiDrive/LaneKeep-v0": {"records": ["a777cccc8a75804a", "9ac5c20f219e8142", "93797bcddb03b582", "e19bbc634c85c560",
                                         "40d95c1044f0f776", "29e5b3b8c7aba583"], "obs": ["d0cdc052886743b6", "e6ab77d164f0e709"]},
    "KaiDrive/Follow-v0": {"records": ["3e195ec1cb49d980", "a26516e283c8d334", "175ebeadd330878c", "6ce2a6e5fec0d0e7",
                                       "512d355fe6da2a40", "22edfedfa6d80fd8"], "obs": ["3336746b97eaeb60", "766a336a96e18ccf"]},
    "KaiDrive/Highway-v0": {"records": ["2889cbfc7cb34a05", "9fd79441c4363fef", "3e01f335e8350fb2", "9ed87f21cb3c72d5",
                                        "7021f0f2608ee3da", "7d66b3106c5c1120"], "obs": ["a75378e9f619631a", "36ea5d567821caf5"]},
    "KaiDrive/Crossing-v0": {"records": ["ddc1028df5c24b79", "8deb6365b1e67255", "8cb317044c755c4f", "b3f30056bf5cfda1",
                                         "eaf7fb46b2275765", "d16f31468bb27941"], "obs": ["5b9957a092df1412", "d036d851341bdef4"]},
}


def _record_digest(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def _obs_digest(env: gymnasium.Env, seed: int, steps: int = 5) -> str:
    return obs_digest(env, seed, action=GO, steps=steps)[:16]


def _presets(driving_id: str) -> ScenarioSpec:
    return load_env_spec(env_yaml(DRIVING[driving_id])).scenario


# -- the default is what it was --------------------------------------------------------------------------
@pytest.mark.parametrize("driving_id", DRIVING)
def test_default_episodes_are_bit_identical_to_before(driving_id, make_env):
    env = make_env(driving_id)
    for seed, want in enumerate(GOLDEN[driving_id]["records"]):
        _, info = env.reset(seed=seed)
        rec = dict(info["scenario"])
        assert rec.pop("camera_pose") == CameraPose().model_dump()  # no jitter by default
        assert _record_digest(rec) == want, f"seed {seed}: the default scenario record changed"
    assert [_obs_digest(env, s) for s in (0, 3)] == GOLDEN[driving_id]["obs"], "default observations changed"
    # `use: []` spelled out is the same code path as no presets at all
    explicit = make_env(driving_id, config={"scenario.use": []})
    assert _obs_digest(explicit, 3) == GOLDEN[driving_id]["obs"][1]


@pytest.mark.parametrize("driving_id", DRIVING)
def test_catalogue_defines_presets_and_uses_none(driving_id):
    sc = _presets(driving_id)
    assert sc.use == [] and sc.effective() is sc
    assert {"appearance", "sensors"} <= set(sc.presets)
    if driving_id != "KaiDrive/LaneKeep-v0":  # lane-keep has no actors to make denser
        assert "traffic" in sc.presets


def test_default_recipe_is_untouched_and_the_opt_in_is_training_only():
    default, _ = load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep")
    for role in ("train", "eval", "test"):
        assert not any(k.startswith("scenario") for k in env_config_for(default, role)), role
    opt, _ = load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep",
                         overrides=parse_set(["train_env_config.scenario.use=[appearance, sensors]"]))
    assert env_config_for(opt, "train")["scenario.use"] == ["appearance", "sensors"]
    assert "scenario.use" not in env_config_for(opt, "eval") and "scenario.use" not in env_config_for(opt, "test")
    # everything else of the recipe is the default's
    assert opt.model_dump(exclude={"train_env_config"}) == default.model_dump(exclude={"train_env_config"})
    train = gymnasium.make("KaiDrive/LaneKeep-v0", config=env_config_for(opt, "train"))
    held_out = gymnasium.make("KaiDrive/LaneKeep-v0", config=env_config_for(opt, "eval"))
    try:
        lights = [train.reset(seed=s)[1]["scenario"]["light"]["intensity"] for s in range(4)]
        assert len(set(lights)) == 4 and all(0.7 <= x <= 1.3 for x in lights)
        assert [held_out.reset(seed=s)[1]["scenario"]["light"]["intensity"] for s in range(4)] == [1.0] * 4
    finally:
        train.close(), held_out.close()


def test_preset_errors_name_the_preset_and_key():
    with pytest.raises(SpecError, match=r"use: unknown preset\(s\) \['night'\]"):
        load_env_spec(env_yaml("follow"), {"scenario.use": ["night"]})
    with pytest.raises(SpecError, match=r"presets\.bad\.light\.intensty"):
        load_env_spec(env_yaml("follow"), {"scenario.presets.bad": {"light": {"intensty": 0.5}}})
    with pytest.raises(SpecError, match=r"presets\.bad: \['task'\] cannot be set by a preset"):
        load_env_spec(env_yaml("follow"), {"scenario.presets.bad": {"task": {"ego_lane": 1}}})


# -- randomised draws ---------------------------------------------------------------------------------------
def _within(value, rng, tol: float = 1e-9) -> bool:
    lo, hi = (rng, rng) if not isinstance(rng, (tuple, list)) else rng
    return lo - tol <= value <= hi + tol


@pytest.mark.parametrize("driving_id", DRIVING)
def test_randomised_draws_vary_and_stay_within_the_ranges(driving_id, make_env):
    spec = _presets(driving_id)
    use = sorted(spec.presets)
    eff = load_env_spec(env_yaml(DRIVING[driving_id]), {"scenario.use": use}).scenario.effective()
    env = make_env(driving_id, config={"scenario.use": use})
    nominal = make_env(driving_id)
    recs, frames = [], []
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        recs.append(info["scenario"])
        frames.append(obs["camera"])
        obs0, _ = nominal.reset(seed=seed)
        assert not np.array_equal(obs["camera"], obs0["camera"]), "randomised appearance never reached the pixels"
    for r in recs:
        li = r["light"]
        assert _within(li["intensity"], eff.light.intensity)
        assert all(_within(c, rc) for c, rc in zip(li["color"], eff.light.color))
        az, el = light_angles_deg(li["direction"])
        assert _within(az, eff.light.azimuth_deg, 1e-6) and _within(el, eff.light.elevation_deg, 1e-6)
        for part in ("ground", "road", "marking", "barrier"):
            lo, hi = getattr(eff.colors, part)
            assert all(lo[i] <= r["colors"][part][i] <= hi[i] for i in range(4)), part
        for k, v in r["sensor_noise"].items():
            assert _within(v, getattr(eff.sensor_noise, k)), k
        cp = r["camera_pose"]
        for k in ("dx_m", "dy_m", "dz_m"):
            assert _within(cp[k], getattr(eff.camera_pose, k)), k
        assert _within(math.degrees(cp["dpitch_rad"]), eff.camera_pose.dpitch_deg, 1e-6)
        assert _within(math.degrees(cp["dyaw_rad"]), eff.camera_pose.dyaw_deg, 1e-6)
        assert _within(len(r["traffic"]), eff.traffic.count) and _within(len(r["pedestrians"]), eff.pedestrians.count)
        assert _within(len(r["distractors"]), eff.distractors.count)
    # every randomised scalar varies across seeds
    varying = {
        "light": [r["light"]["intensity"] for r in recs], "direction": [tuple(r["light"]["direction"]) for r in recs],
        "road": [tuple(r["colors"]["road"]) for r in recs], "ground": [tuple(r["colors"]["ground"]) for r in recs],
        "camera_noise": [r["sensor_noise"]["camera_noise_std"] for r in recs],
        "lidar_dropout": [r["sensor_noise"]["lidar_dropout"] for r in recs],
        "camera_pose": [r["camera_pose"]["dpitch_rad"] for r in recs],
    }
    for name, values in varying.items():
        assert len(set(values)) == len(values), f"{name} does not vary across seeds"
    assert len({f.tobytes() for f in frames}) == len(frames)
    if driving_id == "KaiDrive/Highway-v0":
        assert len({len(r["traffic"]) for r in recs}) > 1, "traffic density does not vary"


def test_camera_pose_jitter_moves_the_image_and_does_not_leak(make_env):
    env = make_env("KaiDrive/Follow-v0")
    fresh, _ = env.reset(seed=4)
    moved, info = env.reset(seed=4, options={"scenario": {"camera_pose": {"dpitch_rad": 0.03, "dy_m": 0.05}}})
    assert info["scenario"]["camera_pose"]["dpitch_rad"] == 0.03
    assert not np.array_equal(fresh["camera"], moved["camera"])
    assert np.array_equal(fresh["lidar"], moved["lidar"])  # only the camera's mount moved
    again, _ = env.reset(seed=4)
    assert np.array_equal(fresh["camera"], again["camera"])  # the next default episode has the spec's mount


# -- the shift suite lies outside the training ranges ----------------------------------------------------
MARGIN = {"color": 0.05, "intensity": 0.1, "angle_deg": 10.0, "noise": 1e-9}


def _outside(value: float, rng, margin: float) -> bool:
    lo, hi = (rng, rng) if not isinstance(rng, (tuple, list)) else rng
    return value < lo - margin or value > hi + margin


def _factor_outside(key: str, value, eff: ScenarioSpec) -> bool:
    """Whether the scenario condition ``key: value`` lies outside the training distribution ``eff``."""
    group, _, field = key.partition(".")
    if group == "light" and field == "intensity":
        return _outside(value, eff.light.intensity, MARGIN["intensity"])
    if group == "light" and field == "color":
        return any(_outside(v, r, MARGIN["color"]) for v, r in zip(value, eff.light.color))
    if group == "light" and field == "direction":
        az, el = light_angles_deg(value)
        return (_outside(az, eff.light.azimuth_deg, MARGIN["angle_deg"])
                or _outside(el, eff.light.elevation_deg, MARGIN["angle_deg"]))
    if group == "colors":
        lo, hi = getattr(eff.colors, field)
        return any(value[i] < lo[i] - MARGIN["color"] or value[i] > hi[i] + MARGIN["color"] for i in range(3))
    if group == "sensor_noise":
        return _outside(value, getattr(eff.sensor_noise, field) or 0.0, MARGIN["noise"])
    if group == "camera_pose":
        if field.endswith("_rad"):
            return _outside(math.degrees(value), getattr(eff.camera_pose, field[:-4] + "_deg"), 1.0)
        return _outside(value, getattr(eff.camera_pose, field), 0.02)
    raise AssertionError(f"no training range known for condition key {key!r}: extend this test")


def _transform_as_factors(transform: dict) -> dict:
    """A transform condition as the sensor-noise factors it amounts to (black camera = every frame lost)."""
    out = {}
    if transform.get("camera") in ("black", "zero", "missing"):
        out["sensor_noise.camera_dropout"] = 1.0
    if transform.get("lidar") in ("black", "zero", "missing"):
        out["sensor_noise.lidar_dropout"] = 1.0
    for sensor, std in (transform.get("noise") or {}).items():
        out[f"sensor_noise.{sensor}_noise_std"] = std
    return out


def _conditions(suite: str) -> dict[str, dict]:
    """condition -> its factors (scenario keys, and transforms as sensor-noise factors); attacks left out."""
    out = {}
    for name, cond in load_suite(suite)["robustness"]["conditions"].items():
        factors = {**(cond.get("scenario") or {}), **_transform_as_factors(cond.get("transform") or {})}
        if factors:
            out[name] = factors
    return out


@pytest.mark.parametrize("driving_id", DRIVING)
@pytest.mark.parametrize("suite", ["shift", "quick"])
def test_evaluation_shifts_lie_outside_every_training_range(driving_id, suite):
    """Every factor a shift (or quick) condition sets lies outside the widest training distribution
    (all presets of the env at once), by a margin: robustness there is generalisation, not memorisation."""
    spec = _presets(driving_id)
    widest = load_env_spec(env_yaml(DRIVING[driving_id]), {"scenario.use": sorted(spec.presets)}).scenario.effective()
    conditions = _conditions(suite)
    assert conditions
    for name, factors in conditions.items():
        for key, value in factors.items():
            assert _factor_outside(key, value, widest), f"{suite}.{name}: {key}={value} lies inside the training range"


def test_outside_check_can_fail():
    """The check above rejects a value inside the ranges (so it is not vacuous)."""
    widest = load_env_spec(env_yaml("follow"), {"scenario.use": ["appearance", "sensors", "traffic"]}).scenario.effective()
    assert not _factor_outside("light.intensity", 1.0, widest)
    assert not _factor_outside("colors.road", [0.22, 0.22, 0.24, 1.0], widest)
    assert not _factor_outside("light.direction", [-50.0, 30.0, 100.0], widest)
    assert not _factor_outside("sensor_noise.camera_noise_std", 3.0, widest)
    assert not _factor_outside("camera_pose.dpitch_rad", math.radians(1.0), widest)


def test_shift_suite_validates_with_appearance_and_sensor_faults():
    s, quick = load_suite("shift"), load_suite("quick")
    assert s["name"] == "shift" and s["seeds"] >= 10
    conds = s["robustness"]["conditions"]
    appearance = [n for n, c in conds.items() if any(k.split(".")[0] in ("light", "colors") for k in c.get("scenario") or {})]
    faults = [n for n, c in conds.items() if c.get("transform") or any(
        k.split(".")[0] in ("sensor_noise", "camera_pose") for k in c.get("scenario") or {})]
    assert len(appearance) >= 5 and len(faults) >= 4
    assert {"camera_black", "lidar_missing"} <= set(conds)
    assert s["thresholds"]["driving"] == quick["thresholds"]["driving"]  # same pass thresholds as quick


def _short_shift(conditions: list[str]) -> dict:
    suite = load_suite("shift")
    suite.update(seeds=1, max_episode_s=3.0, baselines=False)
    suite["robustness"] = {"seeds": 1, "max_s": 3.0,
                           "conditions": {n: suite["robustness"]["conditions"][n] for n in conditions}}
    return suite


def test_scripted_driver_runs_through_a_shift_condition():
    """The privileged scripted driver reads no sensors: the sensor-fault conditions run (and cannot hurt
    it), the camera-only appearance conditions are skipped with a note, as in the quick suite."""
    res = evaluate("scripted", "lane-keep", _short_shift(["heavy_noise", "night"]), sections=("safety", "robustness"))
    noisy = res["robustness"]["heavy_noise"]
    assert noisy["summary"]["collision"]["rate"] == 0.0 and noisy["summary"]["lane_invasion_events"]["mean"] == 0.0
    assert noisy["per_episode"][0]["distance_km"] > 0.015
    assert "no camera" in res["robustness"]["night"]["note"]


def test_a_camera_policy_sees_a_novel_light_condition():
    frames = []

    def look_and_go(obs):
        frames.append(np.asarray(obs["camera"]).mean())
        return np.array([0.0, 0.3], np.float32)

    res = evaluate(look_and_go, "lane-keep", _short_shift(["night"]), sections=("safety", "robustness"),
                   env_config={"world.renderer": "tiny"})
    assert res["robustness"]["night"]["summary"]["steps"]["n"] == 1
    clean_steps = int(res["robustness"]["clean"]["summary"]["steps"]["mean"])
    # the safety (clean) episode's frames come first, then the night episode's: night is darker
    assert np.mean(frames[-clean_steps:]) < 0.9 * np.mean(frames[:clean_steps])
