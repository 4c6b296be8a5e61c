"""`python -m kai_drive.evaluate ... --ray` gives the same numbers as a serial run: a tiny suite (2 seeds, short
episodes, every kind of episode job: safety, robustness transforms and a scenario factor, paired interventions,
but-for replays) run serially and on a local 2-CPU Ray instance; the result.json files must be equal byte for
byte once the timing / provenance fields are removed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

ray = pytest.importorskip("ray")

#: fields that describe the run, not the policy: wall times, when / where / how it ran
NOT_NUMBERS = ("wall_s", "created", "machine", "command", "execution")
FAST = {"sensors.camera.enabled": False, "sensors.lidar.beams": 16}
SUITE = {
    "name": "tiny", "seeds": 2, "max_episode_s": 4.0,
    "robustness": {"seeds": 2, "max_s": 3, "conditions": {
        "obs_noise": {"transform": {"noise": {"lidar": 0.05, "state": 0.05}}},
        "lidar_missing": {"transform": {"lidar": "missing"}, "needs": "lidar"},
        "dim_light": {"scenario": {"light.intensity": 0.45}},
        "camera_black": {"transform": {"camera": "black"}, "needs": "camera"}}},  # skipped: no camera
    "causal": {"seeds": 2, "horizon_s": 3, "interventions": {
        "lead_brake": {"expect": "respond", "requires": ["lead"], "control": {"lead.brake_at_s": None},
                       "treatment": {"lead.brake_at_s": 0.5, "lead.brake_decel_mps2": 6.0, "lead.brake_duration_s": 2.0}},
        "distractor_colour": {"expect": "ignore", "treatment": {"distractors.0.color": [0.95, 0.05, 0.05, 1.0]},
                              "base": {"distractors": [{"s_m": "+20", "side": -1, "distance_m": 1.0, "size_m": 1.5,
                                                        "color": [0.5, 0.5, 0.5, 1.0]}]}}},
        "but_for": {"max_episodes": 2, "branch_s": 1.0, "post_s": 1.0}, "modality": {"max_obs": 10}},
    "report": {"videos": 0},
    "thresholds": {"safety.collision.rate": "<= 0.5"},
}  # fmt: skip


def weaver(obs):
    """Reads lidar and state, steers off the lane within seconds: failures for the but-for replays."""
    lidar = np.asarray(obs["lidar"])
    return np.array([0.3 + 0.2 * float(obs["state"][0]), 0.6 if float(lidar[len(lidar) // 2]) > 0.3 else -1.0], np.float32)


def numbers(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k not in NOT_NUMBERS}, sort_keys=True)


@pytest.fixture(scope="module")
def local_ray():
    """One local 2-CPU Ray for the module (evaluate --ray uses an initialised Ray as it is)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_cli_ray_equals_serial_scripted(tmp_path, local_ray):
    from kai_drive.evaluate import main

    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    args = ["--env", "follow", "--policy", "scripted", "--suite", str(suite), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "--num-cpus", "2"]) == 0
    serial = json.loads((tmp_path / "serial" / "result.json").read_text())
    par = json.loads((tmp_path / "ray" / "result.json").read_text())
    assert serial["execution"] == {"backend": "serial"} and par["execution"]["backend"] == "ray"
    assert par["execution"]["policy_from"] == "spec"  # the workers rebuilt the scripted policy by name
    assert numbers(par) == numbers(serial)
    assert serial["robustness"]["dim_light"]["per_episode"] and serial["causal"]["interventions"]["lead_brake"]["n"] == 2


def test_library_ray_equals_serial_with_a_picklable_callable(local_ray):
    from kai_drive.evaluation import evaluate
    from kai_drive.evaluation.report import to_jsonable

    serial = evaluate(weaver, "follow", SUITE, env_config=FAST)
    par = evaluate(weaver, "follow", SUITE, env_config=FAST, ray=True)
    assert par["execution"]["policy_from"] == "pickle"
    # every kind of episode job ran
    assert [c for c in ("obs_noise", "lidar_missing", "dim_light") if "per_episode" in serial["robustness"][c]] == [
        "obs_noise", "lidar_missing", "dim_light"]
    assert "note" in serial["robustness"]["camera_black"]
    assert all(r["n"] == 2 for r in serial["causal"]["interventions"].values())
    assert len(serial["causal"]["but_for"]) == 2 and serial["causal"]["modality"]["lidar"]["action_change"]["n"] > 0
    assert numbers(to_jsonable(par)) == numbers(to_jsonable(serial))
    # the trajectories the workers sent back are the serial ones, step for step
    assert [t.actions_array().tolist() for t in par["_trajectories"]] == [t.actions_array().tolist() for t in serial["_trajectories"]]
