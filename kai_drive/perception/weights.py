"""Pretrained weights: a ``state_dict`` file (``.pt``) next to a JSON manifest (``.json``).

Shipped weights live in ``kai_drive/perception/weights/<name>.pt`` + ``<name>.json`` and are named by
env alias (``"lane-keep"``). The manifest records the env, the observation spec (keys, shapes, dtypes,
camera channel-last), the encoder config, the recipe, the data size, the date, the probe scores, the
torch version and the renderer that made the training images (``"renderer"``: ``"tiny"``, ``"egl"`` or
``"opengl"``; a manifest without it predates the key and means ``"tiny"``, the only renderer used then).
Weights load with ``torch.load(weights_only=True)``: tensors only, no pickled code.

A damaged or mismatched ``.pt`` / ``.json`` raises :class:`WeightsError`, naming the file and how to restore
it; both files are written atomically (temporary name, then ``os.replace``).
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from gymnasium import spaces

from kai_drive.files import atomic as atomic_write  # written atomically: a crash leaves no half file
from kai_drive.perception.encoders import EncoderConfig, MultiModalEncoder
from kai_drive.perception.spec import SpecMismatchError, check_spec

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: renderer of weights (and runs) whose record predates the ``renderer`` key: TinyRenderer made every
#: image then (the shipped lane-keep encoder and every policy trained before 2026-12)
LEGACY_RENDERER = "tiny"


class WeightsError(ValueError):
    """A weights file or its manifest is unreadable, incomplete or does not fit; the message names the file
    and how to restore it."""


class RendererMismatchWarning(UserWarning):
    """Weights or a policy trained on one renderer's images are used with another renderer's images."""


def warn_renderer_mismatch(trained: str | None, current: str, what: str) -> bool:
    """Warn (:class:`RendererMismatchWarning`) when ``current`` differs from ``trained``; True if it did.

    ``trained`` None means a record from before the renderer was recorded (:data:`LEGACY_RENDERER`)."""
    trained = trained or LEGACY_RENDERER
    if trained == current:
        return False
    msg = (f"{what} was trained on images from the {trained!r} renderer, but this env renders with {current!r}: "
           "the pixels differ (shading, anti-aliasing, colours), so results may not carry over")
    if trained in ("tiny", "egl"):
        msg += (f"; to match, set the env's world.renderer to {trained} (play/evaluate: --set world.renderer={trained}; "
                f"train: --set env_config.world.renderer={trained}; Python: config={{'world.renderer': '{trained}'}})")
    warnings.warn(msg, RendererMismatchWarning, stacklevel=2)
    return True


def _first_detail(exc: Exception) -> str:
    """The first specific line of a load_state_dict error (``size mismatch for ...``)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:300]


def _restore_hint(path: Path) -> str:
    """How to get a good copy of ``path`` back."""
    try:
        shipped = Path(path).resolve().parent == WEIGHTS_DIR
    except OSError:
        shipped = False
    if shipped:
        return (
            "these are shipped weights: restore them with `git checkout kai_drive/perception/weights/` in a "
            "source checkout, or reinstall the package (pip install --force-reinstall --no-deps kai-drive)"
        )
    return (
        "re-create them with python -m kai_drive.pretrain (the pretraining folder's encoder.pt + encoder.json), "
        "or pass other weights / pretrained=None"
    )

_DEVICE_LOGGED: set[str] = set()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu. The choice is logged (and printed) once per process."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch.cuda.is_available() is False; use device='auto' or 'cpu'")
    key = str(dev)
    if key not in _DEVICE_LOGGED:
        _DEVICE_LOGGED.add(key)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        msg = f"kai_drive.perception: encoders run on {dev} ({name}; asked for {device!r})"
        log.info(msg)
        print(msg)
    return dev


def shipped_weights() -> list[str]:
    """Names of the weights shipped inside the package (``["lane-keep"]``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt") if p.with_suffix(".json").is_file())


def weights_paths(pretrained: str | Path) -> tuple[Path, Path]:
    """``(weights.pt, manifest.json)`` for a shipped name, a ``.pt`` path, or a folder holding ``encoder.pt``."""
    p = Path(pretrained)
    if isinstance(pretrained, str) and (WEIGHTS_DIR / f"{pretrained}.pt").is_file():
        p = WEIGHTS_DIR / f"{pretrained}.pt"
    elif p.is_dir():
        p = p / "encoder.pt"
    if not p.is_file():
        raise FileNotFoundError(
            f"pretrained weights {str(pretrained)!r} not found: not a shipped name ({shipped_weights()}) "
            "nor an existing .pt file / folder with encoder.pt; pass pretrained=None for random init"
        )
    m = p.with_suffix(".json")
    if not m.is_file():
        raise FileNotFoundError(f"{p}: its manifest {m.name} is missing (it holds the observation spec and encoder config)")
    return p, m


#: manifest keys every loader needs
_REQUIRED = ("observation_spec", "encoder_config")


def read_manifest(pretrained: str | Path) -> dict[str, Any]:
    """The manifest of ``pretrained``; :class:`WeightsError` (naming the file) when unreadable or incomplete."""
    wpath, mpath = weights_paths(pretrained)
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{mpath}: the weights manifest is not valid JSON ({exc}); {_restore_hint(mpath)}") from None
    if not isinstance(manifest, dict):
        raise WeightsError(f"{mpath}: the weights manifest must be a JSON object, got {type(manifest).__name__}; "
                           f"{_restore_hint(mpath)}")
    missing = [k for k in _REQUIRED if not isinstance(manifest.get(k), dict)]
    if missing:
        raise WeightsError(f"{mpath}: the weights manifest lacks {missing} (or they are not objects); "
                           f"{_restore_hint(mpath)}")
    return manifest


def manifest_renderer(manifest: Mapping[str, Any]) -> str:
    """The renderer that made the weights' training images (:data:`LEGACY_RENDERER` for old manifests)."""
    return str(manifest.get("renderer") or LEGACY_RENDERER)


