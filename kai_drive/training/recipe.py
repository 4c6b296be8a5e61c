"""Training recipes: ``agents/<algo>.yaml``, keyed by env id (rl-baselines3-zoo's convention).

A recipe file maps env ids to recipes::

    KaiDrive/LaneKeep-v0:
      n_envs: 2
      n_timesteps: 300000
      policy: MultiInputPolicy
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}
      normalisation: {enabled: true, norm_reward: true}
      frame_stack: 1
      env_config: {sensors.camera.enabled: false}
      hyperparams: {learning_rate: 3.0e-4, n_steps: 512}

Files are read with ``yaml.safe_load``; nothing is ``eval()``'d. Classes are named by strings that map
through whitelists (:data:`ACTIVATIONS`, :data:`OPTIMIZERS`). Every key is checked: unknown recipe keys
(pydantic, ``extra="forbid"``), hyperparameters the algorithm's constructor does not take and
``policy_kwargs`` the policy class does not take all raise :class:`RecipeError` naming the file (or
``--set``) and the dotted key.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from kai_drive.config import SpecError, StrictModel, deep_merge, dotted_to_nested
from kai_drive.catalog import catalog_dir
from kai_drive.training.algos import (
    ACTIVATIONS, ALGOS, EXPERTS, EXTRACTORS, OFF_POLICY, OPTIMIZERS, activations, algorithms, encoder_lr_scale,
    extractors, optimizers,
)


class RecipeError(ValueError):
    """A recipe file, a ``--set`` override or a run's config.yaml is invalid; the message names it."""


#: constructor arguments the CLI owns; a recipe may not set them in ``hyperparams``
_RESERVED_HYPERPARAMS = {
    "policy", "env", "policy_kwargs", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model",
    "action_noise", "stats_window_size", "monitor_wrapper",
}  # fmt: skip
#: policy_kwargs that take classes and are not (yet) nameable from YAML


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class Normalisation(StrictModel):
    """``VecNormalize`` settings (running mean/std of observations and of the discounted return)."""

    enabled: bool = False
    norm_obs: bool = True
    norm_reward: bool = True
    clip_obs: float = Field(10.0, gt=0)
    clip_reward: float = Field(10.0, gt=0)
    norm_obs_keys: list[str] | None = Field(
        None, description="Dict keys to normalise; default: every key that is not an image (uint8)"
    )


class ActionNoise(StrictModel):
    """Exploration noise of off-policy algorithms (TD3, SAC); std in action units."""

    type: Literal["normal", "ornstein-uhlenbeck"] = "normal"
    std: float = Field(0.1, gt=0)


class EvalSettings(StrictModel):
    """Periodic evaluation on held-out road seeds, and the final evaluation after training."""

    freq: int = Field(20_000, ge=0, description="env steps (all envs together) between evaluations; 0 = never")
    # at most 2^29 each: periodic roads 2^30 + i and final roads 2^30 + 2^29 + i then never overlap
    episodes: int = Field(10, ge=1, le=2**29, description="episodes per periodic evaluation")
    start_timesteps: int = Field(0, ge=0, description="no periodic evaluation before this many env steps")
    n_envs: int = Field(1, ge=1, description="parallel eval envs (subprocess when > 1)")
    final_episodes: int = Field(0, ge=0, le=2**29, description="episodes of the final evaluation (final_eval.json); 0 = none")
    images: bool = Field(True, description="log a strip of camera / chase-camera frames at each evaluation")
    stop_success_rate: float | None = Field(
        None, ge=0, le=1, description="stop training once a periodic evaluation reaches this success rate"
    )
    stop_min_timesteps: int = Field(0, ge=0, description="...but not before this many env steps")


class EncoderSettings(StrictModel):
    """Train on frozen perception embeddings: every env's observation is encoded once, in one batch per
    step, by :class:`kai_drive.perception.EncodedVecEnv`; the agent is an MLP on the embeddings
    (``policy: MlpPolicy``). Saved models are MLPs on embeddings; ``load_run``/``play``/``evaluate`` put the
    frozen encoder back in front of them, so they take raw Dict observations like any other run."""

    pretrained: str | None = Field(
        "lane-keep", description="shipped weights name, a .pt path or a pretraining folder; null = frozen random init"
    )
    device: str = Field("auto", description="auto (cuda when available) | cpu | cuda | cuda:N")


