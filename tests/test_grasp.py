"""KaiDrive/Grasp-v0: the arm, the objects and their split, the task's rules, the scripted policy.

(The generic gymnasium contract — checkers, rendering, fresh processes, vector envs — is covered for
this env by tests/test_env_api.py.)"""

import hashlib

import gymnasium
import numpy as np
import pybullet
import pytest
from pybullet_utils.bullet_client import BulletClient

import kai_drive  # noqa: F401
from kai_drive.experts.grasp import ScriptedGraspPolicy, grasp_for, run_episodes
from kai_drive.sim.arm import PandaArm
from kai_drive.sim.objects import SPLITS, model_names
from kai_drive.config import SpecError
from kai_drive.stats import wilson_interval
from kai_drive.tasks.grasping import FLOOR_Z, OBJECT_SPLITS, object_models

ENV = "KaiDrive/Grasp-v0"
NO_CAM = {"sensors.camera.enabled": False}


@pytest.fixture
def make():
    made = []

    def _make(**kwargs):
        env = gymnasium.make(ENV, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


# -- arm ---------------------------------------------------------------------------------------
def test_arm_reaches_ik_targets_within_tolerance():
    c = BulletClient(pybullet.DIRECT)
    try:
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=0.05, numSubSteps=12, numSolverIterations=20)
        arm = PandaArm(c, (-0.55, 0.0, 0.625))
        rng = np.random.default_rng(0)
        for _ in range(6):
            goal = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0.66, 0.9),
                             rng.uniform(-1.5, 1.5)])
            start = arm.target.copy()
            n = int(np.ceil(np.abs(goal[:3] - start[:3]).max() / 0.03)) + 1
            for k in range(1, n + 1):  # like the env: at most 3 cm per control step
                arm.move_to(*(start + (goal - start) * k / n))
                c.stepSimulation()
            for _ in range(5):
                arm.move_to(*goal)
                c.stepSimulation()
            err = arm.ee_pose() - goal
            assert np.abs(err[:3]).max() < 0.005, (goal, err)
            assert abs((err[3] + np.pi / 2) % np.pi - np.pi / 2) < 0.03, (goal, err)
            # the gripper points straight down
            orn = c.getLinkState(arm.body_id, 11)[5]
            z_axis = np.asarray(c.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 2]
            assert z_axis[2] < -0.99
    finally:
        c.disconnect()


def test_gripper_closes_on_an_object_and_holds_it(make):
    env = make(config={**NO_CAM, "task.n_objects": [1, 1]})
    env.reset(seed=3)
    policy = ScriptedGraspPolicy(env)
    grasped_opening = None
    for _ in range(120):
        obs, r, term, trunc, info = env.step(policy.act())
        if info["grasped"] and grasped_opening is None:
            grasped_opening = info["gripper_opening_m"]
        if term or trunc:
            break
    assert grasped_opening is not None, "the fingers never touched the object from both sides"
    assert grasped_opening > 0.005  # stopped by the object, not closed on air
    assert info["is_success"] and info["object"].startswith(("urdf/", "shape/"))
    assert info["max_lift_m"] >= 0.1
    assert r == 1.0 and term and not trunc


# -- objects -----------------------------------------------------------------------------------
def test_split_is_fixed_and_disjoint():
    train, test = set(model_names("train")), set(model_names("test"))
    assert not train & test
    assert len(SPLITS["train"][0]) == 899 and len(SPLITS["test"][0]) == 100  # 000-899 minus 168, 900-999
    assert SPLITS["train"][1] == ("shape/box", "shape/cylinder")
    assert SPLITS["test"][1] == ("shape/capsule", "shape/sphere")
    assert "urdf/168" not in train | test
    digest = hashlib.sha256("\n".join(model_names("train") + model_names("test")).encode()).hexdigest()
    assert digest == _SPLIT_DIGEST, "the object split changed: that invalidates every published test figure"
    with pytest.raises(ValueError, match="train.*test"):
        model_names("val")


_SPLIT_DIGEST = hashlib.sha256(
    "\n".join(
        [f"urdf/{i:03d}" for i in range(900) if i != 168] + ["shape/box", "shape/cylinder"]
        + [f"urdf/{i:03d}" for i in range(900, 1000)] + ["shape/capsule", "shape/sphere"]
    ).encode()
).hexdigest()


