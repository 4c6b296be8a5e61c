"""Run folders that are damaged or come from elsewhere: resume falls back past a truncated checkpoint, a run or
weights trained under another renderer warn, naming both; grasp runs carry train / validation / test configs."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

# a tiny lane-keep run without the camera (so no encoder): seconds, not minutes
FAST = [
    "--env", "lane-keep", "--n-envs", "1", "--vec-env", "dummy", "--no-progress", "--eval-freq", "0",
    "--final-eval", "0", "--checkpoint-freq", "128", "--set", "encoder=null", "--set", "policy=MultiInputPolicy",
    "--set", "env_config.sensors.camera.enabled=false", "--set", "env_config.sensors.lidar.beams=8",
    "--set", "normalisation.norm_obs=false", "--set", "hyperparams.n_steps=64", "--set", "hyperparams.batch_size=32",
    "--set", "hyperparams.n_epochs=1",
]  # fmt: skip


def train(*argv) -> int:
    from kai_drive.train import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("runs")
    assert train(*FAST, "--timesteps", 256, "--log-folder", logs) == 0
    return logs / "lane-keep" / "ppo_1"


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "lane-keep" / "ppo_1"
    shutil.copytree(run, dst)
    return dst


def test_resume_falls_back_past_a_truncated_checkpoint(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    steps = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("model_*_steps.zip"))
    assert steps[-2:] == [128, 256], steps
    newest = run / "checkpoints" / "model_256_steps.zip"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a crash mid-copy, a full disk...
    capsys.readouterr()

    assert train("--resume", run, "--timesteps", 320, "--no-progress", "--final-eval", 0) == 0
    err = capsys.readouterr().err
    assert str(newest) in err and "128 steps" in err and "model_128_steps.zip" in err, err
    assert "resumed" in (run / "command.txt").read_text() and "from model_128_steps.zip" in (run / "command.txt").read_text()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["timesteps"] >= 320
    # training went on from 128 steps and wrote a good checkpoint over the bad one's step count or beyond
    from kai_drive.training.runs import RunFolder, checkpoint_problem

    ckpt, skipped = RunFolder(run).latest_readable_checkpoint(needs_vecnormalize=True)
    assert ckpt is not None and ckpt[0] >= 320 and checkpoint_problem(ckpt[1], ckpt[2]) is None


def test_resume_with_only_unreadable_checkpoints_exits_2_naming_them(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    for p in (run / "checkpoints").glob("model_*_steps.zip"):
        p.write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    assert train("--resume", run, "--timesteps", 320, "--no-progress") == 2
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err and "model_256_steps.zip" in err and "model_128_steps.zip" in err
    assert "start a new run" in err


def test_truncated_vecnormalize_counts_as_unreadable(tiny_run, tmp_path):
    from kai_drive.training.runs import RunFolder

    run = _copy(tiny_run, tmp_path)
    vn = run / "checkpoints" / "vecnormalize_256_steps.pkl"
    vn.write_bytes(vn.read_bytes()[:20])
    ckpt, skipped = RunFolder(run).latest_readable_checkpoint(needs_vecnormalize=True)
    assert ckpt[0] == 128 and [s for s, _, _ in skipped] == [256] and "vecnormalize_256_steps.pkl" in skipped[0][2]
    (run / "checkpoints" / "vecnormalize_128_steps.pkl").unlink()  # a checkpoint without its stats
    ckpt, skipped = RunFolder(run).latest_readable_checkpoint(needs_vecnormalize=True)
    assert ckpt is None and "missing" in skipped[-1][2]


def test_config_records_renderer_and_a_camera_less_run_never_warns(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["renderer"] in ("tiny", "egl", "opengl")
    assert set(config["env_configs"]) == {"train", "eval", "test"}
    # this run sees no images (camera off): a renderer change cannot matter, so no warning
    other = "egl" if config["renderer"] == "tiny" else "tiny"
    config["renderer"] = other
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train("--resume", run, "--timesteps", 320, "--no-progress") == 0
    assert not [w for w in caught if "renderer" in str(w.message)]


def test_run_renderer_mismatch_warns_naming_both(tmp_path):
    """A camera policy's run recorded under "egl", loaded here (TinyRenderer on a CPU machine): the check
    load_run and play use warns, naming both renderers and the run."""
    import gymnasium

    import kai_drive  # noqa: F401
    from kai_drive.perception.weights import RendererMismatchWarning
    from kai_drive.training.runs import check_run_renderer, run_renderer

    env = gymnasium.make("KaiDrive/LaneKeep-v0")
    here = env.unwrapped.renderer
    env.close()
    other = "egl" if here != "egl" else "tiny"
    with pytest.warns(RendererMismatchWarning) as rec:
        assert check_run_renderer({"renderer": other}, "KaiDrive/LaneKeep-v0", {}, "the policy of runs/x/ppo_1") == other
    msg = str(rec[0].message)
    assert f"'{other}'" in msg and f"'{here}'" in msg and "runs/x/ppo_1" in msg and f"world.renderer={other}" in msg
    # same renderer, or camera off: silent; an old config without the key means TinyRenderer
    assert run_renderer({}) == "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_run_renderer({"renderer": here}, "KaiDrive/LaneKeep-v0", {}, "x")
        check_run_renderer({"renderer": other}, "KaiDrive/LaneKeep-v0", {"sensors.camera.enabled": False}, "x")


# -- roles of a recipe's env configs --------------------------------------------------------------
def test_grasp_recipe_selects_on_validation_and_reports_on_test():
    from kai_drive.training.recipe import env_config_for, load_recipe

    recipe, _ = load_recipe("ppo", "KaiDrive/Grasp-v0", "grasp")
    splits = {role: env_config_for(recipe, role).get("task.object_split", "train") for role in ("train", "eval", "test")}
    assert splits == {"train": "train", "eval": "validation", "test": "test"}
    # every role shares the rest of the env (wrist camera, assisted mode)
    for role in ("train", "eval", "test"):
        cfg = env_config_for(recipe, role)
        assert cfg["task.assisted"] is True and cfg["task.camera_mount"] == "wrist"


def test_old_run_config_without_test_env_config_tests_on_its_final_eval_config():
    from kai_drive.training.recipe import env_config_for

    old = {"env_config": {"task.assisted": True}, "eval_env_config": {"task": {"object_split": "test"}}}
    assert env_config_for(old, "test") == {"task.assisted": True, "task.object_split": "test"}
    new = dict(old, test_env_config={}, eval_env_config={"task.object_split": "validation"})
    assert env_config_for(new, "test") == {"task.assisted": True}
    assert env_config_for(new, "eval")["task.object_split"] == "validation"


@pytest.mark.slow
def test_grasp_run_final_eval_load_run_and_play_use_test_objects(tmp_path, capsys):
    """A tiny grasp run (2 demonstrations, 64 PPO steps): periodic evaluation on validation objects, final
    evaluation, load_run (evaluate --run) and play --run on test objects."""
    import gymnasium

    import kai_drive  # noqa: F401
    from kai_drive.evaluation.adapters import load_run
    from kai_drive.tasks.grasping import object_models

    logs = tmp_path / "runs"
    rc = train(
        "--env", "grasp", "--timesteps", 64, "--n-envs", 1, "--vec-env", "dummy", "--no-progress",
        "--eval-freq", 64, "--eval-episodes", 1, "--final-eval", 1, "--log-folder", logs,
        "--set", "eval.n_envs=1", "--set", "imitation.episodes=2", "--set", "imitation.epochs=1",
        "--set", "imitation.n_envs=1", "--set", "hyperparams.n_steps=64", "--set", "hyperparams.batch_size=32",
    )  # fmt: skip
    assert rc == 0
    run = logs / "grasp" / "ppo_1"
    config = yaml.safe_load((run / "config.yaml").read_text())
    roles = {role: cfg.get("task.object_split") for role, cfg in config["env_configs"].items()}
    assert roles == {"train": "train", "eval": "validation", "test": "test"}
    final = json.loads((run / "final_eval.json").read_text())
    assert final["env_config"]["task.object_split"] == "test"

    policy, env_id = load_run(run, "best")
    assert env_id == "KaiDrive/Grasp-v0" and policy.env_config["task.object_split"] == "test"
    assert policy.trained_renderer == config["renderer"]
    env = gymnasium.make(env_id, config=dict(policy.env_config, **{"sensors.camera.enabled": False}))
    try:
        test_models = set(object_models("test"))
        for seed in range(3):
            _, info = env.reset(seed=seed)
            assert {o["model"] for o in info["scenario"]["objects"]} <= test_models
    finally:
        env.close()

    from kai_drive.training.playback import find_run_files

    cfg = find_run_files(run).config
    assert cfg["env_config"]["task.object_split"] == "test"
    cfg = find_run_files(run, role="eval").config
    assert cfg["env_config"]["task.object_split"] == "validation"


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_driving_validation_and_test_roads_are_disjoint(algo):
    """Driving holds out by road seed: the periodic evaluations (model selection) and the final evaluation
    drive disjoint road ranges, for every catalogue recipe and for any episode count a recipe accepts."""
    from kai_drive.catalog import env_ids, resolve_env
    from kai_drive.training.envs import EVAL_ROAD_SEED_BASE, TEST_ROAD_SEED_BASE, TRAIN_ROAD_SEED_HIGH
    from kai_drive.training.recipe import RecipeError, load_recipe

    assert TRAIN_ROAD_SEED_HIGH <= EVAL_ROAD_SEED_BASE
    for env_id in env_ids():
        try:
            recipe, _ = load_recipe(algo, env_id, resolve_env(env_id)[1])
        except RecipeError:
            continue  # no recipe for this env in this file
        validation = set(range(EVAL_ROAD_SEED_BASE, EVAL_ROAD_SEED_BASE + recipe.eval.episodes))
        test = set(range(TEST_ROAD_SEED_BASE, TEST_ROAD_SEED_BASE + recipe.eval.final_episodes))
        assert not validation & test and min(validation) >= TRAIN_ROAD_SEED_HIGH
    with pytest.raises(RecipeError, match="eval.episodes"):
        load_recipe(algo, "KaiDrive/LaneKeep-v0", "lane-keep", overrides={"eval": {"episodes": 2**29 + 1}})
    assert EVAL_ROAD_SEED_BASE + 2**29 <= TEST_ROAD_SEED_BASE
