"""Compare two final_eval.json files across the metric renames of issue #17 (docs/training.md, "Changed names").

    python scripts/compare_final_eval.py OLD/final_eval.json NEW/final_eval.json

Prints the keys only one side has and every shared key (per-episode entries: their shared keys) whose value differs (times and dates ignored);
exit status 0 when every shared value is equal, 1 otherwise."""
import argparse
import json
import sys
from pathlib import Path

RENAMED = {"speed_mean_mps": "mean_speed_mps", "truncation_rate": "timeout_rate"}
VOLATILE = ("time", "date", "machine")

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("old", type=Path, help="final_eval.json of the old code")
ap.add_argument("new", type=Path, help="final_eval.json of the new code")
args = ap.parse_args()
old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
def renamed(d):
    """Old names -> new names, also inside per_episode entries; per-episode keys only one side has are
    dropped from both (grasp runs now carry grasp metrics there instead of all-zero driving ones)."""
    return {RENAMED.get(k, k): v for k, v in d.items()}


old = renamed(old)
if isinstance(old.get("per_episode"), list) and isinstance(new.get("per_episode"), list):
    pairs = [(renamed(a), b) for a, b in zip(old["per_episode"], new["per_episode"])]
    old["per_episode"] = [{k: a[k] for k in a if k in b} for a, b in pairs]
    new["per_episode"] = [{k: b[k] for k in b if k in a} for a, b in pairs] + new["per_episode"][len(pairs):]
shared = sorted(k for k in set(old) & set(new) if not any(w in k for w in VOLATILE))
diff = [k for k in shared if old[k] != new[k]]
print(f"shared keys equal: {len(shared) - len(diff)}/{len(shared)}")
print("only old:", sorted(set(old) - set(new)))
print("only new:", sorted(set(new) - set(old)))
for k in diff:
    print(f"DIFFERENT {k}: {old[k]!r} -> {new[k]!r}")
sys.exit(1 if diff else 0)
