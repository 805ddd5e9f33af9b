"""Controllers and guardrails for GRPO: adaptive KL, target entropy, collapse and non-finite guards,
dynamic sampling and first-ply Dirichlet noise.

Everything here is algorithm-agnostic: the controllers take one statistic per update and return decisions
and coefficients; :class:`~grpo_agent.grpo.GRPO` applies them. Each class has ``state_dict()`` /
``load_state_dict()`` (plain Python values, so they pickle with an SB3 ``save``) and ``as_log_dict()`` with the
logger keys of ``shared/DESIGN.md``.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from grpo_agent.diagnostics import zero_std_groups

__all__ = [
    "AdaptiveKLController",
    "CollapseGuard",
    "GuardAction",
    "GuardEvent",
    "NonFiniteAction",
    "NonFiniteGuard",
    "TargetEntropyController",
    "dirichlet_mix",
    "zero_std_groups",
]


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


def _load(obj: Any, state: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{type(obj).__name__} state_dict is missing {missing}")
    for key in keys:
        setattr(obj, key, state[key])


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

    def as_log_dict(self) -> dict[str, float]:
        """``train/kl_coef`` and ``train/kl_target``."""
        return {"train/kl_coef": self.kl_coef, "train/kl_target": self.kl_target}


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

    def as_log_dict(self) -> dict[str, float]:
        """``train/ent_coef`` and ``train/entropy_norm_target``."""
        return {"train/ent_coef": self.ent_coef, "train/entropy_norm_target": self.target_fraction}


class GuardEvent(enum.IntEnum):
    """What a :class:`CollapseGuard` decided on an update (the int is logged as ``guard/<name>_action``)."""

    NONE = 0
    WARN = 1
    BOOST = 2
    STOP = 3
    ROLLBACK = 4
    RECOVERED = 5


@dataclass(frozen=True)
class GuardAction:
    """A guard's decision and the multipliers the algorithm must apply from now on.

    :param event: what happened.
    :param ent_coef_multiplier: multiply ``ent_coef`` by this (1 = no boost).
    :param temperature_multiplier: multiply the rollout temperature by this (1 = no boost).
    :param lr_multiplier: multiply the learning rate (schedule) by this (product of the rollbacks so far).
    :param message: a human-readable line for ``WARN``/``BOOST``/``STOP``/``ROLLBACK``/``RECOVERED`` (empty
        for ``NONE``): print it.
    """

    event: GuardEvent
    ent_coef_multiplier: float = 1.0
    temperature_multiplier: float = 1.0
    lr_multiplier: float = 1.0
    message: str = ""

    @property
    def should_stop(self) -> bool:
        return self.event is GuardEvent.STOP


#: the direction in which each known metric is bad
DEFAULT_MODES: dict[str, str] = {
    "entropy_norm": "below",
    "entropy": "below",
    "action_agreement_mean": "above",
    "action_agreement_p90": "above",
    "group_reward_std": "below",
    "group_step_reward_std": "below",
    "frac_reward_zero_std": "above",
    "policy_diversity_kl": "below",
}
ON_COLLAPSE = ("warn", "boost", "stop", "rollback")
BOOST_TARGETS = ("ent_coef", "temperature")


class CollapseGuard:
    """Watches one health metric per update and acts after ``patience`` consecutive bad updates.

    An update is *bad* when ``value < threshold`` (``mode="below"``, e.g. ``entropy_norm``) or ``value >
    threshold`` (``mode="above"``, e.g. ``action_agreement_mean``). A ``nan`` value (metric undefined for that
    update) is ignored: it neither counts as bad nor breaks a streak. When the streak reaches ``patience`` the
    guard fires ``on_collapse`` and the streak restarts from 0, so a still-bad run fires again only after
    another ``patience`` bad updates (time for a boost to act, and no warning spam):

    * ``"warn"``: returns ``WARN`` with a message; nothing else changes.
    * ``"boost"``: multiplies the boost by ``boost_factor`` (capped at ``max_boost``); the algorithm multiplies
      ``ent_coef`` (and/or the rollout temperature, see ``boost_targets``) by it. Each healthy update decays the
      boost toward 1: ``boost = 1 + (boost - 1) * decay``.
    * ``"stop"``: returns ``STOP``; the algorithm saves a checkpoint and ends ``learn()`` with the message.
    * ``"rollback"``: returns ``ROLLBACK``; the algorithm calls :meth:`restore` (the last healthy snapshot) and
      from then on multiplies its learning rate by ``lr_multiplier`` (``rollback_lr_factor`` per rollback). With
      no healthy snapshot yet, or after ``max_rollbacks`` rollbacks, it returns ``STOP`` instead.

    The first healthy update after a firing returns ``RECOVERED``.

    Snapshots (only needed for ``"rollback"``): call :meth:`snapshot` with the objects to save *before* the
    update whose metric is about to be measured (the metric of an update describes the policy that was sampled
    and trained from, i.e. the parameters before the optimizer step). :meth:`update` then commits that staged
    snapshot if the value is healthy and drops it otherwise, so the committed snapshot is always parameters
    whose metric was measured healthy. Snapshots are deep copies in memory and are not pickled.

    :param metric: the name of the watched statistic (a key of the rollout/train stats, e.g. ``"entropy_norm"``).
    :param threshold: the bad side starts beyond this value.
    :param patience: consecutive bad updates before acting (>= 1).
    :param on_collapse: ``"warn"``, ``"boost"``, ``"stop"`` or ``"rollback"``.
    :param mode: ``"below"`` or ``"above"``; ``None`` takes the metric's natural direction (``DEFAULT_MODES``).
    :param boost_factor: boost multiplier per firing (> 1).
    :param max_boost: cap of the ``ent_coef`` multiplier (>= 1).
    :param decay: per healthy update, the fraction of ``boost - 1`` kept (in ``[0, 1)``).
    :param boost_targets: what the boost multiplies: ``("ent_coef",)``, ``("temperature",)`` or both.
    :param max_temperature_boost: cap of the temperature multiplier (>= 1): temperature is a blunter lever,
        so it gets its own, smaller cap.
    :param rollback_lr_factor: learning-rate multiplier applied at each rollback, in ``(0, 1]``.
    :param max_rollbacks: rollbacks allowed before the guard stops the run instead.
    :param snapshot_margin: a snapshot is kept only when the value is healthy by at least this much (in the
        metric's units, ``>= 0``): a policy just above the floor is about to collapse, and rolling back to it
        only repeats the collapse.
    :param name: prefix of the log keys (default: ``metric``).
    """

    def __init__(
        self,
        metric: str = "entropy_norm",
        threshold: float = 0.2,
        patience: int = 5,
        on_collapse: str = "warn",
        mode: str | None = None,
        boost_factor: float = 2.0,
        max_boost: float = 10.0,
        decay: float = 0.9,
        boost_targets: tuple[str, ...] = ("ent_coef",),
        max_temperature_boost: float = 1.5,
        rollback_lr_factor: float = 0.5,
        max_rollbacks: int = 3,
        snapshot_margin: float = 0.0,
        name: str | None = None,
    ) -> None:
        if not metric:
            raise ValueError("metric must be a non-empty name")
        if mode is None:
            if metric not in DEFAULT_MODES:
                raise ValueError(f"metric {metric!r} has no default mode; pass mode='below' or mode='above'")
            mode = DEFAULT_MODES[metric]
        if mode not in ("below", "above"):
            raise ValueError(f"mode must be 'below' or 'above', got {mode!r}")
        if on_collapse not in ON_COLLAPSE:
            raise ValueError(f"on_collapse must be one of {ON_COLLAPSE}, got {on_collapse!r}")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        if int(patience) != patience or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience}")
        if not boost_factor > 1:
            raise ValueError(f"boost_factor must be > 1, got {boost_factor}")
        if not max_boost >= 1:
            raise ValueError(f"max_boost must be >= 1, got {max_boost}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        boost_targets = tuple(boost_targets)
        if not boost_targets or any(t not in BOOST_TARGETS for t in boost_targets):
            raise ValueError(f"boost_targets must be a non-empty subset of {BOOST_TARGETS}, got {boost_targets}")
        if not max_temperature_boost >= 1:
            raise ValueError(f"max_temperature_boost must be >= 1, got {max_temperature_boost}")
        if not 0.0 < rollback_lr_factor <= 1.0:
            raise ValueError(f"rollback_lr_factor must be in (0, 1], got {rollback_lr_factor}")
        if int(max_rollbacks) != max_rollbacks or max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be an integer >= 0, got {max_rollbacks}")
        if not snapshot_margin >= 0:
            raise ValueError(f"snapshot_margin must be >= 0, got {snapshot_margin}")
        self.metric = metric
        self.threshold = float(threshold)
        self.patience = int(patience)
        self.on_collapse = on_collapse
        self.mode = mode
        self.boost_factor = float(boost_factor)
        self.max_boost = float(max_boost)
        self.decay = float(decay)
        self.boost_targets = boost_targets
        self.max_temperature_boost = float(max_temperature_boost)
        self.rollback_lr_factor = float(rollback_lr_factor)
        self.max_rollbacks = int(max_rollbacks)
        self.snapshot_margin = float(snapshot_margin)
        self.name = name or metric
        # dynamic state (state_dict)
        self.consecutive = 0
        self.collapsed = False
        self.boost = 1.0
        self.lr_multiplier = 1.0
        self.n_fired = 0
        self.n_rollbacks = 0
        self.last_value = math.nan
        self.last_event = GuardEvent.NONE
        # in-memory snapshots (never saved)
        self._staged: dict[str, Any] | None = None
        self._healthy: dict[str, Any] | None = None

    # -- decisions -----------------------------------------------------------------------------------------

    def is_bad(self, value: float) -> bool:
        """Whether ``value`` is on the bad side of the threshold (``nan`` is never bad)."""
        return value < self.threshold if self.mode == "below" else value > self.threshold

    @property
    def ent_coef_multiplier(self) -> float:
        return self.boost if "ent_coef" in self.boost_targets else 1.0

    @property
    def temperature_multiplier(self) -> float:
        return min(self.boost, self.max_temperature_boost) if "temperature" in self.boost_targets else 1.0

    def _action(self, event: GuardEvent, message: str = "") -> GuardAction:
        self.last_event = event
        return GuardAction(event, self.ent_coef_multiplier, self.temperature_multiplier, self.lr_multiplier, message)

    def update(self, value: float) -> GuardAction:
        """Feed the metric of one update; return the decision (see the class docstring)."""
        value = float(value)
        self.last_value = value
        if math.isnan(value):
            self._staged = None
            return self._action(GuardEvent.NONE)
        side = "<" if self.mode == "below" else ">"
        if not self.is_bad(value):
            margin = value - self.threshold if self.mode == "below" else self.threshold - value
            if self._staged is not None and margin >= self.snapshot_margin:
                self._healthy = self._staged
            self._staged = None
            self.consecutive = 0
            self.boost = 1.0 + (self.boost - 1.0) * self.decay
            if self.boost - 1.0 < 1e-3:
                self.boost = 1.0
            if self.collapsed:
                self.collapsed = False
                return self._action(
                    GuardEvent.RECOVERED,
                    f"[guard {self.name}] recovered: {self.metric}={value:.4g} (threshold {side} {self.threshold:g} "
                    f"no longer holds); boost now x{self.boost:.3g}",
                )
            return self._action(GuardEvent.NONE)

        self._staged = None
        self.consecutive += 1
        if self.consecutive < self.patience:
            return self._action(GuardEvent.NONE)
        self.consecutive = 0
        self.collapsed = True
        self.n_fired += 1
        what = f"{self.metric}={value:.4g} {side} {self.threshold:g} for {self.patience} consecutive updates"
        if self.on_collapse == "warn":
            return self._action(GuardEvent.WARN, f"[guard {self.name}] collapse warning: {what}")
        if self.on_collapse == "boost":
            self.boost = min(self.boost * self.boost_factor, self.max_boost)
            return self._action(
                GuardEvent.BOOST,
                f"[guard {self.name}] {what}: entropy pressure boosted to x{self.boost:.3g} "
                f"(ent_coef x{self.ent_coef_multiplier:.3g}, temperature x{self.temperature_multiplier:.3g})",
            )
        if self.on_collapse == "rollback":
            if self._healthy is None:
                return self._action(
                    GuardEvent.STOP, f"[guard {self.name}] {what}: no healthy snapshot to roll back to; stopping"
                )
            if self.n_rollbacks >= self.max_rollbacks:
                return self._action(
                    GuardEvent.STOP,
                    f"[guard {self.name}] {what}: already rolled back {self.n_rollbacks} times "
                    f"(max_rollbacks={self.max_rollbacks}); stopping",
                )
            self.n_rollbacks += 1
            self.lr_multiplier *= self.rollback_lr_factor
            return self._action(
                GuardEvent.ROLLBACK,
                f"[guard {self.name}] {what}: rolling back to the last healthy snapshot "
                f"(rollback {self.n_rollbacks}/{self.max_rollbacks}), learning rate x{self.lr_multiplier:.3g}",
            )
        return self._action(
            GuardEvent.STOP, f"[guard {self.name}] {what}: stopping training (on_collapse='stop')"
        )

    # -- snapshots -----------------------------------------------------------------------------------------

    def snapshot(self, objects: Mapping[str, Any]) -> None:
        """Stage deep copies of ``objects[k].state_dict()``; :meth:`update` commits them if its value is healthy.

        :param objects: e.g. ``{"policy": model.policy, "optimizer": model.policy.optimizer, "ref_policy":
            model.ref_policy, "kl_controller": controller}``; every value needs ``state_dict()``.
        """
        for key, obj in objects.items():
            if not hasattr(obj, "state_dict"):
                raise ValueError(f"snapshot object {key!r} ({type(obj).__name__}) has no state_dict()")
        self._staged = {key: copy.deepcopy(obj.state_dict()) for key, obj in objects.items()}

    @property
    def has_healthy_snapshot(self) -> bool:
        return self._healthy is not None

    def restore(self, objects: Mapping[str, Any]) -> None:
        """Load the last healthy snapshot into ``objects`` (the same keys that were snapshotted).

        The snapshot is kept (a second rollback goes back to the same point unless a healthier one was taken
        since). Streak and collapsed state restart from healthy.
        """
        if self._healthy is None:
            raise ValueError(f"guard {self.name!r} has no healthy snapshot to restore")
        missing = set(self._healthy) - set(objects)
        unknown = set(objects) - set(self._healthy)
        if missing or unknown:
            raise ValueError(
                f"restore objects must match the snapshot keys {sorted(self._healthy)}, got {sorted(objects)}"
            )
        for key, obj in objects.items():
            obj.load_state_dict(copy.deepcopy(self._healthy[key]))
        self._staged = None
        self.consecutive = 0

    # -- persistence and logging ---------------------------------------------------------------------------

    _STATE = ("consecutive", "collapsed", "boost", "lr_multiplier", "n_fired", "n_rollbacks", "last_value")

    def state_dict(self) -> dict[str, Any]:
        """The dynamic state (not the snapshots, which live in memory only)."""
        state = {k: getattr(self, k) for k in self._STATE}
        state["last_event"] = int(self.last_event)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load(self, state, self._STATE)
        self.last_event = GuardEvent(state.get("last_event", 0))

    def __getstate__(self) -> dict[str, Any]:
        # SB3's save() pickles the algorithm's attributes: keep model-sized snapshots out of the zip.
        state = self.__dict__.copy()
        state["_staged"] = state["_healthy"] = None
        return state

    def as_log_dict(self) -> dict[str, float]:
        """``guard/<name>_{value,state,consecutive,action,boost,lr_multiplier,fired,rollbacks}``.

        ``state``: 0 healthy, 1 bad streak under way, 2 collapsed (fired and not yet recovered); ``action``: the
        :class:`GuardEvent` of the latest update.
        """
        state = 2 if self.collapsed else (1 if self.consecutive > 0 else 0)
        p = f"guard/{self.name}_"
        return {
            p + "value": self.last_value,
            p + "state": float(state),
            p + "consecutive": float(self.consecutive),
            p + "action": float(int(self.last_event)),
            p + "boost": self.boost,
            p + "lr_multiplier": self.lr_multiplier,
            p + "fired": float(self.n_fired),
            p + "rollbacks": float(self.n_rollbacks),
        }


class NonFiniteAction(enum.IntEnum):
    """What :class:`NonFiniteGuard` decided for one optimizer step."""

    OK = 0
    SKIP = 1
    STOP = 2


@dataclass
class NonFiniteGuard:
    """Skips optimizer steps whose loss or gradient norm is NaN/inf, and stops after ``max_consecutive`` in a
    row, keeping the statistics of the offending steps for the message.

    Call :meth:`check` once per minibatch: with the loss *before* ``backward()`` (a non-finite loss must not be
    back-propagated) and again with the gradient norm returned by ``clip_grad_norm_`` before
    ``optimizer.step()``; on ``SKIP`` zero the gradients and do not step.

    :param max_consecutive: consecutive non-finite minibatches that stop the run (>= 1).
    """

    max_consecutive: int = 3
    consecutive: int = 0
    n_skipped: int = 0
    last_bad_stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.max_consecutive) != self.max_consecutive or self.max_consecutive < 1:
            raise ValueError(f"max_consecutive must be an integer >= 1, got {self.max_consecutive}")

    def check(
        self, loss: float | th.Tensor, grad_norm: float | th.Tensor | None = None, stats: Mapping[str, float] | None = None
    ) -> NonFiniteAction:
        """Decide for one minibatch.

        :param loss: the loss value.
        :param grad_norm: the total gradient norm (``None`` before ``backward``).
        :param stats: the minibatch's statistics (kept verbatim in the stop message).
        :return: ``OK`` (the streak restarts; when both checks of a minibatch are OK call it once per minibatch
            with the grad norm, so a healthy step is counted once), ``SKIP`` or ``STOP``.
        """
        values = {"loss": float(loss)}
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        if all(math.isfinite(v) for v in values.values()):
            if grad_norm is not None:
                self.consecutive = 0
            return NonFiniteAction.OK
        self.consecutive += 1
        self.n_skipped += 1
        self.last_bad_stats = {**(dict(stats) if stats else {}), **values}
        return NonFiniteAction.STOP if self.consecutive >= self.max_consecutive else NonFiniteAction.SKIP

    def message(self) -> str:
        """A line naming the offending statistics."""
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(self.last_bad_stats.items()))
        return (
            f"[guard nonfinite] {self.consecutive} consecutive non-finite updates "
            f"(max_consecutive={self.max_consecutive}, {self.n_skipped} skipped in total); last: {shown}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "n_skipped": self.n_skipped, "last_bad_stats": dict(self.last_bad_stats)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load(self, state, ("consecutive", "n_skipped", "last_bad_stats"))

    def as_log_dict(self) -> dict[str, float]:
        """``guard/nonfinite_consecutive`` and ``guard/nonfinite_skipped``."""
        return {"guard/nonfinite_consecutive": float(self.consecutive), "guard/nonfinite_skipped": float(self.n_skipped)}


def dirichlet_mix(
    probs: Any,
    legal_mask: Any,
    alpha: float = 0.3,
    frac: float = 0.25,
    rng: np.random.Generator | int | None = None,
) -> Any:
    """AlphaZero-style root noise: ``(1 - frac) * p + frac * Dir(alpha)`` over each row's legal moves.

    The noise is drawn only on legal moves (``Dir(alpha)`` of dimension ``#legal`` for each row); illegal
    entries of the result are exactly 0 and every row sums to 1.

    The algorithm must sample the action from the *mixed* distribution and store ``log(mixed[action])`` as the
    old log-probability: those are the log-probs of the distribution actually sampled. The update's importance
    ratio ``pi(a) / mixed(a)`` then corrects for the noise; storing the policy's own log-prob instead would
    silently make the ratio wrong on every noisy ply.

    :param probs: ``(N, A)`` probabilities (numpy array or torch tensor; the result has the same type, dtype
        and device).
    :param legal_mask: ``(N, A)`` bool; every row needs at least one legal move.
    :param alpha: Dirichlet concentration (> 0; AlphaZero used 0.3 for chess).
    :param frac: weight of the noise in ``[0, 1]`` (AlphaZero: 0.25).
    :param rng: numpy Generator or seed for the noise.
    """
    alpha = _positive("alpha", alpha)
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"frac must be in [0, 1], got {frac}")
    is_tensor = isinstance(probs, th.Tensor)
    p = probs.detach().cpu().double().numpy() if is_tensor else np.asarray(probs, dtype=np.float64)
    legal = legal_mask.detach().cpu().numpy() if isinstance(legal_mask, th.Tensor) else np.asarray(legal_mask)
    legal = legal.astype(bool)
    if p.ndim != 2 or legal.shape != p.shape:
        raise ValueError(f"probs and legal_mask must both be (N, A), got {p.shape} and {legal.shape}")
    n_legal = legal.sum(axis=1)
    if (n_legal == 0).any():
        raise ValueError(f"rows {np.flatnonzero(n_legal == 0).tolist()} have no legal move")
    rng = np.random.default_rng(rng)
    # Dir(alpha) on each row's legal entries = independent Gamma(alpha) draws normalized per row.
    gammas = np.zeros_like(p)
    gammas[legal] = rng.gamma(alpha, size=int(n_legal.sum()))
    sums = gammas.sum(axis=1, keepdims=True)
    # Gamma draws with a small alpha can underflow to 0 for a whole row; fall back to uniform noise there.
    noise = np.where(sums > 0, gammas / np.where(sums > 0, sums, 1.0), legal / n_legal[:, None])
    base = np.where(legal, p, 0.0)
    mass = base.sum(axis=1, keepdims=True)
    # A row whose legal moves got no probability at all (underflow) is treated as uniform over them.
    base = np.where(mass > 0, base / np.where(mass > 0, mass, 1.0), legal / n_legal[:, None])
    mixed = (1.0 - frac) * base + frac * noise
    mixed /= mixed.sum(axis=1, keepdims=True)
    if is_tensor:
        return th.as_tensor(mixed, dtype=probs.dtype, device=probs.device)
    return mixed.astype(np.asarray(probs).dtype if np.asarray(probs).dtype.kind == "f" else np.float64)
