"""Scenario factors as data: exact overrides, independence of factors, replay, save/restore, actors."""

import json
import math

import gymnasium
import numpy as np
import pytest

import kai_drive  # noqa: F401
from kai_drive.sensors.camera import SEG_CLASSES
from kai_drive.sim.scenario import Scenario

DRIVING = ["KaiDrive/LaneKeep-v0", "KaiDrive/Follow-v0", "KaiDrive/Highway-v0", "KaiDrive/Crossing-v0"]
GO = np.array([0.0, 0.3], np.float32)


def _same_except(a: dict, b: dict, changed: set) -> None:
    for k in a:
        if k not in changed:
            assert a[k] == b[k], f"factor {k!r} changed when only {sorted(changed)} was set"


@pytest.mark.parametrize("driving_id", DRIVING)
def test_record_is_typed_json_and_replays_exactly(driving_id, make_env):
    env_id = driving_id
    env = make_env(env_id)
    obs, info = env.reset(seed=11)
    rec = info["scenario"]
    Scenario.model_validate(rec)  # typed
    assert json.loads(json.dumps(rec)) == rec  # JSON-serialisable as is
    other = make_env(env_id)
    obs2, info2 = other.reset(seed=999, options={"scenario": json.loads(json.dumps(rec))})
    assert info2["scenario"] == rec
    for k in obs:
        assert obs[k].tobytes() == obs2[k].tobytes(), k
    for _ in range(10):
        a, b = env.step(GO), other.step(GO)
        for k in a[0]:
            assert a[0][k].tobytes() == b[0][k].tobytes(), k
        assert a[1:4] == b[1:4]


@pytest.mark.parametrize(
    "driving_id, override",
    [
        ("KaiDrive/Follow-v0", {"lead": {"brake_at_s": 4.0, "brake_decel_mps2": 6.0}}),
        ("KaiDrive/Follow-v0", {"light": {"intensity": 0.5}}),
        ("KaiDrive/Follow-v0", {"route_length_m": 210.0}),
        ("KaiDrive/Follow-v0", {"start_speed_mps": 3.0}),
        ("KaiDrive/Follow-v0", {"colors": {"road": [0.5, 0.1, 0.1, 1.0]}}),
        ("KaiDrive/Follow-v0", {"sensor_noise": {"lidar_noise_std": 0.1}}),
        ("KaiDrive/Highway-v0", {"traffic": []}),
        ("KaiDrive/Crossing-v0", {"pedestrians": [{"s_m": 60.0, "side": 1, "speed_mps": 1.2}]}),
        ("KaiDrive/Crossing-v0", {"distractors": []}),
        ("KaiDrive/LaneKeep-v0", {"obstacles": [{"s_m": 60.0, "d_m": -1.75}]}),
    ],
)
def test_one_factor_changes_nothing_else(driving_id, override, make_env):
    env_id = driving_id
    env = make_env(env_id)
    _, base = env.reset(options={"road_seed": 5, "noise_seed": 1})
    _, cf = env.reset(options={"road_seed": 5, "noise_seed": 1, "scenario": override})
    a, b = base["scenario"], cf["scenario"]
    _same_except(a, b, set(override))
    for k, v in override.items():  # the set factor is exactly what was asked
        if isinstance(v, dict):
            for kk, vv in v.items():
                got = b[k][kk]
                assert (list(got) if isinstance(got, (list, tuple)) else got) == vv
        elif isinstance(v, list) and v:
            assert b[k][0]["s_m"] == v[0]["s_m"]
        else:
            assert b[k] == v


def test_factor_streams_are_independent_of_spec_of_other_factors(make_env):
    """Randomising one factor in the YAML (here traffic count) leaves the others' draws unchanged."""
    a = make_env("KaiDrive/Highway-v0")
    b = make_env("KaiDrive/Highway-v0", config={"scenario": {"traffic": {"count": 2}, "light": {"intensity": [0.5, 0.9]}}})
    ra = a.reset(options={"road_seed": 3, "noise_seed": 0})[1]["scenario"]
    rb = b.reset(options={"road_seed": 3, "noise_seed": 0})[1]["scenario"]
    assert len(rb["traffic"]) == 2 and rb["traffic"] == ra["traffic"][:2]
    _same_except(ra, rb, {"traffic", "light"})


