"""Group-collapse and update-health diagnostics for GRPO.

The failure these metrics exist to catch (see ``docs/architecture.md``, "Guardrails"): the policy's entropy falls, the ``G`` trajectories
played from one start position converge to the same line, their rewards stop differing, every group-relative
advantage becomes 0 and training stalls while looking busy. Global statistics such as the batch reward std can
fall for many reasons; the metrics here measure the collapse *within a group* directly.

Shapes follow the rollout buffer: ``(B, G, T)`` = ``B`` start positions (groups), ``G`` trajectories from each,
``T`` plies. Every function takes a bool mask of the entries that count (``valid``: played, non-padded plies;
pass the *trained* plies where only those matter). Masked entries never enter a count, a mean or a spread, so
whatever a pad holds cannot leak into a metric.

Conventions shared by all functions:

* A within-group statistic at ``(b, t)`` (or for board ``b``) is defined only where at least two trajectories
  are valid: one trajectory agrees with itself and has no spread, so counting it would report collapse that is
  an artefact of games having ended. Cells with fewer than two valid trajectories are left out of the mean.
* Spreads are population standard deviations (``ddof=0``), the same as :mod:`grpo_agent.advantages`.
* When nothing is left to average, the scalar functions return ``nan``; :func:`rollout_diagnostics` leaves such
  keys out of its dict rather than logging ``nan``.

Tensors are accepted wherever arrays are (they are moved to the CPU); :func:`policy_diversity_kl` and
:class:`PolicyDiversity` compute in torch because the distributions they read already live on the device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th

from grpo_agent.advantages import masked_group_center

__all__ = [
    "PolicyDiversity",
    "action_agreement",
    "action_agreement_per_ply",
    "SamplingHealth",
    "clip_fractions",
    "drift_statistics",
    "effective_sample_size",
    "frac_zero_std",
    "group_spread",
    "mean_of_numbers",
    "normalized_entropy",
    "policy_diversity_kl",
    "rollout_diagnostics",
    "within_group_reward_std",
    "within_group_step_reward_std",
    "zero_std_groups",
]


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    """An ndarray view of an array-like or a (possibly device, possibly grad-tracking) tensor."""
    if isinstance(x, th.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_mask(values: np.ndarray, valid: np.ndarray, name: str = "values") -> None:
    if valid.shape != values.shape:
        raise ValueError(f"valid has shape {valid.shape}, expected the shape of {name} {values.shape}")


def action_agreement_per_ply(actions: Any, valid: Any) -> tuple[np.ndarray, np.ndarray]:
    """Agreement of the group's actions at each (board, ply).

    ``agreement[b, t] = max_a #{g valid at (b, t): actions[b, g, t] == a} / #{g valid at (b, t)}``: 1 when every
    trajectory still playing played the same move, ``1/G`` when all differ.

    :param actions: ``(B, G, T)`` integer actions.
    :param valid: ``(B, G, T)`` bool, the plies that count.
    :return: ``(agreement, counted)``: ``(B, T)`` float64 (0 where not counted) and ``(B, T)`` bool, True where
        at least two trajectories are valid.
    """
    actions = _np(actions)
    valid = _np(valid, bool)
    if actions.ndim != 3:
        raise ValueError(f"actions must be shaped (B, G, T), got shape {actions.shape}")
    _check_mask(actions, valid, "actions")
    n_valid = valid.sum(axis=1)  # (B, T)
    # Sort each (b, t) column with the pads pushed to one end by a sentinel that no real action equals, then
    # count runs: the longest run of equal valid actions is the max count. Vectorised over all (b, t) at once.
    sentinel = actions.min(initial=0) - 1
    col = np.sort(np.where(valid, actions, sentinel), axis=1)  # (B, G, T), pads first
    same = (col[:, 1:, :] == col[:, :-1, :]) & (col[:, 1:, :] != sentinel)
    run = np.ones(col.shape, dtype=np.int64)
    for g in range(1, col.shape[1]):
        run[:, g, :] = np.where(same[:, g - 1, :], run[:, g - 1, :] + 1, 1)
    run = np.where(col != sentinel, run, 0)
    max_count = run.max(axis=1) if col.shape[1] > 0 else np.zeros(n_valid.shape, dtype=np.int64)
    counted = n_valid >= 2
    agreement = np.where(counted, max_count / np.maximum(n_valid, 1), 0.0)
    return agreement, counted


def action_agreement(actions: Any, valid: Any, q: float = 90.0) -> tuple[float, float]:
    """Mean and ``q``-th percentile of :func:`action_agreement_per_ply` over the counted (board, ply) cells.

    The percentile uses numpy's default linear interpolation. ``(nan, nan)`` when no cell has two valid
    trajectories.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be a percentile in [0, 100], got {q}")
    agreement, counted = action_agreement_per_ply(actions, valid)
    cells = agreement[counted]
    if cells.size == 0:
        return math.nan, math.nan
    return float(cells.mean()), float(np.percentile(cells, q))


