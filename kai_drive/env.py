"""``KaiEnv``: a gymnasium env composed of a World, on-board Sensors and a Task, defined by one YAML.

    env = gymnasium.make("KaiDrive/LaneKeep-v0", config={"sensors": {"camera": {"width": 96}}})
    obs, info = env.reset(seed=0)                      # or options={"road_seed": 3, "noise_seed": 7}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gymnasium
import numpy as np
from gymnasium import spaces

from kai_drive.catalog import env_yaml
from kai_drive.sensors import build_sensors
from kai_drive.sensors.camera import full_light
from kai_drive.sim.bullet import pybullet
from kai_drive.sim.world import World
from kai_drive.specs import EnvSpec, load_env_spec
from kai_drive.tasks import REGISTRY

_SEED_HIGH = 2**31 - 1


@dataclass(frozen=True)
class EnvState:
    """A snapshot from :meth:`KaiEnv.save_state` (valid until the next reset of the same env)."""

    bullet_state: int
    task_state: Any
    elapsed_s: float
    ready: bool
    noise_rng_state: dict
    np_random_state: dict
    scenario: dict


class KaiEnv(gymnasium.Env):
    """A kai-drive environment.

    Args:
        env: catalogue alias or id (``"lane-keep"``, ``"KaiDrive/LaneKeep-v0"``) or a path to a YAML.
        config: overrides of the YAML, nested (``{"road": {"n_lanes": 3}}``) or dotted
            (``{"road.n_lanes": 3}``); unknown keys or bad values raise ``SpecError`` naming them.
        render_mode: ``"rgb_array"`` (chase-camera image) or ``"human"`` (PyBullet GUI window).

    ``reset(options=...)`` accepts ``road_seed`` (the scenario: road and the streams of every other
    factor) and ``noise_seed`` (sensor corruption), each drawn from the env's seeded generator when
    absent, and ``scenario``: a subset of the scenario record (see :mod:`kai_drive.sim.scenario`) set
    exactly, every other factor drawn as usual. ``info["scenario"]`` at reset is the realised record;
    passing it back as ``options={"scenario": record}`` replays the episode's scene exactly.

    ``save_state()`` / ``restore_state(handle)`` snapshot and restore the whole env mid-episode
    (PyBullet state + task counters, traffic models, the car's Python-side state, elapsed time and the
    sensor-noise generator) to branch a rollout; ``remove_state(handle)`` frees a snapshot.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    def __init__(
        self,
        env: str | Path = "lane-keep",
        config: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        path = Path(env) if str(env).endswith((".yaml", ".yml")) else env_yaml(str(env))
        self.spec_data: EnvSpec = load_env_spec(path, config)
        s = self.spec_data
        self.render_mode = render_mode
        self.world = World(
            physics_hz=s.world.physics_hz,
            control_hz=s.world.control_hz,
            gui=render_mode == "human",
            renderer=s.world.renderer,
            gravity_mps2=s.world.gravity_mps2,
        )
        # the renderer that makes the pixels ("tiny", "egl" or "opengl"), resolved from world.renderer
        self.metadata = dict(self.metadata, render_fps=s.world.control_hz, renderer=self.world.renderer_name)
        self.task = REGISTRY[s.task.kind].task_cls(s)
        self.sensors = build_sensors(s.sensors, self.task)
        if not self.sensors:
            raise ValueError("config: sensors: every sensor is disabled; enable at least one")
        entries: dict[str, spaces.Space] = {}
        for sensor in self.sensors:
            entries.update(sensor.spaces())
        self.observation_space = spaces.Dict(entries)
        self.action_space = self.task.action_space
        self._chase_proj = pybullet.computeProjectionMatrixFOV(60.0, s.render.width / s.render.height, 0.1, 200.0)
        self._noise_rng = np.random.default_rng(0)
        self._sensor_specs = [sensor.spec for sensor in self.sensors]
        self._light: dict[str, Any] = full_light()
        self._elapsed_s = 0.0
        self._ready = False
        self.scenario: dict[str, Any] = {}

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"road_seed", "noise_seed", "scenario"}
        if unknown:
            raise ValueError(
                f"reset(options=...): unknown keys {sorted(unknown)}; valid: road_seed, noise_seed, scenario"
            )
        overrides = dict(options.get("scenario") or {})
        if not isinstance(options.get("scenario") or {}, Mapping):
            raise ValueError("reset(options={'scenario': ...}) must be a dict of scenario factors")
        if overrides and not self.task.has_scenario:
            raise ValueError(f"task {self.spec_data.task.kind!r} has no scenario factors; drop options['scenario']")
        road_seed = options.get("road_seed", overrides.pop("road_seed", None))
        noise_seed = options.get("noise_seed", overrides.pop("noise_seed", None))
        overrides.pop("road_seed", None), overrides.pop("noise_seed", None)
        draw = self.np_random.integers(0, _SEED_HIGH, size=2)
        road_seed = int(draw[0]) if road_seed is None else int(road_seed)
        noise_seed = int(draw[1]) if noise_seed is None else int(noise_seed)
        self._noise_rng = np.random.default_rng(noise_seed)

        self.world.reset()
        if self.task.has_scenario:
            record = self.task.realise(road_seed, noise_seed, overrides)  # validated before anything is built
            self.task.build_scenario(self.world, record)
            self.scenario = record.model_dump(mode="json")
            self._apply_scene(record)
        else:
            record = self.task.build(self.world, np.random.default_rng(road_seed))
            self.scenario = {"road_seed": road_seed, "noise_seed": noise_seed, **record}
        self._ego = self.task.ego
        for sensor in self.sensors:
            sensor.reset(self.world, self._ego)
        self._elapsed_s = 0.0
        self._ready = True
        info = self.task.reset_info()
        info["scenario"] = copy.deepcopy(self.scenario)
        info["renderer"] = self.world.renderer_name
        return self._observe(), info

    def _apply_scene(self, record: Any) -> None:
        """Light, sensor-noise and camera-pose factors of the record -> the sensors (per episode).

        Every light parameter is set explicitly, default or not: the renderer keeps the last light it
        was given, and an episode must never see the previous one's."""
        light = getattr(record, "light", None)
        if light is not None and light != type(light)() and self.world.renderer_name != "tiny":
            raise ValueError(
                f"scenario factor 'light' ({light.model_dump()}) cannot be honoured by the "
                f"{self.world.renderer_name!r} renderer, which ignores PyBullet's light arguments; use "
                "config={'world.renderer': 'tiny'} (TinyRenderer honours it) or leave the light at its default"
            )
        self._light = full_light(None if light is None else light.camera_kwargs())
        for sensor, base in zip(self.sensors, self._sensor_specs):
            sensor.set_light(self._light)
            upd = sensor.episode_update(record)  # sensor_noise (and the camera's pose jitter)
            sensor.spec = base.model_copy(update=upd) if upd else base

    # -- save / restore (branching rollouts) --------------------------------------------------------
    def save_state(self) -> "EnvState":
        """Snapshot the whole env mid-episode; :meth:`restore_state` brings it back bit-identically."""
        if not hasattr(self, "_ego"):
            raise gymnasium.error.ResetNeeded("call reset() before save_state()")
        task_state = self.task.save_state()  # None when the task keeps nothing outside PyBullet
        return EnvState(
            bullet_state=self.world.save_state(),
            task_state=task_state,
            elapsed_s=self._elapsed_s,
            ready=self._ready,
            noise_rng_state=copy.deepcopy(self._noise_rng.bit_generator.state),
            np_random_state=copy.deepcopy(self.np_random.bit_generator.state),
            scenario=copy.deepcopy(self.scenario),
        )

    def restore_state(self, handle: "EnvState") -> None:
        """Return to the moment ``handle`` was saved (same episode: no reset() in between)."""
        if not isinstance(handle, EnvState):
            raise TypeError(f"restore_state needs a handle from save_state(), got {type(handle).__name__}")
        if handle.scenario != self.scenario:
            raise ValueError("restore_state: the handle belongs to another episode (reset() was called since)")
        self.world.restore_state(handle.bullet_state)
        if handle.task_state is not None:
            self.task.restore_state(handle.task_state)
        elif hasattr(self._ego, "sync_from_sim"):
            self._ego.sync_from_sim()
        self._elapsed_s = handle.elapsed_s
        self._ready = handle.ready
        self._noise_rng.bit_generator.state = copy.deepcopy(handle.noise_rng_state)
        self.np_random.bit_generator.state = copy.deepcopy(handle.np_random_state)

    def remove_state(self, handle: "EnvState") -> None:
        """Free the PyBullet memory of a snapshot."""
        self.world.remove_state(handle.bullet_state)

    def step(self, action):
        if not self._ready:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        act = np.asarray(action, dtype=np.float32).reshape(-1)
        if act.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {np.shape(action)}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"action contains NaN or inf: {act.tolist()} (check the policy's output)")
        act = np.clip(act, self.action_space.low, self.action_space.high)
        dt = self.world.dt
        self.task.apply(act, dt)
        self.world.step()
        self._elapsed_s += dt
        reward, terminated, truncated, info = self.task.evaluate(self.world, act, dt, self._elapsed_s)
        if terminated or truncated:
            self._ready = False
        obs = self._observe()
        if self.render_mode == "human":
            self._follow_gui()
        return obs, reward, terminated, truncated, info

    def _observe(self) -> dict[str, np.ndarray]:
        mount = self.task.sensor_mount(self.world)
        out: dict[str, np.ndarray] = {}
        for sensor in self.sensors:
            sensor.read(self.world, self._ego, mount, self._noise_rng, out)
        return out

    # -- rendering -------------------------------------------------------------------------------
    def chase_camera(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """An RGB image (H, W, 3) from behind and above the ego car."""
        r = self.spec_data.render
        w, h = width or r.width, height or r.height
        eye, target = self.task.chase_view(r.distance_m, r.height_m)
        view = pybullet.computeViewMatrix(eye, target, [0, 0, 1])
        proj = self._chase_proj if (w, h) == (r.width, r.height) else pybullet.computeProjectionMatrixFOV(60.0, w / h, 0.1, 200.0)
        _, _, rgba, _, _ = self.world.client.getCameraImage(
            w, h, view, proj, renderer=self.world.render_flag, flags=pybullet.ER_NO_SEGMENTATION_MASK, **self._light
        )
        return np.ascontiguousarray(np.reshape(rgba, (h, w, 4))[:, :, :3])

    def render(self):
        if self.render_mode == "rgb_array":
            if not hasattr(self, "_ego"):
                raise gymnasium.error.ResetNeeded("call reset() before render()")
            return self.chase_camera()
        return None

    def _follow_gui(self) -> None:
        r = self.spec_data.render
        eye, target = self.task.chase_view(r.distance_m, r.height_m)
        yaw = math.degrees(math.atan2(target[1] - eye[1], target[0] - eye[0])) - 90.0
        self.world.client.resetDebugVisualizerCamera(r.distance_m, yaw, -20.0, list(target))

    @property
    def renderer(self) -> str:
        """The renderer that makes this env's pixels: "tiny" (TinyRenderer, CPU), "egl" or "opengl" (GUI)."""
        return self.world.renderer_name

    def close(self) -> None:
        self.world.close()
        self._ready = False