class ImitationSettings(StrictModel):
    """Warm-start the policy before RL: behaviour cloning + DAgger from a privileged scripted expert
    (:mod:`kai_drive.training.imitation`). The expert reads simulator state; the policy only sees
    observations. Runs once, before the first RL step (not again on ``--resume``); on-policy only."""

    expert: str = Field(..., description="scripted expert (kai_drive.training.algos.EXPERTS): scripted-grasp | idm-pure-pursuit")
    episodes: int = Field(200, ge=1, description="expert-driven demonstration episodes")
    demo_noise_std: float = Field(0.0, ge=0, le=2, description="Gaussian noise on the expert's executed actions (DART)")
    dagger_rounds: int = Field(2, ge=0, le=50, description="DAgger rounds after the demonstrations")
    dagger_episodes: int = Field(100, ge=1, description="student-driven, expert-labelled episodes per DAgger round")
    dagger_noise_std: float = Field(0.0, ge=0, le=2, description="Gaussian noise on the student's executed actions")
    epochs: int = Field(10, ge=1, description="passes over the aggregate data set after each round")
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(3.0e-4, gt=0, description="Adam, behaviour cloning (1e-3 left BC stuck at predicting the mean on grasp)")
    augment_pad: int = Field(4, ge=0, le=16, description="random-shift augmentation of images, pixels (0 = off)")
    n_envs: int = Field(2, ge=1, le=64, description="parallel envs (subprocess) for data collection")
    cut_idle: bool = Field(
        True, description="reset an env once it ignores actions (assisted grasp after the descent): nothing left to label"
    )
    log_std: float | None = Field(-1.0, description="set the policy's log std to this before RL (null = keep)")

    @field_validator("expert")
    @classmethod
    def _known_expert(cls, value: str) -> str:
        if value not in EXPERTS:
            raise ValueError(f"expert {value!r} is not one of {sorted(EXPERTS)}")
        return value


