"""Linear probes: ridge regression (closed form, torch) from frozen features to privileged labels.

The probe is fit on frames of the training roads and scored on frames of held-out roads (different
road seeds), so a probe cannot score by recognising a road. The ridge penalty is chosen on the last
``val_fraction`` of the fit episodes. Scores: R^2 and RMSE (in the label's unit) per label.
:func:`run_probes` scores a pretrained encoder against a random-init one of the same shape (``probes.json``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from gymnasium import spaces

from kai_drive.perception.encoders import MultiModalEncoder, obs_to_tensors
from kai_drive.perception.pretrain_data import LABELS

PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def ridge_fit(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form ridge on standardised features. Returns ``(w, b, mu, sd)``: ``y ~ ((x-mu)/sd) @ w + b``.

    ``x``: (N, D); ``y``: (N,) or (N, T). ``penalty`` is per sample (scaled by N).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xs = (x - mu) / sd
    b = y.mean(0)
    xt = torch.as_tensor(xs)
    a = xt.T @ xt + penalty * len(xs) * torch.eye(xs.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(a, xt.T @ torch.as_tensor(y - b)).numpy()
    return w, b, mu, sd


def ridge_predict(x: np.ndarray, model: tuple[np.ndarray, ...]) -> np.ndarray:
    w, b, mu, sd = model
    return ((np.asarray(x, np.float64) - mu) / sd) @ w + b


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """``{"r2": ..., "rmse": ...}`` (R^2 against the test set's own mean)."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2)) + 1e-12
    return {"r2": 1.0 - ss_res / ss_tot, "rmse": float(np.sqrt(ss_res / len(y)))}


def linear_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 val_fraction: float = 0.2, groups: np.ndarray | None = None) -> dict[str, float]:
    """Fit ridge on ``x_fit`` (penalty chosen on a validation tail), score on ``x_test``.

    ``groups`` (e.g. episode ids, contiguous) makes the validation split fall between groups.
    """
    n = len(x_fit)
    cut = int(n * (1 - val_fraction))
    if groups is not None:
        g = np.asarray(groups)
        while 0 < cut < n and g[cut] == g[cut - 1]:
            cut += 1
    cut = min(max(cut, 1), n - 1)
    best, best_err = PENALTIES[0], np.inf
    for lam in PENALTIES:
        m = ridge_fit(x_fit[:cut], y_fit[:cut], lam)
        err = float(np.mean((ridge_predict(x_fit[cut:], m) - y_fit[cut:]) ** 2))
        if err < best_err:
            best, best_err = lam, err
    model = ridge_fit(x_fit, y_fit, best)
    out = scores(y_test, ridge_predict(x_test, model))
    out["penalty"] = best
    return out


@torch.no_grad()
def features(encoder: MultiModalEncoder, data: Mapping[str, np.ndarray], batch: int = 512,
             device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Frozen features ``{"fused", "camera", "lidar", "state"...: (N, dim)}`` of a data dict."""
    encoder = encoder.to(device).eval()
    n = len(data[encoder.keys[0]])
    out: dict[str, list] = {}
    for i in range(0, n, batch):
        obs = obs_to_tensors({k: data[k][i:i + batch] for k in encoder.keys}, encoder.keys, device)
        parts = encoder.encode_parts(obs)
        parts["fused"] = encoder.fuse(parts)
        for k, v in parts.items():
            out.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe_encoder(encoder: MultiModalEncoder, fit: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray],
                  labels: tuple[str, ...], val_fraction: float = 0.2) -> dict[str, dict[str, dict[str, float]]]:
    """``{feature_set: {label: {"r2", "rmse", "penalty"}}}`` for fused and per-modality features."""
    f_fit, f_test = features(encoder, fit), features(encoder, test)
    res: dict[str, dict[str, dict[str, float]]] = {}
    for name in f_fit:
        res[name] = {lab: linear_probe(f_fit[name], fit[lab], f_test[name], test[lab], val_fraction, fit.get("episode"))
                     for lab in labels}
    return res


def run_probes(encoder: MultiModalEncoder, recipe: Any, data: dict, probe: dict, seed: int) -> dict[str, Any]:
    """Probe ``encoder`` and a random-init encoder of the same shape (same state normalisation)."""
    n = len(data["episode"])
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(recipe.probe.train_frames, n), replace=False))
    fit = {k: v[take] for k, v in data.items()}
    labels = tuple(k for k in LABELS if k != "speed_mps")
    torch.manual_seed(seed + 12345)
    random_enc = MultiModalEncoder(_space_of(encoder), encoder.config, encoder.keys)
    if "state" in encoder.encoders:
        random_enc.encoders["state"].load_state_dict(
            {k: v for k, v in encoder.encoders["state"].state_dict().items() if k in ("mean", "std")}, strict=False)
    res = {
        "pretrained": probe_encoder(encoder, fit, probe, labels, recipe.probe.val_fraction),
        "random_init": probe_encoder(random_enc, fit, probe, labels, recipe.probe.val_fraction),
        "fit_frames": int(len(take)),
        "test_frames": int(len(probe["episode"])),
        "test_episodes": int(len(np.unique(probe["episode"]))),
        "split": "fit: training roads (randomised sensors); test: held-out road seeds, clean sensors",
    }
    return res


def _space_of(encoder):
    return spaces.Dict({k: spaces.Box(0, 255 if v["dtype"] == "uint8" else np.inf, tuple(v["shape"]), np.dtype(v["dtype"]))
                        for k, v in encoder.spec.items()})


def probe_table(res: dict[str, Any]) -> str:
    """Markdown table of probe scores: rows feature set x init, columns label R^2 / RMSE."""
    labels = list(next(iter(res["pretrained"].values())))
    units = {"lateral_offset_m": "m", "heading_error_rad": "rad", "edge_distance_m": "m"}
    head = "| features | encoder | " + " | ".join(f"{lab} R² | RMSE [{units.get(lab, '')}]" for lab in labels) + " |"
    sep = "|---|---|" + "---:|---:|" * len(labels)
    rows = [head, sep]
    for fs in res["pretrained"]:
        for init in ("pretrained", "random_init"):
            cells = " | ".join(f"{res[init][fs][lab]['r2']:.3f} | {res[init][fs][lab]['rmse']:.3f}" for lab in labels)
            rows.append(f"| {fs} | {init} | {cells} |")
    return "\n".join(rows)