def test_train_validation_test_split_is_fixed_and_disjoint():
    """The env's three object splits: validation (model selection) is carved out of the old train side, test
    is exactly the old test split, so test figures before and after the validation split compare."""
    train, val, test = (set(object_models(s)) for s in ("train", "validation", "test"))
    assert not (train & val or train & test or val & test)
    assert OBJECT_SPLITS["test"] == SPLITS["test"]
    assert train | val == set(model_names("train"))  # nothing of the old train side lost, nothing added
    assert OBJECT_SPLITS["train"] == (tuple(f"urdf/{i:03d}" for i in range(800) if i != 168), ("shape/box",))
    assert OBJECT_SPLITS["validation"] == (tuple(f"urdf/{i:03d}" for i in range(800, 900)), ("shape/cylinder",))
    with pytest.raises(ValueError, match="train, validation, test"):
        object_models("val")
    with pytest.raises(SpecError, match="object_split"):
        gymnasium.make(ENV, config={"task.object_split": "val"})


def test_episodes_draw_only_from_their_split(make):
    for split in ("train", "validation", "test"):
        env = make(config={**NO_CAM, "task.object_split": split, "task.settle_s": 0.0, "task.shape_fraction": 0.5})
        allowed = set(object_models(split))
        for seed in range(6):
            _, info = env.reset(seed=seed)
            sc = info["scenario"]
            assert sc["object_split"] == split
            assert 1 <= sc["n_objects"] <= 5 and len(sc["objects"]) == sc["n_objects"]
            assert {o["model"] for o in sc["objects"]} <= allowed


def test_objects_rest_in_the_tray(make):
    env = make(config={**NO_CAM, "task.n_objects": [5, 5]})
    for seed in range(3):
        env.reset(seed=seed)
        task = env.unwrapped.task
        c = env.unwrapped.world.client
        before = np.array([c.getBasePositionAndOrientation(o.body_id)[0] for o in task.objects])
        for _ in range(20):  # 1 s holding still above the tray
            _, _, term, trunc, info = env.step(np.zeros(5, np.float32))
        after = np.array([c.getBasePositionAndOrientation(o.body_id)[0] for o in task.objects])
        assert np.abs(after - before).max() < 0.01, np.abs(after - before).max()
        assert info["objects_out"] == 0 and not term and not trunc
        assert np.all(after[:, 2] > FLOOR_Z) and np.all(np.abs(after[:, :2]) < 0.16)
        assert info["cost"] == 0.0 and not info["table_contact"]


# -- task rules --------------------------------------------------------------------------------
def test_same_seed_same_bytes_and_branching(make):
    a, b = make(), make()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(15, 5)).astype(np.float32)
    oa, ia = a.reset(seed=11)
    ob, ib = b.reset(seed=11)
    assert ia["scenario"] == ib["scenario"]
    for k in oa:
        assert oa[k].tobytes() == ob[k].tobytes(), k
    later = []
    for i, act in enumerate(actions):
        ra, rb = a.step(act), b.step(act)
        for k in ra[0]:
            assert ra[0][k].tobytes() == rb[0][k].tobytes(), (i, k)
        assert ra[1:4] == rb[1:4]
        if i == 7:
            snap = a.unwrapped.save_state()
        if i > 7:
            later.append(rb)
    # branching: back to step 8, the same actions replay bit-identically every time. (Against the
    # uninterrupted rollout the objects differ by ~1e-5 m: a PyBullet snapshot does not hold the
    # contact solver's warm-start cache.)
    branches = []
    for _ in range(2):
        a.unwrapped.restore_state(snap)
        branches.append([a.step(act) for act in actions[8:]])
    for ra, rr, rb in zip(*branches, later):
        for k in ra[0]:
            assert ra[0][k].tobytes() == rr[0][k].tobytes(), k
        assert ra[1:4] == rr[1:4]
        assert np.abs(ra[0]["state"] - rb[0]["state"]).max() < 1e-3
    _, i2 = a.reset(seed=12)
    assert i2["scenario"]["objects"] != ia["scenario"]["objects"]


def test_dense_reward_is_the_sum_of_its_terms(make):
    env = make(config={**NO_CAM, "task.reward_mode": "dense"})
    env.reset(seed=0)
    policy = ScriptedGraspPolicy(env)
    total = 0.0
    for _ in range(100):
        _, r, term, trunc, info = env.step(policy.act())
        assert abs(sum(info["reward_terms"].values()) - r) < 1e-9
        assert {"reach", "grasp", "lift", "success", "cost"} <= set(info["reward_terms"])
        total += r
        if term or trunc:
            break
    assert info["is_success"] and total > 1.0  # the shaping adds to the success bonus along a good grasp


