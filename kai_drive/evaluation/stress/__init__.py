"""Adaptive stress testing: search an env's scenario space for failures of a driving policy.

    from kai_drive.evaluation.stress import SearchConfig, stress_test, write_stress_outputs
    res = stress_test("scripted", "follow", SearchConfig(budget=200, seed=0, estimate=True))
    write_stress_outputs(res, "stress/follow")

Modules: :mod:`.space` (the continuous factors of the env's ``scenario:`` spec, latent standard-normal
coordinates, plausibility), :mod:`.search` (one episode, the cross-entropy search, the importance-sampling
estimate), :mod:`.analysis` (distinct failures, modes, influence, smallest single-factor change),
:mod:`.runner` (``stress_test``), :mod:`.report` (records, failure map, GIFs, report.md).
CLI: ``python -m kai_drive.stress``; docs: docs/stress.md.
"""

from kai_drive.evaluation.stress.report import write_stress_outputs
from kai_drive.evaluation.stress.runner import SCHEMA, replay_failure, stress_test
from kai_drive.evaluation.stress.search import SearchConfig, is_estimate
from kai_drive.evaluation.stress.space import Factor, FactorSpace, factor_space

__all__ = ["stress_test", "write_stress_outputs", "replay_failure", "SearchConfig", "is_estimate", "Factor",
           "FactorSpace", "factor_space", "SCHEMA"]
