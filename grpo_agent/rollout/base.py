"""The seam between GRPO (the learner) and the games it learns from.

A *collector* owns the env side of a rollout: it resets the games into groups, samples moves with the policy,
records them into its buffer, measures the sampling policy's health, and finishes the rollout (statistics,
dynamic sampling, advantages) in one pass. The learner asks it for a finished rollout and trains on the buffer.

The collector talks to the env only through the **group-rollout protocol** below, which
:class:`chess_env.sb3.ChessVecEnv` implements (``docs/architecture.md`` describes it); the learner never reads
an env's boards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch as th

from grpo_agent.diagnostics import PolicyDiversity, SamplingHealth
from grpo_agent.policies import GRPOPolicy
from grpo_agent.rollout.noise import dirichlet_mix

#: the methods of the group-rollout protocol, besides ``num_envs``
GROUP_ENV_METHODS = ("group_reset", "group_step", "action_masks", "side_to_move", "engine_stats")

#: called after every vector step with the plies it played and the step's data; False stops the rollout
StepHook = Callable[[int, dict[str, Any]], bool]


@runtime_checkable
class GroupEnv(Protocol):
    """What a collector needs from an env: ``num_envs`` games, group resets, padded steps, legal-move masks,
    which side is to move, and engine statistics.

    Game ``i`` is member ``i % G`` of group ``i // G``.
    """

    num_envs: int

    def group_reset(self, n_groups: int, group_size: int) -> np.ndarray:
        """Start ``n_groups`` groups of ``group_size`` games, each group from one position; the observations."""

    def group_step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One ply of every game: ``(obs, rewards, terminated, truncated)``, rewards from the mover's view;
        a finished game is padded (action ignored, reward 0, mask all False) until the next reset."""

    def action_masks(self) -> np.ndarray:
        """Bool ``(num_envs, n_actions)``: the legal moves of each game's position."""

    def side_to_move(self) -> np.ndarray:
        """Bool ``(num_envs,)``: True where White plays the next ply."""

    def engine_stats(self) -> dict[str, float]:
        """Cumulative engine counters: at least ``cache_hits``, ``cache_misses`` and ``engine_calls``."""


def check_group_env(env: Any) -> None:
    """Refuse an env that cannot play group rollouts, saying what it lacks.

    Raises:
        ValueError: ``env`` is an SB3 ``VecEnvWrapper`` (the protocol's calls would reach the env beneath it
            and silently bypass the wrapper), or lacks methods of the protocol.
    """
    from stable_baselines3.common.vec_env import VecEnvWrapper

    if isinstance(env, VecEnvWrapper):
        raise ValueError(
            f"GRPO plays group rollouts through the group-rollout protocol, which would bypass the SB3 wrapper "
            f"{type(env).__name__}: pass the unwrapped env (a chess_env.ChessVectorEnv or chess_env.sb3.ChessVecEnv)"
        )
    missing = [name for name in GROUP_ENV_METHODS if not callable(getattr(env, name, None))]
    if not hasattr(env, "num_envs"):
        missing.insert(0, "num_envs")
    if missing:
        raise ValueError(
            f"GRPO needs an env implementing the group-rollout protocol ({', '.join(GROUP_ENV_METHODS)}), as "
            f"chess_env.ChessVectorEnv does; {type(env).__name__} lacks {missing}"
        )


@dataclass
class DirichletNoise:
    """First-ply exploration noise: sample from ``(1 - frac) * pi + frac * Dir(alpha)`` over the legal moves.

    :param alpha: Dirichlet concentration (> 0; AlphaZero used 0.3 for chess)
    :param frac: weight of the noise in ``(0, 1]``
    :param rng: the generator of the noise (saved with the model, so a resumed run draws the same noise)
    """

    alpha: float
    frac: float
    rng: np.random.Generator


@dataclass
class PolicySample:
    """Moves sampled from the policy for a batch of positions.

    :param actions: ``(N, K)`` sampled action indices (``K`` samples per position)
    :param log_prob: ``(N, K)`` their log-probabilities under the distribution actually sampled (temperature
        and noise included): the old log-probabilities of the importance ratio
    :param log_p: ``(N, A)`` normalized log-probabilities of the sampling temperature, before any noise
    :param policy_log_p: ``(N, A)`` the policy's normalized log-probabilities at the configured temperature
        (no boost, no noise), for the health statistics; :param policy_probs: their probabilities
    """

    actions: th.Tensor
    log_prob: th.Tensor
    log_p: th.Tensor
    policy_log_p: th.Tensor
    policy_probs: th.Tensor