def group_spread(values: Any, valid: Any) -> tuple[np.ndarray, np.ndarray]:
    """Population std and peak-to-peak range across the group axis (axis 1), valid entries only.

    :param values: ``(B, G)`` or ``(B, G, T)``.
    :param valid: bool, the shape of ``values``.
    :return: ``(std, ptp)``, each shaped like ``values`` without axis 1; both 0 where fewer than two entries
        are valid.
    """
    values = _np(values, np.float64)
    valid = _np(valid, bool)
    if values.ndim not in (2, 3):
        raise ValueError(f"values must be shaped (B, G) or (B, G, T), got shape {values.shape}")
    _check_mask(values, valid)
    _, std = masked_group_center(values, valid)
    hi = np.where(valid, values, -np.inf).max(axis=1, initial=-np.inf)
    lo = np.where(valid, values, np.inf).min(axis=1, initial=np.inf)
    several = valid.sum(axis=1) >= 2
    return np.where(several, std[:, 0], 0.0), np.where(several, hi - lo, 0.0)


def within_group_reward_std(traj_rewards: Any, traj_valid: Any) -> float:
    """Within-board spread of trajectory rewards: the std across each group's valid trajectories, averaged
    over the boards that have at least two (``rollout/group_reward_std``).

    :param traj_rewards: ``(B, G)`` one reward per trajectory (e.g. its return from the first mover's view).
    :param traj_valid: ``(B, G)`` bool, the trajectories that exist.
    """
    return _mean_group_std(traj_rewards, traj_valid, "traj_rewards", "(B, G)")


def within_group_step_reward_std(rewards: Any, valid: Any) -> float:
    """Within-board spread of per-ply rewards: the std across the group at each (board, ply), averaged over the
    (board, ply) cells with at least two valid trajectories (``rollout/group_step_reward_std``).

    :param rewards: ``(B, G, T)`` per-ply rewards.
    :param valid: ``(B, G, T)`` bool.
    """
    return _mean_group_std(rewards, valid, "rewards", "(B, G, T)")


def _mean_group_std(values: Any, valid: Any, name: str, shape: str) -> float:
    """Mean over the cells with at least two valid trajectories of the spread across the group axis."""
    values = _np(values, np.float64)
    valid = _np(valid, bool)
    if values.ndim != shape.count(",") + 1:
        raise ValueError(f"{name} must be shaped {shape}, got shape {values.shape}")
    std, _ = group_spread(values, valid)
    counted = valid.sum(axis=1) >= 2
    return float(std[counted].mean()) if counted.any() else math.nan


def zero_std_groups(values: Any, valid: Any, tol: float = 1e-6) -> np.ndarray:
    """The groups whose values have no spread, for dynamic sampling (DAPO-style): their group-relative
    advantages are all 0, so they carry no policy gradient.

    A group has no spread when ``max - min <= tol`` over its valid entries (at every ply when ``(B, G, T)``),
    or when fewer than two of its trajectories are valid (at every ply). Peak-to-peak rather than std so that
    ``tol`` reads in reward units and ``tol=0`` means exact equality.

    :param values: ``(B, G)`` trajectory rewards (``"outcome"`` advantages) or ``(B, G, T)`` per-ply values
        (the rewards for ``"step"``, the reward-to-go for ``"return"``).
    :param valid: bool, the shape of ``values``.
    :param tol: spread tolerance in reward units, >= 0.
    :return: ``(B,)`` bool, True for the groups to drop.
    """
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    _, ptp = group_spread(values, valid)
    return (ptp <= tol).reshape(ptp.shape[0], -1).all(axis=1)


