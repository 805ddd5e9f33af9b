"""Trajectory groups (``group_mode="games"``): ``G`` games from each of ``B`` start positions."""

from __future__ import annotations

import math
import time

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

from grpo_agent.advantages import AdvantageConfig
from grpo_agent.buffers import GroupRolloutBuffer
from grpo_agent.diagnostics import PolicyDiversity, SamplingHealth
from grpo_agent.policies import GRPOPolicy
from grpo_agent.rollout.base import (
    Collector, DirichletNoise, GroupEnv, PlayRecord, StepHook, engine_counts, engine_delta, sample_policy,
)

TRAIN_PLIES = ("mover", "both")


class GameGroupCollector(Collector):
    """Plays a group rollout: ``n_groups`` start positions x ``group_size`` games x up to ``horizon`` plies.

    Each rollout starts with a group reset (every member of a group from one position), then plays up to
    ``horizon`` plies of every game, sampling from the policy only for the games still running (a finished game
    is padded until the rollout ends). Which plies train: ``"mover"``, those of the side to move at the start
    (in self-play the other side's plies still count in the reward-to-go), or ``"both"``. The first ply may be
    sampled with Dirichlet noise; its stored log-probability is that of the mixture actually sampled.

    :param env: the group-rollout env (:class:`~grpo_agent.rollout.base.GroupEnv`)
    :param n_groups: start positions per rollout (B)
    :param group_size: games per start position (G)
    :param horizon: plies per game per rollout (T)
    :param advantages: how :meth:`GroupRolloutBuffer.finish` turns the rollout into advantages
    :param train_plies: ``"mover"`` or ``"both"``
    :param noise: first-ply Dirichlet noise, or None
    :param device: torch device of the policy and the buffer's samples
    """

    def __init__(
        self,
        env: GroupEnv,
        n_groups: int,
        group_size: int,
        horizon: int,
        advantages: AdvantageConfig,
        train_plies: str = "mover",
        noise: DirichletNoise | None = None,
        device: th.device | str = "cpu",
    ) -> None:
        if train_plies not in TRAIN_PLIES:
            raise ValueError(f"train_plies must be one of {TRAIN_PLIES}, got {train_plies!r}")
        if env.num_envs != n_groups * group_size:
            raise ValueError(f"n_groups={n_groups} x group_size={group_size} does not match num_envs={env.num_envs}")
        self.env = env
        self.n_groups, self.group_size, self.horizon = n_groups, group_size, horizon
        self.advantages = advantages
        self.train_plies = train_plies
        self.noise = noise
        self.device = device
        self.buffer = GroupRolloutBuffer(
            horizon, env.observation_space, env.action_space, n_groups, group_size, device  # type: ignore[attr-defined]
        )

    @property
    def reset_options(self) -> dict[str, int]:
        """The options that make an SB3 ``reset()`` of the env this collector's group reset."""
        return {"groups": self.n_groups, "group_size": self.group_size}

    def play(self, policy: GRPOPolicy, temperature: float, base_temperature: float, on_step: StepHook,
             start_obs: np.ndarray | None = None) -> PlayRecord | None:
        """Play one rollout into :attr:`buffer` without finishing it (see :meth:`Collector.play`)."""
        env, buffer = self.env, self.buffer
        policy.set_training_mode(False)
        buffer.reset()
        engine_before = env.engine_stats()
        health, diversity = SamplingHealth(), PolicyDiversity()
        start = time.perf_counter()
        obs = env.group_reset(self.n_groups, self.group_size) if start_obs is None else start_obs
        masks = np.asarray(env.action_masks(), dtype=bool)
        first_mover = env.side_to_move()
        done = np.zeros(env.num_envs, dtype=bool)
        steps = 0
        for step in range(self.horizon):
            active = ~done
            if not active.any():
                break
            # With self-play consecutive plies alternate sides; with an in-env opponent they do not.
            same_side = env.side_to_move() == first_mover
            trained_now = active & same_side if self.train_plies == "mover" else active
            noise = self.noise if step == 0 else None
            mask_tensor = th.as_tensor(masks, device=self.device)
            sample = sample_policy(
                policy, obs_as_tensor(obs[active], self.device), mask_tensor[active], temperature, base_temperature,
                noise=noise,
            )
            health.add(sample.policy_log_p, sample.policy_probs, mask_tensor[active], trained_now[active])
            full_log_p = th.zeros(env.num_envs, sample.policy_log_p.shape[1], device=self.device)
            full_log_p[th.as_tensor(active, device=self.device)] = sample.policy_log_p
            diversity.add(full_log_p, trained_now.reshape(self.n_groups, self.group_size), mask_tensor)
            actions = np.zeros(env.num_envs, dtype=np.int64)
            log_probs = np.zeros(env.num_envs, dtype=np.float32)
            actions[active] = sample.actions[:, 0].cpu().numpy()
            log_probs[active] = sample.log_prob[:, 0].cpu().numpy()
            new_obs, rewards, terminated, truncated = env.group_step(actions)
            buffer.add(
                obs,
                actions,
                rewards,
                active,
                log_probs,
                masks,
                trained=same_side if self.train_plies == "mover" else None,
                sign=np.where(same_side, 1.0, -1.0),
                noisy=active if noise is not None else None,
            )
            done |= np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
            obs, masks = new_obs, np.asarray(env.action_masks(), dtype=bool)
            steps += 1
            if not on_step(env.num_envs, {"rewards": rewards, "dones": done, "actions": actions}):
                return None
        return PlayRecord(
            timesteps=env.num_envs * steps,
            elapsed=max(time.perf_counter() - start, 1e-9),
            health=health,
            engine=engine_counts(engine_before, env.engine_stats()),
            extra={"finished": done, "diversity": diversity},
        )

    def finish(self, record: PlayRecord, temperature: float, wall: float) -> dict[str, float]:
        """Finish the rollout in :attr:`buffer` and return its statistics (see :meth:`Collector.finish`)."""
        stats = {
            "plies_per_s": float(self.buffer.valid.sum() / wall),
            "finished_frac": float(record.extra["finished"].mean()),
            "temperature": temperature,
            **record.health.stats(),
            **engine_delta(record.engine),
        }
        stats.update(self.buffer.finish(self.advantages, record.extra["diversity"]))
        return {key: value for key, value in stats.items() if not math.isnan(value)}
