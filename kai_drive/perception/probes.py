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
from kai_drive.perception.pretrain_data import PROBE_LABELS

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
    return linear_probe_multi(x_fit, y_fit, {"test": (x_test, y_test)}, val_fraction, groups)["test"]


def linear_probe_multi(x_fit: np.ndarray, y_fit: np.ndarray, tests: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       val_fraction: float = 0.2, groups: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """One ridge fit (as :func:`linear_probe`) scored on several test sets ``{name: (x, y)}``: the same
    probe on clean and on shifted frames, so a drop is the features', not the probe's."""
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
    out = {}
    for name, (x, y) in tests.items():
        out[name] = scores(y, ridge_predict(x, model))
        out[name]["penalty"] = best
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


def run_probes(encoder: MultiModalEncoder, recipe: Any, data: dict, probe: dict, seed: int,
               others: Mapping[str, MultiModalEncoder] | None = None,
               shifts: Mapping[str, dict] | None = None) -> dict[str, Any]:
    """Probe ``encoder`` (``"pretrained"``), a random-init encoder of the same shape (``"random_init"``, the same
    state normalisation) and ``others`` (``{name: encoder}``, e.g. the shipped lane-keep weights).

    Per encoder and feature set (each modality and ``fused``): ridge fit on frames of the training roads, scored on
    the held-out probe roads (``probe``) for :data:`PROBE_LABELS`. ``shifts`` (``{condition: frames}``, the same
    probe roads under a shift): the same fitted probes scored there too (``res["shift"][cond][encoder][features]``).
    The lead-distance probe (``recipe.probe.lead_gap_env``; label ``lead_gap_m``): fit on that env's training frames
    with a lead within ``max_lead_gap_m``, scored on its probe frames (``res["lead_gap"]``; clean and under shifts).
    """
    n = len(data["episode"])
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(recipe.probe.train_frames, n), replace=False))
    fit = {k: v[take] for k, v in data.items()}
    labels = PROBE_LABELS
    torch.manual_seed(seed + 12345)
    random_enc = MultiModalEncoder(_space_of(encoder), encoder.config, encoder.keys)
    if "state" in encoder.encoders:
        random_enc.encoders["state"].load_state_dict(
            {k: v for k, v in encoder.encoders["state"].state_dict().items() if k in ("mean", "std")}, strict=False)
    encoders = {"pretrained": encoder, "random_init": random_enc, **dict(others or {})}
    shifts = dict(shifts or {})
    tests = {"clean": probe, **shifts}
    lead = _lead_sets(recipe, data, tests)
    res: dict[str, Any] = {"encoders": list(encoders)}
    res["shift"] = {c: {} for c in shifts}
    res["lead_gap"] = {c: {} for c in (["clean"] + list(shifts))} if lead else None
    for name, enc in encoders.items():
        _probe_one(res, name, enc, fit, tests, lead, labels, recipe.probe.val_fraction)
    res.update({
        "fit_frames": int(len(take)),
        "test_frames": int(len(probe["episode"])),
        "test_episodes": int(len(np.unique(probe["episode"]))),
        "split": "fit: training roads (randomised); test: held-out road seeds, clean sensors"
                 + (f"; shifts: the same held-out roads and driver under {list(shifts)}" if shifts else ""),
    })
    if lead:
        res["lead_gap_frames"] = {"fit": int(len(lead[0]["episode"])),
                                  "test": {c: int(len(d["episode"])) for c, d in lead[1].items()},
                                  "env": recipe.probe.lead_gap_env, "max_gap_m": recipe.probe.max_lead_gap_m}
    return res


def _probe_one(res: dict, name: str, enc: MultiModalEncoder, fit: dict, tests: dict[str, dict],
               lead: tuple[dict, dict] | None, labels: tuple[str, ...], val_fraction: float) -> None:
    """Scores of encoder ``name`` into ``res`` (see :func:`run_probes`): each feature set's probes fit once on
    ``fit`` and scored on every test set (``"clean"`` and the shifts), then the lead-distance probe."""
    f_fit = features(enc, fit)
    f_test = {c: features(enc, d) for c, d in tests.items()}
    f_lead = (features(enc, lead[0]), {c: features(enc, d) for c, d in lead[1].items()}) if lead else None
    res[name] = {}
    shifts = [c for c in tests if c != "clean"]
    for c in shifts:
        res["shift"][c][name] = {}
    for fs in f_fit:
        for lab in labels:
            sc = linear_probe_multi(f_fit[fs], fit[lab], {c: (f_test[c][fs], d[lab]) for c, d in tests.items()},
                                    val_fraction, fit.get("episode"))
            res[name].setdefault(fs, {})[lab] = sc["clean"]
            for c in shifts:
                res["shift"][c][name].setdefault(fs, {})[lab] = sc[c]
        if f_lead is not None:
            sc = linear_probe_multi(f_lead[0][fs], lead[0]["lead_gap_m"],
                                    {c: (f_lead[1][c][fs], d["lead_gap_m"]) for c, d in lead[1].items()},
                                    val_fraction, lead[0]["episode"])
            for c, v in sc.items():
                res["lead_gap"][c].setdefault(name, {})[fs] = v


