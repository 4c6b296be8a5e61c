"""Safety, robustness and causal evaluation of driving (and grasping) policies.

    from kai_drive.evaluation import evaluate, write_outputs
    res = evaluate(model_or_callable, "follow", "quick")        # or policy="scripted"
    write_outputs(res, "eval/follow")                          # result.json + report.md + figures

Modules: :mod:`.suite` (typed suites, thresholds), :mod:`.baselines` (stop / constant), :mod:`.metrics` (per-episode metrics from step infos), :mod:`.stats` (mean/IQM, bootstrap
CIs, paired differences), :mod:`.runner` (rollouts through the env's public API), :mod:`.causal`
(paired interventions, modality reliance, but-for attribution), :mod:`.robustness` (perturbations,
adversarial attacks), :mod:`.attribution` (captum maps vs intervention effects), :mod:`.report`.
CLI: ``python -m kai_drive.evaluate``; docs: docs/evaluation.md.
"""

from kai_drive.evaluation.baselines import baseline_policy
from kai_drive.evaluation.core import SCHEMA, check_thresholds, evaluate, load_suite
from kai_drive.evaluation.policies import EvalPolicy, as_policy, load_model, load_run, scripted_policy
from kai_drive.evaluation.report import write_outputs

__all__ = ["evaluate", "load_suite", "check_thresholds", "write_outputs", "as_policy", "load_run", "load_model",
           "scripted_policy", "baseline_policy", "EvalPolicy", "SCHEMA"]
