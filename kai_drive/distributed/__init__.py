"""Spread kai-drive work over a Ray cluster: multi-seed runs, hyperparameter sweeps, episode maps.

Ray is an optional extra (``pip install "kai-drive[ray]"``). Importing this package does **not** import
Ray; the functions that need it call :func:`require_ray`, which says how to install it.

* :func:`map_episodes` -- run independent episode jobs as Ray tasks, results in input order.
* :mod:`kai_drive.distributed.sweep` -- ``python -m kai_drive.sweep``: its plan, its Ray Tune engine and the
  trial (one ``kai_drive.train`` run per trial).
* :mod:`kai_drive.distributed.watchdog` -- a training that stops cleanly when the Ray worker that started it dies.
* :mod:`kai_drive.distributed.bench` -- parallel vs serial seeds, scheduling overhead per trial.
"""

from __future__ import annotations

from typing import Any

INSTALL_HINT = 'pip install "kai-drive[ray]"'

__all__ = ["INSTALL_HINT", "RayMissingError", "map_episodes", "require_ray", "ray_session"]


class RayMissingError(ImportError):
    """Ray (or Optuna for --search) is not installed; the message gives the install command."""


def require_ray(what: str = "this feature", optuna: bool = False) -> Any:
    """Import and return ``ray``; raise :class:`RayMissingError` with the install command if missing."""
    try:
        import ray
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise RayMissingError(
            f"{what} needs Ray Tune, which is not installed ({exc}). Install the extra: {INSTALL_HINT}"
        ) from None
    if optuna:
        try:
            import optuna  # noqa: F401
        except ImportError as exc:
            raise RayMissingError(
                f"{what} needs Optuna, which is not installed ({exc}). Install the extra: {INSTALL_HINT}"
            ) from None
    return ray


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import ray
    if name == "map_episodes":
        from kai_drive.distributed.episodes import map_episodes

        return map_episodes
    if name == "ray_session":
        from kai_drive.distributed.cluster import ray_session

        return ray_session
    raise AttributeError(name)
