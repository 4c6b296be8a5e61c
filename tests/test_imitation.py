"""Imitation warm start (kai_drive.training.imitation): expert labels, data collection, behaviour cloning,
DAgger from a recipe, and the recipe checks."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import kai_drive  # noqa: F401
from kai_drive.training.imitation import Dataset, ExpertLabels, collect, fit_bc
from kai_drive.training.recipe import RecipeError, load_recipe

GRASP = "KaiDrive/Grasp-v0"
ASSISTED_NO_CAM = {"task.assisted": True, "sensors.camera.enabled": False}


def test_expert_labels_every_step_and_stops_acting_after_the_descent():
    env = ExpertLabels(gymnasium.make(GRASP, config=ASSISTED_NO_CAM), "scripted-grasp")
    obs, info = env.reset(seed=3)
    acting = [info["expert_acting"]]
    assert info["expert_action"].shape == (3,) and np.all(np.abs(info["expert_action"]) <= 1)
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(info["expert_action"])
        acting.append(info["expert_acting"])
        done = term or trunc
    env.close()
    # acting while the gripper descends, then never again (close, lift are automatic)
    first_off = acting.index(False)
    assert 8 <= first_off <= 16 and not any(acting[first_off:])
    assert info["is_success"]  # the expert labels are the scripted grasp, which succeeds on this seed


def test_assisted_scripted_expert_succeeds_on_test_objects():
    env = gymnasium.make(GRASP, config={**ASSISTED_NO_CAM, "task.object_split": "test"})
    from kai_drive.experts.grasp import ScriptedGraspPolicy

    policy, wins = ScriptedGraspPolicy(env), 0
    for seed in range(700, 710):
        env.reset(seed=seed)
        policy.reset()
        done = False
        while not done:
            _, _, term, trunc, info = env.step(policy.act())
            done = term or trunc
        wins += info["is_success"]
    env.close()
    assert wins >= 8


def _venv(n=2):
    from kai_drive.training.envs import make_vec_env

    return make_vec_env(GRASP, ASSISTED_NO_CAM, n, "dummy", "train", seed=0, expert="scripted-grasp")


def _ppo(venv):
    from stable_baselines3 import PPO

    return PPO("MultiInputPolicy", venv, n_steps=32, batch_size=32, seed=0, policy_kwargs={"net_arch": [32, 32]})


def test_collect_keeps_only_acting_steps_with_expert_labels():
    venv = _venv()
    data = Dataset()
    stats = collect(venv, None, 4, data, expert_drives=True)
    assert stats["episodes"] >= 4 and stats["success_rate"] >= 0.5
    obs, actions = data.arrays()
    assert len(actions) == stats["samples"] < stats["env_steps"]  # close/lift steps are not labelled
    assert obs["state"].shape == (len(actions), 12) and actions.shape == (len(actions), 3)
    venv.close()


def test_behaviour_cloning_fits_the_expert_and_dagger_collects_student_rollouts():
    venv = _venv()
    model = _ppo(venv)
    data = Dataset()
    collect(venv, model.policy, 6, data, expert_drives=True)
    # the camera is off here, so regress a target that the state determines: this checks the regression
    # machinery (the expert's own labels need the camera to be predictable)
    data.actions = [np.tanh(np.array([-10 * s[0], -10 * s[1], 2 * s[3]], dtype=np.float32)) for s in data.obs["state"]]
    obs, actions = data.arrays()

    def mse():
        pred, _ = model.policy.predict(obs, deterministic=True)
        return float(np.mean((pred - actions) ** 2))

    before = mse()
    losses = fit_bc(model.policy, data, epochs=60, batch_size=32, learning_rate=3e-3, augment_pad=0)
    after = mse()
    assert losses[-1] < 0.5 * losses[0] and after < 0.5 * before, (before, after, losses[0], losses[-1])
    # DAgger: the student drives, the expert labels what the student sees
    n = len(data)
    stats = collect(venv, model.policy, 2, data, expert_drives=False)
    assert len(data) == n + stats["samples"] and stats["samples"] > 0
    venv.close()


def test_recipe_checks():
    with pytest.raises(RecipeError, match="imitation.expert"):
        load_recipe("ppo", GRASP, "grasp", None, {"imitation": {"expert": "oracle"}})
    with pytest.raises(RecipeError, match="on-policy"):
        load_recipe("sac", "KaiDrive/LaneKeep-v0", "lane-keep", None, {"imitation": {"expert": "idm-pure-pursuit"}})
    with pytest.raises(RecipeError, match="norm_obs"):
        load_recipe("ppo", GRASP, "grasp", None, {"imitation": {"expert": "scripted-grasp"},
                                                  "normalisation": {"norm_obs": True}})
    r, _ = load_recipe("ppo", GRASP, "grasp", None, {"imitation": {"expert": "scripted-grasp", "dagger_rounds": 4}})
    assert r.imitation.expert == "scripted-grasp" and r.imitation.dagger_rounds == 4
    assert r.imitation.episodes == 1500  # the rest of the grasp recipe's section is kept


@pytest.mark.slow
def test_train_with_imitation_writes_its_record_and_evaluates_at_step_zero(tmp_path: Path):
    from kai_drive.train import main

    rc = main([
        "--env", "grasp", "--timesteps", "64", "--log-folder", str(tmp_path), "--no-progress",
        "--n-envs", "1", "--vec-env", "dummy", "--eval-episodes", "1", "--final-eval", "1",
        "--set", "imitation.expert=scripted-grasp", "--set", "imitation.episodes=2", "--set", "imitation.dagger_episodes=2", "--set", "imitation.dagger_rounds=1",
        "--set", "imitation.epochs=1", "--set", "imitation.n_envs=1", "--set", "eval.n_envs=1",
        "--set", "hyperparams.n_steps=64", "--set", "hyperparams.batch_size=32",
    ])  # fmt: skip
    assert rc == 0
    run = tmp_path / "grasp" / "ppo_1"
    record = json.loads((run / "imitation.json").read_text())
    assert [r["round"] for r in record["rounds"]] == ["demos", "dagger 1"]
    assert record["rounds"][0]["driver"] == "expert" and record["rounds"][1]["driver"] == "student"
    evals = json.loads((run / "evaluations.json").read_text())
    assert evals[0]["timesteps"] == 0  # the warm-started policy is evaluated before any RL step


def test_dataset_copies_what_it_is_given():
    d = Dataset()
    obs, act = {"state": np.zeros(3)}, np.zeros(2, dtype=np.float32)
    d.add(obs, act)
    obs["state"][:] = 1.0
    act[:] = 1.0  # buffers reused by the caller (VecEnv observation buffers, the label array)
    o, a = d.arrays()
    assert not o["state"].any() and not a.any()


def test_cut_idle_resets_envs_once_they_ignore_actions():
    venv = _venv()
    data = Dataset()
    stats = collect(venv, None, 4, data, expert_drives=True, cut_idle=True)
    # every simulated step is an acting (labelled) step; episodes cut early report no success rate
    assert stats["samples"] == stats["env_steps"] and stats["episodes"] >= 4 and stats["success_rate"] is None
    venv.close()
