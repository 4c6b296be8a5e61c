"""Safety, robustness and causal evaluation of driving (and grasping) policies.

    from kai_drive.evaluation import evaluate, write_outputs
    res = evaluate(model_or_callable, "follow", "quick")        # or policy="scripted"
    write_outputs(res, "eval/follow")                          # result.json + report.md + figures

Modules: :mod:`.core` (``evaluate``: the suite's sections from episode metrics), :mod:`.jobs` (episode jobs,
serial or on Ray, and the :class:`PolicySpec` workers rebuild a policy from), :mod:`.suite` (typed suites,
thresholds), :mod:`.baselines` (stop / constant), :mod:`.rollout` (rollouts through the env's public API),
:mod:`.causal` (paired interventions, modality reliance, but-for attribution), :mod:`.robustness`
(perturbations, adversarial attacks), :mod:`.attribution` (captum maps vs intervention effects),
:mod:`.report`. Per-episode metrics and outcomes: :mod:`kai_drive.metrics`; statistics: :mod:`kai_drive.stats`.
CLI: ``python -m kai_drive.evaluate``; docs: docs/evaluation.md.
"""

from kai_drive.evaluation.baselines import baseline_policy
from kai_drive.evaluation.core import SCHEMA, evaluate
from kai_drive.evaluation.jobs import PolicySpec
from kai_drive.evaluation.adapters import EvalPolicy, as_policy, load_model, load_run, scripted_policy
from kai_drive.evaluation.suite import check_thresholds, load_suite
from kai_drive.evaluation.report import write_outputs

__all__ = ["evaluate", "load_suite", "check_thresholds", "write_outputs", "as_policy", "load_run", "load_model",
           "scripted_policy", "baseline_policy", "EvalPolicy", "PolicySpec", "SCHEMA"]
