"""Export a training run folder as a shipped agent: ``<name>.pt`` (state dict) + ``<name>.json`` (spec).

Run by ``python -m kai_drive.pretrained export --run RUN_DIR --name NAME``. Export reads the run's own files,
the model ``.zip`` and the VecNormalize ``.pkl`` included (through :func:`kai_drive.evaluation.adapters.load_run`:
pickles of a run you made); what it writes holds tensors and numbers only, so the loader needs no pickle.
"""

from __future__ import annotations

import datetime
import pickle
from pathlib import Path
from typing import Any

import torch

from kai_drive import __version__
from kai_drive.catalog import resolve_env, task_family
from kai_drive.evaluation.adapters import load_run
from kai_drive.files import atomic, write_json
from kai_drive.pretrained.spec import (
    AGENTS_DIR, AgentError, AgentSpec, EncoderRef, Normalisation, PolicyArch, Training, WeightsRef, bound_of, sha256_of,
)
from kai_drive.training.runs import RunFolder, run_renderer

#: the largest agent file the package ships (the heads sit on the shared encoders)
MAX_BYTES = 2 * 1024 * 1024


def _encoder_ref(recipe: dict) -> EncoderRef | None:
    """The shared frozen encoder an agent sits on: a recipe ``encoder:`` section, or a frozen pretrained
    ``perception`` extractor. It must be a shipped one (kai_drive/perception/weights/)."""
    from kai_drive.perception.weights import WEIGHTS_DIR, weights_paths

    pk = recipe.get("policy_kwargs") or {}
    fx = pk.get("features_extractor_kwargs") or {}
    if recipe.get("encoder"):
        name = recipe["encoder"].get("pretrained")
    elif pk.get("features_extractor_class") == "perception" and fx.get("freeze") and fx.get("pretrained"):
        name = fx["pretrained"]
    else:
        return None
    if name is None:
        raise AgentError("the run's encoder is a frozen RANDOM init (encoder.pretrained: null): it is not shipped, "
                         "so the agent could not be rebuilt; export a run on a shipped encoder")
    path, _ = weights_paths(name)
    if path.resolve().parent != WEIGHTS_DIR:
        raise AgentError(f"the run's encoder {name!r} ({path}) is not a shipped one (kai_drive/perception/weights/); "
                         "ship the encoder first, or train on a shipped one")
    return EncoderRef(id=str(name), file=path.name, sha256=sha256_of(path))


def _arch(cfg: dict, recipe: dict, module: Any, encoder: EncoderRef | None) -> PolicyArch:
    pk = dict(recipe.get("policy_kwargs") or {})
    policy = str(recipe.get("policy", "MultiInputPolicy"))
    if recipe.get("encoder"):  # trained on embeddings: the rebuilt policy fronts the heads with the encoder
        policy = "MultiInputPolicy"
        pk["features_extractor_class"] = "perception"
        pk["features_extractor_kwargs"] = {"pretrained": encoder.id, "freeze": True}
    return PolicyArch(algo=str(cfg.get("algo", "ppo")), policy=policy, policy_kwargs=pk,
                      frame_stack=int(recipe.get("frame_stack", 1) or 1),
                      observation_space={k: bound_of(s) for k, s in module.observation_space.spaces.items()})


def _normalisation(stats: Path) -> Normalisation | None:
    """VecNormalize statistics of the run as numbers (reading the run's own pickle)."""
    if not stats.is_file():
        return None
    with open(stats, "rb") as fh:  # SB3's VecNormalize.save format; our own run's file, at export time only
        vn = pickle.load(fh)
    obs = None
    if vn.norm_obs:
        if not isinstance(vn.obs_rms, dict):
            raise AgentError(f"{stats}: observation statistics of a non-Dict observation space are not supported")
        keys = vn.norm_obs_keys or list(vn.obs_rms)
        obs = {k: {"mean": vn.obs_rms[k].mean.tolist(), "var": vn.obs_rms[k].var.tolist(),
                   "count": float(vn.obs_rms[k].count)} for k in keys}
    rr = vn.ret_rms
    return Normalisation(norm_obs=bool(vn.norm_obs), norm_reward=bool(vn.norm_reward), clip_obs=float(vn.clip_obs),
                         clip_reward=float(vn.clip_reward), epsilon=float(vn.epsilon), gamma=float(vn.gamma), obs=obs,
                         reward={"mean": float(rr.mean), "var": float(rr.var), "count": float(rr.count)})


