"""Training-time sensor loss (recipe key ``modality_dropout``): what is lost, how often, what it looks like,
reproducibility, and that only the training envs get it."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import kai_drive  # noqa: F401
from kai_drive.training.envs import ModalityDropout, make_vec_env

LANE_KEEP = "KaiDrive/LaneKeep-v0"
SMALL = {"sensors": {"camera": {"enabled": True, "width": 32, "height": 24}}}


def test_lost_sensors_are_filled_with_their_missing_value_and_never_all_at_once():
    plain = gymnasium.make(LANE_KEEP, config=SMALL)
    env = ModalityDropout(gymnasium.make(LANE_KEEP, config=SMALL), {"camera": 0.5, "lidar": 0.5})
    lost_per_seed = []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        ref, _ = plain.reset(seed=seed)
        lost = info["lost_sensors"]
        lost_per_seed.append(tuple(lost))
        assert len(lost) < 2, "both sensors lost at once"
        for k in ("camera", "lidar", "state"):
            if k in lost:
                assert np.all(obs[k] == (0 if k == "camera" else 1.0)), k
            else:
                np.testing.assert_array_equal(obs[k], ref[k])  # nothing else changes
        if lost:  # the loss lasts the whole episode
            obs2, *_ = env.step(env.action_space.sample() * 0)
            assert np.all(obs2[lost[0]] == (0 if lost[0] == "camera" else 1.0))
    n_cam = sum("camera" in x for x in lost_per_seed)
    n_lidar = sum("lidar" in x for x in lost_per_seed)
    assert 5 <= n_cam <= 25 and 5 <= n_lidar <= 25 and lost_per_seed.count(()) >= 2
    # reproducible from the reset seed
    again = [tuple(env.reset(seed=s)[1]["lost_sensors"]) for s in range(30)]
    assert again == lost_per_seed
    env.close()
    plain.close()


def test_bad_settings_are_refused_with_the_key():
    from kai_drive.training.recipe import RecipeError, load_recipe, parse_set

    with pytest.raises(ValueError, match="radar"):
        ModalityDropout(gymnasium.make(LANE_KEEP, config=SMALL), {"radar": 0.1})
    with pytest.raises(RecipeError, match="modality_dropout"):
        load_recipe("ppo", LANE_KEEP, "lane-keep", None, parse_set(["modality_dropout={camera: 1.0}"]))
    r, _ = load_recipe("ppo", LANE_KEEP, "lane-keep", None, parse_set(["modality_dropout={camera: 0.2, lidar: 0.2}"]))
    assert r.modality_dropout == {"camera": 0.2, "lidar": 0.2}
    default, _ = load_recipe("ppo", LANE_KEEP, "lane-keep", None)
    assert default.modality_dropout == {}  # the default recipe trains as before


def test_training_vec_env_carries_the_dropout():
    venv = make_vec_env(LANE_KEEP, SMALL, 2, "dummy", "train", seed=3, modality_dropout={"camera": 0.9})
    venv.reset()
    wrappers = []
    for e in venv.envs:
        while hasattr(e, "env"):
            if isinstance(e, ModalityDropout):
                wrappers.append(e)
            e = e.env
    assert len(wrappers) == 2 and all(w.probabilities == {"camera": 0.9} for w in wrappers)
    venv.close()
