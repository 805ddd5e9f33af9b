"""Group Relative Policy Optimization (GRPO) as a Stable-Baselines3 algorithm.

The learner. A rollout collector (:mod:`grpo_agent.rollout`) plays ``n_groups = num_envs / group_size`` groups
of games from shared start positions and hands over a finished rollout: every trained ply with its
group-relative advantage (:mod:`grpo_agent.advantages`). :meth:`GRPO.train` then takes ``n_epochs`` passes of
clipped-surrogate updates (:func:`grpo_loss`) with an optional KL penalty to a reference policy and an entropy
bonus over the legal moves. There is no critic: the group is the baseline.

The guardrails against entropy and group collapse (``docs/architecture.md``) are options of :class:`GRPO`; one
:class:`~grpo_agent.control.Guardrails` object holds them and returns decisions that :meth:`GRPO.learn` carries
out. The learner never reads the env's boards: it talks to the collector, the collector to the env's
group-rollout protocol.
"""

from __future__ import annotations

import copy
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
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv

from chess_env import ChessVectorEnv
from grpo_agent import resume
from grpo_agent.advantages import AdvantageConfig
from grpo_agent.buffers import GroupRolloutBuffer, MoveGroupBuffer
from grpo_agent.control import Guardrails
from grpo_agent.diagnostics import mean_of_numbers
from grpo_agent.distributed import RayRollouts
from grpo_agent.guards import NonFiniteAction, guarded_step
from grpo_agent.loss import minibatch_loss
from grpo_agent.options import check_backend, check_options
from grpo_agent.policies import ChessResNetPolicy, GRPOPolicy, MlpPolicy
from grpo_agent.rollout import CollectorSpec, GameGroupCollector, MoveGroupCollector, check_group_env

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")