def frac_zero_std(values: Any, valid: Any, tol: float = 1e-6) -> float:
    """Fraction of groups whose values have no spread (``rollout/frac_reward_zero_std``).

    A group has no spread when ``max - min <= tol`` over its valid entries (at every ply for ``(B, G, T)``
    input), or when fewer than two of its trajectories are valid: either way its group-relative advantages are
    all 0. It is the mean of :func:`zero_std_groups`.

    :param values: ``(B, G)`` trajectory rewards or ``(B, G, T)`` per-ply values.
    :param valid: bool, the shape of ``values``.
    :param tol: spread at or below which a group counts as zero-spread, in reward units (>= 0).
    """
    zero = zero_std_groups(values, valid, tol)
    return float(zero.mean()) if zero.size else math.nan


def _diversity_kl_one_ply(
    log_probs: th.Tensor, valid: th.Tensor, action_masks: th.Tensor | None
) -> tuple[th.Tensor, th.Tensor]:
    """Per-board mean over valid trajectories of ``KL(p_g || mean_valid p)`` at one ply.

    Sparse over the support: only the ``(b, g, a)`` entries with ``p > 0`` (legal moves, about 1% of the 4672
    actions) are gathered, so invalid rows (whatever they hold, NaN included) and masked actions never enter
    the arithmetic, and the cost is one pass over the dense tensor to find the support.

    :param log_probs: ``(B, G, A)``; :param valid: ``(B, G)`` bool; :param action_masks: ``(B, G, A)`` or None.
    :return: ``(kl (B,), counted (B,))``.
    """
    n_boards, group_size, n_actions = log_probs.shape
    # With masks the support is the legal moves (no pass over the floats); without, the entries with mass.
    support = action_masks.bool() if action_masks is not None else log_probs.exp() > 0  # NaN compares False
    support = support & valid.unsqueeze(-1)
    b, g, a = support.nonzero(as_tuple=True)
    logp = log_probs[b, g, a].float()
    p = logp.exp()
    keep = p > 0  # a legal move can still carry no mass (underflow); it adds nothing to any KL
    b, g, a, logp, p = b[keep], g[keep], a[keep], logp[keep], p[keep]
    n = valid.sum(dim=1).to(p.dtype)  # (B,)
    # The group's mean policy on the support; where p_g > 0 the mean holds at least p_g / n > 0.
    mean_p = th.zeros(n_boards, n_actions, dtype=p.dtype, device=p.device)
    mean_p.index_put_((b, a), p / n[b], accumulate=True)
    terms = p * (logp - th.log(mean_p[b, a]))
    kl = th.zeros(n_boards, group_size, dtype=p.dtype, device=p.device)
    kl.index_put_((b, g), terms, accumulate=True)
    kl = kl.clamp_min(0.0)  # float round-off can leave a tiny negative KL
    counted = n >= 2
    kl_mean = kl.sum(dim=1) / n.clamp_min(1)
    return th.where(counted, kl_mean, th.zeros_like(kl_mean)), counted


