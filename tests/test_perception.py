"""Perception: encoders, SB3 integration (extractor + VecEnv wrapper), shipped weights, pretraining, probes."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

import kai_drive  # noqa: F401
from kai_drive.perception import EncoderConfig, MultiModalEncoder, SpecMismatchError, load_encoder, shipped_weights
from kai_drive.perception.encoders import LidarEncoder
from kai_drive.perception.weights import WEIGHTS_DIR

LANE_KEEP = "KaiDrive/LaneKeep-v0"


def lane_keep_space() -> spaces.Dict:
    env = gymnasium.make(LANE_KEEP)
    sp = env.observation_space
    env.close()
    return sp


def rgbd_space(h: int = 48, w: int = 40, state_dim: int = 11) -> spaces.Dict:
    """A grasping-like spec: RGB + depth + state, no lidar."""
    return spaces.Dict({
        "camera": spaces.Box(0, 255, (h, w, 3), np.uint8),
        "depth": spaces.Box(0.0, 5.0, (h, w), np.float32),
        "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
    })


def batch_of(space: spaces.Dict, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    out = {}
    for k in space.spaces:
        arr = np.stack([s[k] for s in samples])
        if not np.issubdtype(arr.dtype, np.integer):
            arr = np.nan_to_num(arr, posinf=1.0, neginf=-1.0).clip(-10, 10).astype(np.float32)
        out[k] = torch.as_tensor(arr)
    return out


# -- encoders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_encoder_shapes_lane_keep(fusion):
    sp = lane_keep_space()
    enc = MultiModalEncoder(sp, {"fusion": fusion, "features_dim": 96})
    assert enc.keys == ("camera", "lidar", "state")
    obs = batch_of(sp, 5)
    parts = enc.encode_parts(obs)
    assert {k: tuple(v.shape) for k, v in parts.items()} == {"camera": (5, 64), "lidar": (5, 64), "state": (5, 32)}
    out = enc(obs)
    assert out.shape == (5, 96) and torch.isfinite(out).all()


def test_encoder_shapes_rgbd_and_depth_matters():
    sp = rgbd_space()
    enc = MultiModalEncoder(sp)
    assert enc.keys == ("camera", "depth", "state")
    assert enc.encoders["camera"].in_channels == 4
    obs = batch_of(sp, 3)
    out = enc(obs)
    assert out.shape == (3, 128)
    moved = dict(obs, depth=obs["depth"] + 2.0)  # the depth channel feeds the features
    assert not torch.allclose(enc(moved), out)


def test_spatial_softmax_head_gives_keypoints_that_follow_a_bright_spot():
    from kai_drive.perception.encoders import SpatialSoftmax

    ss = SpatialSoftmax(9, 9)
    maps = torch.full((1, 1, 9, 9), -10.0)
    maps[0, 0, 2, 7] = 10.0  # row 2, column 7
    x, y = ss(maps)[0].tolist()
    assert x == pytest.approx(0.75, abs=1e-3) and y == pytest.approx(-0.5, abs=1e-3)  # linspace(-1, 1, 9)
    sp = rgbd_space()
    enc = MultiModalEncoder(sp, {"camera_head": "spatial_softmax", "keypoints": 8, "camera_strides": [2, 1, 1, 1]})
    obs = batch_of(sp, 4)
    out = enc(obs)
    assert out.shape == (4, 128) and torch.isfinite(out).all()
    out.sum().backward()
    assert enc.encoders["camera"].keypoints.log_temperature.grad is not None
    with pytest.raises(ValueError, match="camera_head"):
        EncoderConfig(camera_head="pool")


def test_channel_first_camera_gives_same_features():
    """SB3's VecTransposeImage hands CxHxW floats in [0, 1]; same weights -> same features."""
    sp = lane_keep_space()
    enc = MultiModalEncoder(sp)
    sp_chw = spaces.Dict(dict(sp.spaces, camera=spaces.Box(0, 255, (3, 64, 64), np.uint8)))
    enc_chw = MultiModalEncoder(sp_chw)
    enc_chw.load_state_dict(enc.state_dict())
    obs = batch_of(sp, 4)
    obs_chw = dict(obs, camera=obs["camera"].permute(0, 3, 1, 2).float() / 255.0)
    torch.testing.assert_close(enc(obs), enc_chw(obs_chw), rtol=1e-5, atol=1e-5)


