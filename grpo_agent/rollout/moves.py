"""Move groups (``group_mode="moves"``): ``G`` candidate moves of each current position, valued by the engine.

This is GRPO as it was defined for language models: the group is the ``G`` completions of one prompt, here the
candidate moves of one position, and the reward of each is dense and immediate (the engine's value of the child
position for the mover). The baseline compares like with like, every candidate is trained from one forward
pass of its position, and the games then advance one ply by a move of the policy, so the positions follow
the policy's own play.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

from grpo_agent.advantages import AdvantageConfig
from grpo_agent.buffers import MoveGroupBuffer
from grpo_agent.diagnostics import SamplingHealth
from grpo_agent.policies import GRPOPolicy
from grpo_agent.rollout.base import (
    Collector, DirichletNoise, GroupEnv, PlayRecord, StepHook, engine_counts, engine_delta, sample_policy,
)

#: the most legal moves a chess position has: the width of a group of every legal move
MAX_LEGAL_MOVES = 218
#: how a game moves on after its position is scored (see :class:`MoveGroupCollector`)
ADVANCE = ("sample", "greedy")


class MoveGroupCollector(Collector):
    """Plays a move-group rollout: ``horizon`` steps of ``num_envs`` games.

    Each step, for every game's current position: the engine starts valuing every legal move (one MultiPV search
    per position, :meth:`submit_move_values` of the env) while the policy's one forward pass samples
    ``group_size`` candidates (with or without replacement), or takes every legal move (``group_size="all"``);
    then each game advances one ply with a move of the policy (see ``advance``) and finished games restart from a
    start position (the env's same-step autoreset). Games carry over from one rollout to the next.

    Candidate values are those of the child position for the mover, with no opponent reply (the search already
    looks past it; sampling the in-env opponent's reply for each candidate would add its noise and cost one
    reply per candidate). With an in-env opponent the next position is the one after its reply.

    :param env: the group-rollout env; it must also have ``submit_move_values()`` and SB3's ``step()``
        and ``set_attr()`` (its games' shaping is turned off: the collector values the moves itself)
    :param horizon: steps per rollout
    :param group_size: candidates per position, or ``"all"`` (every legal move, weighted by its old probability)
    :param advantages: the advantage scale and dynamic sampling
    :param replacement: sample the candidates with replacement (independent draws) or without (distinct moves)
    :param noise: Dirichlet noise on every position's candidates, or None
    :param device: torch device of the policy and the buffer's samples
    :param all_moves_weighting: with ``group_size="all"``: ``"policy"`` weights each move by its old probability
        (the exact expected policy gradient), ``"uniform"`` weighs every legal move the same (each move's
        log-probability moves by its advantage, however unlikely it is: a rare good move is found faster)
    :param advance: the move each game advances by: ``"sample"`` (drawn from the policy at the rollout temperature,
        the first candidate of a sampled group: the positions follow the sampling policy's play) or ``"greedy"``
        (the policy's most probable move: the positions follow the play that evaluation, ``uci`` and ``match``
        judge, which a nearly uniform warm start's samples never reach, e.g. the won endgames it must convert;
        in self-play the games from one start then differ only as the policy changes, so the start positions
        and an in-env opponent are what varies them)
    """

    reset_options = None  # a plain reset: every game is a group of its own

    def __init__(
        self,
        env: GroupEnv,
        horizon: int,
        group_size: int | str,
        advantages: AdvantageConfig,
        replacement: bool = True,
        noise: DirichletNoise | None = None,
        device: th.device | str = "cpu",
        all_moves_weighting: str = "policy",
        advance: str = "sample",
    ) -> None:
        if all_moves_weighting not in ("policy", "uniform"):
            raise ValueError(f"all_moves_weighting must be 'policy' or 'uniform', got {all_moves_weighting!r}")
        if advance not in ADVANCE:
            raise ValueError(f"advance must be one of {ADVANCE}, got {advance!r}")
        self.all_moves_weighting, self.advance = all_moves_weighting, advance
        if group_size != "all" and not (isinstance(group_size, int) and group_size >= 1):
            raise ValueError(f"group_size must be a positive int or 'all', got {group_size!r}")
        for name in ("submit_move_values", "step", "set_attr"):
            if not callable(getattr(env, name, None)):
                raise ValueError(f"move groups need an env with {name}() (chess_env.sb3.ChessVecEnv has it); "
                                 f"{type(env).__name__} lacks it")
        self.env, self.horizon, self.group_size = env, horizon, group_size
        self.advantages, self.replacement, self.noise, self.device = advantages, replacement, noise, device
        width = MAX_LEGAL_MOVES if group_size == "all" else int(group_size)
        self.buffer = MoveGroupBuffer(horizon, env.observation_space, env.action_space, env.num_envs, width, device)  # type: ignore[attr-defined]
        self._obs: np.ndarray | None = None
        # The candidates are valued here; the env's own per-ply shaping would search every position a second
        # time (its reward is not what move groups train on), so it is turned off for the games of this env.
        env.set_attr("shaping", False)  # type: ignore[attr-defined]

    def play(self, policy: GRPOPolicy, temperature: float, base_temperature: float, on_step: StepHook,
             start_obs: np.ndarray | None = None) -> PlayRecord | None:
        """Play one rollout into :attr:`buffer` without finishing it (see :meth:`Collector.play`)."""
        env, buffer = self.env, self.buffer
        policy.set_training_mode(False)
        buffer.reset()
        if start_obs is not None:
            self._obs = start_obs
        if self._obs is None:
            self._obs = env.reset()  # type: ignore[attr-defined]
        engine_before, health = env.engine_stats(), SamplingHealth()
        start, scored, wait = time.perf_counter(), 0, 0.0
        policy_value: list[np.ndarray] = []
        regret: list[np.ndarray] = []
        for _ in range(self.horizon):
            masks = np.asarray(env.action_masks(), dtype=bool)
            pending = env.submit_move_values()  # type: ignore[attr-defined]
            mask_tensor = th.as_tensor(masks, device=self.device)
            actions, log_probs, candidates, advance, probs = self._candidates(
                policy, mask_tensor, temperature, base_temperature, health
            )
            waited = time.perf_counter()
            values = pending.result()
            wait += time.perf_counter() - waited
            # The policy's expected value over every legal move, and what it gives up against the best move.
            expected = np.nansum(probs * values, axis=1)
            policy_value.append(expected)
            regret.append(np.nanmax(values, axis=1) - expected)
            buffer.add(self._obs, masks, actions, log_probs, np.take_along_axis(values, actions, axis=1), candidates,
                       noisy=self.noise is not None)
            scored += int(masks.sum())
            self._obs, rewards, dones, _ = env.step(advance)  # type: ignore[attr-defined]
            if not on_step(env.num_envs, {"rewards": rewards, "dones": dones, "actions": advance}):
                return None
        return PlayRecord(
            timesteps=env.num_envs * self.horizon,
            elapsed=max(time.perf_counter() - start, 1e-9),
            health=health,
            engine=engine_counts(engine_before, env.engine_stats()),
            extra={"scored": scored, "wait": wait, "policy_value": np.concatenate(policy_value),
                   "regret": np.concatenate(regret)},
        )

    def finish(self, record: PlayRecord, temperature: float, wall: float) -> dict[str, float]:
        """Finish the rollout in :attr:`buffer` and return its statistics (see :meth:`Collector.finish`)."""
        searched = engine_delta(record.engine)
        scored = record.extra["scored"]
        stats = {
            "plies_per_s": record.timesteps / wall,
            "scored_moves_per_s": scored / wall,
            "engine_wait_frac": record.extra["wait"] / record.elapsed,
            "temperature": temperature,
            **record.health.stats(),
            "policy_value": float(np.mean(record.extra["policy_value"])),
            "regret": float(np.mean(record.extra["regret"])),
            "engine_evals": float(scored),
            "engine_searches": searched["engine_evals"],
        }
        if "engine_cache_hit_rate" in searched:
            stats["engine_cache_hit_rate"] = searched["engine_cache_hit_rate"]
        weighting = self.all_moves_weighting if self.group_size == "all" else "uniform"
        stats.update(self.buffer.finish(self.advantages, weighting, sampled=self.group_size != "all"))
        return {key: value for key, value in stats.items() if not math.isnan(value)}

    def _candidates(
        self, policy: GRPOPolicy, masks: th.Tensor, temperature: float, base_temperature: float, health: SamplingHealth
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(actions, log_probs, candidates, advance, probs)`` of one step from one forward pass of the policy
        (``probs``: the policy's probabilities at the configured temperature, ``(N, A)``)."""
        obs = obs_as_tensor(self._obs, self.device)
        if self.group_size == "all":
            sample = sample_policy(policy, obs, masks, temperature, base_temperature)
            # Every legal move, packed from the left; the old log-probabilities are the sampling distribution's.
            order = th.argsort((~masks).to(th.int8), dim=1, stable=True)[:, :MAX_LEGAL_MOVES]
            candidates = masks.gather(1, order)
            log_probs = sample.log_p.gather(1, order)
            actions, advance = order, sample.actions[:, 0]
        else:
            sample = sample_policy(policy, obs, masks, temperature, base_temperature, int(self.group_size),
                                   self.replacement, self.noise)
            actions, log_probs, advance = sample.actions, sample.log_prob, sample.actions[:, 0]
            candidates = masks.gather(1, actions)  # all True, but for draws without replacement past #legal
        if self.advance == "greedy":
            advance = sample.log_p.argmax(dim=1)  # illegal moves sit at about -1e8: the argmax is legal
        health.add(sample.policy_log_p, sample.policy_probs, masks)
        return (actions.cpu().numpy(), log_probs.cpu().numpy(), candidates.cpu().numpy(), advance.cpu().numpy(),
                sample.policy_probs.cpu().numpy())