class PolicyDiversity:
    """Streaming :func:`policy_diversity_kl`: feed one ply at a time during the rollout.

    Keeping ``(B, G, T, A)`` distributions for ``A = 4672`` would cost ``B*G*T*A*4`` bytes (64 groups x 8 x 16
    plies is 150 MB); one ply at a time needs only the ``(B*G, A)`` distribution the rollout computes anyway.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything added (call at the start of each rollout)."""
        self._kl_sum = 0.0
        self._count = 0

    @th.no_grad()
    def add(self, log_probs: th.Tensor, valid: Any, action_masks: th.Tensor | None = None) -> None:
        """Add one ply.

        :param log_probs: ``(B, G, A)`` (or ``(B*G, A)`` with ``valid`` shaped ``(B, G)``) log-probabilities of
            the sampling distribution of each trajectory at this ply; illegal entries may be any very negative
            number or ``-inf``.
        :param valid: ``(B, G)`` bool, the trajectories whose ply counts (rows of invalid ones may hold anything).
        :param action_masks: optional ``(B, G, A)`` bool legal-move masks (entries outside get probability 0).
        """
        valid_t = th.as_tensor(_np(valid, bool), device=log_probs.device)
        if valid_t.ndim != 2:
            raise ValueError(f"valid must be shaped (B, G), got shape {tuple(valid_t.shape)}")
        shape = (*valid_t.shape, log_probs.shape[-1])
        if log_probs.shape != shape:
            if log_probs.ndim == 2 and log_probs.shape[0] == valid_t.numel():
                log_probs = log_probs.reshape(shape)
            else:
                raise ValueError(f"log_probs has shape {tuple(log_probs.shape)}, expected {shape}")
        if action_masks is not None:
            action_masks = th.as_tensor(action_masks, device=log_probs.device).reshape(shape)
        kl, counted = _diversity_kl_one_ply(log_probs, valid_t, action_masks)
        self._kl_sum += float(kl[counted].sum())
        self._count += int(counted.sum())

    def merge(self, other: PolicyDiversity) -> None:
        """Add what ``other`` counted (the groups of another worker's share of the rollout)."""
        self._kl_sum += other._kl_sum
        self._count += other._count

    @property
    def count(self) -> int:
        """(board, ply) cells with at least two valid trajectories added so far."""
        return self._count

    def value(self) -> float:
        """Mean KL over the counted (board, ply) cells; ``nan`` when none."""
        return self._kl_sum / self._count if self._count else math.nan


@th.no_grad()
def policy_diversity_kl(
    log_probs: Any,
    valid: Any,
    action_masks: Any = None,
    probs: bool = False,
) -> float:
    """Mean KL between each trajectory's policy and its group's mean policy at the same ply
    (``rollout/policy_diversity_kl``).

    At each (board ``b``, ply ``t``) with ``n >= 2`` valid trajectories, ``m = (1/n) sum_g p_g`` and the cell's
    value is ``(1/n) sum_g KL(p_g || m)`` (the generalized Jensen-Shannon divergence, in nats, between 0 when
    every trajectory's policy is the same and ``log n`` when their supports are disjoint); the result averages
    the counted cells. After the first ply the trajectories of a group usually stand on different positions, so
    their legal moves differ; the mixture covers every support, so the KL stays finite.

    Computed one ply at a time (:class:`PolicyDiversity`), never materialising more than ``(B, G, A)``.

    :param log_probs: ``(B, G, T, A)`` log-probabilities (or probabilities with ``probs=True``).
    :param valid: ``(B, G, T)`` bool.
    :param action_masks: optional ``(B, G, T, A)`` bool legal-move masks.
    :param probs: ``log_probs`` holds probabilities, not log-probabilities.
    """
    x = log_probs if isinstance(log_probs, th.Tensor) else th.as_tensor(_np(log_probs, np.float32))
    if x.ndim != 4:
        raise ValueError(f"log_probs must be shaped (B, G, T, A), got shape {tuple(x.shape)}")
    valid = _np(valid, bool)
    if valid.shape != tuple(x.shape[:3]):
        raise ValueError(f"valid has shape {valid.shape}, expected {tuple(x.shape[:3])}")
    masks = None if action_masks is None else th.as_tensor(_np(action_masks, bool), device=x.device)
    if masks is not None and masks.shape != x.shape:
        raise ValueError(f"action_masks has shape {tuple(masks.shape)}, expected {tuple(x.shape)}")
    acc = PolicyDiversity()
    for t in range(x.shape[2]):
        ply = x[:, :, t].float()
        if probs:
            ply = th.log(ply)  # log 0 = -inf: exp gives 0 back, _legal_log_probs masks it
        acc.add(ply, valid[:, :, t], None if masks is None else masks[:, :, t])
    return acc.value()


