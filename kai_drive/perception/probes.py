"""Linear probes: ridge regression (closed form, torch) from frozen features to privileged labels.

The probe is fit on frames of the training roads and scored on frames of held-out roads (different
road seeds), so a probe cannot score by recognising a road. The ridge penalty is chosen on the last
``val_fraction`` of the fit episodes. Scores: R^2 and RMSE (in the label's unit) per label.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from kai_drive.perception.encoders import MultiModalEncoder, obs_to_tensors

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