class GRPO(BaseAlgorithm):
    """Group Relative Policy Optimization with legal-move masking.

    :param policy: ``"ChessResNetPolicy"``, ``"MlpPolicy"`` or a :class:`GRPOPolicy` subclass
    :param env: a ``ChessVectorEnv``, a ``chess_env.sb3.ChessVecEnv``, or an env id (then ``n_envs`` games
        are created with ``env_kwargs``)
    :param learning_rate: Adam learning rate, a float or a schedule of the progress remaining (1 -> 0)
    :param group_mode: ``"games"`` (trajectory groups: ``group_size`` games from each start position) or
        ``"moves"`` (move groups: ``group_size`` candidate moves of each current position, valued by the engine;
        :mod:`grpo_agent.rollout.moves`)
    :param group_size: games per start position (G; must divide the number of envs), or candidates per position;
        ``"all"``: every legal move (move groups only)
    :param horizon: plies per game (T), or steps (move groups); a rollout is ``num_envs * horizon`` timesteps
    :param n_epochs: passes over the rollout per update
    :param batch_size: plies (games) or positions (moves) per minibatch
    :param temperature: rollout sampling temperature, used by every log-probability, the reference and the
        entropy of the update too (``predict`` uses 1); a guard's boost multiplies it for whole rollouts
    :param sample_without_replacement: move groups: distinct candidates (Gumbel top-k) instead of independent draws
    :param all_moves_weighting: move groups of every legal move: ``"policy"`` (each move by its old probability:
        the exact expected policy gradient) or ``"uniform"`` (every move's log-probability moves by its advantage;
        that push does not fade as the policy concentrates, and in the README's move-group benchmark it collapsed
        to entropy_norm 0.002 and play no better than random within 360 s at lr 1e-3)
    :param advance: move groups: the move each game moves on by, ``"sample"`` (drawn at ``temperature``) or
        ``"greedy"`` (the policy's most probable move, so the positions are those its evaluated play reaches)
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
    :param kl_coef: coefficient of the KL to the reference policy; float or schedule. With ``kl_target`` it
        is the controller's starting value (a float > 0)
    :param kl_estimator: ``"exact"`` (default): ``sum_a p (log p - log p_ref)`` over the legal moves of each
        position, from the two networks' full distributions; ``"k3"``: Schulman's estimator on the sampled move
        (see :func:`kl_to_reference`)
    :param ref_update_interval: copy the policy into the reference every this many rollouts (0 = never: the
        reference stays the initial policy)
    :param max_grad_norm: gradient-norm clip (``None`` = no clipping; the norm is logged either way)
    :param target_kl: SB3's early stop: the update ends when a minibatch's ``approx_kl`` exceeds ``1.5 *
        target_kl`` (``None`` = no limit; plies sampled with Dirichlet noise are not judged). Not ``kl_target``
    :param kl_target: (and ``kl_horizon``, ``kl_coef_bounds``, ``target_entropy``, ``target_entropy_lr``,
        ``ent_coef_bounds``, ``entropy_floor``, ``agreement_ceiling``, ``guard_patience``, ``on_collapse``,
        ``boost_factor``, ``max_boost``, ``boost_decay``, ``boost_targets``, ``max_temperature_boost``,
        ``rollback_lr_factor``, ``max_rollbacks``, ``rollback_margin``) the guardrails: the adaptive KL and
        target-entropy controllers and the collapse guards (warn / boost / stop / rollback), each documented
        with its default in :meth:`grpo_agent.control.Guardrails.from_options`
    :param guard_save_dir: folder of the ``guard_stop_<timesteps>.zip`` checkpoints (default ``None``: the
        logger's folder, which is the run folder under ``grpo-chess train``)
    :param drop_zero_std_groups: dynamic sampling (default False): groups without reward spread beyond
        ``zero_std_tol`` (peak to peak, default 1e-6) leave the update (:meth:`GroupRolloutBuffer.finish`)
    :param zero_std_tol: see ``drop_zero_std_groups``; also used by ``rollout/frac_reward_zero_std``
    :param dirichlet_alpha: concentration of the first-ply Dirichlet noise (default 0.3, AlphaZero's for chess)
    :param dirichlet_frac: weight of that noise (default 0.0 = off; AlphaZero used 0.25); the importance ratio
        corrects for it (:mod:`grpo_agent.rollout.noise`)
    :param max_nonfinite: a minibatch with a non-finite loss or gradient norm is skipped (no optimizer step);
        this many in a row save ``guard_stop_<timesteps>.zip`` and end ``learn()`` with the offending
        statistics (default 3)
    :param rollout_backend: ``"local"`` (default: rollouts on ``env``, here) or ``"ray"`` (on Ray actors with games
        built from ``env``'s arguments, the update here; :mod:`grpo_agent.distributed`; Ray starts locally at the
        first rollout unless this process is connected to one)
    :param num_rollout_workers: Ray rollout workers (default 2)
    :param rollout_options: the Ray backend's other settings (default ``None``: its defaults), fields of
        :class:`grpo_agent.distributed.RayRolloutConfig` (``cpus_per_worker``, ``groups_per_worker``, ...)
    :param n_envs: number of games when ``env`` is an id string
    :param env_kwargs: keyword arguments of the env when ``env`` is an id string
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
        group_mode: str = "games",
        group_size: int | str = 8,
        horizon: int = 16,
        n_epochs: int = 2,
        batch_size: int = 256,
        temperature: float = 1.0,
        sample_without_replacement: bool = False,
        all_moves_weighting: str = "policy",
        advance: str = "sample",
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
        kl_estimator: str = "exact",
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
        rollout_backend: str = "local",
        num_rollout_workers: int = 2,
        rollout_options: dict[str, Any] | None = None,
        n_envs: int = 64,
        env_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        check_options(group_mode, group_size, horizon, n_epochs, batch_size, n_envs, temperature, train_plies,
                       kl_estimator, ref_update_interval, max_grad_norm, target_kl, dirichlet_frac, dirichlet_alpha,
                       advance)
        check_backend(rollout_backend, num_rollout_workers, rollout_options)
        # Validated here, built for the collector in _setup_model (the flat values are what a save keeps).
        AdvantageConfig(advantage, advantage_scale, advantage_eps, gamma, loss_aggregation,  # type: ignore[arg-type]
                        drop_zero_std_groups, zero_std_tol)
        #: every guardrail of the run; built here, not in _setup_model, because load() restores it in between
        self.guardrails = Guardrails.from_options(
            ent_coef=ent_coef, kl_coef=kl_coef, kl_target=kl_target, kl_horizon=kl_horizon,
            kl_coef_bounds=kl_coef_bounds, target_entropy=target_entropy, target_entropy_lr=target_entropy_lr,
            ent_coef_bounds=ent_coef_bounds, entropy_floor=entropy_floor, agreement_ceiling=agreement_ceiling,
            guard_patience=guard_patience, on_collapse=on_collapse, boost_factor=boost_factor, max_boost=max_boost,
            boost_decay=boost_decay, boost_targets=boost_targets, max_temperature_boost=max_temperature_boost,
            rollback_lr_factor=rollback_lr_factor, rollback_margin=rollback_margin, max_rollbacks=max_rollbacks,
            max_nonfinite=max_nonfinite,
        )
        if isinstance(env, str):
            import gymnasium as gym

            env = gym.make_vec(env, num_envs=n_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {}))

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            monitor_wrapper=False,
            seed=seed,
            supported_action_spaces=(spaces.Discrete,),
        )
        if self.env is not None:
            check_group_env(self.env)
            # load() builds with default sizes before restoring the saved ones; _setup_model checks those.
            if _init_setup_model and group_mode == "games" and self.n_envs % group_size != 0:
                raise ValueError(f"group_size={group_size} does not divide num_envs={self.n_envs}")

        self.group_mode = group_mode
        self.group_size = group_size if group_size == "all" else int(group_size)
        self.sample_without_replacement = bool(sample_without_replacement)
        self.all_moves_weighting = all_moves_weighting
        self.advance = advance
        self.horizon = int(horizon)
        self.n_epochs = int(n_epochs)
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)
        self.train_plies = train_plies
        self.advantage = advantage
        self.advantage_scale = advantage_scale
        self.advantage_eps = float(advantage_eps)
        self.gamma = float(gamma)
        self.loss_aggregation = loss_aggregation
        self.drop_zero_std_groups = bool(drop_zero_std_groups)
        self.zero_std_tol = float(zero_std_tol)
        self.clip_range = clip_range
        self.clip_range_high = clip_range if clip_range_high is None else clip_range_high
        self.ent_coef = ent_coef
        self.kl_coef = kl_coef
        self.kl_estimator = kl_estimator
        self.ref_update_interval = int(ref_update_interval)
        self.max_grad_norm = max_grad_norm
        self.target_kl = target_kl
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.dirichlet_frac = float(dirichlet_frac)
        self.guard_save_dir = guard_save_dir
        self.rollout_backend = rollout_backend
        self.num_rollout_workers = int(num_rollout_workers)
        self.rollout_options = dict(rollout_options or {})
        #: the Ray workers, started at the first rollout (None: local rollouts, or not started yet)
        self._ray_rollouts: RayRollouts | None = None
        self._noise_rng = np.random.default_rng(seed)
        #: rollouts collected so far (drives the reference refresh)
        self.n_rollouts = 0
        #: updates that made no optimizer step (dynamic sampling left nothing, target_kl, non-finite losses)
        self.skipped_updates = 0
        #: the latest rollout's and update's metrics, for callbacks and guardrails to read
        self.last_rollout_stats: dict[str, float] = {}
        self.last_train_stats: dict[str, float] = {}
        #: why the last ``learn()`` ended early (a guard's message), and the checkpoint it saved; None otherwise
        self.stop_reason: str | None = None
        self.stop_checkpoint: str | None = None
        #: the temperature of the rollout in the buffer (the update recomputes log-probabilities with it)
        self._rollout_temperature = self.temperature
        self._nonfinite_stop = False
        self._fresh_obs: np.ndarray | None = None
        #: what a loaded model's learn(reset_num_timesteps=False) restores first (grpo_agent.resume)
        self._resume_state: dict[str, Any] | None = None
        self.collector: GameGroupCollector | MoveGroupCollector | None = None

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # A ChessVectorEnv is already vectorized: adapt it instead of nesting it in a DummyVecEnv.
        if isinstance(env, ChessVectorEnv):
            from chess_env.sb3 import ChessVecEnv

            env = ChessVecEnv(env)
        return BaseAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    @property
    def n_groups(self) -> int:
        """Groups per rollout step: start positions (``"games"``) or current positions (``"moves"``)."""
        return self.n_envs // self.group_size if self.group_mode == "games" else self.n_envs  # type: ignore[operator]

    def _setup_model(self) -> None:
        if self.group_mode == "games" and self.n_envs % self.group_size != 0:  # type: ignore[operator]
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
        self.clip_range = FloatSchedule(self.clip_range)
        self.clip_range_high = FloatSchedule(self.clip_range_high)
        self.ent_coef = FloatSchedule(self.ent_coef)
        self.kl_coef = FloatSchedule(self.kl_coef)
        self._make_collector()

    def collector_spec(self) -> CollectorSpec:
        """The settings of this run's collector (what a rollout worker builds its own from)."""
        advantages = AdvantageConfig(
            self.advantage, self.advantage_scale, self.advantage_eps, self.gamma,  # type: ignore[arg-type]
            self.loss_aggregation, self.drop_zero_std_groups, self.zero_std_tol,  # type: ignore[arg-type]
        )
        return CollectorSpec(self.group_mode, self.group_size, self.horizon, advantages, self.train_plies,
                             not self.sample_without_replacement, self.all_moves_weighting, self.dirichlet_alpha,
                             self.dirichlet_frac, self.advance)

    def _make_collector(self) -> None:
        """The rollout collector of the current env (none without an env)."""
        if self.env is None:
            self.collector, self.rollout_buffer = None, None  # type: ignore[assignment]
            return
        self.collector = self.collector_spec().build(self.env, self._noise_rng, self.device)  # type: ignore[arg-type]
        self.rollout_buffer = self.collector.buffer

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, then a collector for the new env (which must implement the group-rollout protocol)."""
        super().set_env(env, force_reset)
        check_group_env(self.env)
        self.close_rollout_workers()  # they play the old env's games
        self._make_collector()

    def _excluded_save_params(self) -> list[str]:
        # The collector holds the env and the buffer; both are rebuilt from the saved settings.
        return [*super()._excluded_save_params(), "collector", "_fresh_obs", "_resume_state", "_ray_rollouts"]

    def save(self, path: str | Path | Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``, plus the generators, the env's games and the rollback snapshots that an exact resume
        needs (:mod:`grpo_agent.resume`)."""
        resume.save_with_state(self, path, lambda buffer: super(GRPO, self).save(buffer, exclude, include))

    @classmethod
    def load(cls, path: str | Path | Any, env: GymEnv | None = None, device: th.device | str = "auto",  # type: ignore[override]
             custom_objects: dict[str, Any] | None = None, print_system_info: bool = False, force_reset: bool = True,
             **kwargs: Any) -> GRPO:
        """SB3's ``load``, refusing a file that is not a GRPO model zip for ``env`` with a message naming it; the
        saved generators and games are put back when ``learn(reset_num_timesteps=False)`` continues the run."""
        data = resume.read_checkpoint(path, env)
        return resume.load_with_state(data, lambda buffer: super(GRPO, cls).load(
            buffer, env, device, custom_objects, print_system_info, force_reset, **kwargs))

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "ref_policy"], []

    def sync_reference(self) -> None:
        """Copy the current policy into the reference policy."""
        self.ref_policy.load_state_dict(self.policy.state_dict())

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # SB3's version, times the rollbacks' learning-rate factors.
        lr = self.lr_schedule(self._current_progress_remaining) * self.guardrails.lr_factor()
        self.logger.record("train/learning_rate", lr)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            update_learning_rate(optimizer, lr)

    # -- rollout -----------------------------------------------------------------------------------------

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        # SB3 resets the env here to have a first observation: make that reset the first rollout's group reset,
        # instead of one whose games are thrown away.
        assert self.env is not None and self.collector is not None, "GRPO has no env; pass one to the constructor, load() or set_env()"
        # Continuing a loaded run: its generators and games come back (and SB3 does not reset the games).
        carried = resume.restore(self, self._resume_state) if self._resume_state and not reset_num_timesteps else None
        self._resume_state = None
        if self.collector.reset_options is not None:
            self.env.set_options(self.collector.reset_options)
        last_obs = self._last_obs
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        self._fresh_obs = self._last_obs if self._last_obs is not last_obs else carried  # type: ignore[assignment]
        return result

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: GroupRolloutBuffer | MoveGroupBuffer
    ) -> bool:
        """Have the collector play and finish one rollout into ``rollout_buffer``; log its ``rollout/`` metrics.

        The policy samples at the configured ``temperature`` times the guards' boosts; ``callback.on_step()`` is
        called after every vector step, with ``num_timesteps`` grown by ``num_envs`` as in SB3. The statistics
        (keys without the ``rollout/`` prefix) are kept in :attr:`last_rollout_stats`.

        :return: False if a callback asked to stop.
        """
        assert self.collector is not None and env is self.env and rollout_buffer is self.collector.buffer
        callback.on_rollout_start()

        def on_step(n_plies: int, step_locals: dict[str, Any]) -> bool:
            self.num_timesteps += n_plies
            callback.update_locals(step_locals)
            return callback.on_step()

        self._rollout_temperature = self.guardrails.temperature(self.temperature)
        start_obs, self._fresh_obs = self._fresh_obs, None
        if self.rollout_backend == "ray":
            # The workers play their own games; the driver env's reset in _setup_learn only gave SB3 its first obs.
            if self._ray_rollouts is None:
                self._ray_rollouts = RayRollouts(self)
            stats = self._ray_rollouts.collect(self.policy, self._rollout_temperature, self.temperature, on_step)
        else:
            stats = self.collector.collect(self.policy, self._rollout_temperature, self.temperature, on_step, start_obs)
        if stats is None:
            return False
        for key, value in stats.items():
            self.logger.record(f"rollout/{key}", value)
        self.last_rollout_stats = stats
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def close_rollout_workers(self) -> None:
        """Stop the Ray rollout workers, if any were started (a later rollout starts new ones)."""
        if self._ray_rollouts is not None:
            self._ray_rollouts.shutdown()
            self._ray_rollouts = None

    # -- guards ------------------------------------------------------------------------------------------

    def _restorable(self) -> dict[str, Any]:
        """What a rollback restores: the networks, the optimizer and the controllers."""
        objects: dict[str, Any] = {
            "policy": self.policy,
            "optimizer": self.policy.optimizer,
            "ref_policy": self.ref_policy,
        }
        for name in ("kl_controller", "ent_coef_controller"):
            if getattr(self.guardrails, name) is not None:
                objects[name] = getattr(self.guardrails, name)
        return objects

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

    def train(self) -> None:
        """Update the policy on the current rollout: ``n_epochs`` passes of minibatches of trained plies.

        An update that makes no optimizer step (dynamic sampling left no ply, ``target_kl`` stopped the first
        minibatch, every minibatch was non-finite) is counted in ``train/skipped_updates`` and printed. After
        ``max_nonfinite`` non-finite minibatches in a row the update ends and :meth:`learn` stops the run.
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        coefs = {
            "clip_range": self.clip_range(progress),  # type: ignore[operator]
            "clip_range_high": self.clip_range_high(progress),  # type: ignore[operator]
            "ent_coef": self.guardrails.ent_coef(self.ent_coef, progress),  # type: ignore[arg-type]
            "kl_coef": self.guardrails.kl_coef(self.kl_coef, progress),  # type: ignore[arg-type]
        }
        # The loss reads the reference with a KL penalty, or with a controller that adapts one.
        with_reference = coefs["kl_coef"] > 0 or self.guardrails.kl_controller is not None
        if with_reference and self.n_epochs > 1:
            # One reference pass per position per update, not per epoch (the reference does not change meanwhile).
            self.rollout_buffer.compute_reference(self.ref_policy, self._rollout_temperature, self.batch_size)
        history: dict[str, list[float]] = {}
        first: dict[str, float] | None = None
        steps, nonfinite_skips, why_skipped = 0, 0, "dynamic sampling left no trained ply"
        for epoch in range(self.n_epochs):
            stop = False
            for data in self.rollout_buffer.get(self.batch_size):
                # Without a KL term the reference is still watched, on the first minibatch only (one forward).
                watch = not with_reference and first is None
                loss, stats = minibatch_loss(self.policy, self.ref_policy if with_reference or watch else None, data,
                                             self._rollout_temperature, coefs, self.kl_estimator, with_reference)
                if first is None:
                    # Straight after the rollout the policy is the sampling policy: any deviation here is a
                    # log-probability mismatch (temperature, masking, train/eval mode), not learning.
                    first = {"ratio_dev_first_batch": stats["ratio_dev"]}
                    if watch:
                        first["kl_ref"] = stats.pop("kl_ref")
                if self.target_kl is not None and stats["approx_kl"] > 1.5 * self.target_kl:
                    why_skipped = f"target_kl: approx_kl {stats['approx_kl']:.4f} > 1.5 * {self.target_kl} at epoch {epoch}"
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {epoch} due to reaching max kl: {stats['approx_kl']:.4f}")
                    stop = True
                    break
                verdict = guarded_step(self.policy, loss, stats, self.guardrails.nonfinite, self.max_grad_norm,
                                       self.verbose)
                if verdict is NonFiniteAction.OK:
                    steps += 1
                    for key, value in stats.items():
                        history.setdefault(key, []).append(value)
                elif verdict is NonFiniteAction.STOP:
                    self._nonfinite_stop = stop = True
                    break
                else:
                    nonfinite_skips += 1
                    why_skipped = "non-finite losses"
            self._n_updates += 1
            if stop:
                break
        if steps == 0:
            self.skipped_updates += 1
            print(f"rollout {self.n_rollouts + 1}: the update made no optimizer step ({why_skipped}); "
                  f"{self.skipped_updates} skipped so far")
        self.logger.record("guard/nonfinite_skipped_update", float(nonfinite_skips))
        self._log_update(history, first or {}, coefs)

    def _log_update(self, history: dict[str, list[float]], first: dict[str, float], coefs: dict[str, float]) -> None:
        """Record the update's ``train/`` metrics and feed the adaptive KL controller."""
        trained = self.rollout_buffer.trained
        summary = {key: mean_of_numbers(values) for key, values in history.items() if key != "ratio_dev"}
        summary.update(first)
        summary.update(
            advantage_std=float(self.rollout_buffer.advantages[self.rollout_buffer.weights > 0].std()) if trained.any() else 0.0,
            temperature=self._rollout_temperature,
            skipped_updates=float(self.skipped_updates),
            **coefs,
        )
        for key, value in self.guardrails.after_update(summary.get("kl_ref"), int(trained.sum())).items():
            summary[key.removeprefix("train/")] = value
        for key, value in summary.items():
            self.logger.record(key if key.startswith("guard/") else f"train/{key}", value)
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

        Each iteration: a rollout, the guardrails' decision on its metrics, the update (skipped after a
        rollback), the reference refresh. A guard ``"stop"`` or too many non-finite minibatches save
        ``guard_stop_<timesteps>.zip``, print why and end the loop cleanly (:attr:`stop_reason`,
        :attr:`stop_checkpoint`; callbacks still get ``on_training_end``). Logs are written after each update
        (every ``log_interval`` rollouts, and always for the stopping one), so a rollout's metrics and its
        update's metrics share one row.
        """
        iteration = 0
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        self.stop_reason = self.stop_checkpoint = None
        self._nonfinite_stop = False
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        while self.num_timesteps < total_timesteps:
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            decision = self.guardrails.after_rollout(self.last_rollout_stats, self._restorable())
            for message in decision.messages:
                print(message)
            for key, value in decision.logs.items():
                self.logger.record(key, value)
            if decision.verdict == "train":
                self.train()
            self.n_rollouts += 1
            if decision.verdict == "stop" or self._nonfinite_stop:
                self._guard_stop(decision.stop_reason or self.guardrails.nonfinite.message())
            elif self.ref_update_interval > 0 and self.n_rollouts % self.ref_update_interval == 0 and decision.verdict == "train":
                self.sync_reference()
            stopped = self.stop_reason is not None
            # Counted over the run, not this call: a resumed run logs the rollouts an uninterrupted one would.
            if stopped or (log_interval is not None and self.n_rollouts % log_interval == 0):
                self.dump_logs(iteration)
            if stopped:
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
