"""``KaiEnv``: a gymnasium env composed of a World, on-board Sensors and a Task, defined by one YAML.

    env = gymnasium.make("KaiDrive/LaneKeep-v0", config={"sensors": {"camera": {"width": 96}}})
    obs, info = env.reset(seed=0)                      # or options={"road_seed": 3, "noise_seed": 7}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import gymnasium
import numpy as np
import pybullet
from gymnasium import spaces

from kai_drive.catalog import env_yaml
from kai_drive.sensors import Camera, Lidar, Proprioception
from kai_drive.specs import EnvSpec, load_env_spec
from kai_drive.sim.world import World
from kai_drive.tasks import TASKS

_SEED_HIGH = 2**31 - 1


class KaiEnv(gymnasium.Env):
    """A kai-drive environment.

    Args:
        env: catalogue alias or id (``"lane-keep"``, ``"KaiDrive/LaneKeep-v0"``) or a path to a YAML.
        config: overrides of the YAML, nested (``{"road": {"n_lanes": 3}}``) or dotted
            (``{"road.n_lanes": 3}``); unknown keys or bad values raise ``SpecError`` naming them.
        render_mode: ``"rgb_array"`` (chase-camera image) or ``"human"`` (PyBullet GUI window).

    ``reset(options=...)`` accepts ``road_seed`` (the scenario: road, start pose) and ``noise_seed``
    (sensor corruption), each drawn from the env's seeded generator when absent.
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
        self.metadata = dict(self.metadata, render_fps=s.world.control_hz)
        self.world = World(
            physics_hz=s.world.physics_hz,
            control_hz=s.world.control_hz,
            gui=render_mode == "human",
            renderer=s.world.renderer,
            gravity_mps2=s.world.gravity_mps2,
        )
        self.task = TASKS[s.task.kind](s)
        self.sensors: list = []
        if s.sensors.camera.enabled:
            self.sensors.append(Camera(s.sensors.camera))
        if s.sensors.lidar.enabled:
            self.sensors.append(Lidar(s.sensors.lidar))
        if s.sensors.state.enabled:
            self.sensors.append(Proprioception(s.sensors.state, self.task.PROPRIO_FIELDS))
        if not self.sensors:
            raise ValueError("config: sensors: every sensor is disabled; enable at least one")
        entries: dict[str, spaces.Space] = {}
        for sensor in self.sensors:
            entries.update(sensor.spaces())
        self.observation_space = spaces.Dict(entries)
        self.action_space = self.task.action_space
        self._chase_proj = pybullet.computeProjectionMatrixFOV(60.0, s.render.width / s.render.height, 0.1, 200.0)
        self._noise_rng = np.random.default_rng(0)
        self._elapsed_s = 0.0
        self._ready = False
        self.scenario: dict[str, Any] = {}

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"road_seed", "noise_seed"}
        if unknown:
            raise ValueError(f"reset(options=...): unknown keys {sorted(unknown)}; valid: road_seed, noise_seed")
        road_seed = options.get("road_seed")
        noise_seed = options.get("noise_seed")
        draw = self.np_random.integers(0, _SEED_HIGH, size=2)
        road_seed = int(draw[0]) if road_seed is None else int(road_seed)
        noise_seed = int(draw[1]) if noise_seed is None else int(noise_seed)
        self._noise_rng = np.random.default_rng(noise_seed)

        self.world.reset()
        record = self.task.build(self.world, np.random.default_rng(road_seed))
        self.scenario = {"road_seed": road_seed, "noise_seed": noise_seed, **record}
        self._ego = self.task.ego
        for sensor in self.sensors:
            sensor.reset(self.world, self._ego)
        self._elapsed_s = 0.0
        self._ready = True
        info = self.task.reset_info()
        info["scenario"] = dict(self.scenario)
        return self._observe(), info

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
            w, h, view, proj, renderer=self.world.render_flag, flags=pybullet.ER_NO_SEGMENTATION_MASK
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

    def close(self) -> None:
        self.world.close()
        self._ready = False
