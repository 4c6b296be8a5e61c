"""Diverse pretraining (issue 16, item 2): multi-env collection with per-env overrides, the lead-gap label,
the drive recipe, old recipes, colour augmentation, shift / lead-distance probes and the shipping guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
import yaml

import kai_drive  # noqa: F401
from kai_drive.catalog import catalog_dir
from kai_drive.perception import pretrain_data as PD
from kai_drive.perception.pretrain_recipe import PretrainRecipe, TrainRecipe, default_recipe, load_recipe
from kai_drive.perception.weights import WEIGHTS_DIR

DRIVE = catalog_dir("configs") / "pretrain" / "drive.yaml"


def _tiny_recipe(**collect) -> PretrainRecipe:
    c = dict(episodes=4, max_steps=6, randomized_envs=1, longitudinal="idm", probe_episodes=2, randomize={},
             env_overrides={"task.terminate_on_lane_invasion": False, "world.renderer": "tiny"},
             per_env_overrides={"lane-keep": {"scenario.use": ["appearance"]},
                                # a constant start gap: its first frame must show it (the override reached follow only)
                                "follow": {"scenario.use": ["appearance"], "scenario.lead.gap_m": 31.0}})
    c.update(collect)
    return PretrainRecipe.model_validate({"envs": ["lane-keep", "follow"], "name": "tiny", "collect": c})


# -- collection ----------------------------------------------------------------------------------------
def test_multi_env_collection_spreads_episodes_and_applies_per_env_overrides():
    r = _tiny_recipe()
    assert PD.episode_plan(r, list(range(5))) == ["lane-keep", "follow", "lane-keep", "follow", "lane-keep"]
    assert r.overrides_for("follow")["scenario.lead.gap_m"] == 31.0
    assert "scenario.lead.gap_m" not in r.overrides_for("lane-keep")
    d = PD.collect(r, 4, [11, 12, 13, 14], randomize=True, seed=0, progress=False)
    assert list(d["envs"]) == ["lane-keep", "follow"]
    eps_of = {e: set(d["episode"][d["env_index"] == i].tolist()) for i, e in enumerate(d["envs"])}
    assert eps_of == {"lane-keep": {0, 2}, "follow": {1, 3}}
    first = d["step"] == 0
    gap0 = d["lead_gap_m"][first]
    env0 = d["env_index"][first]
    assert np.all(np.isnan(gap0[env0 == 0]))                       # lane-keep: no lead, NaN
    np.testing.assert_allclose(gap0[env0 == 1], 31.0, atol=0.5)   # follow: the per-env start gap
    # appearance preset on: two lane-keep episodes do not look alike in their first frame
    cams = d["camera"][first & (d["env_index"] == 0)].astype(float)
    assert np.abs(cams[0] - cams[1]).mean() > 1.0


def test_a_preset_the_env_lacks_is_an_error_not_silence():
    r = _tiny_recipe(per_env_overrides={"lane-keep": {"scenario.use": ["appearance", "traffic"]}})
    with pytest.raises(Exception, match="traffic"):
        PD.collect(r, 1, [3], randomize=True, seed=0, progress=False)


def test_lead_gap_label():
    assert PD.lead_gap({"gap_m": 17.5, "nearest_actor": "vehicle"}) == 17.5
    assert np.isnan(PD.lead_gap({"gap_m": float("inf"), "nearest_actor": ""}))
    assert np.isnan(PD.lead_gap({"gap_m": 6.0, "nearest_actor": "pedestrian"}))  # not a lead car
    assert np.isnan(PD.lead_gap({}))


def test_shift_conditions_come_from_the_suite_and_refuse_transforms():
    r = load_recipe(DRIVE)
    conds = PD.shift_conditions(r)
    assert set(conds) == set(r.probe.shift_conditions)
    assert conds["night"]["light"]["intensity"] == 0.35 and "colors" in conds["neon_palette"]
    bad = r.model_copy(deep=True)
    bad.probe.shift_conditions = ["camera_black"]
    with pytest.raises(PD.PretrainError, match="camera_black"):
        PD.shift_conditions(bad)


def test_data_files_from_before_multi_env_still_load(tmp_path):
    r = load_recipe(default_recipe("lane-keep"))
    old = {"camera": np.zeros((3, 64, 64, 3), np.uint8), "lidar": np.ones((3, 64), np.float32),
           "episode": np.zeros(3, int), "lateral_offset_m": np.zeros(3, np.float32), "renderer": np.asarray("tiny")}
    PD.savez(tmp_path / "data.npz", old)
    PD.savez(tmp_path / "probe_data.npz", {k: v for k, v in old.items() if k != "renderer"})
    data, probe, renderer = PD.load_or_collect(r, tmp_path, progress=False)
    assert renderer == "tiny" and "envs" not in data and len(data["episode"]) == 3
    # a folder collected from other envs than the recipe's is refused
    PD.savez(tmp_path / "data.npz", dict(old, envs=np.asarray(["follow"])))
    with pytest.raises(PD.PretrainError, match="follow"):
        PD.load_or_collect(r, tmp_path, progress=False)


# -- recipes -------------------------------------------------------------------------------------------
def test_drive_recipe_validates():
    r = load_recipe(DRIVE)
    assert default_recipe("drive") == DRIVE
    assert r.env_aliases() == ["lane-keep", "follow", "highway", "crossing"] and r.run_name() == "drive"
    assert r.train.aux_privileged_weight == 0.0  # self-supervised only
    assert r.collect.longitudinal == "idm" and r.probe.lead_gap_env == "follow"
    assert "traffic" not in r.overrides_for("lane-keep")["scenario.use"]
    assert all("traffic" in r.overrides_for(e)["scenario.use"] for e in ("follow", "highway", "crossing"))


@pytest.mark.parametrize("patch, match", [
    ({"envs": ["lane-keep", "follow"], "env": "highway"}, "not one of envs"),
    ({"envs": ["follow", "follow"]}, "twice"),
    ({"envs": ["lane-kep"]}, "lane-kep"),
    ({"envs": ["follow"], "collect": {"per_env_overrides": {"highway": {}}}}, "not a collection env"),
    ({"envs": ["follow"], "probe": {"lead_gap_env": "highway"}}, "lead_gap_env"),
    ({"name": "../x"}, "name"),
])
def test_bad_multi_env_recipes_are_errors(tmp_path, patch, match):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(patch))
    with pytest.raises(ValueError, match=match):
        load_recipe(f)


def test_old_recipes_still_load():
    r = load_recipe(default_recipe("lane-keep"))
    assert r.envs is None and r.env_aliases() == ["lane-keep"] and r.run_name() == "lane-keep"
    assert r.collect.longitudinal == "p_speed" and r.train.color_jitter == 0 and r.probe.shift_conditions == []
    # the recipe recorded in the shipped lane-keep manifest validates as it is
    m = json.loads((WEIGHTS_DIR / "lane-keep.json").read_text())
    old = PretrainRecipe.model_validate(m["recipe"])
    assert old.env_aliases() == ["lane-keep"] and old.overrides_for("lane-keep") == m["recipe"]["collect"]["env_overrides"]


# -- training augmentation -----------------------------------------------------------------------------
def test_colour_augmentation_off_is_identity_and_on_changes_colours():
    from kai_drive.perception.encoders import MultiModalEncoder
    from kai_drive.perception.pretraining import Pretrainer

    img = torch.rand(16, 3, 8, 8)
    img[:, 0] *= 0.2  # red weak, so a permutation shows
    env = gymnasium.make("KaiDrive/LaneKeep-v0")
    enc = MultiModalEncoder(env.observation_space)
    env.close()
    off = Pretrainer(enc, TrainRecipe(), torch.device("cpu"))
    assert torch.equal(off._photometric(img), img)
    on = Pretrainer(enc, TrainRecipe(channel_shuffle=1.0), torch.device("cpu"))
    out = on._photometric(img)
    assert out.shape == img.shape
    # every sample's channels are a permutation of its own (same values), and some moved
    assert torch.allclose(out.sort(dim=1).values, img.sort(dim=1).values)
    assert not torch.equal(out, img)
    jit = Pretrainer(enc, TrainRecipe(color_jitter=0.3), torch.device("cpu"))._photometric(img)
    ratio = (jit.mean(dim=(2, 3)) / img.mean(dim=(2, 3)))
    assert ratio.min() >= 0.7 * 0.7 - 1e-4 and ratio.max() <= 1.3 * 1.3 + 1e-4 and ratio.std() > 0.02


# -- probes --------------------------------------------------------------------------------------------
def test_one_probe_scored_on_several_test_sets():
    from kai_drive.perception.probes import linear_probe, linear_probe_multi

    rng = np.random.default_rng(0)
    w = rng.normal(size=10)
    x = rng.normal(size=(500, 10))
    y = x @ w
    xs = x[400:] + rng.normal(0, 1.0, (100, 10))  # a "shifted" copy of the test frames
    res = linear_probe_multi(x[:400], y[:400], {"clean": (x[400:], y[400:]), "shift": (xs, y[400:])})
    assert res["clean"] == linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert res["clean"]["rmse"] < 0.05 < res["shift"]["rmse"]


def test_lead_sets_pick_the_lead_env_and_are_absent_safe():
    from kai_drive.perception.probes import _lead_sets

    r = _tiny_recipe()
    r.probe.lead_gap_env = "follow"
    n = 40
    gap = np.where(np.arange(n) % 2 == 1, np.linspace(5, 60, n), np.nan).astype(np.float32)
    d = {"episode": np.arange(n) // 4, "env_index": np.arange(n) % 2, "lead_gap_m": gap,
         "lidar": np.zeros((n, 4), np.float32)}
    fit, test = _lead_sets(r, d, {"clean": d})
    assert np.all(fit["env_index"] == 1) and np.all(np.isfinite(fit["lead_gap_m"]))
    assert fit["lead_gap_m"].max() <= r.probe.max_lead_gap_m and len(test["clean"]["episode"]) == len(fit["episode"])
    no_label = {k: v for k, v in d.items() if k != "lead_gap_m"}
    assert _lead_sets(r, no_label, {"clean": no_label}) is None  # data from before the label: no lead probe
    r.probe.lead_gap_env = None
    assert _lead_sets(r, d, {"clean": d}) is None


# -- shipping ------------------------------------------------------------------------------------------
def test_ship_never_replaces_other_shipped_weights(tmp_path):
    from kai_drive.perception.pretrain_run import ship

    before = hashlib.sha256((WEIGHTS_DIR / "lane-keep.pt").read_bytes()).hexdigest()
    fake = tmp_path / "encoder.pt"
    fake.write_bytes(b"not the lane-keep weights")
    fake.with_suffix(".json").write_text("{}")
    with pytest.raises(PD.PretrainError, match="another `name:`"):
        ship(fake, "lane-keep")
    assert hashlib.sha256((WEIGHTS_DIR / "lane-keep.pt").read_bytes()).hexdigest() == before
    assert Path(WEIGHTS_DIR / "lane-keep.json").is_file()


def test_shipped_drive_weights_load_on_every_driving_env_and_record_their_recipe():
    from kai_drive.perception.weights import load_encoder, read_manifest

    m = read_manifest("drive")
    r = PretrainRecipe.model_validate(m["recipe"])
    assert r.run_name() == "drive" and len(m["envs"]) == 4 and m["probes"]["shift"] and m["probes"]["lead_gap"]
    assert r.train.aux_privileged_weight == 0.0
    for env_id in m["envs"]:
        env = gymnasium.make(env_id)
        try:
            obs, _ = env.reset(seed=0)
            enc = load_encoder(env.observation_space, "drive")
            from kai_drive.perception.encoders import obs_to_tensors
            with torch.no_grad():
                z = enc(obs_to_tensors({k: obs[k][None] for k in enc.keys}, enc.keys, "cpu"))
            assert z.shape == (1, 128) and torch.isfinite(z).all()
        finally:
            env.close()
