"""Group-relative advantages for GRPO.

All arrays are group-shaped ``(n_groups, group_size, horizon)``: ``n_groups`` start positions, ``group_size``
trajectories from each, ``horizon`` plies. ``valid`` marks the plies that were actually played; a finished
game is padded with ``valid=False`` until the end of the rollout, and pads never take part in a mean, a spread
or a result (their advantage is exactly 0).

Modes (``advantage=``):

* ``"step"``: the reward of ply ``t``, centered across the group's trajectories at the same ply ``t``.
* ``"return"``: the reward-to-go from ply ``t`` (from the point of view of the side that played ply ``t``),
  centered across the group at the same ply.
* ``"outcome"``: classic GRPO, one value per trajectory (its whole return from the first mover's point of
  view), centered across the group and given to every ply of the trajectory (negated on the plies of the
  other side when the rollout is self-play).

Scales (``scale=``):

* ``"none"``: centered values as they are (the gradient scale follows the reward scale).
* ``"std"``: divided by ``std + eps`` where ``std`` is the spread of the very values that were centered
  (the group at that ply, or the group's trajectories for ``"outcome"``).
* ``"rms"``: divided by ``rms + eps`` with ``rms`` the root-mean-square of all centered advantages of the
  batch (over ``weights_mask``): one global scale, so groups whose trajectories barely differ keep small
  advantages instead of being blown up to unit size.

``eps`` is in reward units and is the reason a near-zero spread cannot explode: a centered value ``d``
becomes at most ``|d| / eps``, so with the default ``eps=1e-2`` a spread of 1e-6 (engine noise) stays ~1e-4
instead of becoming +-1 as it would with the usual ``1e-8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

AdvantageMode = Literal["step", "return", "outcome"]
AdvantageScale = Literal["none", "std", "rms"]
ADVANTAGE_MODES: tuple[str, ...] = ("step", "return", "outcome")
ADVANTAGE_SCALES: tuple[str, ...] = ("none", "std", "rms")
LOSS_AGGREGATIONS: tuple[str, ...] = ("token", "sequence")


def _check_options(advantage: str, scale: str, eps: float, gamma: float) -> None:
    if advantage not in ADVANTAGE_MODES:
        raise ValueError(f"advantage must be one of {ADVANTAGE_MODES}, got {advantage!r}")
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"advantage_scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if not eps > 0:
        raise ValueError(f"advantage_eps must be > 0, got {eps}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


@dataclass(frozen=True)
class AdvantageConfig:
    """How a finished rollout becomes advantages and loss weights (GRPO's keyword arguments of those names).

    :param advantage: ``"step"``, ``"return"`` or ``"outcome"`` (see the module docstring)
    :param scale: ``"none"``, ``"std"`` or ``"rms"``
    :param eps: added to the spread before dividing, in reward units (> 0)
    :param gamma: discount of the reward-to-go, in ``[0, 1]``
    :param loss_aggregation: ``"token"`` (every trained ply weighs the same) or ``"sequence"`` (mean per
        trajectory, then over trajectories)
    :param drop_zero_std_groups: dynamic sampling: groups whose trained plies would all get advantage 0 leave
        the update
    :param zero_std_tol: spread (reward units, peak to peak) at or below which a group has no spread (>= 0)
    """

    advantage: AdvantageMode = "step"
    scale: AdvantageScale = "none"
    eps: float = 1e-2
    gamma: float = 1.0
    loss_aggregation: Literal["token", "sequence"] = "token"
    drop_zero_std_groups: bool = False
    zero_std_tol: float = 1e-6

    def __post_init__(self) -> None:
        _check_options(self.advantage, self.scale, self.eps, self.gamma)
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {self.loss_aggregation!r}")
        if not self.zero_std_tol >= 0:
            raise ValueError(f"zero_std_tol must be >= 0, got {self.zero_std_tol}")


def _check_shapes(rewards: np.ndarray, valid: np.ndarray) -> None:
    if rewards.ndim != 3:
        raise ValueError(f"rewards must be shaped (n_groups, group_size, horizon), got shape {rewards.shape}")
    if valid.shape != rewards.shape:
        raise ValueError(f"valid has shape {valid.shape}, expected the rewards shape {rewards.shape}")


def reward_to_go(
    rewards: np.ndarray,
    valid: np.ndarray,
    signs: np.ndarray | None = None,
    gamma: float = 1.0,
) -> np.ndarray:
    """Reward-to-go ``R_t = r_t + gamma * sum_{k>t} gamma^(k-t-1) * s_t * s_k * r_k`` over the played plies.

    :param rewards: ``(B, G, T)`` reward of each ply, from the point of view of the side that played it.
    :param valid: ``(B, G, T)`` bool, True for plies that were played; pads contribute nothing.
    :param signs: ``(B, G, T)`` of +-1: the side that played ply ``t`` relative to the first mover. In
        self-play the plies alternate sides, so the opponent's rewards count negatively (zero-sum); ``None``
        means every ply is the same agent's (in-env opponent).
    :param gamma: discount factor in ``[0, 1]``.
    :return: ``(B, G, T)`` float32, 0 on pads, from the point of view of the side that played ply ``t``.
    """
    _check_shapes(rewards, valid)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    r = np.where(valid, rewards, 0.0).astype(np.float64)
    s = np.ones_like(r) if signs is None else np.asarray(signs, dtype=np.float64)
    # Accumulate in the first mover's frame, where the sum is a plain discounted sum, then convert back.
    r_first = r * s
    out = np.zeros_like(r)
    running = np.zeros(r.shape[:2])
    for t in range(r.shape[2] - 1, -1, -1):
        running = r_first[:, :, t] + gamma * running
        out[:, :, t] = running
    return np.where(valid, out * s, 0.0).astype(np.float32)


def masked_group_center(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Center ``values`` across the group axis (axis 1) over valid entries only.

    :return: ``(centered, std)``: centered values (0 on pads) and the population standard deviation of the
        valid entries, broadcastable to ``values`` (0 where fewer than two entries are valid).
    """
    v = np.where(valid, values, 0.0).astype(np.float64)
    count = valid.sum(axis=1, keepdims=True)
    safe = np.maximum(count, 1)
    mean = v.sum(axis=1, keepdims=True) / safe
    centered = np.where(valid, v - mean, 0.0)
    std = np.sqrt((centered**2).sum(axis=1, keepdims=True) / safe)
    return centered, std


def group_advantages(
    rewards: np.ndarray,
    valid: np.ndarray,
    advantage: AdvantageMode = "step",
    scale: AdvantageScale = "none",
    eps: float = 1e-2,
    signs: np.ndarray | None = None,
    gamma: float = 1.0,
    weights_mask: np.ndarray | None = None,
    returns: np.ndarray | None = None,
) -> np.ndarray:
    """Group-relative advantages.

    :param rewards: ``(B, G, T)`` per-ply rewards from the point of view of the side that played the ply.
    :param valid: ``(B, G, T)`` bool mask of the played plies.
    :param advantage: ``"step"``, ``"return"`` or ``"outcome"`` (see the module docstring).
    :param scale: ``"none"``, ``"std"`` or ``"rms"`` (see the module docstring).
    :param eps: added to the spread before dividing, in reward units; must be > 0.
    :param signs: ``(B, G, T)`` +-1, the side of ply ``t`` relative to the first mover (self-play), or
        ``None`` when every ply is the agent's.
    :param gamma: discount of the reward-to-go (``"return"`` and ``"outcome"``).
    :param weights_mask: ``(B, G, T)`` bool, the plies that will be trained on; the ``"rms"`` scale is computed
        over them (defaults to ``valid``). Centering always uses every valid ply so that the side not being
        trained never shifts the other side's baseline.
    :param returns: the :func:`reward_to_go` of these rewards, when the caller has it already.
    :return: ``(B, G, T)`` float32 advantages, exactly 0 on pads.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    _check_shapes(rewards, valid)
    _check_options(advantage, scale, eps, gamma)
    if returns is None and advantage != "step":
        returns = reward_to_go(rewards, valid, signs, gamma)

    if advantage == "outcome":
        first = valid[:, :, :1]
        total = returns[:, :, :1]
        # reward_to_go is in the frame of ply 0's mover, i.e. the trajectory outcome for the first mover.
        centered, std = masked_group_center(total, first)
        if scale == "std":
            centered = centered / (std + eps)
        s = np.ones_like(rewards) if signs is None else np.asarray(signs, dtype=np.float64)
        adv = np.where(valid, centered * s, 0.0)
    else:
        values = rewards if advantage == "step" else returns
        adv, std = masked_group_center(values, valid)
        if scale == "std":
            adv = np.where(valid, adv / (std + eps), 0.0)

    if scale == "rms":
        mask = valid if weights_mask is None else (np.asarray(weights_mask, dtype=bool) & valid)
        n = mask.sum()
        rms = float(np.sqrt((adv[mask] ** 2).sum() / n)) if n > 0 else 0.0
        adv = adv / (rms + eps)
    return adv.astype(np.float32)
