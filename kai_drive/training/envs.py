"""Env construction for training, evaluation and play: wrappers, seeds and the VecEnv stack.

Road seeds are split so that evaluation never drives a road the training drove:

* training envs draw their road seeds in ``[0, 2**30)`` from a generator seeded with ``seed + rank``;
* periodic evaluations (model selection) use ``EVAL_ROAD_SEED_BASE + i``  (``i < eval episodes``);
* the final evaluation (``final_eval.json``) uses ``TEST_ROAD_SEED_BASE + i`` — held out from training
  *and* from model selection, and the same for every run so runs are compared on the same roads.

The stack (inner to outer): ``KaiEnv`` -> (training, when the recipe asks: :class:`ModalityDropout`) ->
:class:`RoadSeeds` -> :class:`EpisodeMetrics` -> SB3
``Monitor`` -> ``DummyVecEnv``/``SubprocVecEnv`` -> ``VecFrameStack`` (frame_stack > 1) ->
``VecNormalize`` (when the recipe enables it).
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import gymnasium
import numpy as np

TRAIN_ROAD_SEED_HIGH = 2**30
EVAL_ROAD_SEED_BASE = 2**30
TEST_ROAD_SEED_BASE = 2**30 + 2**29

Split = Literal["train", "eval"]


class RoadSeeds(gymnasium.Wrapper):
    """Chooses the road seed of every reset, so train and eval roads never overlap.

    ``split="train"``: seeds drawn in ``[0, 2**30)`` from a generator reseeded by ``reset(seed=...)``.
    ``split="eval"``: seeds popped from a queue filled by :meth:`queue_road_seeds`; when the queue is
    empty, seeds drawn in ``[2**30, 2**31)``. Explicit ``options={"road_seed": n}`` always win.
    In eval the noise seed equals the road seed, so an evaluation episode is fully reproducible.
    """

    def __init__(self, env: gymnasium.Env, split: Split = "train") -> None:
        super().__init__(env)
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        self.split = split
        self._rng = np.random.default_rng()
        self._queue: collections.deque[int] = collections.deque()

    def queue_road_seeds(self, seeds: Iterable[int]) -> None:
        """The next resets use these road seeds, in order (eval split)."""
        self._queue = collections.deque(int(s) for s in seeds)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = dict(options or {})
        if "road_seed" not in options:
            if self.split == "eval" and self._queue:
                options["road_seed"] = self._queue.popleft()
                options.setdefault("noise_seed", options["road_seed"])
            elif self.split == "eval":
                options["road_seed"] = int(self._rng.integers(EVAL_ROAD_SEED_BASE, 2**31 - 1))
            else:
                options["road_seed"] = int(self._rng.integers(0, TRAIN_ROAD_SEED_HIGH))
        return self.env.reset(seed=seed, options=options)


class EpisodeMetrics(gymnasium.Wrapper):
    """Adds ``info["episode_metrics"]`` at the last step of an episode: the running metrics of the env's
    task family (:class:`kai_drive.metrics.DrivingTally` / :class:`~kai_drive.metrics.GraspTally`: ``return``,
    ``length``, ``success``, ``road_seed``, ``truncated``, ``outcome`` and the family's own, under the
    evaluation's names). Also keeps the last observation for :meth:`last_camera`.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        from kai_drive.metrics import family_of

        self.family = family_of(env)
        self._new_tally = self.family.tally
        self._tally = self._new_tally()
        self._road_seed = -1
        self._last_obs: Any = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._tally = self._new_tally()
        self._road_seed = int(info.get("scenario", {}).get("road_seed", -1))
        self._last_obs = obs
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_obs = obs
        self._tally.step(reward, info)
        if terminated or truncated:
            info["episode_metrics"] = self._tally.finish(info, terminated, truncated, self._road_seed)
        return obs, reward, terminated, truncated, info

    def task_family(self) -> str:
        """The env's task family name ("driving" / "grasp"; a method, so ``VecEnv.env_method`` reaches it)."""
        return self.family.name

    def last_camera(self) -> np.ndarray | None:
        """The agent's camera image of the last observation (H, W, 3 uint8), or None without a camera."""
        if isinstance(self._last_obs, dict) and "camera" in self._last_obs:
            return np.asarray(self._last_obs["camera"])[..., :3]
        return None

    def chase_frame(self, width: int = 160, height: int = 120) -> np.ndarray:
        return self.env.unwrapped.chase_camera(width, height)


class ModalityDropout(gymnasium.Wrapper):
    """Training-time sensor failure: at every reset each listed observation entry is lost for the whole episode
    with its probability (``{"camera": 0.2, "lidar": 0.2}``), its array filled with the sensor's own "missing"
    value (:func:`kai_drive.sensors.base.missing_value`: a black image, lidar beams at 1.0 = no hit) -- what
    the evaluation's ``camera_black`` / ``lidar_missing`` conditions show a policy. At most all but one of the
    listed entries are lost at once (the policy always keeps a sensor to fall back on). ``info["lost_sensors"]``
    names the lost ones. Draws come from a generator reseeded by ``reset(seed=...)``, so a seeded training run
    is reproducible."""

    def __init__(self, env: gymnasium.Env, probabilities: dict[str, float]) -> None:
        super().__init__(env)
        from kai_drive.sensors.base import missing_value

        space = env.observation_space
        names = list(space.spaces) if isinstance(space, gymnasium.spaces.Dict) else []
        unknown = sorted(set(probabilities) - set(names))
        if unknown:
            raise ValueError(f"modality_dropout: {', '.join(unknown)} not in the observation ({', '.join(names)})")
        self.probabilities = {k: float(p) for k, p in probabilities.items() if p > 0}
        self._fill = {k: missing_value(k) for k in self.probabilities}
        self._rng = np.random.default_rng()
        self.lost: tuple[str, ...] = ()

    def _drop(self, obs: dict) -> dict:
        if not self.lost:
            return obs
        out = dict(obs)
        for k in self.lost:
            out[k] = np.full_like(obs[k], self._fill[k])
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([seed, 104729])
        keys = list(self.probabilities)
        lost = [k for k in keys if self._rng.random() < self.probabilities[k]]
        if len(keys) > 1 and len(lost) == len(keys):  # never all of them: keep one, chosen at random
            lost.pop(int(self._rng.integers(len(lost))))
        self.lost = tuple(lost)
        obs, info = self.env.reset(seed=seed, options=options)
        info["lost_sensors"] = list(self.lost)
        return self._drop(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._drop(obs), reward, terminated, truncated, info


def make_env_fn(
    env_id: str,
    env_config: dict[str, Any],
    split: Split,
    render_mode: str | None = None,
    in_subprocess: bool = False,
    expert: str | None = None,
    modality_dropout: dict[str, float] | None = None,
) -> Callable[[], gymnasium.Env]:
    """A picklable thunk building one wrapped env (runs inside the worker for SubprocVecEnv).

    ``expert``: a name of :data:`kai_drive.training.imitation.EXPERTS`; the env then carries
    :class:`~kai_drive.training.imitation.ExpertLabels` (imitation data collection).
    ``modality_dropout``: per-episode sensor loss while training (:class:`ModalityDropout`)."""

    def _init() -> gymnasium.Env:
        if in_subprocess:
            # Ctrl-C goes to the whole process group; only the learner handles it (saves and closes)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        from stable_baselines3.common.monitor import Monitor

        import kai_drive  # noqa: F401  (registers the envs in a fresh worker)

        env = gymnasium.make(env_id, config=dict(env_config), render_mode=render_mode)
        if expert is not None:
            from kai_drive.training.imitation import ExpertLabels

            env = ExpertLabels(env, expert)
        if modality_dropout:
            env = ModalityDropout(env, modality_dropout)
        env = RoadSeeds(env, split)
        env = EpisodeMetrics(env)
        return Monitor(env)

    return _init


class EnvCycle(gymnasium.Wrapper):
    """One worker of a multi-env training (a recipe's ``env_mix``): in training each reset moves on to the next
    member env (member ``(offset + k) % n`` at the k-th reset), so every worker sees every member in turn and a
    run's episodes are shared evenly between them. An episode with a given road seed (queued for evaluation, or
    ``options["road_seed"]``) runs in member ``road_seed % n``: an evaluation episode depends on its seed only,
    not on the worker count or on the episodes before it. Members are whole wrapped stacks (``make_env_fn``) with the same
    observation and action spaces; ``info["env_id"]`` names the member an episode ran in.

    Seeding stays reproducible: ``reset(seed=s)`` reseeds member ``j`` with ``s + 1_000_003 * j`` at its next
    reset. Road seeds queued with :meth:`queue_road_seeds` (evaluation) are taken in order, whatever member
    drives them. Attribute and method look-ups (``env_method``, ``get_attr``) reach the active member.
    """

    def __init__(self, members: list[gymnasium.Env], names: list[str], offset: int = 0) -> None:
        if not members or len(members) != len(names):
            raise ValueError("EnvCycle needs one name per member env, and at least one member")
        for name, env in zip(names[1:], members[1:]):
            if env.observation_space != members[0].observation_space or env.action_space != members[0].action_space:
                raise ValueError(
                    f"env_mix: {name} has observation space {env.observation_space} / action space {env.action_space}, "
                    f"{names[0]} has {members[0].observation_space} / {members[0].action_space}; members must agree"
                )
        super().__init__(members[0])
        self.members, self.names = members, list(names)
        self._offset, self._resets = int(offset), 0
        self._seeds: dict[int, int] = {}
        self._queue: collections.deque[int] = collections.deque()

    def queue_road_seeds(self, seeds: Iterable[int]) -> None:
        """The next resets use these road seeds, in order, one per reset whatever member drives it."""
        self._queue = collections.deque(int(s) for s in seeds)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._seeds = {j: int(seed) + 1_000_003 * j for j in range(len(self.members))}
        options = dict(options or {})
        if self._queue and "road_seed" not in options:
            options["road_seed"] = self._queue.popleft()
            options.setdefault("noise_seed", options["road_seed"])
        if "road_seed" in options:  # evaluation: the road seed alone picks the member, whatever ran before
            j = int(options["road_seed"]) % len(self.members)
        else:  # training: the next member in turn
            j = (self._offset + self._resets) % len(self.members)
        self._resets += 1
        self.env = self.members[j]
        obs, info = self.env.reset(seed=self._seeds.pop(j, None), options=options)
        info["env_id"] = self.names[j]
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_id"] = self.names[self.members.index(self.env)]
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        for env in self.members:
            env.close()


def make_cycle_fn(members: dict[str, dict[str, Any]], env_config: dict[str, Any], split: Split, offset: int,
                  render_mode: str | None = None, in_subprocess: bool = False, expert: str | None = None,
                  modality_dropout: dict[str, float] | None = None) -> Callable[[], gymnasium.Env]:
    """A picklable thunk building one :class:`EnvCycle` worker over ``members`` (env id -> extra overrides of
    that member, applied over ``env_config``)."""
    from kai_drive.config import deep_merge, dotted_to_nested

    fns = [make_env_fn(env_id, deep_merge(dotted_to_nested(env_config), dotted_to_nested(extra)), split, render_mode,
                       in_subprocess=in_subprocess, expert=expert, modality_dropout=modality_dropout)
           for env_id, extra in members.items()]

    def _init() -> gymnasium.Env:
        return EnvCycle([fn() for fn in fns], list(members), offset)

    return _init


def image_keys(space: gymnasium.spaces.Space) -> list[str]:
    if isinstance(space, gymnasium.spaces.Dict):
        return [k for k, s in space.spaces.items() if s.dtype == np.uint8 and len(s.shape) == 3]
    return []


def make_vec_env(
    env_id: str,
    env_config: dict[str, Any],
    n_envs: int,
    vec_env: Literal["subproc", "dummy"],
    split: Split,
    frame_stack: int = 1,
    seed: int | None = None,
    render_mode: str | None = None,
    encoder: Any = None,
    expert: str | None = None,
    modality_dropout: dict[str, float] | None = None,
    env_mix: dict[str, dict[str, Any]] | None = None,
):
    """The VecEnv (without VecNormalize, see :func:`wrap_normalize`).

    ``env_mix`` (env id -> extra overrides): every worker is an :class:`EnvCycle` over these envs instead of
    ``env_id`` alone (a recipe's ``env_mix``: one policy for several envs).

    ``encoder`` (a recipe's :class:`~kai_drive.training.recipe.EncoderSettings`): observations become
    frozen perception embeddings (:class:`kai_drive.perception.EncodedVecEnv`); ``modality_dropout``: see
    :class:`ModalityDropout` (the encoder then sees the lost sensor's "missing" reading, as in evaluation)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack

    subproc = vec_env == "subproc" and n_envs > 1
    if env_mix:
        fns = [make_cycle_fn(env_mix, env_config, split, rank, render_mode, in_subprocess=subproc, expert=expert,
                             modality_dropout=modality_dropout) for rank in range(n_envs)]
    else:
        fns = [make_env_fn(env_id, env_config, split, render_mode, in_subprocess=subproc, expert=expert,
                           modality_dropout=modality_dropout) for _ in range(n_envs)]
    venv = SubprocVecEnv(fns, start_method="forkserver") if subproc else DummyVecEnv(fns)
    if seed is not None:
        venv.seed(seed)
    if encoder is not None:
        from kai_drive.perception.sb3 import EncodedVecEnv

        venv = EncodedVecEnv(venv, pretrained=encoder.pretrained, device=encoder.device)
    if frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=frame_stack)
    return venv


def wrap_normalize(venv, normalisation, gamma: float, load_from: Path | None = None, training: bool = True):
    """Wrap ``venv`` in ``VecNormalize`` per the recipe's ``normalisation`` (or load saved stats)."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not normalisation.enabled:
        return venv
    if load_from is not None:
        vn = VecNormalize.load(str(load_from), venv)
    else:
        keys = normalisation.norm_obs_keys
        if keys is None and isinstance(venv.observation_space, gymnasium.spaces.Dict):
            images = set(image_keys(venv.observation_space))
            keys = [k for k in venv.observation_space.spaces if k not in images]
        vn = VecNormalize(
            venv,
            norm_obs=normalisation.norm_obs,
            norm_reward=normalisation.norm_reward,
            clip_obs=normalisation.clip_obs,
            clip_reward=normalisation.clip_reward,
            gamma=gamma,
            norm_obs_keys=keys,
        )
    vn.training = training
    if not training:
        vn.norm_reward = False
    return vn


def find_vec_normalize(venv):
    """The ``VecNormalize`` layer of a VecEnv stack, or None."""
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, VecNormalize):
            return venv
        venv = venv.venv
    return None
