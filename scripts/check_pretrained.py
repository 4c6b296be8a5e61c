"""Re-measure every shipped agent: held-out success on the final-evaluation seeds, card vs measured.

    python scripts/check_pretrained.py                      # every agent, 100 held-out seeds (the card's check)
    python scripts/check_pretrained.py --agents grasp --episodes 10

Each agent (kai_drive.pretrained.load: weights-only, no pickle) drives one deterministic episode per road seed
``2^30 + 2^29 + i`` (kai_drive.training.envs.TEST_ROAD_SEED_BASE, the seeds of every run's final_eval.json) in
the env config of its card (e.g. the grasp test objects), with the evaluation code of the final evaluation
(kai_drive.training.evaluation.evaluate_on_roads). Printed per agent: the card's success (the run's final
evaluation, with its Wilson 95 % interval), the measured success with its Wilson interval, whether the measured
rate lies inside the card's interval (n/a with fewer seeds than the card), and the seeds both share (the card keeps its success per seed): on those the agent must repeat the card
(same seeds, same bytes). Exit status 1 when a measured rate falls outside its card's interval, or the shared
seeds differ.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", nargs="*", default=None, help="names (default: every shipped agent)")
    ap.add_argument("--episodes", type=int, default=100, help="held-out seeds per agent (default 100)")
    ap.add_argument("--n-envs", type=int, default=2, help="parallel envs (subprocesses; default 2)")
    args = ap.parse_args(argv)

    import kai_drive.pretrained as pretrained
    from kai_drive.stats import wilson_interval
    from kai_drive.training.envs import TEST_ROAD_SEED_BASE, make_vec_env
    from kai_drive.training.evaluation import evaluate_on_roads

    bad = 0
    print(f"{'agent':10s} {'card':>24s} {'measured':>24s}  in card CI  shared seeds")
    for name in args.agents or pretrained.available():
        pol = pretrained.load(name)
        card = pol.agent.evaluation
        seeds = [TEST_ROAD_SEED_BASE + i for i in range(args.episodes)]
        # an agent of several envs (env_mix) is evaluated on all of them: seed s runs in env s % len(envs)
        mix = {env_id: {} for env_id in pol.agent.envs} if len(pol.agent.envs) > 1 else None
        venv = make_vec_env(pol.agent.env_id, pol.env_config, args.n_envs, "subproc", "eval", pol.frame_stack,
                            env_mix=mix)
        t0 = time.perf_counter()
        try:
            pol.check_env(venv)
            res = evaluate_on_roads(pol, venv, seeds)
        finally:
            venv.close()
        flags = [bool(e.get("success")) for e in res["per_episode"]]
        k, n = sum(flags), len(flags)
        lo, hi = wilson_interval(k, n)
        c_lo, c_hi = card["success_rate_ci95"]
        full = n >= int(card["episodes"])  # fewer seeds than the card: its interval is not the yardstick
        inside = c_lo <= k / n <= c_hi if full else None
        card_flags = card.get("success_by_seed", "")  # the card's seeds are 2^30 + 2^29 + i too
        shared = min(n, len(card_flags))
        mine = "".join("1" if f else "0" for f in flags[:shared])
        same = mine == card_flags[:shared]
        note = f"{shared} seeds {'identical' if same else 'DIFFER: ' + mine + ' vs ' + card_flags[:shared]}"
        bad += not same
        bad += inside is False
        print(f"{name:10s} {card['successes']:>4d}/{card['episodes']:<4d} ({100 * c_lo:4.1f}-{100 * c_hi:5.1f} %) "
              f"{k:>4d}/{n:<4d} ({100 * lo:4.1f}-{100 * hi:5.1f} %)  { {True: 'yes', False: 'NO', None: 'n/a'}[inside]:>9s}   {note}"
              f"   [{time.perf_counter() - t0:.0f} s]", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
