"""Where a training run's wall clock went, from its run folder (the "pure training" figures of docs/).

    python scripts/run_times.py runs/lane-keep/ppo_1 [more run folders]

train_wall_time_s (status.json) includes the periodic evaluations; their own wall times are in
evaluations.json; pure training = the difference; the imitation warm start, where the run had one, is
reported apart (status.json imitation_wall_time_s). The final evaluation's wall time is in final_eval.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def times(run: Path) -> dict:
    status = json.loads((run / "status.json").read_text())
    evals = json.loads((run / "evaluations.json").read_text()) if (run / "evaluations.json").exists() else []
    final = json.loads((run / "final_eval.json").read_text()) if (run / "final_eval.json").exists() else {}
    train = float(status["train_wall_time_s"])
    periodic = sum(float(e.get("wall_time_s", 0.0)) for e in evals)
    imitation = float(status.get("imitation_wall_time_s") or 0.0)
    return {"run": str(run), "timesteps": status.get("timesteps"), "train_incl_periodic_evals_s": round(train, 1),
            "periodic_evals": len(evals), "periodic_evals_s": round(periodic, 1),
            "pure_training_s": round(train - periodic, 1), "imitation_s": round(imitation, 1),
            "final_eval_s": final.get("eval_wall_time_s")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/run_times.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<alias>/<algo>_<n>)")
    args = ap.parse_args(argv)
    rows = [times(run) for run in args.runs]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