def normalized_entropy(entropy: Any, n_legal: Any, valid: Any = None) -> float:
    """Mean of ``entropy / log(n_legal)`` (``train/entropy_norm``): 1 is the uniform policy over the legal
    moves, 0 a deterministic one, comparable across positions with 2 or 40 legal moves.

    Plies with a single legal move (entropy 0 by force, ``log 1 = 0``) carry no information and are excluded,
    as are those with ``valid`` False. ``nan`` when nothing is left.

    :param entropy: per-ply entropies in nats over the legal moves (any shape).
    :param n_legal: number of legal moves, the shape of ``entropy``.
    :param valid: optional bool mask, the shape of ``entropy``.
    """
    entropy = _np(entropy, np.float64)
    n_legal = _np(n_legal, np.float64)
    _check_mask(entropy, n_legal, "entropy")
    keep = n_legal > 1
    if valid is not None:
        valid = _np(valid, bool)
        _check_mask(entropy, valid, "entropy")
        keep &= valid
    if not keep.any():
        return math.nan
    return float((entropy[keep] / np.log(n_legal[keep])).mean())


def effective_sample_size(log_ratio: Any, valid: Any = None) -> float:
    """Normalized effective sample size of the importance weights ``w = exp(log_ratio)``:
    ``(sum w)^2 / (N sum w^2)`` in ``(0, 1]`` (``train/ess``). 1 when the policy still equals the sampling
    policy (all ratios equal); ``1/N`` when one sample carries all the weight.

    Computed from the log-ratios shifted by their max, so large ratios cannot overflow. ``nan`` when empty.

    :param log_ratio: ``log pi(a|s) - log pi_old(a|s)`` per ply (any shape).
    :param valid: optional bool mask, the shape of ``log_ratio``.
    """
    lr = _np(log_ratio, np.float64)
    if valid is not None:
        valid = _np(valid, bool)
        _check_mask(lr, valid, "log_ratio")
        lr = lr[valid]
    lr = lr.reshape(-1)
    if lr.size == 0:
        return math.nan
    w = np.exp(lr - lr.max())  # the ESS is invariant to a common scale
    return float(w.sum() ** 2 / (lr.size * (w**2).sum()))


def clip_fractions(
    ratio: Any, advantages: Any, clip_low: float, clip_high: float | None = None, valid: Any = None
) -> tuple[float, float]:
    """Share of plies whose lower / upper PPO clip is active, i.e. that get no policy gradient.

    Low: ``ratio < 1 - clip_low`` with a negative advantage (the move was already pushed down enough); high:
    ``ratio > 1 + clip_high`` with a positive advantage. A ratio outside the band with the other advantage sign
    is *not* clipped by the min-surrogate and is not counted. Matches ``grpo_loss``'s statistics.

    :param ratio: importance ratios (any shape); :param advantages: the same shape.
    :param clip_low: lower epsilon (> 0); :param clip_high: upper epsilon, ``None`` = ``clip_low``.
    :param valid: optional bool mask.
    :return: ``(clip_fraction_low, clip_fraction_high)``; ``(nan, nan)`` when empty.
    """
    clip_high = clip_low if clip_high is None else clip_high
    if not clip_low > 0 or not clip_high > 0:
        raise ValueError(f"clip_low and clip_high must be > 0, got {clip_low} and {clip_high}")
    ratio = _np(ratio, np.float64)
    advantages = _np(advantages, np.float64)
    _check_mask(ratio, advantages, "ratio")
    if valid is not None:
        valid = _np(valid, bool)
        _check_mask(ratio, valid, "ratio")
        ratio, advantages = ratio[valid], advantages[valid]
    if ratio.size == 0:
        return math.nan, math.nan
    low = (ratio < 1.0 - clip_low) & (advantages < 0)
    high = (ratio > 1.0 + clip_high) & (advantages > 0)
    return float(low.mean()), float(high.mean())


