"""Guards for GRPO: collapse guards on a rollout health metric and the non-finite update guard.

Each guard takes one statistic per rollout (or per minibatch) and returns a decision; it never touches the
algorithm. :class:`grpo_agent.control.Guardrails` holds the guards of a run and GRPO carries out what they
decide. Every guard has ``state_dict()`` / ``load_state_dict()`` (plain Python values, so they pickle with an SB3
``save``) and ``as_log_dict()`` with the ``guard/`` logger keys of ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch as th

__all__ = ["CollapseGuard", "GuardAction", "GuardEvent", "NonFiniteAction", "NonFiniteGuard", "ON_COLLAPSE", "guarded_step"]


def _load(obj: Any, state: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{type(obj).__name__} state_dict is missing {missing}")
    for key in keys:
        setattr(obj, key, state[key])


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

    @property
    def healthy_snapshot(self) -> dict[str, Any] | None:
        """The committed snapshot a rollback restores (None before the first healthy one). It is not pickled
        with the model; :mod:`grpo_agent.resume` saves it beside it, so that a resumed run can still roll back."""
        return self._healthy

    def load_snapshot(self, snapshot: dict[str, Any] | None) -> None:
        """Make ``snapshot`` (a :attr:`healthy_snapshot`) the one a rollback restores."""
        self._healthy = snapshot

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


def guarded_step(policy: Any, loss: th.Tensor, stats: dict[str, float], guard: NonFiniteGuard,
                 max_grad_norm: float | None, verbose: int = 0) -> NonFiniteAction:
    """Back-propagate ``loss`` and step ``policy.optimizer``, unless the loss or the gradient norm is not finite
    (then the gradient is dropped: a NaN/inf step would poison every parameter it touches). Adds ``grad_norm``
    and ``loss`` to ``stats`` after a step; returns ``guard``'s verdict."""
    policy.optimizer.zero_grad()
    verdict = guard.check(loss.item(), None, stats)
    if verdict is NonFiniteAction.OK:
        loss.backward()
        max_norm = max_grad_norm if max_grad_norm is not None else float("inf")
        grad_norm = th.nn.utils.clip_grad_norm_(policy.parameters(), max_norm).item()
        verdict = guard.check(loss.item(), grad_norm, stats)
    if verdict is not NonFiniteAction.OK:
        policy.optimizer.zero_grad()
        if verbose >= 1 or verdict is NonFiniteAction.STOP:
            print(f"[guard nonfinite] skipped a minibatch: {guard.message()}")
        return verdict
    policy.optimizer.step()
    stats.update(grad_norm=grad_norm, loss=loss.item())
    return verdict
