"""kai-drive: PyBullet driving and grasping worlds with camera, lidar and proprioception, for RL.

``import kai_drive`` registers every catalogue env with gymnasium (namespace ``KaiDrive``)."""

from __future__ import annotations

import gymnasium

from kai_drive.catalog import env_ids

__version__ = "0.1.0"


def register_envs() -> list[str]:
    """Register every env of the ``envs/`` catalogue with gymnasium; returns the ids. Idempotent."""
    registered = []
    for env_id, alias in env_ids().items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="kai_drive.env:KaiEnv",
                kwargs={"env": alias},
                disable_env_checker=False,
            )
        registered.append(env_id)
    return registered


register_envs()
