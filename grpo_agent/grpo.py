"""Group Relative Policy Optimization (GRPO) as a Stable-Baselines3 algorithm.

One rollout: ``n_groups = num_envs / group_size`` start positions, ``group_size`` games from each, up to
``horizon`` plies, played on a :class:`chess_env.ChessVectorEnv` with autoreset disabled (a finished game
is padded until the rollout ends). Each trained ply gets a group-relative advantage (``advantages.py``) and
the policy takes ``n_epochs`` passes of clipped-surrogate updates (:func:`grpo_loss`) with an optional k3 KL
penalty to a periodically refreshed reference policy and an entropy bonus over the legal moves. There is no
critic: the group is the baseline.

Guardrails against entropy and group collapse (``shared/seed``) are options of :class:`GRPO`: collapse guards on
the rollout's normalized entropy and action agreement (warn / boost / stop / rollback), an adaptive KL
controller, a target-entropy controller, dynamic sampling of groups with no reward spread, first-ply Dirichlet
noise and a non-finite guard. The controllers and guards themselves live in :mod:`grpo_agent.control`, the
metrics in :mod:`grpo_agent.diagnostics`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv

from grpo_agent.advantages import ADVANTAGE_MODES, ADVANTAGE_SCALES
from grpo_agent.buffers import GroupRolloutBuffer
from grpo_agent.control import (
    ON_COLLAPSE,
    AdaptiveKLController,
    CollapseGuard,
    GuardEvent,
    NonFiniteAction,
    NonFiniteGuard,
    TargetEntropyController,
    dirichlet_mix,
)
from grpo_agent.diagnostics import PolicyDiversity, rollout_diagnostics, zero_std_groups
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


def _initial_coef(name: str, value: Any, option: str) -> float:
    """The starting value of an adaptive coefficient: a controller multiplies it, so it must be a float > 0."""
    if callable(value) or not value > 0:
        raise ValueError(f"{option} adapts {name}, which must be a float > 0 to start from, got {name}={value!r}")
    return float(value)


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
        reference log-probabilities and the entropy all use it (``predict`` uses 1). A collapse guard boosting
        the temperature multiplies it for whole rollouts (the update uses the temperature its rollout used)
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
    :param ent_coef: entropy bonus coefficient (entropy over legal moves); float or schedule. With
        ``target_entropy`` it is the controller's starting value (a float > 0)
    :param kl_coef: coefficient of the k3 KL to the reference policy; float or schedule. With ``kl_target`` it
        is the controller's starting value (a float > 0)
    :param ref_update_interval: copy the policy into the reference every this many rollouts (0 = never: the
        reference stays the initial policy)
    :param max_grad_norm: gradient-norm clip (``None`` = no clipping; the norm is logged either way)
    :param target_kl: SB3's early stop: an epoch ends the update when a minibatch's ``approx_kl`` exceeds
        ``1.5 * target_kl`` (``None`` = no limit). Not the adaptive KL controller (``kl_target``)
    :param kl_target: ``None`` (default) keeps ``kl_coef`` as given; a KL in nats makes ``kl_coef`` adaptive:
        after each update the proportional controller of Ziegler et al.
        (:class:`~grpo_agent.control.AdaptiveKLController`) moves it toward holding ``train/kl_ref`` at this value
    :param kl_horizon: the controller's horizon in trained plies (default 10_000): a sustained 20% KL error
        changes ``kl_coef`` by a factor ``1 + 0.2 * plies / kl_horizon`` per update
    :param kl_coef_bounds: ``(min, max)`` of the adaptive ``kl_coef`` (default ``(1e-4, 10.0)``)
    :param target_entropy: ``None`` (default) keeps ``ent_coef`` as given; a fraction in ``(0, 1)`` of the
        maximum entropy ``log(#legal)`` makes ``ent_coef`` adaptive
        (:class:`~grpo_agent.control.TargetEntropyController` on ``rollout/entropy_norm``)
    :param target_entropy_lr: the entropy controller's step in log space per unit of error (default 1.0)
    :param ent_coef_bounds: ``(min, max)`` of the adaptive ``ent_coef`` (default ``(1e-4, 1.0)``)
    :param entropy_floor: ``None`` (default: no guard) or a normalized entropy in ``(0, 1)``: when
        ``rollout/entropy_norm`` (the sampling policy's entropy over log #legal at the configured
        ``temperature``, boost excluded, so a temperature boost cannot fake a recovery) stays below it for
        ``guard_patience`` consecutive rollouts, ``on_collapse`` fires
    :param agreement_ceiling: ``None`` (default: no guard) or an agreement in ``(0, 1]``: the same guard on
        ``rollout/action_agreement_mean`` staying above it (e.g. 0.95: the group plays one line)
    :param guard_patience: consecutive bad rollouts before a guard fires (default 5)
    :param on_collapse: what a firing guard does (default ``"warn"``): ``"warn"`` prints and logs;
        ``"boost"`` multiplies the entropy pressure by ``boost_factor`` (decaying back by ``boost_decay`` per
        healthy rollout); ``"stop"`` saves ``guard_stop_<timesteps>.zip`` and ends ``learn()``; ``"rollback"``
        restores the last healthy policy, optimizer, reference and controllers, skips the update of the
        collapsed rollout and multiplies the learning rate by ``rollback_lr_factor`` (a stop after
        ``max_rollbacks``, or when no healthy point exists yet)
    :param boost_factor: boost multiplier per firing (default 2.0)
    :param max_boost: cap of the ``ent_coef`` multiplier (default 10.0)
    :param boost_decay: share of ``boost - 1`` kept per healthy rollout (default 0.9)
    :param boost_targets: what a boost multiplies: ``("ent_coef",)`` (default), ``("temperature",)`` or both
    :param max_temperature_boost: cap of the temperature multiplier (default 1.5)
    :param rollback_lr_factor: learning-rate multiplier per rollback (default 0.5)
    :param max_rollbacks: rollbacks before a guard stops the run instead (default 3)
    :param rollback_margin: a rollback snapshot is kept only from rollouts healthy by at least this much (in
        the watched metric's units; default 0.15), so a rollback does not land on a policy about to collapse
    :param guard_save_dir: folder of the ``guard_stop_<timesteps>.zip`` checkpoints (default ``None``: the
        logger's folder, which is the run folder under ``grpo-chess train``)
    :param drop_zero_std_groups: dynamic sampling (default False): groups whose trained plies would all get
        advantage 0 (no reward spread beyond ``zero_std_tol`` in the values the advantage mode centers) leave
        the update before the advantages are scaled; ``rollout/dropped_groups`` counts them, and a rollout with
        nothing left skips the update and says so
    :param zero_std_tol: spread (reward units, peak to peak) at or below which a group has no spread (default
        1e-6); also used by ``rollout/frac_reward_zero_std``
    :param dirichlet_alpha: concentration of the first-ply Dirichlet noise (default 0.3, AlphaZero's for chess)
    :param dirichlet_frac: weight of that noise (default 0.0 = off; AlphaZero used 0.25): the first ply is
        sampled from ``(1 - frac) * pi + frac * Dir(alpha)`` over the legal moves and its stored old
        log-probability is that of this mixture, so the update's importance ratio ``pi / mixture`` corrects for
        the noise (those plies are left out of ``train/ratio_dev_first_batch``, whose 0 checks the others)
    :param max_nonfinite: a minibatch with a non-finite loss or gradient norm is skipped (no optimizer step);
        this many in a row save ``guard_stop_<timesteps>.zip`` and end ``learn()`` with the offending
        statistics (default 3)
    :param n_envs: number of games when ``env`` is an id string
    :param env_kwargs: keyword arguments of the env when ``env`` is an id string
    :param stats_window_size: SB3 episode-statistics window
    :param tensorboard_log: tensorboard log folder (``None`` = none)
    :param policy_kwargs: keyword arguments of the policy (e.g. ``features_extractor_kwargs=dict(n_blocks=6,
        channels=96)``)
    :param verbose: 0 silent (guard actions and stops are printed regardless), 1 info, 2 debug
    :param seed: seed of torch, numpy, the Dirichlet noise and the first env reset
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
        kl_target: float | None = None,
        kl_horizon: float = 10_000,
        kl_coef_bounds: tuple[float, float] = (1e-4, 10.0),
        target_entropy: float | None = None,
        target_entropy_lr: float = 1.0,
        ent_coef_bounds: tuple[float, float] = (1e-4, 1.0),
        entropy_floor: float | None = None,
        agreement_ceiling: float | None = None,
        guard_patience: int = 5,
        on_collapse: str = "warn",
        boost_factor: float = 2.0,
        max_boost: float = 10.0,
        boost_decay: float = 0.9,
        boost_targets: tuple[str, ...] | list[str] = ("ent_coef",),
        max_temperature_boost: float = 1.5,
        rollback_lr_factor: float = 0.5,
        rollback_margin: float = 0.15,
        max_rollbacks: int = 3,
        guard_save_dir: str | None = None,
        drop_zero_std_groups: bool = False,
        zero_std_tol: float = 1e-6,
        dirichlet_alpha: float = 0.3,
        dirichlet_frac: float = 0.0,
        max_nonfinite: int = 3,
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
            "on_collapse": (on_collapse, ON_COLLAPSE),
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
        if entropy_floor is not None and not 0.0 < entropy_floor < 1.0:
            raise ValueError(f"entropy_floor must be in (0, 1) (a fraction of log #legal) or None, got {entropy_floor}")
        if agreement_ceiling is not None and not 0.0 < agreement_ceiling <= 1.0:
            raise ValueError(f"agreement_ceiling must be in (0, 1] or None, got {agreement_ceiling}")
        if not zero_std_tol >= 0:
            raise ValueError(f"zero_std_tol must be >= 0, got {zero_std_tol}")
        if not 0.0 <= dirichlet_frac <= 1.0:
            raise ValueError(f"dirichlet_frac must be in [0, 1], got {dirichlet_frac}")
        if int(max_nonfinite) != max_nonfinite or max_nonfinite < 1:
            raise ValueError(f"max_nonfinite must be an integer >= 1, got {max_nonfinite}")
        if not dirichlet_alpha > 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")
        boost_targets = tuple(boost_targets)
        guards_on = entropy_floor is not None or agreement_ceiling is not None
        if guards_on and on_collapse == "boost" and "ent_coef" in boost_targets and target_entropy is None:
            if not callable(ent_coef) and not ent_coef > 0:
                raise ValueError(
                    f"on_collapse='boost' multiplies ent_coef, which is {ent_coef}: set ent_coef > 0 or "
                    f"boost_targets=('temperature',)"
                )

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
        self.drop_zero_std_groups = bool(drop_zero_std_groups)
        self.zero_std_tol = float(zero_std_tol)
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.dirichlet_frac = float(dirichlet_frac)
        self.guard_save_dir = guard_save_dir

        # Controllers and guards are built here, not in _setup_model: load() restores them from the saved
        # attributes after __init__ and before _setup_model, which must not reset them.
        self.kl_controller = None
        if kl_target is not None:
            self.kl_controller = AdaptiveKLController(
                _initial_coef("kl_coef", kl_coef, "kl_target"), kl_target, kl_horizon, *kl_coef_bounds
            )
        self.ent_coef_controller = None
        if target_entropy is not None:
            if not 0.0 < target_entropy < 1.0:
                raise ValueError(f"target_entropy must be in (0, 1) (a fraction of log #legal), got {target_entropy}")
            self.ent_coef_controller = TargetEntropyController(
                target_entropy, _initial_coef("ent_coef", ent_coef, "target_entropy"), target_entropy_lr,
                *ent_coef_bounds,
            )
        guard_kwargs = dict(
            patience=guard_patience,
            on_collapse=on_collapse,
            boost_factor=boost_factor,
            max_boost=max_boost,
            decay=boost_decay,
            boost_targets=boost_targets,
            max_temperature_boost=max_temperature_boost,
            rollback_lr_factor=rollback_lr_factor,
            max_rollbacks=max_rollbacks,
            snapshot_margin=rollback_margin,
        )
        #: collapse guards, each watching one key of ``last_rollout_stats``
        self.guards: list[CollapseGuard] = []
        if entropy_floor is not None:
            self.guards.append(CollapseGuard("entropy_norm", entropy_floor, name="entropy", **guard_kwargs))
        if agreement_ceiling is not None:
            self.guards.append(
                CollapseGuard("action_agreement_mean", agreement_ceiling, name="agreement", **guard_kwargs)
            )
        self.nonfinite_guard = NonFiniteGuard(max_nonfinite)
        self._noise_rng = np.random.default_rng(seed)
        #: rollouts collected so far (drives the reference refresh)
        self.n_rollouts = 0
        #: the latest rollout's and update's metrics, for callbacks and guardrails to read
        self.last_rollout_stats: dict[str, float] = {}
        self.last_train_stats: dict[str, float] = {}
        #: why the last ``learn()`` ended early (a guard's message), and the checkpoint it saved; None otherwise
        self.stop_reason: str | None = None
        self.stop_checkpoint: str | None = None
        #: the temperature of the rollout in the buffer (the update recomputes log-probabilities with it)
        self._rollout_temperature = self.temperature
        self._rollout_has_plies = True
        self._nonfinite_stop = False

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

    # -- multipliers from the guards ---------------------------------------------------------------------

    def _guard_product(self, attribute: str) -> float:
        return float(np.prod([getattr(guard, attribute) for guard in self.guards])) if self.guards else 1.0

    @property
    def rollout_temperature(self) -> float:
        """The temperature the next rollout samples at: ``temperature`` times the guards' temperature boosts."""
        return self.temperature * self._guard_product("temperature_multiplier")

    def current_ent_coef(self, progress_remaining: float | None = None) -> float:
        """The entropy coefficient of the next update: the schedule's (or the target-entropy controller's)
        value times the guards' boosts."""
        progress = self._current_progress_remaining if progress_remaining is None else progress_remaining
        base = self.ent_coef_controller() if self.ent_coef_controller is not None else self.ent_coef(progress)  # type: ignore[operator]
        return float(base) * self._guard_product("ent_coef_multiplier")

    def current_kl_coef(self, progress_remaining: float | None = None) -> float:
        """The KL coefficient of the next update: the adaptive controller's, else the schedule's."""
        progress = self._current_progress_remaining if progress_remaining is None else progress_remaining
        return float(self.kl_controller() if self.kl_controller is not None else self.kl_coef(progress))  # type: ignore[operator]

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # SB3's version, times the rollbacks' learning-rate factors.
        lr = self.lr_schedule(self._current_progress_remaining) * self._guard_product("lr_multiplier")
        self.logger.record("train/learning_rate", lr)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            update_learning_rate(optimizer, lr)

    # -- rollout -----------------------------------------------------------------------------------------

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: GroupRolloutBuffer,
        n_rollout_steps: int | None = None,
    ) -> bool:
        """Play one group rollout into ``rollout_buffer``, measure it and compute its advantages.

        Runs on ``env.vector_env`` with autoreset disabled: ``reset(options={"groups": B, "group_size": G})``
        then up to ``n_rollout_steps`` (default ``horizon``) vector steps. The policy samples in eval mode under
        ``no_grad`` at :attr:`rollout_temperature`, only for games still running (the first ply mixed with
        Dirichlet noise when ``dirichlet_frac > 0``). ``callback.on_step()`` is called after every vector step,
        like SB3 (``num_timesteps`` grows by ``num_envs`` per step).

        Then, over the trained plies: the sampling policy's ``entropy`` / ``entropy_norm`` (at ``temperature``,
        boost excluded; ``policy_diversity_kl`` is measured on the same distributions, so the first-ply noise
        does not count as diversity), the group-collapse diagnostics of :func:`~grpo_agent.diagnostics.rollout_diagnostics`,
        dynamic sampling when enabled, and the advantages. Everything goes to ``rollout/`` in the logger and to
        :attr:`last_rollout_stats` (keys without the prefix).

        :return: False if a callback asked to stop.
        """
        from gymnasium.vector import AutoresetMode

        venv = env.vector_env
        n_steps = self.horizon if n_rollout_steps is None else n_rollout_steps
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        engine_before = venv.engine_stats() if hasattr(venv, "engine_stats") else None
        temperature = self._rollout_temperature = self.rollout_temperature
        diversity = PolicyDiversity()
        entropy_sum = entropy_norm_sum = 0.0
        n_entropy = n_entropy_norm = 0
        start = time.perf_counter()
        previous_mode = venv.autoreset_mode
        venv.autoreset_mode = AutoresetMode.DISABLED
        try:
            seed = self.seed if self.n_rollouts == 0 else None
            obs, infos = venv.reset(seed=seed, options={"groups": self.n_groups, "group_size": self.group_size})
            masks = np.asarray(venv.action_masks(), dtype=bool)
            first_mover = np.array([board.turn for board in venv.boards])
            done = np.zeros(self.n_envs, dtype=bool)
            for step in range(n_steps):
                active = ~done
                if not active.any():
                    break
                # With self-play consecutive plies alternate sides; with an in-env opponent they do not.
                same_side = np.array([board.turn for board in venv.boards]) == first_mover
                trained_now = active & same_side if self.train_plies == "mover" else active
                noisy = step == 0 and self.dirichlet_frac > 0
                actions = np.zeros(self.n_envs, dtype=np.int64)
                log_probs = np.zeros(self.n_envs, dtype=np.float32)
                with th.no_grad():
                    obs_tensor = obs_as_tensor(obs[active], self.device)
                    mask_tensor = th.as_tensor(masks[active], device=self.device)
                    dist = self.policy.get_distribution(obs_tensor, mask_tensor, temperature)
                    if noisy:
                        mixed = dirichlet_mix(
                            dist.distribution.probs, mask_tensor, self.dirichlet_alpha, self.dirichlet_frac,
                            self._noise_rng,
                        )
                        sampled = th.multinomial(mixed, 1).squeeze(1)
                        # The log-probability of the distribution actually sampled, not the policy's.
                        log_prob = th.log(mixed.gather(1, sampled[:, None]).squeeze(1))
                    else:
                        sampled = dist.get_actions()
                        log_prob = dist.log_prob(sampled)
                    # Health of the policy itself at the configured temperature (noise and boost excluded).
                    log_p = dist.distribution.logits  # normalized; illegal entries ~ -1e8
                    if temperature != self.temperature:
                        log_p = th.log_softmax(log_p * (temperature / self.temperature), dim=1)
                    entropy = -(log_p.exp() * log_p).sum(dim=1)
                    n_legal = mask_tensor.sum(dim=1)
                    counted = th.as_tensor(trained_now[active], device=self.device)
                    several = counted & (n_legal > 1)
                    entropy_sum += float(entropy[counted].sum())
                    n_entropy += int(counted.sum())
                    entropy_norm_sum += float((entropy[several] / th.log(n_legal[several].float())).sum())
                    n_entropy_norm += int(several.sum())
                    full_log_p = th.zeros(self.n_envs, log_p.shape[1], device=self.device)
                    full_log_p[th.as_tensor(active, device=self.device)] = log_p
                    diversity.add(
                        full_log_p,
                        trained_now.reshape(self.n_groups, self.group_size),
                        th.as_tensor(masks, device=self.device),
                    )
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
                    noisy=active if noisy else None,
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

        trained = rollout_buffer.trained & rollout_buffer.valid
        zero_values, zero_mask = rollout_buffer.advantage_values(self.advantage, self.gamma)  # type: ignore[arg-type]
        stats = {
            "step_reward_mean": float(rollout_buffer.rewards[trained].mean()) if trained.any() else math.nan,
            "step_reward_std": float(rollout_buffer.rewards[trained].std()) if trained.any() else math.nan,
            "plies_per_s": float(rollout_buffer.valid.sum() / elapsed),
            "finished_frac": float(done.mean()),
            "temperature": temperature,
            "entropy": entropy_sum / n_entropy if n_entropy else math.nan,
            "entropy_norm": entropy_norm_sum / n_entropy_norm if n_entropy_norm else math.nan,
        }
        stats.update(
            rollout_diagnostics(
                rollout_buffer.actions,
                rollout_buffer.rewards,
                rollout_buffer.valid,
                rollout_buffer.advantage_values("outcome", self.gamma)[0],
                trained=trained,
                zero_std_values=zero_values,
                zero_std_mask=zero_mask,
                zero_std_tol=self.zero_std_tol,
                diversity=diversity,
                prefix="",
            )
        )
        if self.drop_zero_std_groups:
            dropped = zero_std_groups(zero_values, zero_mask, self.zero_std_tol)
            rollout_buffer.drop_groups(dropped)
            stats["dropped_groups"] = float(dropped.sum())
            if self.verbose >= 1 and dropped.any():
                print(f"dynamic sampling: dropped {int(dropped.sum())}/{self.n_groups} groups with no reward spread")
        rollout_buffer.compute_advantages(
            advantage=self.advantage,  # type: ignore[arg-type]
            scale=self.advantage_scale,  # type: ignore[arg-type]
            eps=self.advantage_eps,
            gamma=self.gamma,
            loss_aggregation=self.loss_aggregation,  # type: ignore[arg-type]
        )
        self._rollout_has_plies = bool(rollout_buffer.trained.any())
        if engine_before is not None:
            after = venv.engine_stats()
            hits = after["cache_hits"] - engine_before["cache_hits"]
            lookups = hits + after["cache_misses"] - engine_before["cache_misses"]
            if lookups > 0:
                stats["engine_cache_hit_rate"] = hits / lookups
        for key, value in stats.items():
            if not math.isnan(value):
                self.logger.record(f"rollout/{key}", value)
        self.last_rollout_stats = stats
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # -- guards ------------------------------------------------------------------------------------------

    def _restorable(self) -> dict[str, Any]:
        """What a rollback restores: the networks, the optimizer and the controllers."""
        objects: dict[str, Any] = {
            "policy": self.policy,
            "optimizer": self.policy.optimizer,
            "ref_policy": self.ref_policy,
        }
        if self.kl_controller is not None:
            objects["kl_controller"] = self.kl_controller
        if self.ent_coef_controller is not None:
            objects["ent_coef_controller"] = self.ent_coef_controller
        return objects

    def _apply_rollout_guards(self) -> str:
        """Feed the rollout's health metrics to the entropy controller and the collapse guards and carry out
        what they decide.

        The metrics describe the policy that sampled the rollout, i.e. the parameters before this rollout's
        update, so a rollback guard snapshots exactly those parameters and keeps the snapshot if they are healthy.

        :return: ``"train"`` (update on this rollout), ``"skip"`` (a rollback restored an earlier policy: this
            rollout came from the collapsed one) or ``"stop"``.
        """
        stats = self.last_rollout_stats
        for guard in self.guards:
            if guard.on_collapse == "rollback":
                guard.snapshot(self._restorable())
        if self.ent_coef_controller is not None:
            self.ent_coef_controller.update(stats.get("entropy_norm", math.nan))
            self.logger.record("train/entropy_norm_target", self.ent_coef_controller.target_fraction)
        actions = []
        for guard in self.guards:
            action = guard.update(stats.get(guard.metric, math.nan))
            if action.message and action.event is not GuardEvent.STOP:  # _guard_stop prints a stop's reason
                print(action.message)
            actions.append((guard, action))
        verdict = "train"
        for guard, action in actions:
            if action.event is GuardEvent.STOP:
                self._guard_stop(action.message)
                verdict = "stop"
            elif action.event is GuardEvent.ROLLBACK and verdict == "train":
                guard.restore(self._restorable())
                verdict = "skip"
        for guard in self.guards:
            for key, value in guard.as_log_dict().items():
                self.logger.record(key, value)
        if self.guards:
            self.logger.record("guard/ent_coef_multiplier", self._guard_product("ent_coef_multiplier"))
            self.logger.record("guard/temperature_multiplier", self._guard_product("temperature_multiplier"))
            self.logger.record("guard/lr_multiplier", self._guard_product("lr_multiplier"))
        return verdict

    def _guard_stop(self, reason: str) -> None:
        """Save ``guard_stop_<timesteps>.zip`` and record why the run stops."""
        folder = Path(self.guard_save_dir or self.logger.get_dir() or ".")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"guard_stop_{self.num_timesteps}.zip"
        self.stop_reason, self.stop_checkpoint = reason, str(path)
        self.save(path)
        print(f"{reason}\ntraining stopped at {self.num_timesteps} timesteps; checkpoint saved to {path}")
        self.logger.record("guard/stopped", 1.0)

    # -- update ------------------------------------------------------------------------------------------

    @th.no_grad()
    def _compute_ref_log_probs(self, temperature: float) -> None:
        """Reference log-probabilities of the trained plies, at the rollout temperature."""
        indices = self.rollout_buffer.trained_indices()
        for start in range(0, len(indices), self.batch_size):
            chunk = indices[start : start + self.batch_size]
            data = self.rollout_buffer.flat_samples(chunk)
            log_prob, _ = self.ref_policy.evaluate_actions(data.observations, data.actions, data.action_masks, temperature)
            self.rollout_buffer.set_ref_log_probs(chunk, log_prob)

    def train(self) -> None:
        """Update the policy on the current rollout: ``n_epochs`` passes of minibatches of trained plies.

        Minibatches whose loss or gradient norm is not finite are skipped (no optimizer step); after
        ``max_nonfinite`` in a row the update ends and :meth:`learn` stops the run. Afterwards the adaptive KL
        controller (if any) takes the update's ``kl_ref``.
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        temperature = self._rollout_temperature
        clip_range = self.clip_range(progress)  # type: ignore[operator]
        clip_range_high = self.clip_range_high(progress)  # type: ignore[operator]
        ent_coef = self.current_ent_coef(progress)
        kl_coef = self.current_kl_coef(progress)
        self._compute_ref_log_probs(temperature)

        history: dict[str, list[float]] = {}
        first_batch_ratio_dev: float | None = None
        continue_training = True
        skipped = 0
        for epoch in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                log_prob, entropy = self.policy.evaluate_actions(
                    data.observations, data.actions, data.action_masks, temperature
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
                    # log-probability mismatch (temperature, masking, train/eval mode), not learning. Plies
                    # sampled with Dirichlet noise have the mixture's log-prob and are left out.
                    clean = ~data.noisy
                    if clean.any():
                        first_batch_ratio_dev = (log_prob - data.old_log_prob)[clean].exp().sub(1).abs().max().item()
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
                verdict = self.nonfinite_guard.check(loss.item(), None, stats)
                if verdict is NonFiniteAction.OK:
                    loss.backward()
                    max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
                    grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
                    verdict = self.nonfinite_guard.check(loss.item(), grad_norm.item(), stats)
                if verdict is not NonFiniteAction.OK:
                    # A NaN/inf step would poison every parameter it touches: drop its gradient instead.
                    self.policy.optimizer.zero_grad()
                    skipped += 1
                    if self.verbose >= 1 or verdict is NonFiniteAction.STOP:
                        print(f"[guard nonfinite] skipped a minibatch: {self.nonfinite_guard.message()}")
                    if verdict is NonFiniteAction.STOP:
                        self._nonfinite_stop = True
                        continue_training = False
                        break
                    continue
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
            temperature=temperature,
        )
        if first_batch_ratio_dev is not None:
            summary["ratio_dev_first_batch"] = first_batch_ratio_dev
        if self.kl_controller is not None and "kl_ref" in summary:
            self.kl_controller.update(summary["kl_ref"], int(trained.sum()))
            summary["kl_target"] = self.kl_controller.kl_target
        for key, value in summary.items():
            self.logger.record(f"train/{key}", value)
        for key, value in self.nonfinite_guard.as_log_dict().items():
            self.logger.record(key, value)
        self.logger.record("guard/nonfinite_skipped_update", float(skipped))
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

        Each iteration: a rollout, the collapse guards on its metrics, the update (skipped after a rollback or
        when dynamic sampling left nothing to train), the adaptive controllers. A guard ``"stop"`` or too many
        non-finite minibatches save ``guard_stop_<timesteps>.zip``, print why and end the loop cleanly
        (:attr:`stop_reason`, :attr:`stop_checkpoint`; callbacks still get ``on_training_end``). Logs are
        written after each update (every ``log_interval`` rollouts, and always for the stopping one), so a
        rollout's metrics and its update's metrics share one row.
        """
        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        self.stop_reason = self.stop_checkpoint = None
        self._nonfinite_stop = False
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        while self.num_timesteps < total_timesteps:
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            verdict = self._apply_rollout_guards()
            if verdict == "train":
                if self._rollout_has_plies:
                    self.train()
                else:
                    print(
                        f"rollout {self.n_rollouts + 1}: no trained ply left (dynamic sampling dropped "
                        f"{self.last_rollout_stats.get('dropped_groups', 0):.0f}/{self.n_groups} groups with no "
                        f"reward spread); skipping the update"
                    )
                    self.logger.record("train/skipped", 1.0)
            self.n_rollouts += 1
            if self._nonfinite_stop:
                self._guard_stop(self.nonfinite_guard.message())
                verdict = "stop"
            if self.ref_update_interval > 0 and self.n_rollouts % self.ref_update_interval == 0 and verdict == "train":
                self.sync_reference()
            if verdict == "stop" or (log_interval is not None and iteration % log_interval == 0):
                self.dump_logs(iteration)
            if verdict == "stop":
                break
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
