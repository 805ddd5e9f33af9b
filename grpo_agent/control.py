"""Controllers of GRPO's coefficients and the guardrails coordinator.

The controllers (adaptive KL, target entropy) take one statistic per update and return a coefficient; the
guards (:mod:`grpo_agent.guards`) take one statistic per rollout and return a decision. :class:`Guardrails`
holds all of them for one run: it answers what the next rollout and update use (temperature, ``ent_coef``,
``kl_coef``, learning-rate factor) and turns a rollout's statistics into one :class:`RolloutDecision` that
:class:`~grpo_agent.grpo.GRPO` carries out. Nothing here touches the algorithm, the policy or the env.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grpo_agent.guards import ON_COLLAPSE, CollapseGuard, GuardEvent, NonFiniteGuard, _load

__all__ = ["AdaptiveKLController", "Guardrails", "RolloutDecision", "TargetEntropyController"]


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _check_bounds(min_coef: float, max_coef: float, init: float, init_name: str) -> None:
    _positive("min_coef", min_coef)
    _positive("max_coef", max_coef)
    if min_coef > max_coef:
        raise ValueError(f"min_coef={min_coef} must be <= max_coef={max_coef}")
    if not min_coef <= init <= max_coef:
        raise ValueError(f"{init_name}={init} must lie in [min_coef={min_coef}, max_coef={max_coef}]")


class AdaptiveKLController:
    """Proportional controller of the KL coefficient (Ziegler et al. 2019, "Fine-Tuning Language Models from
    Human Preferences", section 2.2).

    After each update with measured ``kl`` (``train/kl_ref``, the KL to the reference policy)::

        error = clip(kl / kl_target - 1, -0.2, 0.2)
        kl_coef *= 1 + error * n_steps / horizon

    then ``kl_coef`` is clipped to ``[min_coef, max_coef]``. A KL above the target raises the penalty, a KL
    below lowers it; the clipped error bounds the change to ``0.2 * n_steps / horizon`` per update, so
    ``horizon`` (in the same unit as ``n_steps``, e.g. trained plies) sets how fast it reacts.

    This is *not* SB3's ``target_kl``, which keeps its SB3 meaning in GRPO (stop the epoch loop early when
    ``approx_kl > 1.5 * target_kl``).

    :param init_kl_coef: starting coefficient (> 0: a multiplicative controller cannot leave 0).
    :param kl_target: the KL (nats) to hold.
    :param horizon: steps over which a sustained 20% error changes the coefficient by about ``e^0.2``.
    :param min_coef: lower bound of the coefficient.
    :param max_coef: upper bound of the coefficient.
    """

    def __init__(
        self,
        init_kl_coef: float = 0.05,
        kl_target: float = 0.02,
        horizon: float = 10_000,
        min_coef: float = 1e-4,
        max_coef: float = 10.0,
    ) -> None:
        self.kl_coef = _positive("init_kl_coef", init_kl_coef)
        self.kl_target = _positive("kl_target", kl_target)
        self.horizon = _positive("horizon", horizon)
        _check_bounds(min_coef, max_coef, self.kl_coef, "init_kl_coef")
        self.min_coef = float(min_coef)
        self.max_coef = float(max_coef)
        self.last_kl = math.nan

    def update(self, kl: float, n_steps: int) -> float:
        """Adjust the coefficient after an update that measured ``kl`` over ``n_steps`` steps.

        A non-finite ``kl`` leaves the coefficient unchanged (the non-finite guard reports it).

        :return: the new coefficient.
        """
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        kl = float(kl)
        self.last_kl = kl
        if not math.isfinite(kl):
            return self.kl_coef
        error = float(np.clip(kl / self.kl_target - 1.0, -0.2, 0.2))
        self.kl_coef = float(np.clip(self.kl_coef * (1.0 + error * n_steps / self.horizon), self.min_coef, self.max_coef))
        return self.kl_coef

    def __call__(self, _progress_remaining: float = 1.0) -> float:
        """The current coefficient; callable like an SB3 schedule so GRPO can use it in place of one."""
        return self.kl_coef

    _STATE = ("kl_coef", "kl_target", "horizon", "min_coef", "max_coef", "last_kl")

    def state_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load(self, state, self._STATE)



class TargetEntropyController:
    """Keeps the policy's normalized entropy (``train/entropy_norm`` = entropy / log #legal) near a target by
    adjusting ``ent_coef`` in log space, like SAC's temperature::

        log ent_coef += lr * (target_fraction - entropy_norm)

    then ``ent_coef`` is clipped to ``[min_coef, max_coef]``. Entropy below the target raises the bonus;
    entropy above lowers it. The target is a fraction of the maximum entropy ``log(#legal)``, so one number is
    meaningful in positions with 3 or 40 legal moves (0.5 is about ``sqrt(#legal)`` effective moves).

    :param target_fraction: normalized entropy to hold, in ``(0, 1)``.
    :param init_coef: starting ``ent_coef``.
    :param lr: step size in log space per unit of error (a 0.1 error moves the coefficient by ``e^(0.1 lr)``).
    :param min_coef: lower bound of ``ent_coef``.
    :param max_coef: upper bound of ``ent_coef``.
    """

    def __init__(
        self,
        target_fraction: float = 0.5,
        init_coef: float = 0.01,
        lr: float = 1.0,
        min_coef: float = 1e-4,
        max_coef: float = 1.0,
    ) -> None:
        if not 0.0 < target_fraction < 1.0:
            raise ValueError(f"target_fraction must be in (0, 1), got {target_fraction}")
        self.target_fraction = float(target_fraction)
        self.ent_coef = _positive("init_coef", init_coef)
        self.lr = _positive("lr", lr)
        _check_bounds(min_coef, max_coef, self.ent_coef, "init_coef")
        self.min_coef = float(min_coef)
        self.max_coef = float(max_coef)
        self.last_entropy_norm = math.nan

    def update(self, entropy_norm: float) -> float:
        """Adjust ``ent_coef`` after an update that measured ``entropy_norm``; a ``nan`` (no ply with two legal
        moves) leaves it unchanged.

        :return: the new ``ent_coef``.
        """
        value = float(entropy_norm)
        self.last_entropy_norm = value
        if not math.isfinite(value):
            return self.ent_coef
        log_coef = math.log(self.ent_coef) + self.lr * (self.target_fraction - value)
        self.ent_coef = float(np.clip(math.exp(log_coef), self.min_coef, self.max_coef))
        return self.ent_coef

    def __call__(self, _progress_remaining: float = 1.0) -> float:
        """The current ``ent_coef``; callable like an SB3 schedule."""
        return self.ent_coef

    _STATE = ("target_fraction", "ent_coef", "lr", "min_coef", "max_coef", "last_entropy_norm")

    def state_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load(self, state, self._STATE)



@dataclass
class RolloutDecision:
    """What the guardrails decided on one rollout, for GRPO to carry out.

    :param verdict: ``"train"`` (update on this rollout), ``"skip"`` (a rollback restored an earlier policy:
        this rollout came from the collapsed one) or ``"stop"`` (save a checkpoint and end ``learn()``).
    :param messages: lines to print (warnings, boosts, rollbacks, recoveries).
    :param stop_reason: why the run stops (``verdict == "stop"``), else ``""``.
    :param logs: logger keys and values (``guard/*``, ``train/entropy_norm_target``).
    """

    verdict: str = "train"
    messages: list[str] = field(default_factory=list)
    stop_reason: str = ""
    logs: dict[str, float] = field(default_factory=dict)


def _initial_coef(name: str, value: Any, option: str) -> float:
    """The starting value of an adaptive coefficient: a controller multiplies it, so it must be a float > 0."""
    if callable(value) or not value > 0:
        raise ValueError(f"{option} adapts {name}, which must be a float > 0 to start from, got {name}={value!r}")
    return float(value)


class Guardrails:
    """Every guardrail of one GRPO run: the adaptive KL and target-entropy controllers, the collapse guards on
    ``rollout/entropy_norm`` and ``rollout/action_agreement_mean``, and the non-finite update guard.

    Build it with :meth:`from_options` (GRPO's flat keyword arguments). Each rollout: :meth:`after_rollout`
    with the rollout's statistics and the objects a rollback would restore; each update: :meth:`after_update`
    with its ``kl_ref``. In between, :meth:`temperature`, :meth:`ent_coef`, :meth:`kl_coef` and
    :meth:`lr_factor` say what the next rollout and update use (schedules times the guards' boosts and
    rollback factors, or the controllers' values). It pickles with an SB3 ``save`` (the guards' in-memory
    snapshots excepted).
    """

    def __init__(
        self,
        kl_controller: AdaptiveKLController | None = None,
        ent_coef_controller: TargetEntropyController | None = None,
        guards: list[CollapseGuard] | None = None,
        nonfinite: NonFiniteGuard | None = None,
    ) -> None:
        self.kl_controller = kl_controller
        self.ent_coef_controller = ent_coef_controller
        self.guards = list(guards or [])
        self.nonfinite = nonfinite if nonfinite is not None else NonFiniteGuard()

    @classmethod
    def from_options(
        cls,
        *,
        ent_coef: Any,
        kl_coef: Any,
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
        max_nonfinite: int = 3,
    ) -> Guardrails:
        """The guardrails GRPO's keyword arguments of the same names describe.

        :param ent_coef: GRPO's ``ent_coef`` (the entropy controller's starting value)
        :param kl_coef: GRPO's ``kl_coef`` (the adaptive KL controller's starting value)
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
        :param max_nonfinite: consecutive non-finite minibatches that stop the run (default 3)

        Raises:
            ValueError: a value out of range, named with the option.
        """
        if on_collapse not in ON_COLLAPSE:
            raise ValueError(f"on_collapse must be one of {ON_COLLAPSE}, got {on_collapse!r}")
        if entropy_floor is not None and not 0.0 < entropy_floor < 1.0:
            raise ValueError(f"entropy_floor must be in (0, 1) (a fraction of log #legal) or None, got {entropy_floor}")
        if agreement_ceiling is not None and not 0.0 < agreement_ceiling <= 1.0:
            raise ValueError(f"agreement_ceiling must be in (0, 1] or None, got {agreement_ceiling}")
        if int(max_nonfinite) != max_nonfinite or max_nonfinite < 1:
            raise ValueError(f"max_nonfinite must be an integer >= 1, got {max_nonfinite}")
        boost_targets = tuple(boost_targets)
        guards_on = entropy_floor is not None or agreement_ceiling is not None
        if guards_on and on_collapse == "boost" and "ent_coef" in boost_targets and target_entropy is None:
            if not callable(ent_coef) and not ent_coef > 0:
                raise ValueError(
                    f"on_collapse='boost' multiplies ent_coef, which is {ent_coef}: set ent_coef > 0 or "
                    f"boost_targets=('temperature',)"
                )
        kl_controller = None
        if kl_target is not None:
            kl_controller = AdaptiveKLController(
                _initial_coef("kl_coef", kl_coef, "kl_target"), kl_target, kl_horizon, *kl_coef_bounds
            )
        ent_coef_controller = None
        if target_entropy is not None:
            if not 0.0 < target_entropy < 1.0:
                raise ValueError(f"target_entropy must be in (0, 1) (a fraction of log #legal), got {target_entropy}")
            ent_coef_controller = TargetEntropyController(
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
        guards = []
        if entropy_floor is not None:
            guards.append(CollapseGuard("entropy_norm", entropy_floor, name="entropy", **guard_kwargs))
        if agreement_ceiling is not None:
            guards.append(CollapseGuard("action_agreement_mean", agreement_ceiling, name="agreement", **guard_kwargs))
        return cls(kl_controller, ent_coef_controller, guards, NonFiniteGuard(max_nonfinite))

    # -- what the next rollout and update use -----------------------------------------------------------

    def _product(self, attribute: str) -> float:
        return float(np.prod([getattr(guard, attribute) for guard in self.guards])) if self.guards else 1.0

    def temperature(self, base: float) -> float:
        """The rollout temperature: ``base`` times the guards' temperature boosts."""
        return base * self._product("temperature_multiplier")

    def ent_coef(self, schedule: Callable[[float], float], progress_remaining: float) -> float:
        """The entropy coefficient: the controller's (or the schedule's) value times the guards' boosts."""
        base = self.ent_coef_controller() if self.ent_coef_controller is not None else schedule(progress_remaining)
        return float(base) * self._product("ent_coef_multiplier")

    def kl_coef(self, schedule: Callable[[float], float], progress_remaining: float) -> float:
        """The KL coefficient: the adaptive controller's, else the schedule's."""
        return float(self.kl_controller() if self.kl_controller is not None else schedule(progress_remaining))

    def lr_factor(self) -> float:
        """The product of the rollbacks' learning-rate factors (1 without a rollback)."""
        return self._product("lr_multiplier")

    # -- decisions --------------------------------------------------------------------------------------

    def after_rollout(self, stats: Mapping[str, float], restorable: Mapping[str, Any]) -> RolloutDecision:
        """Feed a rollout's statistics to the entropy controller and the collapse guards; restore a snapshot when
        a guard rolls back.

        The statistics describe the policy that sampled the rollout, i.e. the parameters before this rollout's
        update, so the rollback guards snapshot exactly those (``restorable``: name -> object with
        ``state_dict()``) and keep the snapshot if they prove healthy.
        """
        for guard in self.guards:
            if guard.on_collapse == "rollback":
                guard.snapshot(restorable)
        decision = RolloutDecision()
        if self.ent_coef_controller is not None:
            self.ent_coef_controller.update(stats.get("entropy_norm", math.nan))
            decision.logs["train/entropy_norm_target"] = self.ent_coef_controller.target_fraction
        for guard in self.guards:
            action = guard.update(stats.get(guard.metric, math.nan))
            if action.event is GuardEvent.STOP:
                decision.verdict, decision.stop_reason = "stop", action.message
            elif action.event is GuardEvent.ROLLBACK and decision.verdict == "train":
                guard.restore(restorable)
                decision.verdict = "skip"
                decision.messages.append(action.message)
            elif action.message:
                decision.messages.append(action.message)
            decision.logs.update(guard.as_log_dict())
        if self.guards:
            for what in ("ent_coef", "temperature", "lr"):
                decision.logs[f"guard/{what}_multiplier"] = self._product(f"{what}_multiplier")
        return decision

    def after_update(self, kl_ref: float | None, n_plies: int) -> dict[str, float]:
        """Feed an update's ``train/kl_ref`` to the adaptive KL controller; return the logs of the update's guards."""
        logs = dict(self.nonfinite.as_log_dict())
        if self.kl_controller is not None and kl_ref is not None:
            self.kl_controller.update(kl_ref, n_plies)
            logs["train/kl_target"] = self.kl_controller.kl_target
        return logs