def _evaluation(run: RunFolder, checkpoint: str) -> dict:
    """final_eval.json without the per-episode list (road seeds as their rule); it must be of this checkpoint."""
    ev = run.final_eval()
    if not ev:
        raise AgentError(f"{run.path}: no final_eval.json: a shipped agent carries its held-out evaluation; run it "
                         "(python -m kai_drive.train ... --final-eval 100) before exporting")
    if ev.get("model") != RunFolder.MODELS[checkpoint]:
        raise AgentError(f"{run.path}: final_eval.json evaluated {ev.get('model')}, not {RunFolder.MODELS[checkpoint]}; "
                         f"export --checkpoint {'best' if ev.get('model') == 'best_model.zip' else 'final'}")
    out = {k: v for k, v in ev.items() if k != "per_episode"}
    # per road seed, in order: 1 success, 0 not (scripts/check_pretrained.py repeats them seed by seed)
    out["success_by_seed"] = "".join("1" if e.get("success") else "0" for e in ev.get("per_episode") or [])
    seeds = list(ev.get("road_seeds") or [])
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        out["road_seeds"] = f"{seeds[0]} + i, i < {len(seeds)}"
    out["source"] = f"{run.path / RunFolder.FINAL_EVAL}"
    return out


def _selection(recipe: dict, checkpoint: str) -> str:
    if checkpoint == "final":
        return "final_model.zip: the end of training"
    ev = recipe.get("eval") or {}
    return (f"best_model.zip: the best of the periodic evaluations ({ev.get('episodes')} episodes every "
            f"{ev.get('freq')} steps on the eval roads 2^30 + i with eval_env_config {recipe.get('eval_env_config') or {}})"
            "; never on the test roads or objects")


def _env_facts(env_id: str, env_config: dict) -> tuple[dict, dict]:
    import gymnasium

    env = gymnasium.make(env_id, config=dict(env_config))
    try:
        return ({k: bound_of(s) for k, s in env.observation_space.spaces.items()},
                env.unwrapped.spec_data.sensors.model_dump(mode="json"))
    finally:
        env.close()


def export_run(run_dir: str | Path, name: str, checkpoint: str = "best", out_dir: str | Path = AGENTS_DIR,
               note: str = "") -> Path:
    """Write ``out_dir/<name>.pt`` + ``<name>.json`` from the run folder; returns the .json path. ``note``: how
    this run was chosen among others (e.g. the seed with the best validation score), kept in the spec."""
    run = RunFolder(run_dir)
    cfg = run.config(f"--run {run.path}: ")
    recipe = cfg.get("recipe") or {}
    evaluation = _evaluation(run, checkpoint)  # first: a run without the card's evaluation is refused at once
    pol, env_id = load_run(run.path, checkpoint)
    module = pol.model.policy
    encoder = _encoder_ref(recipe)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()
             if not (encoder is not None and "features_extractor" in k)}
    renderer = run_renderer(cfg)
    env_config = {**pol.env_config}
    env_config.setdefault("world.renderer", renderer)  # evaluate / play build the env with the trained renderer
    obs_spec, sensors = _env_facts(env_id, env_config)
    status = run.status()
    spec_fields: dict[str, Any] = dict(
        name=name, env_id=env_id, alias=resolve_env(env_id)[1], envs=list(recipe.get("env_mix") or {}),
        family=task_family(env_id), env_config=env_config,
        renderer=renderer, observation_spec=obs_spec, sensors=sensors, action_space=bound_of(module.action_space),
        encoder=encoder, normalisation=_normalisation(run.stats_file(checkpoint)),
        policy=_arch(cfg, recipe, module, encoder),
        training=Training(
            command=run.file(RunFolder.COMMAND).read_text().strip() if run.file(RunFolder.COMMAND).is_file() else "",
            run=str(run.path), checkpoint=checkpoint, selection=_selection(recipe, checkpoint),
            seed=int(cfg.get("seed", 0)), timesteps=int(status.get("timesteps", 0)),
            train_wall_time_s=status.get("train_wall_time_s"), imitation_wall_time_s=status.get("imitation_wall_time_s"),
            kai_drive_version=str(cfg.get("kai_drive_version", __version__)), note=note, recipe=recipe),
        evaluation=evaluation,
        exported={"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                  "kai_drive": __version__, "stable_baselines3": _sb3_version()},
    )
    out_dir = Path(out_dir)
    pt = out_dir / f"{name}.pt"
    atomic(pt, lambda tmp: torch.save(state, tmp))
    size = pt.stat().st_size
    if size > MAX_BYTES:
        pt.unlink()
        raise AgentError(f"{name}.pt would be {size / 1e6:.2f} MB, over the {MAX_BYTES / 2**20:.0f} MiB a shipped agent "
                         "may take: put the policy on a shipped encoder (recipe encoder:) or shrink it")
    spec_fields["weights"] = WeightsRef(file=pt.name, sha256=sha256_of(pt), bytes=size)
    spec = AgentSpec(**spec_fields)
    return write_json(out_dir / f"{name}.json", spec.model_dump(mode="json"))


def _sb3_version() -> str:
    import stable_baselines3

    return stable_baselines3.__version__
