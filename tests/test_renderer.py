"""Which renderer made the pixels is recorded, and a factor it cannot honour is refused."""

from __future__ import annotations

import pytest

from kai_drive.sim import world as world_mod


def test_resolved_renderer_is_in_info_and_metadata(make_env, env_id):
    env = make_env(env_id, config={"world.renderer": "tiny"})
    _, info = env.reset(seed=0)
    assert info["renderer"] == "tiny"
    assert env.unwrapped.renderer == "tiny"
    assert env.metadata["renderer"] == "tiny"


def test_auto_without_gpu_is_tinyrenderer_and_says_why(make_env, monkeypatch):
    monkeypatch.setattr(world_mod, "gpu_present", lambda: False)
    env = make_env("KaiDrive/LaneKeep-v0", config={"world.renderer": "auto"})
    assert env.unwrapped.renderer == "tiny"
    assert "no GPU" in env.unwrapped.world.egl_unavailable_reason


def test_light_factor_under_a_renderer_that_ignores_light_is_refused(make_env):
    env = make_env("KaiDrive/LaneKeep-v0", config={"world.renderer": "tiny"})
    env.reset(seed=0)
    env.unwrapped.world.renderer_name = "egl"  # as World resolves it on a GPU host
    env.reset(seed=0)  # the default light is fine
    with pytest.raises(ValueError, match=r"'light'.*'egl' renderer"):
        env.reset(seed=0, options={"scenario": {"light": {"intensity": 0.45}}})


def test_egl_plugin_failure_names_the_reason(monkeypatch):
    """A requested EGL that does not load raises with the loader's reason (no broad except)."""

    def refuse(self):
        return -1, "loadPlugin('eglRendererPlugin') returned -1 (no EGL display or driver)"

    monkeypatch.setattr(world_mod.World, "_load_egl_plugin", refuse)
    with pytest.raises(RuntimeError, match="no EGL display or driver"):
        world_mod.World(renderer="egl")
    monkeypatch.setattr(world_mod, "gpu_present", lambda: True)
    with pytest.warns(RuntimeWarning, match="EGL did not load"):
        w = world_mod.World(renderer="auto")
    assert w.renderer_name == "tiny" and "returned -1" in w.egl_unavailable_reason
    w.close()
