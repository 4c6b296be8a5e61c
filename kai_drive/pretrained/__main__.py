"""``python -m kai_drive.pretrained``: list the shipped agents, or export a training run as one.

examples:
  python -m kai_drive.pretrained list
  python -m kai_drive.pretrained export --run runs/issue15-default/lane-keep/ppo_1 --name lane-keep
  python -m kai_drive.pretrained export --run runs/grasp/ppo_3 --name grasp --checkpoint best --out /tmp/agents
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kai_drive.pretrained", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the shipped agents with their env and held-out success")
    ex = sub.add_parser("export", help="write <name>.pt + <name>.json from a training run folder")
    ex.add_argument("--run", type=Path, required=True, help="run folder runs/<alias>/<algo>_<n>/ (with final_eval.json)")
    ex.add_argument("--name", required=True, help="agent name (the env alias for the default driver of an env)")
    ex.add_argument("--checkpoint", choices=("best", "final"), default="best",
                    help="best_model.zip (picked on the eval split; default) or final_model.zip")
    ex.add_argument("--note", default="", help="how this run was chosen among others (kept in the spec), e.g. the "
                    "seed with the best validation score")
    ex.add_argument("--out", type=Path, default=None, help="folder (default: kai_drive/pretrained/agents/, shipped)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kai_drive.pretrained import AGENTS_DIR, AgentError, available, read_spec

    if args.cmd == "list":
        for name in available():
            s = read_spec(name)
            ev = s.evaluation
            print(f"{name:12s} {s.env_id:24s} success {ev.get('successes')}/{ev.get('episodes')} held-out "
                  f"({s.weights.bytes / 1e6:.2f} MB)")
        return 0
    from kai_drive.pretrained.export import export_run

    try:
        path = export_run(args.run, args.name, args.checkpoint, args.out or AGENTS_DIR, args.note)
    except (AgentError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path.with_suffix('.pt')} and {path}; add a model card to docs/models.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
