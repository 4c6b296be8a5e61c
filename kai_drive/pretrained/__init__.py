"""Pretrained agents shipped inside the package, loaded without pickle (docs/models.md).

    import kai_drive.pretrained as pretrained
    pretrained.available()                 # ['grasp', 'lane-keep']
    policy = pretrained.load("lane-keep")  # policy(obs) -> action; policy.predict(obs) like SB3
    env = gymnasium.make(policy.agent.env_id, config=policy.env_config)
    policy.check_env(env)                  # AgentMismatchError naming every difference

Each agent is ``agents/<name>.pt`` (a torch state dict, ``torch.load(weights_only=True)``) and ``agents/<name>.json``
(:class:`~kai_drive.pretrained.spec.AgentSpec`). Add one from a training run folder with
``python -m kai_drive.pretrained export --run RUN_DIR --name NAME`` (:mod:`kai_drive.pretrained.export`).
"""

from __future__ import annotations

from typing import Any

from kai_drive.pretrained.spec import AGENTS_DIR, AgentError, AgentSpec, available, default_name, read_spec

__all__ = ["AGENTS_DIR", "AgentError", "AgentSpec", "available", "default_name", "load", "read_spec"]


def load(name: Any = "lane-keep") -> Any:
    """The agent ``name`` as a :class:`~kai_drive.pretrained.policy.PretrainedPolicy` (torch + SB3 imported here)."""
    from kai_drive.pretrained.policy import load as _load

    return _load(name)