class Recipe(StrictModel):
    """One algorithm's recipe for one env (an entry of ``agents/<algo>.yaml``)."""

    n_envs: int = Field(1, ge=1, le=256)
    n_timesteps: int = Field(..., ge=1)
    vec_env: Literal["subproc", "dummy"] = "dummy"
    policy: str = "MultiInputPolicy"
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)
    normalisation: Normalisation = Normalisation()
    frame_stack: int = Field(1, ge=1, le=16)
    encoder: EncoderSettings | None = Field(
        None, description="frozen pretrained perception: train an MlpPolicy on embeddings (docs/perception.md)"
    )
    env_config: dict[str, Any] = Field(default_factory=dict, description="overrides of envs/<env>.yaml")
    train_env_config: dict[str, Any] = Field(
        default_factory=dict,
        description="extra overrides for the training envs only (curriculum, randomisation, reward shaping); "
        "evaluation always uses env_config alone",
    )
    eval_env_config: dict[str, Any] = Field(
        default_factory=dict,
        description="extra overrides for the periodic-evaluation envs only (they pick best_model.zip), e.g. "
        "validation objects (grasp: task.object_split: validation)",
    )
    test_env_config: dict[str, Any] = Field(
        default_factory=dict,
        description="extra overrides for the final evaluation (final_eval.json) and, by default, for "
        "`evaluate --run` / `play --run`, e.g. held-out test objects (grasp: task.object_split: test); never "
        "used for model selection",
    )
    modality_dropout: dict[str, float] = Field(
        default_factory=dict,
        description="training envs only: probability per episode that an observation entry is lost (filled with "
        "its sensor's missing value), e.g. {camera: 0.2, lidar: 0.2}; never all at once",
    )
    env_mix: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="one policy for several envs: env alias or id -> extra overrides of that env's TRAINING envs "
        "(e.g. its scenario.use). Every training, imitation and evaluation worker cycles over these envs, one "
        "episode each in turn (kai_drive.training.envs.EnvCycle); {} = the run's env alone",
    )
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    imitation: ImitationSettings | None = Field(
        None, description="behaviour cloning + DAgger from a scripted expert before RL (docs/training.md)"
    )
    action_noise: ActionNoise | None = None
    eval: EvalSettings = EvalSettings()
    checkpoint_freq: int = Field(50_000, ge=0, description="env steps between checkpoints; 0 = only at the end")
    save_replay_buffer: bool = Field(True, description="off-policy: keep the latest replay buffer with checkpoints")
    torch_threads: int = Field(1, ge=0, description="torch.set_num_threads in the learner process; 0 = torch default")

    @model_validator(mode="after")
    def _encoder_policy(self) -> "Recipe":
        if self.encoder is not None:
            if self.policy != "MlpPolicy":
                raise ValueError(
                    f"with encoder: the agent sees a Box of embeddings, so policy must be MlpPolicy (got {self.policy})"
                )
            if self.normalisation.enabled and self.normalisation.norm_obs:
                raise ValueError(
                    "with encoder: embeddings are already LayerNorm-ed; set normalisation.norm_obs: false "
                    "(norm_reward may stay on)"
                )
            if self.frame_stack > 1:
                raise ValueError("with encoder: frame_stack must be 1 (the shipped encoders see one frame)")
        return self

    @field_validator("env_mix")
    @classmethod
    def _env_mix(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from kai_drive.catalog import resolve_env

        out = {}
        for name, extra in value.items():
            try:
                env_id = resolve_env(name)[0]
            except KeyError as err:  # UnknownEnvError: pydantic reports ValueErrors
                raise ValueError(str(err)) from None
            if env_id in out:
                raise ValueError(f"{name}: {env_id} is listed twice")
            out[env_id] = dict(extra or {})
        return out

    @field_validator("modality_dropout")
    @classmethod
    def _dropout(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: p for k, p in value.items() if not 0.0 <= float(p) < 1.0}
        if bad:
            raise ValueError(f"probabilities must be in [0, 1): {bad}")
        return {k: float(p) for k, p in value.items()}

    @field_validator("policy_kwargs")
    @classmethod
    def _policy_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "activation_fn" in value and value["activation_fn"] not in ACTIVATIONS:
            raise ValueError(f"activation_fn {value['activation_fn']!r} is not one of {list(ACTIVATIONS)}")
        if "optimizer_class" in value and value["optimizer_class"] not in OPTIMIZERS:
            raise ValueError(f"optimizer_class {value['optimizer_class']!r} is not one of {list(OPTIMIZERS)}")
        if "features_extractor_class" in value and value["features_extractor_class"] not in EXTRACTORS:
            raise ValueError(
                f"features_extractor_class {value['features_extractor_class']!r} is not one of {list(EXTRACTORS)}"
            )
        if "features_extractor" in value:
            raise ValueError("features_extractor (an instance) cannot come from YAML; use features_extractor_class")
        if encoder_lr_scale(value) != 1.0 and value.get("optimizer_class", "adam") != "adam":
            raise ValueError(
                "features_extractor_kwargs.lr_scale needs Adam (kai_drive's ScaledLRAdam); "
                f"optimizer_class {value['optimizer_class']!r} would ignore it"
            )
        return value


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _format(source: str, err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        loc = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "(top level)")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            valid = ", ".join(_valid_keys(e["loc"]))
            msg = f"unknown key (valid keys here: {valid})"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def _valid_keys(loc: tuple) -> list[str]:
    model: Any = Recipe
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            for arg in getattr(ann, "__args__", ()):  # Optional[Model]
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    return sorted(getattr(model, "model_fields", {}))


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["hyperparams.gamma=0.98", "env_config.sensors.camera.enabled=false"]`` -> nested dict.

    Values are parsed with ``yaml.safe_load`` (``1e-4`` -> float, ``false`` -> bool, ``[64, 64]`` -> list).
    Under ``env_config`` the rest of the key stays dotted (the env merges dotted keys itself).
    """
    flat: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RecipeError(f"--set {item}: expected KEY=VALUE, e.g. --set hyperparams.learning_rate=1e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise RecipeError(f"--set {item}: bad key {key!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item}: value is not valid YAML: {exc}") from None
        value = _yaml_number(text, value)
        flat[key] = value
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in ("env_config", "train_env_config", "eval_env_config", "test_env_config") and rest:
            out = deep_merge(out, {head: {rest: value}})
        else:
            out = deep_merge(out, dotted_to_nested({key: value}))
    return out


def _yaml_number(text: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string; accept it as the float everyone means."""
    if isinstance(value, str) and _looks_numeric(text):
        try:
            return float(text.strip())
        except ValueError:
            return value
    return value


def _normalise_numbers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _normalise_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_normalise_numbers(v) for v in node]
    if isinstance(node, str):
        return _yaml_number(node, node) if _looks_numeric(node) else node
    return node


def _looks_numeric(text: str) -> bool:
    t = text.strip().lower()
    return bool(t) and t[0] in "0123456789+-." and any(c.isdigit() for c in t) and "e" in t


