"""A recipe's ``env_mix``: one policy for several envs (kai_drive.training.envs.EnvCycle)."""

from __future__ import annotations

import numpy as np
import pytest

from kai_drive.training.envs import EnvCycle, make_cycle_fn, make_env_fn
from kai_drive.training.recipe import env_mix_for, load_recipe

FAST = {"sensors.camera.enabled": False}  # state + lidar only: these tests check the cycling, not the pixels
MEMBERS = {"KaiDrive/LaneKeep-v0": {}, "KaiDrive/Follow-v0": {"task.target_speed_mps": 9}}


def test_cycle_visits_members_in_turn_and_applies_member_overrides():
    env = make_cycle_fn(MEMBERS, FAST, "train", offset=1)()
    try:
        names = []
        for k in range(4):
            _, info = env.reset(seed=5 if k == 0 else None)
            names.append(info["env_id"])
            _, _, _, _, info = env.step(np.zeros(2, np.float32))
            assert info["env_id"] == names[-1]
        assert names == ["KaiDrive/Follow-v0", "KaiDrive/LaneKeep-v0"] * 2  # offset 1 starts at the second
        follow = env.members[1].unwrapped
        assert follow.spec_data.task.target_speed_mps == 9  # the member's extra override reached it
        assert env.members[0].unwrapped.spec_data.task.target_speed_mps != 9
    finally:
        env.close()


def test_cycle_is_reproducible_and_takes_queued_road_seeds_in_order():
    def roads(seed):
        env = make_cycle_fn(MEMBERS, FAST, "train", offset=0)()
        try:
            out = [env.reset(seed=seed if k == 0 else None)[1]["scenario"]["road_seed"] for k in range(4)]
        finally:
            env.close()
        return out

    a, b = roads(3), roads(3)
    assert a == b and len(set(a)) == 4 and roads(4) != a  # seeded: same roads again, others with another seed
    env = make_cycle_fn({k: {} for k in MEMBERS}, FAST, "eval", offset=0)()
    try:
        env.queue_road_seeds([11, 12, 13])
        got = [(i["env_id"], i["scenario"]["road_seed"]) for i in (env.reset()[1] for _ in range(3))]
        # the road seed picks the member (seed % 2), whatever ran before: a pure function of the seed
        assert got == [("KaiDrive/Follow-v0", 11), ("KaiDrive/LaneKeep-v0", 12), ("KaiDrive/Follow-v0", 13)]
        assert env.reset(options={"road_seed": 12})[1]["env_id"] == "KaiDrive/LaneKeep-v0"
        assert env.get_wrapper_attr("task_family")() == "driving"  # env_method reaches the active member
    finally:
        env.close()


def test_members_must_share_spaces():
    small = make_env_fn("KaiDrive/LaneKeep-v0", {**FAST, "sensors.lidar.beams": 32}, "train")()
    big = make_env_fn("KaiDrive/Follow-v0", FAST, "train")()
    with pytest.raises(ValueError, match="members must agree"):
        EnvCycle([big, small], ["follow", "lane-keep"])
    small.close()
    big.close()


def test_recipe_env_mix_resolves_aliases_and_splits_roles():
    recipe, _ = load_recipe("ppo", "KaiDrive/Follow-v0", "follow",
                            overrides={"env_mix": {"lane-keep": {"scenario.use": ["appearance"]}, "follow": {}}})
    assert list(recipe.env_mix) == ["KaiDrive/LaneKeep-v0", "KaiDrive/Follow-v0"]
    assert env_mix_for(recipe, "train")["KaiDrive/LaneKeep-v0"] == {"scenario.use": ["appearance"]}
    assert env_mix_for(recipe, "test") == {"KaiDrive/LaneKeep-v0": {}, "KaiDrive/Follow-v0": {}}
    from kai_drive.training.recipe import RecipeError

    with pytest.raises(RecipeError, match="lane-kep"):
        load_recipe("ppo", "KaiDrive/Follow-v0", "follow", overrides={"env_mix": {"lane-kep": {}}})


def test_generalist_recipe_validates_for_every_member():
    """agents/generalist.yaml: each member's training config (common + its own overrides) is a valid env spec."""
    from kai_drive.catalog import catalog_dir, env_yaml
    from kai_drive.config import deep_merge, dotted_to_nested
    from kai_drive.specs import load_env_spec
    from kai_drive.training.recipe import env_config_for

    recipe, _ = load_recipe("ppo", "KaiDrive/LaneKeep-v0", "lane-keep", recipe_file=catalog_dir("agents") / "generalist.yaml")
    assert set(recipe.env_mix) == {"KaiDrive/LaneKeep-v0", "KaiDrive/Follow-v0", "KaiDrive/Highway-v0", "KaiDrive/Crossing-v0"}
    for role in ("train", "test"):
        for env_id, extra in env_mix_for(recipe, role).items():
            spec = load_env_spec(env_yaml(env_id), deep_merge(dotted_to_nested(env_config_for(recipe, role)),
                                                              dotted_to_nested(extra)))
            assert bool(spec.scenario.use) == (role == "train")