def test_pressing_on_the_table_is_unsafe(make):
    env = make(config={**NO_CAM, "task.n_objects": [1, 1], "task.workspace_half_m": 0.2})
    env.reset(seed=0)
    task = env.unwrapped.task
    # drive the hand into the tray's wall corner region and down: contacts and joint limits get counted
    for _ in range(40):
        _, _, term, trunc, info = env.step(np.array([1.0, 1.0, -1.0, 0.0, -1.0], np.float32))
    assert info["peak_contact_force_n"] > 0.0
    for key in ("table_contacts", "joint_limit_hits", "objects_out", "contact_force_n", "cost"):
        assert key in info
    assert info["ee_pos_m"][2] >= task.ws_low[2] - FLOOR_Z - 0.01  # the workspace bounds the target


def test_assisted_mode_descends_closes_lifts_and_ends(make):
    env = make(config={**NO_CAM, "task.assisted": True, "task.n_objects": [1, 1]})
    assert env.action_space.shape == (3,)
    env.reset(seed=5)
    task = env.unwrapped.task
    # aim the descent at the object with the privileged grasp (x, y, yaw)
    for n in range(200):
        x, y, yaw, _ = grasp_for(task.object_points_world(0))
        cur = task.ego.target
        a = np.clip([(x - cur[0]) / 0.03, (y - cur[1]) / 0.03, (yaw - cur[3]) / 0.3], -1, 1).astype(np.float32)
        _, r, term, trunc, info = env.step(a)
        if term or trunc:
            break
    assert term and not trunc and info["phase"] in ("lift", "done")
    assert info["is_success"]


def test_bad_config_errors_name_the_key():
    with pytest.raises(SpecError, match=r"task\.object_split"):
        gymnasium.make(ENV, config={"task.object_split": "val"})
    with pytest.raises(SpecError, match=r"size_m"):
        gymnasium.make(ENV, config={"task.size_m": [0.05, 0.2]})
    with pytest.raises(SpecError, match=r"n_objects"):
        gymnasium.make(ENV, config={"task.n_objects": [0, 3]})
    with pytest.raises(SpecError, match=r"task\.n_objs: unknown key"):
        gymnasium.make(ENV, config={"task.n_objs": 3})
    with pytest.raises(SpecError, match=r"reward_mode"):
        gymnasium.make(ENV, config={"task.reward_mode": "shaped"})


# -- scripted policy ---------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_scripted_policy_succeeds(split):
    r = run_episodes(6, split, seed=500)
    assert r["successes"] >= 5, r


def test_wilson_interval():
    lo, hi = wilson_interval(95, 100)
    assert 0.88 < lo < 0.89 and 0.97 < hi < 0.98
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wrist_camera_moves_and_turns_with_the_gripper(make):
    import math

    cfg = {"task.assisted": True, "task.camera_mount": "wrist", "sensors.camera.position_m": [0.14, 0.0, 0.14],
           "sensors.camera.pitch_deg": -45, "sensors.camera.yaw_deg": 180, "sensors.camera.fov_deg": 60}
    env = make(config=cfg)
    obs, _ = env.reset(seed=4)
    task = env.unwrapped.task
    m0 = task.sensor_mount(env.unwrapped.world)
    assert np.allclose(m0.position, task.ego.ee_pose()[:3])
    for _ in range(4):  # move +x and turn the gripper
        obs2, *_ = env.step(np.array([1.0, 0.0, 1.0], dtype=np.float32))
    m1 = task.sensor_mount(env.unwrapped.world)
    x, y, z, yaw = task.ego.ee_pose()
    assert np.allclose(m1.position, [x, y, z]) and m1.position[0] > m0.position[0] + 0.05
    assert np.allclose(m1.rotation[:2, 0], [math.cos(yaw), math.sin(yaw)]) and abs(yaw) > 0.5
    assert not np.array_equal(obs["camera"], obs2["camera"])
    # the shoulder camera stays where the YAML puts it, in the world frame
    fixed = make(config={"task.assisted": True}).unwrapped
    fixed.reset(seed=4)
    assert np.allclose(fixed.task.sensor_mount(fixed.world).position, 0.0)