def check_weights_renderer(pretrained: str | Path | None, renderer: str) -> bool:
    """Warn when ``pretrained`` weights were trained under another renderer than ``renderer``."""
    if pretrained is None:
        return False
    wpath, _ = weights_paths(pretrained)
    return warn_renderer_mismatch(manifest_renderer(read_manifest(pretrained)), renderer,
                                  f"perception weights {str(pretrained)!r} ({wpath})")


def save_weights(encoder: MultiModalEncoder, path: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``path`` (.pt, a CPU state_dict) and its ``.json`` manifest (observation spec + config added)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    full = dict(manifest)
    full.setdefault("renderer", LEGACY_RENDERER)
    full["observation_spec"] = encoder.spec
    full["encoder_config"] = encoder.config.to_dict()
    full["features_dim"] = encoder.features_dim
    full["torch_version"] = torch.__version__
    # weights first, manifest last (both atomic): a manifest never describes a half-written .pt
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(full, indent=2) + "\n"))
    return path


def load_encoder(observation_space: spaces.Dict, pretrained: str | Path | None = None,
                 config: EncoderConfig | Mapping[str, Any] | None = None, keys: tuple[str, ...] | None = None,
                 renderer: str | None = None) -> MultiModalEncoder:
    """An encoder for ``observation_space``, random-init (``pretrained=None``) or with pretrained weights.

    With weights, the architecture comes from the manifest (``config`` must be None or equal) and the
    observation space must match the manifest's spec, else :class:`~kai_drive.perception.spec.SpecMismatchError`
    names the mismatch and what to do. ``renderer`` (the env's, ``env.unwrapped.renderer``): warn
    (:class:`RendererMismatchWarning`, naming both) when the weights were trained under another renderer.
    A damaged or mismatched ``.pt`` / ``.json`` raises :class:`WeightsError` naming the file and the fix.
    """
    if pretrained is None:
        return MultiModalEncoder(observation_space, config, keys)
    wpath, mpath = weights_paths(pretrained)
    manifest = read_manifest(pretrained)
    source = f"pretrained weights {str(pretrained)!r} ({wpath.name}, env {manifest.get('env', '?')})"
    if renderer is not None:
        warn_renderer_mismatch(manifest_renderer(manifest), renderer, f"perception weights {str(pretrained)!r} ({wpath})")
    expected = manifest["observation_spec"]
    if keys is not None and tuple(keys) != tuple(expected):
        raise ValueError(f"{source} encode keys {list(expected)}; keys={list(keys)} differs (leave keys=None)")
    try:
        check_spec(expected, observation_space, source)
    except SpecMismatchError as exc:
        if mpath.resolve().parent == WEIGHTS_DIR:  # the env is right or the shipped manifest was edited
            raise SpecMismatchError(f"{exc}\n(if {mpath} was edited: {_restore_hint(mpath)})") from None
        raise
    try:
        cfg = EncoderConfig.from_dict(manifest["encoder_config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(f"{mpath}: encoder_config is not valid ({type(exc).__name__}: {exc}); "
                           f"{_restore_hint(mpath)}") from None
    if config is not None:
        asked = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(config)
        if asked != cfg:
            raise ValueError(f"{source} were trained with encoder config {cfg}; config={asked} differs (leave it None)")
    encoder = MultiModalEncoder(observation_space, cfg, tuple(expected))
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, pickled code refused by weights_only
        why = (f"{type(exc).__name__}: not a tensors-only torch file, or a truncated one"
               if isinstance(exc, pickle.UnpicklingError) else
               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        raise WeightsError(f"{wpath}: cannot read the weights ({why}); {_restore_hint(wpath)}") from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"{wpath}: expected a state_dict (a mapping of tensors), got {type(state).__name__}; "
                           f"{_restore_hint(wpath)}")
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: the manifest does not describe this .pt
        raise WeightsError(f"{wpath} does not fit the encoder its manifest {mpath.name} describes (manifest and "
                           f"weights do not belong together: {_first_detail(exc)}); "
                           f"{_restore_hint(wpath)}") from None
    if missing or unexpected:
        raise WeightsError(f"{wpath}: state_dict does not fit the encoder its manifest {mpath.name} describes "
                           f"(missing {missing}, unexpected {unexpected}); {_restore_hint(wpath)}")
    return encoder
