"""The physics world of one env: its own PyBullet client, fixed steps, bodies by name, save/restore.

Every PyBullet call of an env goes through ``World.client`` (a ``BulletClient`` bound to this world's
physics server), so any number of worlds live side by side in one process. The world knows nothing
of gymnasium, tasks or sensors.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

from kai_drive.sim.bullet import connect, pybullet

#: collision group of the ego vehicle's links: sensors cast rays with a mask that excludes it.
EGO_GROUP = 0x8
RAY_MASK_WITHOUT_EGO = 0xFFFF & ~EGO_GROUP


def gpu_present() -> bool:
    """True when an NVIDIA GPU device node exists (then the EGL renderer is worth trying)."""
    return Path("/dev/nvidia0").exists()


class World:
    """One PyBullet physics server with a fixed physics step and a fixed control step.

    Args:
        physics_hz: physics step rate (Hz), e.g. 240.
        control_hz: rate at which :meth:`step` is called (Hz), e.g. 20; must divide ``physics_hz``.
        gui: open the PyBullet GUI (needs a display) instead of a headless DIRECT server.
        renderer: "tiny" (CPU TinyRenderer), "egl" (the EGL plugin, GPU) or "auto" (EGL when a GPU
            is present and the plugin loads, else tiny).
        gravity_mps2: magnitude of gravity along -z.
    """

    def __init__(
        self,
        physics_hz: int = 240,
        control_hz: int = 20,
        gui: bool = False,
        renderer: str = "auto",
        gravity_mps2: float = 9.81,
    ) -> None:
        if physics_hz % control_hz:
            raise ValueError(f"physics_hz ({physics_hz}) must be a multiple of control_hz ({control_hz})")
        self.physics_hz = physics_hz
        self.control_hz = control_hz
        self.substeps = physics_hz // control_hz
        self.dt = 1.0 / control_hz
        self.gravity_mps2 = gravity_mps2
        self.gui = gui
        self.client = connect(gui)
        self.client_id = self.client._client
        self.bodies: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self.kinds: dict[int, str] = {}
        self._egl_plugin = -1
        self.renderer_name = self._setup_renderer(renderer)
        # one C call per control step: Bullet subdivides it into `substeps` fixed physics steps
        self._step = functools.partial(pybullet.stepSimulation, physicsClientId=self.client_id)
        self._closed = False
        self.reset()

    # -- renderer --------------------------------------------------------------------------------
    def _setup_renderer(self, renderer: str) -> str:
        if renderer not in ("auto", "tiny", "egl"):
            raise ValueError(f"renderer must be 'auto', 'tiny' or 'egl', got {renderer!r}")
        #: why EGL is not in use (None when it is, or was never tried): shown in warnings and errors
        self.egl_unavailable_reason: str | None = None
        if self.gui:
            return "opengl"
        if renderer == "tiny":
            return "tiny"
        if renderer == "auto" and not gpu_present():
            self.egl_unavailable_reason = "no GPU device node (/dev/nvidia0)"
            return "tiny"
        self._egl_plugin, reason = self._load_egl_plugin()
        if self._egl_plugin < 0:
            self.egl_unavailable_reason = reason
            if renderer == "egl":
                raise RuntimeError(
                    f"renderer 'egl' was requested but PyBullet's EGL plugin did not load: {reason}; "
                    "it needs a GPU with EGL drivers; use world.renderer: tiny or auto"
                )
            warnings.warn(f"renderer 'auto': a GPU is present but EGL did not load ({reason}); using TinyRenderer",
                          RuntimeWarning, stacklevel=3)
            return "tiny"
        return "egl"

    def _load_egl_plugin(self) -> tuple[int, str | None]:
        """Load PyBullet's EGL plugin: ``(plugin id, None)`` or ``(-1, why not)``."""
        spec = importlib.util.find_spec("eglRenderer")  # the plugin's shared library, shipped with pybullet
        path = spec.origin if spec is not None and spec.origin else None
        try:
            if path is not None:
                plugin = self.client.loadPlugin(path, "_eglRendererPlugin")
            else:
                plugin = self.client.loadPlugin("eglRendererPlugin")
        except pybullet.error as exc:
            return -1, f"loadPlugin({path or 'eglRendererPlugin'!r}) raised: {exc}"
        if plugin < 0:
            return -1, f"loadPlugin({path or 'eglRendererPlugin'!r}) returned {plugin} (no EGL display or driver)"
        return plugin, None

    @property
    def render_flag(self) -> int:
        """The ``renderer=`` argument for ``getCameraImage``."""
        return pybullet.ER_TINY_RENDERER if self.renderer_name == "tiny" else pybullet.ER_BULLET_HARDWARE_OPENGL

    # -- lifecycle -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Remove every body and restore the physics settings (ids restart from 0: deterministic)."""
        c = self.client
        c.resetSimulation()
        c.setGravity(0, 0, -self.gravity_mps2)
        c.setPhysicsEngineParameter(
            fixedTimeStep=1.0 / self.physics_hz * self.substeps,
            numSubSteps=self.substeps,
            deterministicOverlappingPairs=1,
        )
        if self.gui:
            c.configureDebugVisualizer(pybullet.COV_ENABLE_GUI, 0)
        self.bodies.clear()
        self._names.clear()
        self.kinds.clear()

    def step(self) -> None:
        """Advance one control step (``substeps`` physics steps of 1/physics_hz s)."""
        self._step()

    def close(self) -> None:
        """Disconnect; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.disconnect()
        except pybullet.error:
            pass

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- bodies by name --------------------------------------------------------------------------
    def add_body(self, name: str, body_id: int, kind: str | None = None) -> int:
        """Register ``body_id`` as ``name``; ``kind`` (default: the name) is its semantic class,
        one of :data:`kai_drive.sensors.camera.SEG_CLASSES` (e.g. "barrier", "vehicle")."""
        if name in self.bodies:
            raise KeyError(f"a body named {name!r} already exists in this world")
        if body_id < 0:
            raise RuntimeError(f"PyBullet failed to create body {name!r}")
        self.bodies[name] = body_id
        self._names[body_id] = name
        self.kinds[body_id] = kind or name
        return body_id

    def body(self, name: str) -> int:
        try:
            return self.bodies[name]
        except KeyError:
            raise KeyError(f"no body named {name!r}; bodies: {sorted(self.bodies)}") from None

    def name_of(self, body_id: int) -> str | None:
        return self._names.get(body_id)

    def set_ego(self, body_id: int) -> None:
        """Put every link of ``body_id`` in :data:`EGO_GROUP` so on-board sensors' rays ignore it."""
        for link in range(-1, self.client.getNumJoints(body_id)):
            self.client.setCollisionFilterGroupMask(body_id, link, EGO_GROUP, 0xFFFF)

    def skip_static_contacts(self) -> int:
        """Stop Bullet from computing contacts between two static bodies (every link of mass 0): the
        barriers' boxes rest on the ground plane and cost ~200 contact points per physics step that move
        nothing (both sides are immovable) and that no one reads (the tasks read the ego's contacts).
        Contacts with any dynamic body are untouched, so the simulation is unchanged, bit for bit (the
        env digest tests check it); kinematic actors moved by ``resetBasePositionAndOrientation`` are
        static too, so they keep colliding with the ego only. Call once the scene is built; returns the
        number of link pairs filtered."""
        c = self.client
        static: list[tuple[int, list[int]]] = []
        for body_id in self._names:
            links = list(range(-1, c.getNumJoints(body_id)))
            if all(c.getDynamicsInfo(body_id, link)[0] == 0.0 for link in links):
                static.append((body_id, links))
        n = 0
        for i, (a, links_a) in enumerate(static):
            for b, links_b in static[i + 1:]:
                for la in links_a:
                    for lb in links_b:
                        c.setCollisionFilterPair(a, b, la, lb, 0)
                        n += 1
        return n

    # -- save / restore --------------------------------------------------------------------------
    def save_state(self) -> int:
        """Snapshot the physics state in memory; returns a handle for :meth:`restore_state`."""
        return self.client.saveState()

    def restore_state(self, state_id: int) -> None:
        self.client.restoreState(stateId=state_id)

    def remove_state(self, state_id: int) -> None:
        self.client.removeState(state_id)
