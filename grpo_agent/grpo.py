"""Group Relative Policy Optimization (GRPO) as a Stable-Baselines3 algorithm.

One rollout: ``n_groups = num_envs / group_size`` start positions, ``group_size`` games from each, up to
``horizon`` plies, played on a :class:`chess_env.ChessVectorEnv` with autoreset disabled (a finished game
is padded until the rollout ends). Each trained ply gets a group-relative advantage (``advantages.py``) and
the policy takes ``n_epochs`` passes of clipped-surrogate updates (:func:`grpo_loss`) with an optional k3 KL
penalty to a periodically refreshed reference policy and an entropy bonus over the legal moves. There is no
critic: the group is the baseline.
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from grpo_agent.advantages import ADVANTAGE_MODES, ADVANTAGE_SCALES
from grpo_agent.buffers import GroupRolloutBuffer
from grpo_agent.policies import ChessResNetPolicy, GRPOPolicy, MlpPolicy

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")


def grpo_loss(
    log_prob: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    weights: th.Tensor,
    entropy: th.Tensor,
    ref_log_prob: th.Tensor,
    clip_range: float,
    clip_range_high: float,
    ent_coef: float,
    kl_coef: float,
) -> tuple[th.Tensor, dict[str, float]]:
    """The GRPO objective on one minibatch of plies (all arguments are 1-D, one entry per ply).

    ``loss = -sum_i w_i min(rho_i A_i, clip(rho_i, 1 - clip_range, 1 + clip_range_high) A_i)
    + kl_coef * sum_i w_i k3_i - ent_coef * sum_i w_i H_i`` with ``rho = exp(log_prob - old_log_prob)``,
    ``k3 = exp(ref - log_prob) - (ref - log_prob) - 1`` (an unbiased, non-negative estimate of
    KL(pi || pi_ref)), ``H`` the entropy over legal moves and ``w`` the weights normalized to sum to 1
    (token aggregation: uniform; sequence aggregation: 1 / trajectory length).

    :return: ``(loss, stats)``; stats are floats: ``policy_loss``, ``kl_ref``, ``entropy``, ``approx_kl``
        (SB3's ``mean((rho - 1) - log rho)``), ``clip_fraction_low`` / ``clip_fraction_high`` (share of plies
        whose lower / upper clip is active, i.e. that get no gradient), ``ess`` (effective sample size of the
        ratios over the minibatch size, 1 when on-policy) and ``ratio_dev`` (max ``|rho - 1|``).
    """
    w = weights / weights.sum().clamp_min(1e-12)
    log_ratio = log_prob - old_log_prob
    ratio = th.exp(log_ratio)
    surrogate = th.min(ratio * advantages, th.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range_high) * advantages)
    policy_loss = -(w * surrogate).sum()
    ref_log_ratio = ref_log_prob - log_prob
    kl_ref = (w * (th.exp(ref_log_ratio) - ref_log_ratio - 1.0)).sum()
    entropy_mean = (w * entropy).sum()
    loss = policy_loss + kl_coef * kl_ref - ent_coef * entropy_mean
    with th.no_grad():
        stats = {
            "policy_loss": policy_loss.item(),
            "kl_ref": kl_ref.item(),
            "entropy": entropy_mean.item(),
            "approx_kl": th.mean((ratio - 1.0) - log_ratio).item(),
            "clip_fraction_low": ((ratio < 1.0 - clip_range) & (advantages < 0)).float().mean().item(),
            "clip_fraction_high": ((ratio > 1.0 + clip_range_high) & (advantages > 0)).float().mean().item(),
            "ess": (ratio.sum() ** 2 / (len(ratio) * (ratio**2).sum())).item(),
            "ratio_dev": (ratio - 1.0).abs().max().item(),
        }
    return loss, stats


def _as_chess_vec_env(env: Any) -> Any:
    """Wrap a ``ChessVectorEnv`` (a gymnasium vector env) in the SB3 adapter; leave anything else alone."""
    if isinstance(env, VecEnv) or isinstance(env, str) or env is None:
        return env
    if hasattr(env, "action_masks") and hasattr(env, "num_envs") and hasattr(env, "boards"):
        from chess_env.sb3 import ChessVecEnv

        return ChessVecEnv(env)
    return env


class GRPO(BaseAlgorithm):
    """Group Relative Policy Optimization with legal-move masking.

    :param policy: ``"ChessResNetPolicy"``, ``"MlpPolicy"`` or a :class:`GRPOPolicy` subclass
    :param env: a ``ChessVectorEnv``, a ``chess_env.sb3.ChessVecEnv``, or an env id (then ``n_envs`` games
        are created with ``env_kwargs``)
    :param learning_rate: Adam learning rate, a float or a schedule of the progress remaining (1 -> 0)
    :param group_size: trajectories per start position (G); must divide the number of envs
    :param horizon: plies per trajectory (T); a rollout is ``num_envs * horizon`` timesteps
    :param n_epochs: passes over the rollout per update
    :param batch_size: plies per minibatch
    :param temperature: rollout sampling temperature; the stored and recomputed log-probabilities, the
        reference log-probabilities and the entropy all use it (``predict`` uses 1)
    :param train_plies: ``"mover"`` trains only the plies of the side to move at the start (self-play gives
        the opponent's plies too, which are used for the reward-to-go but not trained), ``"both"`` trains all
    :param advantage: ``"step"``, ``"return"`` or ``"outcome"`` (see :mod:`grpo_agent.advantages`)
    :param advantage_scale: ``"none"``, ``"std"`` (group spread) or ``"rms"`` (one batch-wide scale)
    :param advantage_eps: added to the spread before dividing (reward units)
    :param gamma: discount of the reward-to-go (``"return"``/``"outcome"`` advantages)
    :param clip_range: lower PPO clip epsilon (ratio floor ``1 - clip_range``); float or schedule
    :param clip_range_high: upper clip epsilon (ratio ceiling ``1 + clip_range_high``, "clip-higher" lets
        unlikely good moves grow faster, which fights entropy collapse); ``None`` = ``clip_range``
    :param loss_aggregation: ``"token"`` (every trained ply weighs the same) or ``"sequence"`` (mean per
        trajectory, then over trajectories)
    :param ent_coef: entropy bonus coefficient (entropy over legal moves); float or schedule
    :param kl_coef: coefficient of the k3 KL to the reference policy; float or schedule
    :param ref_update_interval: copy the policy into the reference every this many rollouts (0 = never: the
        reference stays the initial policy)
    :param max_grad_norm: gradient-norm clip (``None`` = no clipping; the norm is logged either way)
    :param target_kl: SB3's early stop: an epoch ends the update when a minibatch's ``approx_kl`` exceeds
        ``1.5 * target_kl`` (``None`` = no limit)
    :param n_envs: number of games when ``env`` is an id string
    :param env_kwargs: keyword arguments of the env when ``env`` is an id string
    :param stats_window_size: SB3 episode-statistics window
    :param tensorboard_log: tensorboard log folder (``None`` = none)
    :param policy_kwargs: keyword arguments of the policy (e.g. ``features_extractor_kwargs=dict(n_blocks=6,
        channels=96)``)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed of torch, numpy and the first env reset
    :param device: torch device
    :param _init_setup_model: build the networks now (``load`` passes False)
    """

    policy_aliases: ClassVar[dict[str, type[GRPOPolicy]]] = {
        "ChessResNetPolicy": ChessResNetPolicy,
        "MlpPolicy": MlpPolicy,
        "GRPOPolicy": GRPOPolicy,
    }
    policy: GRPOPolicy
    rollout_buffer: GroupRolloutBuffer

    def __init__(
        self,
        policy: str | type[GRPOPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 3e-4,
        group_size: int = 8,
        horizon: int = 16,
        n_epochs: int = 2,
        batch_size: int = 256,
        temperature: float = 1.0,
        train_plies: str = "mover",
        advantage: str = "step",
        advantage_scale: str = "rms",
        advantage_eps: float = 1e-2,
        gamma: float = 1.0,
        clip_range: float | Schedule = 0.2,
        clip_range_high: float | Schedule | None = 0.28,
        loss_aggregation: str = "token",
        ent_coef: float | Schedule = 0.01,
        kl_coef: float | Schedule = 0.0,
        ref_update_interval: int = 0,
        max_grad_norm: float | None = 1.0,
        target_kl: float | None = None,
        n_envs: int = 64,
        env_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        for name, value in (
            ("group_size", group_size),
            ("horizon", horizon),
            ("n_epochs", n_epochs),
            ("batch_size", batch_size),
            ("n_envs", n_envs),
        ):
            if int(value) != value or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        choices = {
            "train_plies": (train_plies, ("mover", "both")),
            "advantage": (advantage, ADVANTAGE_MODES),
            "advantage_scale": (advantage_scale, ADVANTAGE_SCALES),
            "loss_aggregation": (loss_aggregation, ("token", "sequence")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not advantage_eps > 0:
            raise ValueError(f"advantage_eps must be > 0, got {advantage_eps}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if ref_update_interval < 0:
            raise ValueError(f"ref_update_interval must be >= 0 (0 = never), got {ref_update_interval}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        if target_kl is not None and not target_kl > 0:
            raise ValueError(f"target_kl must be > 0 or None, got {target_kl}")

        if isinstance(env, str):
            import gymnasium as gym

            import chess_env  # noqa: F401  (registers GRPOChess-v0)

            env = gym.make_vec(env, num_envs=n_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {}))

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            monitor_wrapper=False,
            seed=seed,
            supported_action_spaces=(spaces.Discrete,),
        )
        if self.env is not None:
            if not hasattr(self.env, "vector_env"):
                raise ValueError(
                    f"GRPO needs a chess_env ChessVectorEnv (or its SB3 adapter ChessVecEnv) for group rollouts, "
                    f"got {type(self.env).__name__}"
                )
            # load() builds with default sizes before restoring the saved ones; _setup_model checks those.
            if _init_setup_model and self.n_envs % group_size != 0:
                raise ValueError(f"group_size={group_size} does not divide num_envs={self.n_envs}")

        self.group_size = int(group_size)
        self.horizon = int(horizon)
        self.n_epochs = int(n_epochs)
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)
        self.train_plies = train_plies
        self.advantage = advantage
        self.advantage_scale = advantage_scale
        self.advantage_eps = float(advantage_eps)
        self.gamma = float(gamma)
        self.clip_range = clip_range
        self.clip_range_high = clip_range if clip_range_high is None else clip_range_high
        self.loss_aggregation = loss_aggregation
        self.ent_coef = ent_coef
        self.kl_coef = kl_coef
        self.ref_update_interval = int(ref_update_interval)
        self.max_grad_norm = max_grad_norm
        self.target_kl = target_kl
        #: rollouts collected so far (drives the reference refresh)
        self.n_rollouts = 0
        #: the latest rollout's and update's metrics, for callbacks and guardrails to read
        self.last_rollout_stats: dict[str, float] = {}
        self.last_train_stats: dict[str, float] = {}

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # A ChessVectorEnv is already vectorized: adapt it instead of nesting it in a DummyVecEnv.
        return BaseAlgorithm._wrap_env(_as_chess_vec_env(env), verbose, monitor_wrapper)

    @property
    def n_groups(self) -> int:
        """Start positions per rollout."""
        return self.n_envs // self.group_size

    def _setup_model(self) -> None:
        if self.n_envs % self.group_size != 0:
            raise ValueError(f"group_size={self.group_size} does not divide num_envs={self.n_envs}")
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        if not isinstance(self.policy, GRPOPolicy):
            raise ValueError(f"policy must be a GRPOPolicy subclass, got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        self.ref_policy = copy.deepcopy(self.policy)
        self.ref_policy.set_training_mode(False)
        self.ref_policy.requires_grad_(False)
        self.rollout_buffer = GroupRolloutBuffer(
            self.horizon, self.observation_space, self.action_space, self.n_groups, self.group_size, self.device
        )
        self.clip_range = FloatSchedule(self.clip_range)
        self.clip_range_high = FloatSchedule(self.clip_range_high)
        self.ent_coef = FloatSchedule(self.ent_coef)
        self.kl_coef = FloatSchedule(self.kl_coef)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "ref_policy"], []

    def _vector_env(self) -> Any:
        assert self.env is not None, "GRPO has no env; pass one to the constructor, load() or set_env()"
        return self.env.vector_env  # reaches through SB3 VecEnvWrappers

    def sync_reference(self) -> None:
        """Copy the current policy into the reference policy."""
        self.ref_policy.load_state_dict(self.policy.state_dict())

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: GroupRolloutBuffer,
        n_rollout_steps: int | None = None,
    ) -> bool:
        """Play one group rollout into ``rollout_buffer`` and compute its advantages.

        Runs on ``env.vector_env`` with autoreset disabled: ``reset(options={"groups": B, "group_size": G})``
        then up to ``n_rollout_steps`` (default ``horizon``) vector steps. The policy samples in eval mode under
        ``no_grad`` at ``temperature``, only for games still running. ``callback.on_step()`` is called after
        every vector step, like SB3 (``num_timesteps`` grows by ``num_envs`` per step).

        :return: False if a callback asked to stop.
        """
        from gymnasium.vector import AutoresetMode

        venv = env.vector_env
        n_steps = self.horizon if n_rollout_steps is None else n_rollout_steps
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        engine_before = venv.engine_stats() if hasattr(venv, "engine_stats") else None
        start = time.perf_counter()
        previous_mode = venv.autoreset_mode
        venv.autoreset_mode = AutoresetMode.DISABLED
        try:
            seed = self.seed if self.n_rollouts == 0 else None
            obs, infos = venv.reset(seed=seed, options={"groups": self.n_groups, "group_size": self.group_size})
            masks = np.asarray(venv.action_masks(), dtype=bool)
            first_mover = np.array([board.turn for board in venv.boards])
            done = np.zeros(self.n_envs, dtype=bool)
            for _ in range(n_steps):
                active = ~done
                if not active.any():
                    break
                # With self-play consecutive plies alternate sides; with an in-env opponent they do not.
                same_side = np.array([board.turn for board in venv.boards]) == first_mover
                actions = np.zeros(self.n_envs, dtype=np.int64)
                log_probs = np.zeros(self.n_envs, dtype=np.float32)
                with th.no_grad():
                    obs_tensor = obs_as_tensor(obs[active], self.device)
                    mask_tensor = th.as_tensor(masks[active], device=self.device)
                    sampled, log_prob = self.policy(obs_tensor, mask_tensor, self.temperature)
                actions[active] = sampled.cpu().numpy()
                log_probs[active] = log_prob.cpu().numpy()
                new_obs, rewards, terminated, truncated, infos = venv.step(actions)
                self.num_timesteps += self.n_envs
                rollout_buffer.add(
                    obs,
                    actions,
                    rewards,
                    active,
                    log_probs,
                    masks,
                    trained=same_side if self.train_plies == "mover" else None,
                    sign=np.where(same_side, 1.0, -1.0),
                )
                done |= np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
                obs = new_obs
                masks = np.asarray(venv.action_masks(), dtype=bool)
                callback.update_locals(locals())
                if not callback.on_step():
                    return False
        finally:
            venv.autoreset_mode = previous_mode
        elapsed = max(time.perf_counter() - start, 1e-9)

        rollout_buffer.compute_advantages(
            advantage=self.advantage,  # type: ignore[arg-type]
            scale=self.advantage_scale,  # type: ignore[arg-type]
            eps=self.advantage_eps,
            gamma=self.gamma,
            loss_aggregation=self.loss_aggregation,  # type: ignore[arg-type]
        )
        trained = rollout_buffer.trained
        stats = {
            "step_reward_mean": float(rollout_buffer.rewards[trained].mean()),
            "step_reward_std": float(rollout_buffer.rewards[trained].std()),
            "plies_per_s": float(rollout_buffer.valid.sum() / elapsed),
            "finished_frac": float(done.mean()),
        }
        if engine_before is not None:
            after = venv.engine_stats()
            hits = after["cache_hits"] - engine_before["cache_hits"]
            lookups = hits + after["cache_misses"] - engine_before["cache_misses"]
            if lookups > 0:
                stats["engine_cache_hit_rate"] = hits / lookups
        for key, value in stats.items():
            self.logger.record(f"rollout/{key}", value)
        self.last_rollout_stats = stats
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    @th.no_grad()
    def _compute_ref_log_probs(self) -> None:
        """Reference log-probabilities of the trained plies, at the rollout temperature."""
        indices = self.rollout_buffer.trained_indices()
        for start in range(0, len(indices), self.batch_size):
            chunk = indices[start : start + self.batch_size]
            data = self.rollout_buffer.flat_samples(chunk)
            log_prob, _ = self.ref_policy.evaluate_actions(
                data.observations, data.actions, data.action_masks, self.temperature
            )
            self.rollout_buffer.set_ref_log_probs(chunk, log_prob)

    def train(self) -> None:
        """Update the policy on the current rollout: ``n_epochs`` passes of minibatches of trained plies."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range(progress)  # type: ignore[operator]
        clip_range_high = self.clip_range_high(progress)  # type: ignore[operator]
        ent_coef = self.ent_coef(progress)  # type: ignore[operator]
        kl_coef = self.kl_coef(progress)  # type: ignore[operator]
        self._compute_ref_log_probs()

        history: dict[str, list[float]] = {}
        first_batch_ratio_dev: float | None = None
        continue_training = True
        for epoch in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                log_prob, entropy = self.policy.evaluate_actions(
                    data.observations, data.actions, data.action_masks, self.temperature
                )
                loss, stats = grpo_loss(
                    log_prob,
                    data.old_log_prob,
                    data.advantages,
                    data.weights,
                    entropy,
                    data.ref_log_prob,
                    clip_range,
                    clip_range_high,
                    ent_coef,
                    kl_coef,
                )
                if first_batch_ratio_dev is None:
                    # Straight after the rollout the policy is the sampling policy: any deviation here is a
                    # log-probability mismatch (temperature, masking, train/eval mode), not learning.
                    first_batch_ratio_dev = stats["ratio_dev"]
                n_legal = data.action_masks.sum(dim=1)
                several = n_legal > 1
                if several.any():
                    stats["entropy_norm"] = (entropy[several] / th.log(n_legal[several].float())).mean().item()

                if self.target_kl is not None and stats["approx_kl"] > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {epoch} due to reaching max kl: {stats['approx_kl']:.4f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
                self.policy.optimizer.step()
                stats["grad_norm"] = grad_norm.item()
                stats["loss"] = loss.item()
                for key, value in stats.items():
                    history.setdefault(key, []).append(value)
            self._n_updates += 1
            if not continue_training:
                break

        trained = self.rollout_buffer.trained
        summary = {key: float(np.mean(values)) for key, values in history.items() if key != "ratio_dev"}
        summary.update(
            advantage_std=float(self.rollout_buffer.advantages[trained].std()) if trained.any() else 0.0,
            ent_coef=ent_coef,
            kl_coef=kl_coef,
            clip_range=clip_range,
            clip_range_high=clip_range_high,
        )
        if first_batch_ratio_dev is not None:
            summary["ratio_dev_first_batch"] = first_batch_ratio_dev
        for key, value in summary.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.last_train_stats = summary

    def dump_logs(self, iteration: int = 0) -> None:
        """Write the time/ metrics and flush the logger at ``num_timesteps``."""
        elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        self.logger.record("time/iterations", iteration, exclude="tensorboard")
        self.logger.record("time/fps", int((self.num_timesteps - self._num_timesteps_at_start) / elapsed))
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def learn(
        self: SelfGRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "GRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGRPO:
        """Train for ``total_timesteps`` env steps (each rollout is ``num_envs * horizon`` of them).

        Logs are written after each update (every ``log_interval`` rollouts), so a rollout's metrics and its
        update's metrics share one row.
        """
        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        while self.num_timesteps < total_timesteps:
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train()
            self.n_rollouts += 1
            if self.ref_update_interval > 0 and self.n_rollouts % self.ref_update_interval == 0:
                self.sync_reference()
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The policy's action(s) (temperature 1); with ``action_masks`` always a legal move."""
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)
