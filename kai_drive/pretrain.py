"""Self-supervised pretraining of the perception encoders, and linear probes of their features.

    python -m kai_drive.pretrain --env lane-keep                      # recipe configs/pretrain/lane-keep.yaml
    python -m kai_drive.pretrain --recipe configs/pretrain/drive.yaml # four driving envs, randomised appearance
    python -m kai_drive.pretrain --recipe configs/pretrain/lane-keep.yaml --out runs/pretrain/lk
    python -m kai_drive.pretrain --resume runs/pretrain/lk            # continue from its checkpoint
    python -m kai_drive.pretrain --probe-only --weights lane-keep --out runs/pretrain/lk

A run folder holds: recipe.yaml, data.npz (training frames) and probe_data.npz (held-out roads),
tb/ (TensorBoard), checkpoint.pt (resumable), encoder.pt + encoder.json (weights + manifest) and
probes.json (probe_shift_<condition>.npz: the probe roads under the recipe's shift conditions). ``--ship``
copies the weights into kai_drive/perception/weights/<name>.pt/.json (never over different weights without
``--overwrite``).
See docs/perception.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

# the work is done by kai_drive.perception.pretrain_run (and pretrain_data, pretraining, probes); this module
# parses the flags


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="lane-keep",
                    help="env alias or id, or a recipe name under configs/pretrain (chooses the default recipe)")
    ap.add_argument("--recipe", help="recipe YAML (default configs/pretrain/<env>.yaml)")
    ap.add_argument("--out", help="run folder (default runs/pretrain/<env>_<time>)")
    ap.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    ap.add_argument("--probe", action="store_true", help="(default on) run the linear probes after training")
    ap.add_argument("--no-probe", action="store_true", help="skip the probes")
    ap.add_argument("--probe-only", action="store_true", help="only probe --weights on the data of --out")
    ap.add_argument("--weights", default=None, help="with --probe-only: shipped name or .pt path")
    ap.add_argument("--iterations", type=int, help="override train.iterations")
    ap.add_argument("--ship", action="store_true",
                    help="copy the weights to kai_drive/perception/weights/<name>.pt (the recipe's name:, else the env alias)")
    ap.add_argument("--overwrite", action="store_true", help="with --ship: replace different shipped weights of that name")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from kai_drive.perception import pretrain_run  # torch: imported after parsing, so --help stays fast

    try:
        pretrain_run.run_pretraining(
            args.env, args.recipe, args.out, args.resume, probe_only_weights=args.weights,
            probe_only_run=args.probe_only, iterations=args.iterations, probes=not args.no_probe,
            ship_weights=args.ship, progress=not args.quiet, overwrite=args.overwrite,
        )
    except pretrain_run.PretrainError as exc:
        raise SystemExit(str(exc)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