def test_lidar_encoder_is_circular():
    """Padding wraps around: rotating the scan by one conv stride product rotates the feature map."""
    enc = LidarEncoder(64, EncoderConfig())
    x = torch.rand(2, 1, 64)
    y = enc.convs(x - 0.5)  # (2, 32, 16): total stride 4
    y_rot = enc.convs(torch.roll(x, 4, dims=2) - 0.5)
    torch.testing.assert_close(y_rot, torch.roll(y, 1, dims=2), rtol=1e-5, atol=1e-5)


def test_unknown_key_is_named():
    sp = spaces.Dict({"camera": spaces.Box(0, 255, (32, 32, 3), np.uint8), "wind": spaces.Box(-1, 1, (2,), np.float32)})
    with pytest.raises(ValueError, match="wind"):
        MultiModalEncoder(sp)
    assert MultiModalEncoder(sp, keys=("camera",)).keys == ("camera",)


# -- shipped weights -----------------------------------------------------------------------------
def test_shipped_weights_load_with_weights_only_and_manifest():
    assert "lane-keep" in shipped_weights()
    state = torch.load(WEIGHTS_DIR / "lane-keep.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    manifest = json.loads((WEIGHTS_DIR / "lane-keep.json").read_text())
    for key in ("env", "observation_spec", "recipe", "data", "date", "torch_version", "encoder_config"):
        assert key in manifest, key
    assert (WEIGHTS_DIR / "lane-keep.pt").stat().st_size < 5e6
    enc = load_encoder(lane_keep_space(), "lane-keep")
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, state[k])
    # pretrained weights differ from a fresh init
    fresh = MultiModalEncoder(lane_keep_space(), manifest["encoder_config"])
    assert not torch.allclose(fresh.state_dict()["fusion.net.0.weight"], state["fusion.net.0.weight"])


@pytest.mark.parametrize("override, culprit", [
    ({"sensors.camera.width": 96}, "camera"),
    ({"sensors.lidar.beams": 32}, "lidar"),
])
def test_mismatched_spec_raises_clear_error(override, culprit):
    env = gymnasium.make(LANE_KEEP, config=override)
    sp = env.observation_space
    env.close()
    with pytest.raises(SpecMismatchError, match=culprit) as e:
        load_encoder(sp, "lane-keep")
    assert "pretrained=None" in str(e.value)


def test_state_dim_and_missing_key_mismatch():
    sp = lane_keep_space()
    bigger = spaces.Dict(dict(sp.spaces, state=spaces.Box(-np.inf, np.inf, (9,), np.float32)))
    with pytest.raises(SpecMismatchError, match=r"'state'.*\(7,\).*\(9,\)"):
        load_encoder(bigger, "lane-keep")
    no_lidar = spaces.Dict({k: v for k, v in sp.spaces.items() if k != "lidar"})
    with pytest.raises(SpecMismatchError, match="lidar"):
        load_encoder(no_lidar, "lane-keep")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_encoder(sp, "no-such-weights")


# -- SB3 -----------------------------------------------------------------------------------------
def _params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("freeze", [True, False])
def test_extractor_trains_inside_ppo(freeze):
    from stable_baselines3 import PPO

    from kai_drive.perception import PerceptionExtractor

    env = gymnasium.make(LANE_KEEP)
    model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_class=PerceptionExtractor,
                                   features_extractor_kwargs=dict(pretrained="lane-keep", freeze=freeze)))
    ext = model.policy.features_extractor
    assert isinstance(ext, PerceptionExtractor)
    before_enc, before_head = _params(ext.encoder), _params(model.policy.action_net)
    model.learn(32)
    changed = [not torch.equal(a, b) for a, b in zip(before_enc, _params(ext.encoder))]
    assert any(not torch.equal(a, b) for a, b in zip(before_head, _params(model.policy.action_net)))
    if freeze:
        assert not any(changed)
    else:
        assert any(changed)
    env.close()