def _lead_sets(recipe: Any, data: dict, tests: Mapping[str, dict]) -> tuple[dict, dict] | None:
    """``(fit, {condition: test})`` frames of the lead-distance probe, or None (no lead_gap_env, or a data
    set without the label: files from before it existed)."""
    env = getattr(recipe.probe, "lead_gap_env", None)
    if env is None or "lead_gap_m" not in data or "env_index" not in data:
        return None
    from kai_drive.catalog import resolve_env

    ei = recipe.env_aliases().index(resolve_env(env)[1])
    cap = recipe.probe.max_lead_gap_m

    def pick(d: dict) -> dict:
        g = d["lead_gap_m"]
        m = (d["env_index"] == ei) & np.isfinite(g) & (g <= cap)
        return {k: v[m] for k, v in d.items() if np.ndim(v) >= 1 and len(v) == len(g)}

    fit = pick(data)
    if len(fit["episode"]) > recipe.probe.train_frames:
        keep = np.sort(np.random.default_rng(recipe.seed).choice(len(fit["episode"]), recipe.probe.train_frames,
                                                                 replace=False))
        fit = {k: v[keep] for k, v in fit.items()}
    test = {c: pick(d) for c, d in tests.items() if "lead_gap_m" in d}
    if len(fit["episode"]) < 10 or any(len(d["episode"]) < 2 for d in test.values()):
        return None
    return fit, test


def _space_of(encoder):
    return spaces.Dict({k: spaces.Box(0, 255 if v["dtype"] == "uint8" else np.inf, tuple(v["shape"]), np.dtype(v["dtype"]))
                        for k, v in encoder.spec.items()})


def probe_table(res: dict[str, Any]) -> str:
    """Markdown tables of probe scores: rows feature set x encoder, columns label R^2 / RMSE; then (when probed)
    lateral-offset RMSE per shift condition and the lead-distance R^2 / RMSE."""
    inits = res.get("encoders", ["pretrained", "random_init"])
    labels = list(next(iter(res["pretrained"].values())))
    units = {"lateral_offset_m": "m", "heading_error_rad": "rad", "edge_distance_m": "m"}
    head = "| features | encoder | " + " | ".join(f"{lab} R² | RMSE [{units.get(lab, '')}]" for lab in labels) + " |"
    sep = "|---|---|" + "---:|---:|" * len(labels)
    rows = [head, sep]
    for fs in res["pretrained"]:
        for init in inits:
            cells = " | ".join(f"{res[init][fs][lab]['r2']:.3f} | {res[init][fs][lab]['rmse']:.3f}" for lab in labels)
            rows.append(f"| {fs} | {init} | {cells} |")
    shifts = res.get("shift") or {}
    if shifts:
        conds = list(shifts)
        rows += ["", "lateral_offset_m RMSE [m], clean and under each shift (same probe, same held-out roads):", "",
                 "| features | encoder | clean | " + " | ".join(conds) + " | worst |",
                 "|---|---|" + "---:|" * (len(conds) + 2)]
        for fs in res["pretrained"]:
            for init in inits:
                vals = [res[init][fs]["lateral_offset_m"]["rmse"]] + [
                    shifts[c][init][fs]["lateral_offset_m"]["rmse"] for c in conds]
                rows.append(f"| {fs} | {init} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {max(vals):.3f} |")
    lead = res.get("lead_gap")
    if lead:
        conds = list(lead)
        rows += ["", f"lead_gap_m ({res['lead_gap_frames']['env']}, gap <= {res['lead_gap_frames']['max_gap_m']:g} m) "
                 "R² (RMSE [m]):", "",
                 "| features | encoder | " + " | ".join(conds) + " |", "|---|---|" + "---:|" * len(conds)]
        for fs in res["pretrained"]:
            for init in inits:
                rows.append(f"| {fs} | {init} | " + " | ".join(
                    f"{lead[c][init][fs]['r2']:.3f} ({lead[c][init][fs]['rmse']:.2f})" for c in conds) + " |")
    return "\n".join(rows)
