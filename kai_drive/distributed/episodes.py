"""Run independent episode jobs on Ray tasks: ``map_episodes(fn, items)`` == ``[fn(x) for x in items]``.

The contract that makes a distributed evaluation give the same numbers as a serial one: ``fn(item)``
must depend only on ``item`` (build or fetch its env and policy from what ``item`` names, and seed the
episode from ``item``, e.g. ``env.reset(seed=item["seed"])``). kai-drive envs draw all randomness from
the seed passed to ``reset``, so the results are the same bytes wherever a task runs.

``fn`` may cache expensive objects (a loaded model, an env) per worker process, e.g. with
``functools.lru_cache`` on a module-level helper: Ray reuses worker processes between tasks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from kai_drive.distributed.cluster import ray_session


def map_episodes(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    address: str | None = None,
    *,
    num_cpus_per_task: float = 1.0,
    num_gpus_per_task: float = 0.0,
    max_retries: int = 2,
    num_cpus: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    runtime_env: dict | None = None,
) -> list[Any]:
    """Apply ``fn`` to every item as a Ray task; return the results **in the order of** ``items``.

    Args:
        fn: a picklable function of one item (module-level functions are best: Ray imports them by name
            on the workers, so the workers need kai_drive -- and your module -- installed).
        items: the jobs, e.g. ``[{"env_id": ..., "model": "runs/.../best_model.zip", "seed": s}, ...]``.
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"10.0.0.1:6379"``); None uses
            ``$RAY_ADDRESS`` if set, else an already initialised Ray, else starts a local instance with
            ``num_cpus`` (default: all cores) and stops it before returning.
        num_cpus_per_task / num_gpus_per_task: resources per task (fractions allowed), so a cluster runs
            ``CPUs / num_cpus_per_task`` episodes at a time.
        max_retries: re-run a task whose worker process died (the episode is recomputed from its item,
            so a retry gives the same result).
        progress: called as ``progress(done, total)`` whenever tasks finish.
        runtime_env: passed to the tasks (e.g. ``{"env_vars": {...}}``).

    Raises the first task error (with the item's index) after cancelling the remaining tasks.
    """
    items = list(items)
    if not items:
        return []
    with ray_session(address, num_cpus=num_cpus, what="map_episodes (kai_drive.distributed)"):
        import ray

        options: dict[str, Any] = {"num_cpus": num_cpus_per_task, "max_retries": max_retries}
        if num_gpus_per_task:
            options["num_gpus"] = num_gpus_per_task
        if runtime_env:
            options["runtime_env"] = runtime_env
        task = ray.remote(fn).options(**options)
        return _gather(ray, [task.remote(item) for item in items], items, progress)


def _gather(ray: Any, refs: list, items: list, progress: Callable[[int, int], None] | None) -> list[Any]:
    """The results of ``refs`` in their order; the first task error cancels the others and is raised."""
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=min(len(pending), max(1, len(refs) // 20)), timeout=1.0)
        for ref in ready:
            i = index[ref]
            try:
                results[i] = ray.get(ref)
            except Exception as exc:
                for other in pending:
                    ray.cancel(other, force=True)
                raise RuntimeError(f"map_episodes: item {i} ({_short(items[i])}) failed: {exc}") from exc
            done += 1
        if ready and progress is not None:
            progress(done, len(refs))
    return results


def serial_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """The reference ``map_episodes`` must match: ``[fn(x) for x in items]``."""
    return [fn(x) for x in items]


def _short(item: Any, limit: int = 120) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."
