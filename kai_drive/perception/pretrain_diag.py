"""Diagnostics of a pretraining run folder: per-env lateral-offset probes and a raw-lidar lead-distance probe.

    python -m kai_drive.perception.pretrain_diag runs/s8-pretrain/drive --weights runs/s8-pretrain/drive/encoder.pt lane-keep

Per env of the recipe, a ridge probe of ``lateral_offset_m`` on the fused features is fit on that env's frames
of the folder's probe-fit sample (the same 4,000-frame draw as :func:`kai_drive.perception.probes.run_probes`)
and scored on that env's held-out probe frames. Then: does the raw lidar see the lead (``lead_gap_m`` of
``probe.lead_gap_env``)? Ridge on the 64 raw ranges, and the correlation of the forward beams' minimum with the gap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="pretraining run folder (recipe.yaml, data.npz, probe_data.npz)")
    ap.add_argument("--weights", nargs="+", default=[], help="shipped names or .pt paths to probe per env")
    args = ap.parse_args(argv)
    from kai_drive.perception.pretrain_data import _meta, loadz
    from kai_drive.perception.pretrain_recipe import load_recipe
    from kai_drive.perception.pretrain_run import env_space
    from kai_drive.perception.probes import features, linear_probe
    from kai_drive.perception.weights import load_encoder

    folder = Path(args.folder)
    r = load_recipe(folder / "recipe.yaml")
    d, p = loadz(folder / "data.npz"), loadz(folder / "probe_data.npz")
    _meta(d), _meta(p)
    aliases = r.env_aliases()
    if r.probe.lead_gap_env and "lead_gap_m" in d:
        ei = aliases.index(r.probe.lead_gap_env)

        def pick(x):
            g = x["lead_gap_m"]
            m = (x["env_index"] == ei) & np.isfinite(g) & (g <= r.probe.max_lead_gap_m)
            return {k: v[m] for k, v in x.items()}

        f, t = pick(d), pick(p)
        s = linear_probe(f["lidar"], f["lead_gap_m"], t["lidar"], t["lead_gap_m"], r.probe.val_fraction, f["episode"])
        fwd = t["lidar"][:, [0, 1, -1]].min(1)
        print(f"lead gap ({r.probe.lead_gap_env}): fit {len(f['episode'])} frames (gap std {f['lead_gap_m'].std():.2f} m), "
              f"test {len(t['episode'])} (std {t['lead_gap_m'].std():.2f} m); raw lidar ridge R2 {s['r2']:.3f} "
              f"RMSE {s['rmse']:.2f} m; corr(min of beams 0, 1, -1; gap) = {np.corrcoef(fwd, t['lead_gap_m'])[0, 1]:.3f}")
    n = len(d["episode"])
    take = np.sort(np.random.default_rng(r.seed).choice(n, size=min(r.probe.train_frames, n), replace=False))
    fit = {k: v[take] for k, v in d.items()}
    space = env_space(r)[0]
    for w in args.weights:
        enc = load_encoder(space, w)
        ff, ft = features(enc, fit)["fused"], features(enc, p)["fused"]
        for ei, a in enumerate(aliases):
            mf, mt = fit["env_index"] == ei, p["env_index"] == ei
            s = linear_probe(ff[mf], fit["lateral_offset_m"][mf], ft[mt], p["lateral_offset_m"][mt],
                             r.probe.val_fraction, fit["episode"][mf])
            print(f"{w} {a}: fused lateral_offset_m per-env probe RMSE {s['rmse']:.3f} m, R2 {s['r2']:.3f} "
                  f"(fit {int(mf.sum())}, test {int(mt.sum())} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