def test_counterfactual_light_changes_pixels_not_geometry(make_env):
    env = make_env("KaiDrive/Follow-v0")
    o1, _ = env.reset(options={"road_seed": 2, "noise_seed": 0})
    o2, i2 = env.reset(options={"road_seed": 2, "noise_seed": 0, "scenario": {"light": {"intensity": 0.4, "direction": [1, 0, 1]}}})
    assert i2["scenario"]["light"]["intensity"] == 0.4
    assert o1["camera"].tobytes() != o2["camera"].tobytes()
    assert o1["camera"].astype(float).mean() > o2["camera"].astype(float).mean()  # darker
    assert o1["lidar"].tobytes() == o2["lidar"].tobytes()
    assert o1["state"].tobytes() == o2["state"].tobytes()


def test_domain_randomisation_ranges_from_yaml_config(make_env):
    env = make_env("KaiDrive/LaneKeep-v0", config={"scenario": {"light": {"intensity": [0.6, 1.0]},
                                                                 "colors": {"road": [[0.1, 0.1, 0.1, 1], [0.4, 0.4, 0.4, 1]]}}})
    vals, roads = [], []
    for seed in range(8):
        rec = env.reset(seed=seed)[1]["scenario"]
        vals.append(rec["light"]["intensity"])
        roads.append(rec["colors"]["road"][0])
    assert all(0.6 <= v <= 1.0 for v in vals) and len(set(vals)) == 8
    assert all(0.1 <= v <= 0.4 for v in roads)
    with pytest.raises(Exception, match=r"scenario\.light\.intensity"):
        gymnasium.make("KaiDrive/LaneKeep-v0", config={"scenario": {"light": {"intensity": [1.0, 0.5]}}})


def test_bad_overrides_name_the_factor(make_env):
    env = make_env("KaiDrive/Follow-v0")
    with pytest.raises(ValueError, match="unknown factors.*weather"):
        env.reset(seed=0, options={"scenario": {"weather": "rain"}})
    with pytest.raises(ValueError, match=r"scenario\.lead\.brake_decel_mps2"):
        env.reset(seed=0, options={"scenario": {"lead": {"brake_decel_mps2": -1.0}}})
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(seed=0, options={"scenaro": {}})
    with pytest.raises(ValueError, match=r"traffic\[0\]\.lane"):
        env.reset(seed=0, options={"scenario": {"traffic": [{"lane": 2, "s_m": 40, "speed_mps": 5, "desired_speed_mps": 5}]}})


def test_sensor_noise_factor_applies(make_env):
    env = make_env("KaiDrive/LaneKeep-v0")
    o1, _ = env.reset(options={"road_seed": 4, "noise_seed": 0})
    o2, _ = env.reset(options={"road_seed": 4, "noise_seed": 0, "scenario": {"sensor_noise": {"camera_noise_std": 20.0}}})
    assert o1["lidar"].tobytes() == o2["lidar"].tobytes()
    diff = np.abs(o1["camera"].astype(int) - o2["camera"].astype(int))
    assert 5 < diff.mean() < 30
    o3, _ = env.reset(options={"road_seed": 4, "noise_seed": 0})  # back to the spec's level (0)
    assert o3["camera"].tobytes() == o1["camera"].tobytes()


@pytest.mark.parametrize("driving_id", ["KaiDrive/Follow-v0", "KaiDrive/Highway-v0", "KaiDrive/Crossing-v0"])
def test_restored_branch_replays_bit_identically(driving_id, make_env):
    env_id = driving_id
    env = make_env(env_id, config={"sensors": {"lidar": {"noise_std": 0.02}, "camera": {"noise_std": 3.0}}})
    env.reset(seed=7)
    rng = np.random.default_rng(0)
    for _ in range(15):
        env.step(np.array([0.0, 0.4], np.float32))
    handle = env.unwrapped.save_state()
    actions = rng.uniform([-0.2, -0.5], [0.2, 1.0], size=(25, 2)).astype(np.float32)

    def branch():
        out = []
        for act in actions:
            obs, r, term, trunc, info = env.step(act)
            out.append(({k: v.tobytes() for k, v in obs.items()}, r, term, trunc, info["gap_m"], info["speed_mps"]))
            if term or trunc:
                break
        return out

    first = branch()
    env.unwrapped.restore_state(handle)
    second = branch()
    assert first == second
    # a different branch from the same point diverges, then restoring still replays the first
    env.unwrapped.restore_state(handle)
    env.step(np.array([0.0, -1.0], np.float32))
    env.unwrapped.restore_state(handle)
    assert branch() == first
    env.unwrapped.remove_state(handle)


