"""GRPO for chess as a Stable-Baselines3 algorithm.

``from grpo_agent import GRPO`` then use it like any SB3 / sb3-contrib algorithm::

    model = GRPO("ChessResNetPolicy", env, group_size=8, horizon=16)
    model.learn(200_000, progress_bar=True)
"""

from grpo_agent.buffers import GroupRolloutBuffer, GroupRolloutBufferSamples
from grpo_agent.grpo import GRPO
from grpo_agent.loss import grpo_loss
from grpo_agent.policies import ChessResNet, ChessResNetPolicy, GRPOPolicy, MlpPolicy

__all__ = [
    "GRPO",
    "ChessResNet",
    "ChessResNetPolicy",
    "GRPOPolicy",
    "GroupRolloutBuffer",
    "GroupRolloutBufferSamples",
    "MlpPolicy",
    "grpo_loss",
]