@th.no_grad()
def sample_policy(
    policy: GRPOPolicy,
    obs: th.Tensor,
    masks: th.Tensor,
    temperature: float,
    base_temperature: float,
    n_samples: int = 1,
    replacement: bool = True,
    noise: DirichletNoise | None = None,
) -> PolicySample:
    """Sample ``n_samples`` legal moves per position from one forward pass of ``policy``.

    :param temperature: the temperature sampled at (the configured one times any guard boost)
    :param base_temperature: the configured temperature, at which the health statistics are measured
    :param replacement: with replacement (independent samples) or without (distinct moves, at most #legal)
    :param noise: first-ply Dirichlet noise, or None
    """
    log_p, probs = policy.log_probs(obs, masks, temperature)  # illegal entries: log_p ~ -1e8, probs 0
    sampled_log_p, sampled_probs = log_p, probs
    if noise is not None:
        sampled_probs = dirichlet_mix(probs, masks, noise.alpha, noise.frac, noise.rng)
        sampled_log_p = th.log(sampled_probs)
    if replacement:
        actions = th.multinomial(sampled_probs, n_samples, replacement=True)
    else:
        # Gumbel top-k draws n_samples distinct moves in proportion to the probabilities; a position with fewer
        # legal moves than n_samples gets illegal extras, which the caller drops by the mask.
        gumbel = -th.log(-th.log(th.rand_like(sampled_log_p).clamp_min(1e-20)))
        actions = th.topk(sampled_log_p + gumbel, n_samples, dim=1).indices
    # The stored log-probability of each move is its single-draw probability under the distribution actually
    # sampled; without noise it comes from the logits exactly as the update's evaluation does (the ratio starts at 1).
    log_prob = sampled_log_p.gather(1, actions)
    policy_log_p, policy_probs = log_p, probs
    if temperature != base_temperature:
        rescaled = log_p * (temperature / base_temperature)
        policy_log_p, policy_probs = th.log_softmax(rescaled, dim=1), th.softmax(rescaled, dim=1)
    return PolicySample(actions, log_prob, log_p, policy_log_p, policy_probs)


ENGINE_COUNTERS = ("cache_hits", "cache_misses", "engine_calls")


def engine_counts(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The engine counters of :meth:`GroupEnv.engine_stats` used between ``before`` and ``after``."""
    return {key: after[key] - before[key] for key in ENGINE_COUNTERS}


def engine_delta(counts: dict[str, float]) -> dict[str, float]:
    """``engine_evals`` (searches run) and ``engine_cache_hit_rate`` of :func:`engine_counts`."""
    hits, lookups = counts["cache_hits"], counts["cache_hits"] + counts["cache_misses"]
    stats = {"engine_evals": float(counts["engine_calls"])}
    if lookups > 0:
        stats["engine_cache_hit_rate"] = hits / lookups
    return stats


@dataclass
class PlayRecord:
    """What a collector measured while playing a rollout into its buffer, besides the buffer itself.

    A rollout spread over workers is played in shares, one record each; :func:`merge_records` adds them up so the
    learner finishes the merged rollout exactly as it would have finished a local one.

    :param timesteps: env steps played (``num_envs`` per vector step, as ``on_step`` counts them)
    :param elapsed: seconds the play took
    :param health: the sampling policy's entropy over the played plies
    :param engine: :func:`engine_counts` of the play
    :param extra: the collector's own measurements: arrays (concatenated when merged), numbers (summed) or a
        :class:`~grpo_agent.diagnostics.PolicyDiversity` (merged)
    """

    timesteps: int
    elapsed: float
    health: SamplingHealth
    engine: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def merge_records(records: list[PlayRecord]) -> PlayRecord:
    """One record of the shares ``records`` (in the order their groups take in the merged buffer); ``elapsed`` is
    their sum, the time the workers were busy."""
    if len(records) == 1:
        return records[0]
    health = SamplingHealth()
    for record in records:
        health.merge(record.health)
    extra: dict[str, Any] = {}
    for key, first in records[0].extra.items():
        values = [record.extra[key] for record in records]
        if isinstance(first, np.ndarray):
            extra[key] = np.concatenate(values)
        elif isinstance(first, PolicyDiversity):
            extra[key] = PolicyDiversity()
            for value in values:
                extra[key].merge(value)
        else:
            extra[key] = sum(values)
    return PlayRecord(
        timesteps=sum(record.timesteps for record in records),
        elapsed=sum(record.elapsed for record in records),
        health=health,
        engine={key: sum(record.engine[key] for record in records) for key in ENGINE_COUNTERS},
        extra=extra,
    )


class Collector:
    """What both collectors share: a rollout is :meth:`play` (fill :attr:`buffer`, measure) then :meth:`finish`
    (statistics, dynamic sampling, advantages). A rollout worker runs only :meth:`play`; the learner finishes."""

    buffer: Any

    def collect(self, policy: GRPOPolicy, temperature: float, base_temperature: float, on_step: StepHook,
                start_obs: np.ndarray | None = None) -> dict[str, float] | None:
        """Play one rollout into :attr:`buffer` and finish it.

        :param temperature: the sampling temperature (``base_temperature`` times any guard boost)
        :param base_temperature: the configured temperature, at which the sampling policy's health is measured
        :param on_step: called after every vector step with the plies played; False stops the rollout
        :param start_obs: the observations of a reset the env has just done (SB3's ``reset()`` at the start of
            ``learn()``), to play from instead of resetting again
        :return: the rollout's statistics (``rollout/`` keys without the prefix), or None if ``on_step`` stopped it
        """
        record = self.play(policy, temperature, base_temperature, on_step, start_obs)
        return None if record is None else self.finish(record, temperature, record.elapsed)

    def play(self, policy: GRPOPolicy, temperature: float, base_temperature: float, on_step: StepHook,
             start_obs: np.ndarray | None = None) -> PlayRecord | None:
        """Play one rollout into :attr:`buffer` without finishing it (arguments of :meth:`collect`); None if
        ``on_step`` stopped it."""
        raise NotImplementedError

    def finish(self, record: PlayRecord, temperature: float, wall: float) -> dict[str, float]:
        """Finish the rollout in :attr:`buffer` (played here, or merged from workers' shares) and return its
        statistics.

        :param record: the play's record (:func:`merge_records` of the shares')
        :param temperature: the temperature the rollout was sampled at
        :param wall: seconds the whole rollout took (the rates' denominator)
        """
        raise NotImplementedError
