"""Rollout collectors: the env side of GRPO (see :mod:`grpo_agent.rollout.base` for the protocol)."""

from grpo_agent.rollout.base import (
    GROUP_ENV_METHODS,
    Collector,
    DirichletNoise,
    GroupEnv,
    PlayRecord,
    PolicySample,
    check_group_env,
    merge_records,
    sample_policy,
)
from grpo_agent.rollout.games import GameGroupCollector
from grpo_agent.rollout.moves import MAX_LEGAL_MOVES, MoveGroupCollector
from grpo_agent.rollout.noise import dirichlet_mix
from grpo_agent.rollout.spec import CollectorSpec

__all__ = [
    "GROUP_ENV_METHODS",
    "Collector",
    "CollectorSpec",
    "DirichletNoise",
    "GameGroupCollector",
    "MAX_LEGAL_MOVES",
    "MoveGroupCollector",
    "GroupEnv",
    "PlayRecord",
    "PolicySample",
    "check_group_env",
    "dirichlet_mix",
    "merge_records",
    "sample_policy",
]