def test_restore_refuses_a_handle_from_another_episode(make_env):
    env = make_env("KaiDrive/Follow-v0")
    env.reset(seed=0)
    h = env.unwrapped.save_state()
    env.reset(seed=1)
    with pytest.raises(ValueError, match="another episode"):
        env.unwrapped.restore_state(h)


def _drive_into(env, options, steps=200):
    env.reset(options=options)
    info = {}
    for _ in range(steps):
        _, _, term, trunc, info = env.step(np.array([0.0, 0.6], np.float32))
        if term or trunc:
            break
    return info


def test_collisions_are_real_contacts_and_name_the_actor(make_env):
    env = make_env("KaiDrive/Follow-v0")
    stopped = {"gap_m": 12.0, "speed_mps": 0.0, "speed_amplitude_mps": 0.0, "brake_at_s": None}
    info = _drive_into(env, {"road_seed": 1, "scenario": {"lead": stopped, "start_offset_m": 0.0, "start_heading_rad": 0.0}})
    assert info["collision"] and info["collision_with"] == "vehicle"
    assert info["gap_m"] == 0.0 and not info["is_success"]

    env = make_env("KaiDrive/LaneKeep-v0")
    info = _drive_into(env, {"road_seed": 1, "scenario": {"obstacles": [{"s_m": 25.0, "d_m": -1.75}],
                                                          "start_offset_m": 0.0, "start_heading_rad": 0.0}})
    assert info["collision_with"] == "obstacle"

    env = make_env("KaiDrive/Crossing-v0")
    ped = {"s_m": 25.0, "side": -1, "speed_mps": 0.05, "start_time_s": 0.0, "start_d_m": -1.75}
    info = _drive_into(env, {"road_seed": 1, "scenario": {"pedestrians": [ped], "distractors": [],
                                                          "start_offset_m": 0.0, "start_heading_rad": 0.0}})
    assert info["collision_with"] == "pedestrian"


def test_gap_ttc_headway_follow_the_lead(make_env):
    env = make_env("KaiDrive/Follow-v0")
    lead = {"gap_m": 20.0, "speed_mps": 5.0, "speed_amplitude_mps": 0.0, "brake_at_s": None}
    _, info = env.reset(options={"road_seed": 2, "scenario": {"lead": lead, "start_speed_mps": 8.0,
                                                               "start_offset_m": 0.0, "start_heading_rad": 0.0}})
    assert info["nearest_actor"] == "vehicle"
    assert info["gap_m"] == pytest.approx(20.0, abs=0.3)
    assert info["ttc_s"] == pytest.approx(20.0 / 3.0, rel=0.05)
    assert info["headway_s"] == pytest.approx(20.0 / 8.0, rel=0.05)
    # nothing ahead: infinite
    _, info = env.reset(options={"road_seed": 2, "scenario": {"lead": None}})
    assert math.isinf(info["gap_m"]) and math.isinf(info["ttc_s"]) and info["nearest_actor"] == ""


def test_sensors_see_actors_with_their_own_labels(make_env):
    env = make_env("KaiDrive/Crossing-v0", config={"sensors": {"camera": {"segmentation": True}}})
    scen = {
        "pedestrians": [{"s_m": 20.0, "side": -1, "speed_mps": 0.05, "start_time_s": 0.0, "start_d_m": -2.5}],
        "obstacles": [{"s_m": 25.0, "d_m": -0.2, "size_m": [1.0, 1.0, 1.0]}],
        "distractors": [], "start_offset_m": 0.0, "start_heading_rad": 0.0, "route_length_m": 220.0,
    }
    obs, _ = env.reset(options={"road_seed": 0, "scenario": scen})
    labels = set(np.unique(obs["segmentation"]).tolist())
    assert {SEG_CLASSES["road"], SEG_CLASSES["pedestrian"], SEG_CLASSES["obstacle"]} <= labels
    env = make_env("KaiDrive/Follow-v0", config={"sensors": {"camera": {"segmentation": True}}})
    lead = {"gap_m": 10.0, "speed_mps": 5.0, "speed_amplitude_mps": 0.0, "brake_at_s": None}
    obs, _ = env.reset(options={"road_seed": 0, "scenario": {"lead": lead, "start_offset_m": 0.0, "start_heading_rad": 0.0}})
    assert SEG_CLASSES["vehicle"] in obs["segmentation"]
    # the forward lidar beam hits the lead car about 10 m + the ego's half length ahead of the lidar
    lidar = env.unwrapped.sensors[1]
    fwd = int(np.argmin(np.abs(lidar.angles)))
    assert obs["lidar"][fwd] * 40.0 == pytest.approx(10.0 + 2.25, abs=0.5)