def test_vecenv_wrapper_batches_like_single_encoding():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from kai_drive.perception import EncodedVecEnv

    venv = DummyVecEnv([lambda: gymnasium.make(LANE_KEEP)] * 3)
    venv.seed(3)
    wrapped = EncodedVecEnv(venv, pretrained="lane-keep", device="auto")
    assert wrapped.observation_space.shape == (128,)
    raw = venv.reset()
    emb = wrapped.encode(raw)
    singles = np.stack([wrapped.encode({k: v[i:i + 1] for k, v in raw.items()})[0] for i in range(3)])
    np.testing.assert_allclose(emb, singles, rtol=1e-5, atol=1e-5)
    obs = wrapped.reset()
    assert obs.shape == (3, 128) and obs.dtype == np.float32
    # the wrapped envs' reset infos pass through (imitation reads its expert labels there)
    assert wrapped.reset_infos is venv.reset_infos and all("lateral_offset_m" in i for i in wrapped.reset_infos)
    obs, rew, done, infos = wrapped.step(np.zeros((3, 2), np.float32))
    assert obs.shape == (3, 128) and np.isfinite(obs).all()
    wrapped.close()


# -- pretraining ---------------------------------------------------------------------------------
def _synthetic_sequences(n_eps: int = 4, length: int = 12, seed: int = 0):
    """Smooth sequences: a bright bar drifting across the image, the lidar minimum tracking it."""
    rng = np.random.default_rng(seed)
    cams, lids, states, eps = [], [], [], []
    for e in range(n_eps):
        x0, v = rng.uniform(8, 56), rng.uniform(-1.5, 1.5)
        for t in range(length):
            x = int(np.clip(x0 + v * t, 2, 61))
            img = np.full((64, 64, 3), 60, np.uint8)
            img[:, x - 2:x + 2] = 230
            img[rng.integers(0, 64), :, e % 3] = 120
            lid = np.ones(64, np.float32) * 0.8
            lid[(x + 16 * e) % 64] = 0.1
            cams.append(img); lids.append(lid); states.append(rng.normal(size=7).astype(np.float32)); eps.append(e)
    return {"camera": np.stack(cams), "lidar": np.stack(lids), "state": np.stack(states), "episode": np.array(eps)}


def test_pretraining_step_decreases_contrastive_loss():
    from kai_drive.perception.pretrain_recipe import TrainRecipe
    from kai_drive.perception.pretraining import PairSampler, Pretrainer, batch_from

    torch.manual_seed(0)
    sp = lane_keep_space()
    data = _synthetic_sequences()
    enc = MultiModalEncoder(sp, {"camera_channels": 16})
    t = TrainRecipe(batch_size=16, lr=1e-3, k_max=2)
    tr = Pretrainer(enc, t, torch.device("cpu"), seed=0)
    ia, ip = PairSampler(data["episode"], t.k_max, np.random.default_rng(0)).sample(16)
    assert np.all(data["episode"][ia] == data["episode"][ip]) and np.all(ip > ia)
    tens = {k: torch.as_tensor(v) for k, v in data.items() if k in enc.keys}
    a, p = batch_from(tens, ia, enc.keys), batch_from(tens, ip, enc.keys)
    first = tr.step(a, p)
    for _ in range(20):
        last = tr.step(a, p)
    assert set(first) >= {"temporal_camera", "temporal_lidar", "temporal_fused", "cross_modal", "total"}
    assert last["total"] < 0.88 * first["total"], (first, last)
    assert last["temporal_camera"] < first["temporal_camera"] - 0.05, (first, last)
    # resumable: a checkpoint round-trips through torch.load(weights_only=True)
    import io

    buf = io.BytesIO()
    torch.save(tr.state_dict(), buf)
    buf.seek(0)
    tr2 = Pretrainer(MultiModalEncoder(sp, {"camera_channels": 16}), t, torch.device("cpu"), seed=0)
    tr2.load_state_dict(torch.load(buf, weights_only=True))
    assert tr2.iteration == tr.iteration
    torch.testing.assert_close(tr2.encoder.state_dict(), tr.encoder.state_dict())


def test_random_shift_keeps_shape_and_shifts():
    from kai_drive.perception.pretraining import random_shift

    img = torch.zeros(8, 3, 16, 16)
    img[:, :, 8, 8] = 1.0
    out = random_shift(img, 4, torch.Generator().manual_seed(0))
    assert out.shape == img.shape
    pos = [tuple(torch.nonzero(o[0])[0].tolist()) for o in out]
    assert all(abs(r - 8) <= 4 and abs(c - 8) <= 4 for r, c in pos) and len(set(pos)) > 1


