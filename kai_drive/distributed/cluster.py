"""Join a Ray cluster or start (and later stop) a local one."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from kai_drive.distributed import require_ray


def resolve_address(address: str | None) -> str | None:
    """``--address`` if given, else ``$RAY_ADDRESS``, else None (= start a local instance)."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                what: str = "Ray") -> Iterator[dict]:
    """Use Ray inside the block.

    * Ray already initialised in this process: use it as it is, leave it running.
    * ``address`` (or ``$RAY_ADDRESS``): join that cluster, disconnect afterwards (the cluster stays).
    * neither: start a local instance with ``num_cpus`` (default: all cores of this machine), no
      dashboard, and stop it afterwards.

    Yields ``ray.cluster_resources()`` (e.g. ``{"CPU": 16.0, "GPU": 1.0, ...}``).
    """
    ray = require_ray(what)
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    address = resolve_address(address)
    if address:
        if num_cpus is not None or num_gpus is not None:
            raise ValueError("num_cpus/num_gpus are for a local Ray instance; a cluster has its own (drop --num-cpus)")
        ray.init(address=address, log_to_driver=False)
    else:
        # Ray lowers its workers' priority to nice 15 by default: our work runs in them (sweep trials, evaluation
        # episodes), and on a machine shared with anything at nice 0 they starved (measured: 1 % of a core each
        # beside nice-0 jobs). A local instance runs them at the caller's priority; $RAY_worker_niceness wins.
        os.environ.setdefault("RAY_worker_niceness", "0")
        kwargs = {"num_cpus": num_cpus or os.cpu_count() or 1, "include_dashboard": False, "log_to_driver": False}
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        ray.init(**kwargs)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