def mean_of_numbers(values: list[float]) -> float:
    """The mean of the values that are not nan; nan when none is (``np.nanmean`` would warn). The drift statistics
    judge only samples drawn from the policy itself, and move groups with Dirichlet noise draw every candidate
    from the noised mixture, so a whole update can have none."""
    numbers = [v for v in values if not math.isnan(v)]
    return float(np.mean(numbers)) if numbers else math.nan


def drift_statistics(
    log_ratio: Any, advantages: Any, clip_low: float, clip_high: float, judged: Any = None
) -> dict[str, float]:
    """How far the updated policy has drifted from the sampling policy on one minibatch (``train/``).

    ``approx_kl`` (SB3's ``mean((rho - 1) - log rho)``), ``clip_fraction_low`` / ``clip_fraction_high``
    (:func:`clip_fractions`), ``ess`` (:func:`effective_sample_size`) and ``ratio_dev`` (max ``|rho - 1|``),
    over the ``judged`` entries only. Judge only the plies whose stored log-probability is the policy's own:
    a ply sampled from a noised mixture has a ratio ``pi / mixture`` that is not 1 even before any step, and
    counting it would read as drift (and could trip ``target_kl`` before the first optimizer step).

    :param log_ratio: ``log pi - log pi_old`` per sample (any shape).
    :param advantages: the same shape.
    :param judged: optional bool mask of the entries to judge.
    :return: the five statistics (``nan`` when nothing is judged).
    """
    lr = _np(log_ratio, np.float64)
    adv = _np(advantages, np.float64)
    if judged is not None:
        keep = _np(judged, bool)
        lr, adv = lr[keep], adv[keep]
    if lr.size == 0:
        nan = math.nan
        return dict(approx_kl=nan, clip_fraction_low=nan, clip_fraction_high=nan, ess=nan, ratio_dev=nan)
    # A collapsed policy can move a rare move's log-probability by hundreds of nats: its ratio is inf, and so are
    # approx_kl and ratio_dev, which is what they should say (a target_kl stop reads it), without a warning.
    with np.errstate(over="ignore"):
        ratio = np.exp(lr)
    low, high = clip_fractions(ratio, adv, clip_low, clip_high)
    return {
        "approx_kl": float(np.mean((ratio - 1.0) - lr)),
        "clip_fraction_low": low,
        "clip_fraction_high": high,
        "ess": effective_sample_size(lr),
        "ratio_dev": float(np.abs(ratio - 1.0).max()),
    }


class SamplingHealth:
    """Entropy of the sampling policy, accumulated over a rollout (``rollout/entropy``, ``rollout/entropy_norm``).

    Fed with the policy's own normalized log-probabilities at the configured temperature, not the boosted or
    noised distribution actually sampled, so a temperature boost or first-ply noise cannot fake a recovery.
    ``entropy_norm`` (:func:`normalized_entropy`) leaves out plies with a single legal move.
    """

    def __init__(self) -> None:
        self._entropy: list[np.ndarray] = []
        self._n_legal: list[np.ndarray] = []

    @th.no_grad()
    def add(self, log_p: th.Tensor, probs: th.Tensor, action_masks: th.Tensor, counted: Any = None) -> None:
        """Add the rows ``counted`` (default: all) of ``log_p`` ``(N, A)`` (illegal entries very negative) and
        their probabilities ``probs`` (passed, not ``log_p.exp()``: torch's CPU ``exp`` is slow on those entries)."""
        entropy = -(probs * log_p).sum(dim=1)
        n_legal = action_masks.sum(dim=1)
        if counted is not None:
            keep = th.as_tensor(_np(counted, bool), device=log_p.device)
            entropy, n_legal = entropy[keep], n_legal[keep]
        self._entropy.append(_np(entropy, np.float64))
        self._n_legal.append(_np(n_legal, np.float64))

    def merge(self, other: SamplingHealth) -> None:
        """Add the plies ``other`` was fed (another worker's share of the rollout)."""
        self._entropy.extend(other._entropy)
        self._n_legal.extend(other._n_legal)

    def stats(self) -> dict[str, float]:
        """``entropy`` (mean nats over the added plies) and ``entropy_norm``; ``nan`` when nothing was added."""
        entropy = np.concatenate(self._entropy) if self._entropy else np.zeros(0)
        n_legal = np.concatenate(self._n_legal) if self._n_legal else np.zeros(0)
        return {
            "entropy": float(entropy.mean()) if entropy.size else math.nan,
            "entropy_norm": normalized_entropy(entropy, n_legal),
        }


