"""Training CLI: short real runs (ppo, sac, td3), resume, Ctrl-C, recipes, bad input, play."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import pytest
import yaml

from kai_drive.catalog import env_ids

REPO = Path(__file__).resolve().parents[1]

# tiny, fast settings: one in-process env, a short final evaluation (the default lane-keep recipe's frozen
# encoders need the full 64-beam lidar and the camera)
TINY = [
    "--n-envs", "1", "--vec-env", "dummy", "--no-progress",
    "--eval-freq", "128", "--eval-episodes", "1", "--final-eval", "1", "--checkpoint-freq", "128",
    "--set", "eval.n_envs=1", "--set", "eval.start_timesteps=0", "--set", "env_config.render.width=160",
]  # fmt: skip
ALGO_SETS = {
    "ppo": ["--set", "hyperparams.n_steps=64", "--set", "hyperparams.batch_size=32", "--set", "hyperparams.n_epochs=2"],
    "sac": ["--set", "hyperparams.learning_starts=64", "--set", "hyperparams.batch_size=32"],
    "td3": ["--set", "hyperparams.learning_starts=64", "--set", "hyperparams.batch_size=32"],
}


def train(*argv: str) -> int:
    from kai_drive.train import main

    return main([str(a) for a in argv])


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    out = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    out["__histograms__"] = acc.Tags()["histograms"]  # type: ignore[assignment]
    out["__images__"] = acc.Tags()["images"]  # type: ignore[assignment]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_short_run_writes_everything_and_resumes(algo, tmp_path, capsys):
    from stable_baselines3 import PPO, SAC, TD3

    cls = {"ppo": PPO, "sac": SAC, "td3": TD3}[algo]
    logs = tmp_path / "runs"
    rc = train(
        "--env",
        "lane-keep",
        "--algo",
        algo,
        "--timesteps",
        256,
        "--seed",
        3,
        "--log-folder",
        logs,
        *TINY,
        *ALGO_SETS[algo],
    )
    assert rc == 0
    run = logs / "lane-keep" / f"{algo}_1"
    out = capsys.readouterr().out
    assert str(run) in out and "final evaluation" in out

    # the run folder
    for name in (
        "config.yaml",
        "command.txt",
        "final_model.zip",
        "best_model.zip",
        "vecnormalize.pkl",
        "best_model_vecnormalize.pkl",
        "evaluations.json",
        "evaluations.npz",
        "final_eval.json",
        "status.json",
    ):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["env_id"] == "KaiDrive/LaneKeep-v0" and config["algo"] == algo and config["seed"] == 3
    assert config["recipe"]["env_config"]["render.width"] == 160
    assert config["env_spec"]["render"]["width"] == 160
    assert "--algo" in (run / "command.txt").read_text()
    assert not list(run.rglob(".tmp-*")), "temporary files left behind"
    ckpts = sorted((run / "checkpoints").glob("model_*_steps.zip"))
    assert ckpts and all(
        p.with_name(p.name.replace("model_", "vecnormalize_").replace(".zip", ".pkl")).is_file() for p in ckpts
    )
    if algo != "ppo":
        assert (run / "checkpoints" / "replay_buffer.pkl").is_file()

    # the model loads and drives
    import gymnasium

    import kai_drive  # noqa: F401

    model = cls.load(run / "final_model.zip", device="cpu")
    first_steps = model.num_timesteps
    assert first_steps >= 256
    env = gymnasium.make("KaiDrive/LaneKeep-v0", config=config["recipe"]["env_config"])
    obs, _ = env.reset(seed=0)
    if config["recipe"].get("encoder"):  # the default PPO recipe trains on frozen embeddings
        from kai_drive.perception import attach_encoder

        model = attach_encoder(model, env.observation_space, config["recipe"]["encoder"]["pretrained"])
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
    env.close()

    # evaluation outputs
    final = json.loads((run / "final_eval.json").read_text())
    assert final["episodes"] == 1 and final["road_seeds"][0] >= 2**30 + 2**29
    lo, hi = final["success_rate_ci95"]
    assert 0.0 <= lo <= final["success_rate"] <= hi <= 1.0
    for key in (
        "route_completion_mean",
        "lateral_offset_abs_mean_m",
        "lateral_offset_abs_max_m",
        "collisions",
        "lane_invasions",
        "total_wall_time_s",
        "timesteps",
        "seed",
    ):
        assert key in final, key
    history = json.loads((run / "evaluations.json").read_text())
    assert history and all(2**30 <= s < 2**30 + 2**29 for h in history for s in h["road_seeds"])

    # TensorBoard: SB3's scalars, ours, action histograms and the eval image strip
    tags = scalars(run / "tb")
    for tag in (
        "drive/success_rate",
        "drive/route_completion",
        "drive/collision_rate",
        "drive/off_road_rate",
        "drive/lane_offset_rms_m",
        "drive/mean_speed_mps",
        "drive/safety_cost",
        "eval/success_rate",
        "eval/route_completion",
        "eval/collision_rate",
        "eval/safety_cost",
        "eval/mean_reward",
    ):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert {"actions/steering", "actions/throttle"} <= set(tags["__histograms__"])
    assert "eval/chase_strip" in tags["__images__"]
    first_max_step = max(step for tag, vals in tags.items() if not tag.startswith("__") for step, _ in vals)

    # resume: continues from the newest checkpoint, step count and TensorBoard curve carry on
    first_wall = json.loads((run / "status.json").read_text())["train_wall_time_s"]
    rc = train("--resume", run, "--timesteps", 512, "--no-progress", "--final-eval", 0)
    assert rc == 0
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["timesteps"] > first_steps
    assert status["train_wall_time_s"] > first_wall > 0  # the training time of both sessions
    assert cls.load(run / "final_model.zip", device="cpu").num_timesteps == status["timesteps"]
    assert not (logs / "lane-keep" / f"{algo}_2").exists()
    assert [p.name for p in run.iterdir() if p.is_dir()].count("tb") == 1 and not list((run / "tb").glob("*/"))
    tags2 = scalars(run / "tb")
    steps2 = [s for s, _ in tags2["eval/success_rate"]]
    assert max(steps2) > first_max_step
    assert "# resumed" in (run / "command.txt").read_text()

    if algo == "ppo":  # play records a video (GIF without imageio-ffmpeg) of the held-out roads
        from kai_drive.play import main as play

        video = tmp_path / "play.gif"
        assert play(["--run", str(run), "--record", "--episodes", "1", "--out", str(video), "--size", "96x72"]) == 0
        assert video.is_file() and video.stat().st_size > 1000
        printed = capsys.readouterr().out
        assert "episode 1/1" in printed and "success" in printed


def test_camera_policy_with_pretrained_perception_extractor(tmp_path):
    """policy_kwargs.features_extractor_class is a whitelisted name; 'perception' = the shipped encoders."""
    from stable_baselines3 import PPO

    logs = tmp_path / "runs"
    rc = train(
        "--env",
        "lane-keep",
        "--timesteps",
        64,
        "--log-folder",
        logs,
        "--n-envs",
        1,
        "--vec-env",
        "dummy",
        "--eval-freq",
        0,
        "--final-eval",
        0,
        "--no-progress",
        "--set",
        "env_config.sensors.camera.enabled=true",
        "--set",
        "policy=MultiInputPolicy",
        "--set",
        "encoder=null",
        "--set",
        "normalisation.norm_obs=false",
        "--set",
        "policy_kwargs.features_extractor_class=perception",
        "--set",
        "policy_kwargs.features_extractor_kwargs={pretrained: lane-keep, freeze: true}",
        "--set",
        "hyperparams.n_steps=64",
        "--set",
        "hyperparams.batch_size=32",
        "--set",
        "hyperparams.n_epochs=1",
    )
    assert rc == 0
    model = PPO.load(logs / "lane-keep" / "ppo_1" / "final_model.zip", device="cpu")
    assert type(model.policy.features_extractor).__name__ == "PerceptionExtractor"
    assert "camera" in model.observation_space.spaces
    # frozen pretrained weights survive SB3's orthogonal re-initialisation and training unchanged
    from kai_drive.perception import load_encoder

    shipped = load_encoder(model.observation_space, "lane-keep").state_dict()
    for k, v in model.policy.features_extractor.encoder.state_dict().items():
        torch.testing.assert_close(v, shipped[k], msg=k)


def test_frozen_encoder_recipe_trains_on_embeddings_and_loads_as_raw_policy(tmp_path):
    """recipe ``encoder:`` -> EncodedVecEnv + MlpPolicy; load_run/play put the encoder back in front, and the
    composed policy acts exactly like the MLP on the wrapper's embeddings."""
    import gymnasium
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from kai_drive.evaluation import load_run
    from kai_drive.perception.sb3 import EncodedVecEnv

    logs = tmp_path / "runs"
    rc = train(
        "--env", "lane-keep", "--timesteps", 64, "--log-folder", logs, "--n-envs", 1, "--vec-env", "dummy",
        "--eval-freq", 0, "--final-eval", 2, "--no-progress",
        "--set", "env_config.sensors.camera.enabled=true",
        "--set", "policy=MlpPolicy",
        "--set", "encoder={pretrained: lane-keep}",
        "--set", "normalisation.norm_obs=false",
        "--set", "hyperparams.n_steps=64", "--set", "hyperparams.batch_size=32", "--set", "hyperparams.n_epochs=1",
    )  # fmt: skip
    assert rc == 0
    run = logs / "lane-keep" / "ppo_1"
    mlp = PPO.load(run / "final_model.zip", device="cpu")
    assert mlp.observation_space.shape == (128,)
    assert json.loads((run / "final_eval.json").read_text())["episodes"] == 2

    policy, env_id = load_run(run)
    assert "camera" in policy.model.observation_space.spaces
    assert type(policy.model.policy.features_extractor).__name__ == "PerceptionExtractor"
    venv = EncodedVecEnv(DummyVecEnv([lambda: gymnasium.make(env_id)]), pretrained="lane-keep", device="cpu")
    raw_env = gymnasium.make(env_id)
    venv.seed(3)
    emb = venv.reset()
    raw, _ = raw_env.reset(seed=3)
    for _ in range(3):
        a_mlp, _ = mlp.predict(emb, deterministic=True)
        a_raw = policy(raw)
        np.testing.assert_allclose(a_mlp[0], a_raw, atol=1e-5)
        emb, *_ = venv.step(a_mlp)
        raw, *_ = raw_env.step(a_raw)
    # the frozen encoder still passes gradients to the pixels (attacks, attribution maps)
    obs_t = {k: v.requires_grad_(True) for k, v in policy.to_tensors(raw).items()}
    policy.torch_action(obs_t).sum().backward()
    assert obs_t["camera"].grad is not None and obs_t["camera"].grad.abs().sum() > 0
    venv.close()
    raw_env.close()


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["encoder={pretrained: lane-keep}", "policy=MultiInputPolicy"], "policy must be MlpPolicy"),
        (["encoder={pretrained: lane-keep}", "normalisation.norm_obs=true"], "norm_obs: false"),
        (["encoder={pretrained: lane-keep}", "frame_stack=2"], "frame_stack must be 1"),
    ],
)
def test_encoder_recipe_errors(sets, expected, tmp_path, capsys):
    argv = ["--env", "lane-keep", "--log-folder", tmp_path]
    for s in sets:
        argv += ["--set", s]
    assert train(*argv) != 0
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "lane-keep").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--env", "lane-kep"], "Did you mean 'lane-keep'"),
        (["--env", "KaiDrive/Nope-v0"], "Known envs"),
        ([], "--env is required"),
        (["--env", "lane-keep", "--set", "hyperparams.learning_rat=1e-4"], "hyperparams.learning_rat"),
        (["--env", "lane-keep", "--set", "hyperparams.policy_kwargs={}"], "top level"),
        (["--env", "lane-keep", "--set", "n_env=2"], "n_env: unknown key"),
        (["--env", "lane-keep", "--set", "policy_kwargs.activation_fn=os.system"], "activation_fn"),
        (["--env", "lane-keep", "--set", "policy_kwargs.net_arc=[8]"], "policy_kwargs.net_arc"),
        (
            ["--env", "lane-keep", "--set", "policy_kwargs.features_extractor_class=os.system"],
            "features_extractor_class",
        ),
        (["--env", "lane-keep", "--set", "env_config.sensors.camera.widht=32"], "sensors.camera.widht"),
        (["--env", "lane-keep", "--set", "n_envs=0"], "n_envs"),
        (["--env", "lane-keep", "--set", "nokey"], "KEY=VALUE"),
        (["--env", "lane-keep", "--algo", "ppo", "--set", "action_noise.std=0.1"], "action_noise"),
        (["--resume", "does/not/exist"], "no config.yaml"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(argv, expected, tmp_path, capsys):
    logs = tmp_path / "runs"
    rc = train(*argv, "--log-folder", logs)
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err, err
    assert err.startswith("error: ")
    assert not logs.exists()


def test_bad_recipe_file_names_file_and_key(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("KaiDrive/LaneKeep-v0:\n  n_timesteps: 100\n  hyperparms: {gamma: 0.9}\n")
    logs = tmp_path / "runs"
    assert train("--env", "lane-keep", "--recipe", recipe, "--log-folder", logs) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and "hyperparms: unknown key" in err
    recipe.write_text("KaiDrive/Other-v0:\n  n_timesteps: 100\n")
    assert train("--env", "lane-keep", "--recipe", recipe, "--log-folder", logs) == 2
    assert "no recipe for KaiDrive/LaneKeep-v0" in capsys.readouterr().err
    recipe.write_text("KaiDrive/LaneKeep-v0:\n  n_timesteps: 100\n  hyperparams: {gama: 0.9}\n")
    assert train("--env", "lane-keep", "--recipe", recipe, "--log-folder", logs) == 2
    err = capsys.readouterr().err
    assert f"{recipe}: hyperparams.gama: not a parameter of PPO. Did you mean 'gamma'?" in err
    assert not logs.exists()


@pytest.mark.parametrize("argv", [["--algo", "dqn"], ["--timesteps", "-5"], ["--vec-env", "threads"], ["--bogus"]])
def test_bad_flags_are_argparse_errors(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train("--env", "lane-keep", *argv, "--log-folder", tmp_path / "runs")
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _cli(*argv: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "kai_drive.train", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_cli_help_and_unknown_env_exit_codes(tmp_path):
    proc = _cli("--help")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "examples:" in out and "--resume" in out and "--set" in out
    proc = _cli("--env", "lane-kep", "--log-folder", str(tmp_path / "runs"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Did you mean 'lane-keep'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ctrl_c_saves_checkpoint_and_model(tmp_path):
    logs = tmp_path / "runs"
    # a shell's background job (`pytest ... &`) starts with SIGINT ignored and Python keeps it so in every
    # child: give the training the disposition a terminal's Ctrl-C finds
    proc = _cli(
        "--env",
        "lane-keep",
        "--timesteps",
        "1000000",
        "--log-folder",
        str(logs),
        "--n-envs",
        "1",
        "--vec-env",
        "dummy",
        "--eval-freq",
        "0",
        "--final-eval",
        "0",
        "--checkpoint-freq",
        "0",
        "--set",
        "hyperparams.n_steps=64",
        "--set",
        "hyperparams.batch_size=32",
        "--no-progress",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    run = logs / "lane-keep" / "ppo_1"
    deadline = time.time() + 90
    while not list((run / "tb").glob("events*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)  # let it train a little
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)  # slack for a loaded machine (one CI run timed out at 60 s)
    assert proc.returncode == 130, err
    assert "interrupted" in out and "--resume" in out
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["timesteps"] > 0
    assert (run / "final_model.zip").is_file() and (run / "vecnormalize.pkl").is_file()
    assert (run / "checkpoints" / f"model_{status['timesteps']}_steps.zip").is_file()


# ---------------------------------------------------------------------------------------------
# recipes, seeds and statistics
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_catalogue_recipes_validate(algo):
    """Every entry of agents/<algo>.yaml names a catalogue env and validates (recipe and env_config);
    lane-keep has one for every algorithm."""
    from kai_drive.catalog import catalog_dir, env_yaml
    from kai_drive.specs import load_env_spec
    from kai_drive.training.recipe import algo_kwargs, env_config_for, load_recipe

    entries = yaml.safe_load((catalog_dir("agents") / f"{algo}.yaml").read_text())
    assert "KaiDrive/LaneKeep-v0" in entries
    for env_id in entries:
        assert env_id in env_ids(), f"agents/{algo}.yaml: {env_id} is not a catalogue env"
        recipe, path = load_recipe(algo, env_id, env_ids()[env_id])
        assert path.name == f"{algo}.yaml"
        load_env_spec(env_yaml(env_id), recipe.env_config)
        load_env_spec(env_yaml(env_id), env_config_for(recipe, "train"))
        kwargs = algo_kwargs(recipe, algo)
        act = kwargs.get("policy_kwargs", {}).get("activation_fn")
        assert act is None or isinstance(act, type)


def test_parse_set_types_and_nesting():
    from kai_drive.training.recipe import RecipeError, parse_set

    got = parse_set(
        [
            "hyperparams.learning_rate=1e-4",
            "env_config.sensors.camera.enabled=false",
            "policy_kwargs.net_arch=[64, 64]",
            "n_envs=2",
            "hyperparams.learning_rate=lin_3e-4",
        ]
    )
    assert got == {
        "hyperparams": {"learning_rate": "lin_3e-4"},
        "env_config": {"sensors.camera.enabled": False},
        "policy_kwargs": {"net_arch": [64, 64]},
        "n_envs": 2,
    }
    assert parse_set(["hyperparams.gamma=1e-4"])["hyperparams"]["gamma"] == pytest.approx(1e-4)
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_set(["gamma"])
    with pytest.raises(RecipeError, match="bad key"):
        parse_set(["a..b=1"])


def test_schedules_are_parsed_not_evaluated():
    from kai_drive.training.recipe import LinearSchedule, parse_schedule

    sched = parse_schedule("lin_3e-4")
    assert (
        isinstance(sched, LinearSchedule) and sched(1.0) == pytest.approx(3e-4) and sched(0.5) == pytest.approx(1.5e-4)
    )
    with pytest.raises(ValueError):
        parse_schedule("__import__('os')")


def test_wilson_interval():
    from kai_drive.stats import wilson_interval

    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_train_and_eval_roads_never_overlap():
    import gymnasium

    import kai_drive  # noqa: F401
    from kai_drive.training.envs import EVAL_ROAD_SEED_BASE, TRAIN_ROAD_SEED_HIGH, RoadSeeds

    cfg = {"sensors.camera.enabled": False, "sensors.lidar.beams": 4}
    train_env = RoadSeeds(gymnasium.make("KaiDrive/LaneKeep-v0", config=cfg), "train")
    eval_env = RoadSeeds(gymnasium.make("KaiDrive/LaneKeep-v0", config=cfg), "eval")
    try:
        seen = []
        _, info = train_env.reset(seed=7)
        seen.append(info["scenario"]["road_seed"])
        for _ in range(3):
            _, info = train_env.reset()
            seen.append(info["scenario"]["road_seed"])
        assert all(0 <= s < TRAIN_ROAD_SEED_HIGH for s in seen) and len(set(seen)) == 4
        _, again = train_env.reset(seed=7)
        assert again["scenario"]["road_seed"] == seen[0]  # deterministic
        eval_env.queue_road_seeds([EVAL_ROAD_SEED_BASE + 5])
        _, info = eval_env.reset()
        assert info["scenario"]["road_seed"] == EVAL_ROAD_SEED_BASE + 5
        assert info["scenario"]["noise_seed"] == EVAL_ROAD_SEED_BASE + 5
        _, info = eval_env.reset()
        assert info["scenario"]["road_seed"] >= EVAL_ROAD_SEED_BASE
    finally:
        train_env.close()
        eval_env.close()
