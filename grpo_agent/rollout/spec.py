"""How a run's collector is built, for any env: the driver's, or a rollout worker's own games."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch as th

from grpo_agent.advantages import AdvantageConfig
from grpo_agent.rollout.base import DirichletNoise, GroupEnv
from grpo_agent.rollout.games import GameGroupCollector
from grpo_agent.rollout.moves import MoveGroupCollector


@dataclass(frozen=True)
class CollectorSpec:
    """The settings of a run's collector, without its env (picklable, so a rollout worker builds the same one).

    :param group_mode: ``"games"`` or ``"moves"``
    :param group_size: games per start position, or candidates per position (``"all"``: every legal move)
    :param horizon: plies (games) or steps (moves) per rollout
    :param advantages: the advantage settings the learner finishes rollouts with
    :param train_plies: games: ``"mover"`` or ``"both"``
    :param replacement: moves: candidates drawn with replacement
    :param all_moves_weighting: moves with ``group_size="all"``: ``"policy"`` or ``"uniform"``
    :param advance: moves: the move each game advances by, ``"sample"`` or ``"greedy"``
    :param dirichlet_alpha: concentration of the first-ply noise
    :param dirichlet_frac: weight of that noise (0: none)
    """

    group_mode: str
    group_size: int | str
    horizon: int
    advantages: AdvantageConfig
    train_plies: str = "mover"
    replacement: bool = True
    all_moves_weighting: str = "policy"
    dirichlet_alpha: float = 0.3
    dirichlet_frac: float = 0.0
    advance: str = "sample"

    def build(self, env: GroupEnv, noise_rng: np.random.Generator, device: th.device | str = "cpu"
              ) -> GameGroupCollector | MoveGroupCollector:
        """The collector of ``env``'s games: every game a group of its own (moves), or ``num_envs / group_size``
        groups (games); ``noise_rng`` draws its Dirichlet noise."""
        noise = DirichletNoise(self.dirichlet_alpha, self.dirichlet_frac, noise_rng) if self.dirichlet_frac > 0 else None
        if self.group_mode == "moves":
            return MoveGroupCollector(env, self.horizon, self.group_size, self.advantages, self.replacement, noise, device,
                                      self.all_moves_weighting, self.advance)
        return GameGroupCollector(env, env.num_envs // int(self.group_size), int(self.group_size), self.horizon,
                                  self.advantages, self.train_plies, noise, device)