def test_recipe_is_strict(tmp_path):
    from kai_drive.perception.pretrain_recipe import default_recipe, load_recipe

    r = load_recipe(default_recipe("lane-keep"))
    assert r.train.aux_privileged_weight == 0.0  # privileged labels off by default
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: lane-keep\ntrain:\n  iterationz: 3\n")
    with pytest.raises(ValueError, match="iterationz"):
        load_recipe(bad)


# -- probes --------------------------------------------------------------------------------------
def test_probe_recovers_known_linear_relation():
    from kai_drive.perception.probes import linear_probe

    rng = np.random.default_rng(0)
    w = rng.normal(size=20)
    x = rng.normal(size=(600, 20))
    y = x @ w + 0.3 + rng.normal(0, 0.01, 600)
    res = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert res["r2"] > 0.99 and res["rmse"] < 0.05
    noise = linear_probe(x[:400], rng.normal(size=400), x[400:], rng.normal(size=200))
    assert noise["r2"] < 0.1  # no relation, no score


def test_shift_extractor_shifts_only_in_training_mode():
    from kai_drive.perception.sb3 import ShiftCombinedExtractor

    space = spaces.Dict({"camera": spaces.Box(0, 255, (3, 64, 64), np.uint8),
                         "state": spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    ext = ShiftCombinedExtractor(space, pad=4)
    assert ext.image_keys == {"camera"}
    torch.manual_seed(0)
    obs = {"camera": torch.rand(8, 3, 64, 64), "state": torch.randn(8, 5)}
    ext.eval()
    a, b = ext(obs), ext(obs)
    torch.testing.assert_close(a, b)  # deterministic without augmentation
    ext.train()
    c = ext(obs)
    assert c.shape == a.shape and not torch.allclose(c, a)


def test_ablation_statistics_and_arms_validate():
    from kai_drive.experiments.ablation import ARMS, COMMON, failure_mode, summarise
    from kai_drive.stats import two_level_bootstrap
    from kai_drive.training.recipe import load_recipe, parse_set

    # every arm is a valid recipe on top of the default lane-keep recipe
    for sets in ARMS.values():
        load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep", None, parse_set(sets + COMMON))
    # identical seeds, all successes: a degenerate interval at 1
    assert two_level_bootstrap([[1.0] * 10] * 3) == (1.0, 1.0)
    lo, hi = two_level_bootstrap([[1.0] * 10, [0.0] * 10, [1.0] * 5 + [0.0] * 5])
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    rows = [{"arm": "a", "seed": s, "success_flags": f, "successes": int(sum(f)), "episodes": len(f),
             "train_wall_time_s": 10.0 + s, "timesteps": 100} for s, f in enumerate([[1, 1, 0, 1], [1, 1, 1, 1]])]
    a = summarise(rows)["a"]
    assert a["success_per_seed"] == [0.75, 1.0] and a["pooled"] == "7/8"
    assert abs(a["success_mean"] - 0.875) < 1e-12 and a["train_wall_time_s_mean"] == 10.5
    # failure modes: the outcome classes of kai_drive.metrics.episode_outcome (one vocabulary); a timeout is the stop trap
    ok = {"success": 1.0, "truncated": False, "lane_invasions": 0, "outcome": "success"}
    assert failure_mode(ok) is None
    assert failure_mode({"success": 0.0, "outcome": "collision:vehicle"}) == "collision"
    assert failure_mode({"success": 0.0, "outcome": "off_road"}) == "off_road"
    assert failure_mode({"success": 0.0, "outcome": "lane_invasion"}) == "lane_invasion"
    assert failure_mode({"success": 0.0, "outcome": "timeout"}) == "timeout"
    assert failure_mode({"success": 0.0, "outcome": "running"}) == "other"
    assert failure_mode({"success": 0.0}) == "other"
    rows[0]["failures"] = {"lane_invasion": 1, "timeout": 0}
    rows[1]["failures"] = {"timeout": 2}
    assert summarise(rows)["a"]["failures"] == {"lane_invasion": 1, "collision": 0, "off_road": 0, "timeout": 2,
                                                "other": 0}


def test_scaled_lr_adam_scales_only_tagged_parameters_and_keeps_the_schedule():
    from kai_drive.perception.sb3 import LR_SCALE_ATTR, ScaledLRAdam

    slow, fast = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    setattr(slow, LR_SCALE_ATTR, 0.1)
    opt = ScaledLRAdam([fast, slow], lr=0.01)
    assert sorted(g["lr_scale"] for g in opt.param_groups) == [0.1, 1.0]
    for p in (slow, fast):
        p.grad = torch.tensor([1.0, -2.0, 3.0, -4.0])
    opt.step()
    # Adam's first step moves every weight by lr * sign(grad) (bias-corrected, eps aside)
    assert torch.allclose(fast.detach().abs(), torch.full((4,), 0.01), rtol=1e-4)
    assert torch.allclose(slow.detach().abs(), torch.full((4,), 0.001), rtol=1e-4)
    assert all(g["lr"] == 0.01 for g in opt.param_groups)  # the scheduled lr is what stays stored
    # a schedule writing lr into every group (SB3's update_learning_rate) keeps the ratio; the state dict round-trips
    for g in opt.param_groups:
        g["lr"] = 0.02
    again = ScaledLRAdam([fast, slow], lr=0.5)
    again.load_state_dict(opt.state_dict())
    assert sorted((g["lr"], g["lr_scale"]) for g in again.param_groups) == [(0.02, 0.1), (0.02, 1.0)]


def test_extractor_lr_scale_inside_ppo_and_its_guards(tmp_path):
    from stable_baselines3 import PPO

    from kai_drive.perception import PerceptionExtractor, ScaledLRAdam, check_lr_scales

    env = gymnasium.make(LANE_KEEP)
    kw = dict(features_extractor_class=PerceptionExtractor,
              features_extractor_kwargs=dict(pretrained="lane-keep", freeze=False, lr_scale=0.1))
    model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(kw, optimizer_class=ScaledLRAdam, share_features_extractor=False))
    groups = {g["lr_scale"]: {id(p) for p in g["params"]} for g in model.policy.optimizer.param_groups}
    encoders = [model.policy.pi_features_extractor.encoder, model.policy.vf_features_extractor.encoder]
    assert groups[0.1] == {id(p) for enc in encoders for p in enc.parameters()}
    assert {id(p) for p in model.policy.action_net.parameters()} <= groups[1.0]
    check_lr_scales(model.policy)
    before = _params(encoders[0])
    model.learn(32)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(encoders[0])))
    # save / load (resume) rebuilds the same groups and restores Adam's state
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", env=env, device="cpu")
    assert isinstance(loaded.policy.optimizer, ScaledLRAdam)
    assert sorted(g["lr_scale"] for g in loaded.policy.optimizer.param_groups) == [0.1, 1.0]
    assert len(loaded.policy.optimizer.state) == len(model.policy.optimizer.state) > 0
    # plain Adam would silently ignore the scale: refused
    plain = PPO("MultiInputPolicy", env, n_steps=32, seed=0, device="cpu", policy_kwargs=kw)
    with pytest.raises(ValueError, match="ScaledLRAdam"):
        check_lr_scales(plain.policy)
    with pytest.raises(ValueError, match="fine-tuning"):
        PerceptionExtractor(env.observation_space, pretrained="lane-keep", freeze=True, lr_scale=0.1)
    env.close()


def test_recipe_lr_scale_picks_scaled_adam_and_refuses_other_optimizers():
    from kai_drive.experiments.ablation import ARMS
    from kai_drive.perception.sb3 import ScaledLRAdam
    from kai_drive.training.recipe import RecipeError, algo_kwargs, load_recipe, parse_set

    r, _ = load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep", None, parse_set(ARMS["finetune_lowlr"]))
    assert algo_kwargs(r, "ppo")["policy_kwargs"]["optimizer_class"] is ScaledLRAdam
    plain, _ = load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep", None, parse_set(ARMS["finetune"]))
    assert "optimizer_class" not in algo_kwargs(plain, "ppo")["policy_kwargs"]
    with pytest.raises(RecipeError, match="lr_scale"):
        load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep", None,
                    parse_set(ARMS["finetune_lowlr"] + ["policy_kwargs.optimizer_class=rmsprop"]))