def rollout_diagnostics(
    actions: Any,
    rewards: Any,
    valid: Any,
    traj_rewards: Any,
    trained: Any = None,
    zero_std_values: Any = None,
    zero_std_mask: Any = None,
    zero_std_tol: float = 1e-6,
    diversity: PolicyDiversity | None = None,
    prefix: str = "rollout/",
    percentile: float = 90.0,
) -> dict[str, float]:
    """The group-collapse metrics of one rollout, keyed by their logger names.

    :param actions: ``(B, G, T)`` sampled actions.
    :param rewards: ``(B, G, T)`` per-ply rewards (the mover's view).
    :param valid: ``(B, G, T)`` bool, played (non-padded) plies.
    :param traj_rewards: ``(B, G)`` one reward per trajectory, e.g. ``buffer.returns[:, :, 0]`` (the return
        from the first mover's view); a trajectory exists when its first ply is valid.
    :param trained: ``(B, G, T)`` bool, the trained plies (``None`` = ``valid``); agreement and the per-ply
        spread are measured on them.
    :param zero_std_values: the values whose spread decides ``frac_reward_zero_std``: ``(B, G)`` or
        ``(B, G, T)`` with the mask taken from ``valid`` (``None`` = ``traj_rewards``). Pass the values the
        advantage mode centers (per-ply rewards for ``"step"``, the returns for ``"return"``) so the fraction
        equals the share of groups whose advantages are all 0.
    :param zero_std_mask: bool mask of ``zero_std_values`` (``None`` = ``valid`` for ``(B, G, T)`` values, the
        trajectories whose first ply is valid for ``(B, G)``); pass the trained mask to count exactly the
        groups whose *trained* advantages are all 0 (``GroupRolloutBuffer.advantage_values`` gives both).
    :param zero_std_tol: see :func:`frac_zero_std`.
    :param diversity: the rollout's :class:`PolicyDiversity` accumulator, if one was fed.
    :param prefix: prepended to every key.
    :param percentile: the agreement percentile reported as ``action_agreement_p{percentile}``.
    :return: ``group_reward_std``, ``group_step_reward_std``, ``frac_reward_zero_std``,
        ``action_agreement_mean``, ``action_agreement_p90`` and ``policy_diversity_kl``; a metric that is not
        defined for this rollout (e.g. ``G = 1``) is left out rather than logged as ``nan``.
    """
    valid = _np(valid, bool)
    trained = valid if trained is None else (_np(trained, bool) & valid)
    traj_rewards = _np(traj_rewards, np.float64)
    traj_valid = valid[:, :, 0] if valid.shape[2] > 0 else np.zeros(valid.shape[:2], dtype=bool)
    if zero_std_values is None:
        zero_values, zero_valid = traj_rewards, traj_valid
    else:
        zero_values = _np(zero_std_values, np.float64)
        if zero_std_mask is not None:
            zero_valid = _np(zero_std_mask, bool)
        else:
            zero_valid = traj_valid if zero_values.ndim == 2 else valid
    agreement_mean, agreement_q = action_agreement(actions, trained, percentile)
    metrics = {
        "group_reward_std": within_group_reward_std(traj_rewards, traj_valid),
        "group_step_reward_std": within_group_step_reward_std(rewards, trained),
        "frac_reward_zero_std": frac_zero_std(zero_values, zero_valid, zero_std_tol),
        "action_agreement_mean": agreement_mean,
        f"action_agreement_p{percentile:g}": agreement_q,
        "policy_diversity_kl": diversity.value() if diversity is not None else math.nan,
    }
    return {prefix + key: value for key, value in metrics.items() if not math.isnan(value)}