def read_recipe_file(path: Path, env_id: str, alias: str | None = None) -> dict[str, Any]:
    """The raw recipe for ``env_id`` from a recipe file keyed by env id (a flat recipe is accepted too)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of env id -> recipe, got {type(data).__name__}")
    keyed = any("/" in str(k) for k in data) or (alias is not None and alias in data)
    if not keyed:
        return _normalise_numbers(data)
    for key in (env_id, alias):
        if key is not None and key in data:
            entry = data[key]
            if not isinstance(entry, dict):
                raise RecipeError(f"{path}: {key}: expected a mapping (the recipe), got {type(entry).__name__}")
            return _normalise_numbers(entry)
    raise RecipeError(f"{path}: no recipe for {env_id}; the file has recipes for: {', '.join(map(str, data))}")


def validate_recipe(data: Mapping[str, Any], source: str, prefix: str = "") -> Recipe:
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as err:
        raise RecipeError(_format(source, err, prefix)) from None


def check_algo_args(recipe: Recipe, algo: str, source: str, prefix: str = "") -> None:
    """Hyperparameters and policy_kwargs must be arguments of the algorithm / policy constructors."""
    cls = algorithms()[algo]
    if recipe.imitation is not None and algo in OFF_POLICY:
        raise RecipeError(
            f"{source}: {prefix}imitation: behaviour cloning warm-starts on-policy algorithms (ppo) only, not {algo}"
        )
    if recipe.imitation is not None and recipe.normalisation.enabled and recipe.normalisation.norm_obs:
        raise RecipeError(
            f"{source}: {prefix}imitation: needs normalisation.norm_obs: false (demonstrations are recorded "
            "before any observation statistics exist)"
        )
    params = inspect.signature(cls.__init__).parameters
    for key in recipe.hyperparams:
        if key in _RESERVED_HYPERPARAMS:
            hint = {
                "policy_kwargs": "put it at the top level of the recipe",
                "action_noise": "use the recipe's action_noise: {type: normal, std: 0.1}",
                "seed": "use --seed",
                "device": "use --device",
            }.get(key, "the training CLI sets it")
            raise RecipeError(f"{source}: {prefix}hyperparams.{key}: not allowed here ({hint})")
        if key not in params:
            close = _close(key, [p for p in params if p not in _RESERVED_HYPERPARAMS and p != "self"])
            raise RecipeError(f"{source}: {prefix}hyperparams.{key}: not a parameter of {cls.__name__}.{close}")
    if recipe.policy not in cls.policy_aliases:
        raise RecipeError(
            f"{source}: {prefix}policy: {recipe.policy!r} is not a {cls.__name__} policy; "
            f"choose one of {sorted(cls.policy_aliases)}"
        )
    pparams = inspect.signature(cls.policy_aliases[recipe.policy].__init__).parameters
    for key in recipe.policy_kwargs:
        if key not in pparams or key in ("observation_space", "action_space", "lr_schedule", "self"):
            valid = [p for p in pparams if p not in ("self", "observation_space", "action_space", "lr_schedule")]
            raise RecipeError(
                f"{source}: {prefix}policy_kwargs.{key}: not an argument of {cls.__name__}'s {recipe.policy}.{_close(key, valid)}"
            )
    if recipe.action_noise is not None and algo not in OFF_POLICY:
        raise RecipeError(
            f"{source}: {prefix}action_noise: only off-policy algorithms ({', '.join(OFF_POLICY)}) use it"
        )
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        value = recipe.hyperparams.get(key)
        if isinstance(value, str):
            try:
                parse_schedule(value)
            except ValueError as exc:
                raise RecipeError(f"{source}: {prefix}hyperparams.{key}: {exc}") from None


def _close(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def load_recipe(
    algo: str,
    env_id: str,
    alias: str | None = None,
    recipe_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    override_source: str = "--set",
) -> tuple[Recipe, Path]:
    """Read, merge and validate a recipe. Returns ``(recipe, file)``; raises :class:`RecipeError`.

    The file is validated on its own first (so its mistakes are blamed on it), then with ``overrides``.
    """
    if algo not in ALGOS:
        raise RecipeError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}")
    path = Path(recipe_file) if recipe_file else catalog_dir("agents") / f"{algo}.yaml"
    if recipe_file is None and not path.is_file():
        raise RecipeError(f"{path}: no recipe file for {algo}; pass one with --recipe FILE")
    raw = read_recipe_file(path, env_id, alias)
    prefix = ""
    base = validate_recipe(raw, str(path), prefix)
    check_algo_args(base, algo, str(path), prefix)
    if not overrides:
        return base, path
    merged = deep_merge(base.model_dump(mode="python"), _normalise_numbers(dict(overrides)))
    recipe = validate_recipe(merged, override_source)
    check_algo_args(recipe, algo, override_source)
    return recipe, path


def parse_schedule(value: Any) -> Any:
    """``3e-4`` -> 3e-4; ``"lin_3e-4"`` -> a linear schedule from 3e-4 to 0 (zoo's notation)."""
    if isinstance(value, str):
        if not value.startswith("lin_"):
            raise ValueError(f"{value!r}: a schedule is a number or 'lin_<start>' (linear decay to 0)")
        try:
            start = float(value[4:])
        except ValueError:
            raise ValueError(f"{value!r}: 'lin_' must be followed by a number, e.g. lin_3e-4") from None
        return LinearSchedule(start)
    return value


class LinearSchedule:
    """``progress_remaining`` (1 -> 0) times ``start``; a picklable class, not a lambda."""

    def __init__(self, start: float) -> None:
        self.start = float(start)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.start

    def __repr__(self) -> str:
        return f"lin_{self.start:g}"


def algo_kwargs(recipe: Recipe, algo: str) -> dict[str, Any]:
    """The keyword arguments for the SB3 constructor (hyperparams + policy_kwargs), classes resolved."""
    kwargs: dict[str, Any] = {}
    for key, value in copy.deepcopy(recipe.hyperparams).items():
        if key in ("learning_rate", "clip_range", "clip_range_vf"):
            value = parse_schedule(value)
        if key == "train_freq" and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    pk = copy.deepcopy(recipe.policy_kwargs)
    if "activation_fn" in pk:
        pk["activation_fn"] = activations()[pk["activation_fn"]]
    if "optimizer_class" in pk:
        pk["optimizer_class"] = optimizers()[pk["optimizer_class"]]
    if encoder_lr_scale(pk) != 1.0:  # a fine-tuned encoder with its own learning rate: per-group Adam
        from kai_drive.perception.sb3 import ScaledLRAdam

        pk["optimizer_class"] = ScaledLRAdam
    if "features_extractor_class" in pk:
        pk["features_extractor_class"] = extractors()[pk["features_extractor_class"]]
    if pk:
        kwargs["policy_kwargs"] = pk
    return kwargs


#: env-config roles of a recipe: training envs, periodic evaluation (model selection), final test
ENV_ROLES = ("train", "eval", "test")


def flat_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A (nested or dotted) env config as dotted leaf keys: ``{"task": {"a": 1}}`` -> ``{"task.a": 1}``."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, name + "."))
        else:
            out[name] = copy.deepcopy(value)
    return out


def env_config_for(recipe: Recipe | Mapping[str, Any], role: str) -> dict[str, Any]:
    """The env config (dotted keys) of one role: ``env_config`` + ``<role>_env_config``.

    ``role``: ``train`` (training envs), ``eval`` (periodic evaluations, which pick best_model.zip; for
    grasp the validation objects) or ``test`` (the final evaluation and, by default, ``evaluate --run`` /
    ``play --run``; for grasp the test objects). ``recipe`` is a :class:`Recipe` or a run's config.yaml
    ``recipe:`` mapping. A mapping from a run made before ``test_env_config`` existed has its final
    evaluation's config, ``eval_env_config``, as its test config.
    """
    if role not in ENV_ROLES:
        raise ValueError(f"role must be one of {ENV_ROLES}, got {role!r}")
    data = recipe.model_dump(mode="python") if isinstance(recipe, BaseModel) else dict(recipe)
    extra_key = f"{role}_env_config"
    if role == "test" and extra_key not in data:  # a run folder from before test_env_config
        extra_key = "eval_env_config"
    out = flat_config(data.get("env_config") or {})
    out.update(flat_config(data.get(extra_key) or {}))
    return out


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")


__all__ = [
    "Recipe",
    "RecipeError",
    "SpecError",
    "algo_kwargs",
    "env_config_for",
    "env_mix_for",
    "flat_config",
    "load_recipe",
    "parse_set",
    "validate_recipe",
]


def env_mix_for(recipe: Recipe, role: str) -> dict[str, dict[str, Any]] | None:
    """The recipe's ``env_mix`` for one role (None when it has none): training envs get each member's extra
    overrides, evaluation envs (``eval``, ``test``) the members alone, under the role's common config."""
    if not recipe.env_mix:
        return None
    return {env_id: (dict(extra) if role == "train" else {}) for env_id, extra in recipe.env_mix.items()}
