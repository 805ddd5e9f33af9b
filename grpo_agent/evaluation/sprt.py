"""The sequential probability ratio test of an Elo difference, as engine developers run it.

A match tests H0: ``elo = elo0`` against H1: ``elo = elo1``, Elo being the logistic difference
``-400 log10(1/s - 1)`` of the expected score ``s`` (the Elo of :mod:`~grpo_agent.evaluation.stats`).
After every observation the log-likelihood ratio ``LLR`` is compared with Wald's bounds
``log(beta / (1 - alpha))`` (accept H0) and ``log((1 - beta) / alpha)`` (accept H1); in between, play
on. ``alpha`` bounds the chance of accepting H1 when H0 holds, ``beta`` that of accepting H0 when H1
holds.

The test is the *generalized* SPRT of fishtest and fastchess (M. Van den Bergh, "A practical
introduction to the GSPRT"): the outcomes are categories with scores ``values`` (the trinomial
loss/draw/win ``0, 1/2, 1``, or the pentanomial score of a game pair ``0, 1/4, ..., 1``), their
distribution is otherwise unknown, and each hypothesis' likelihood is the multinomial likelihood
maximised over the distributions whose expected score is ``s0`` (resp. ``s1``). The maximum is computed
exactly: ``p_i = n_i / (N (1 + theta (x_i - s)))`` with the Lagrange multiplier ``theta`` found by
bisection; when the constraint cannot be met on the observed categories alone (e.g. only wins), the
maximum puts the missing mass on the extreme category (0 or 1) instead of regularising zero counts
with a small epsilon as fishtest does. Matches play each opening with both colours, so they use the
pentanomial model: the two games of a pair are correlated, and counting pairs accounts for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TRINOMIAL = (0.0, 0.5, 1.0)
"""Category scores of single games: loss, draw, win."""
PENTANOMIAL = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Category scores of game pairs: the pair's total points (0 to 2) divided by 2."""


def expected_score(elo: float) -> float:
    """The expected score of a logistic Elo difference: ``1 / (1 + 10**(-elo / 400))``."""
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0))


def max_log_likelihood(counts: Sequence[float], values: Sequence[float], score: float) -> float:
    """``max sum_i n_i log p_i`` over distributions ``p`` on ``values`` with expected score ``score``.

    Args:
        counts: observations per category (``n_i >= 0``, not all 0).
        values: the categories' scores, increasing, the first 0 and the last 1.
        score: the constrained expected score, strictly between 0 and 1.
    """
    n = sum(counts)
    observed = [(c / n, x - score) for c, x in zip(counts, values) if c > 0]

    def slope(theta: float) -> float:  # d/dtheta of the Lagrangian; decreasing in theta
        return sum(p * d / (1.0 + theta * d) for p, d in observed)

    # p_i >= 0 for every category, observed or not, needs 1 + theta (x_i - score) >= 0 for all x_i. At
    # an end of that interval the extreme category's term vanishes; if that category was never
    # observed and the slope there still has the wrong sign, the maximum sits at the end and the
    # category gets the mass the observed ones leave.
    low, high = -1.0 / (values[-1] - score), 1.0 / (score - values[0])
    if counts[0] == 0 and slope(high) >= 0:
        theta = high
    elif counts[-1] == 0 and slope(low) <= 0:
        theta = low
    else:
        for _ in range(200):
            theta = 0.5 * (low + high)
            if slope(theta) > 0:
                low = theta
            else:
                high = theta
        theta = 0.5 * (low + high)
    return n * sum(p * math.log(p / (1.0 + theta * d)) for p, d in observed)


def llr(counts: Sequence[float], elo0: float, elo1: float, values: Sequence[float] = PENTANOMIAL) -> float:
    """The generalized log-likelihood ratio of H1 (``elo1``) against H0 (``elo0``) for ``counts``.

    ``counts[i]`` observations scored ``values[i]``; 0 when there are none.

    Raises:
        ValueError: ``counts`` and ``values`` differ in length, or a count is negative.
    """
    if len(counts) != len(values):
        raise ValueError(f"{len(counts)} counts for {len(values)} categories {tuple(values)}")
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be >= 0, got {tuple(counts)}")
    if sum(counts) == 0:
        return 0.0
    return (max_log_likelihood(counts, values, expected_score(elo1))
            - max_log_likelihood(counts, values, expected_score(elo0)))


def pentanomial(pair_points: Sequence[float]) -> tuple[int, int, int, int, int]:
    """Counts of game pairs by their points (0, 0.5, 1, 1.5 or 2 out of 2), in :data:`PENTANOMIAL` order."""
    counts = [0] * 5
    for points in pair_points:
        index = round(2 * points)
        if not (0 <= index <= 4 and math.isclose(2 * points, index)):
            raise ValueError(f"a game pair scores 0, 0.5, 1, 1.5 or 2 points, got {points!r}")
        counts[index] += 1
    return tuple(counts)  # type: ignore[return-value]


@dataclass(frozen=True)
class SPRT:
    """A sequential test of H0: ``elo == elo0`` against H1: ``elo == elo1`` (``elo0 < elo1``).

    Raises:
        ValueError: ``elo0 >= elo1``, or ``alpha`` / ``beta`` outside (0, 0.5).
    """

    elo0: float
    elo1: float
    alpha: float = 0.05
    beta: float = 0.05

    def __post_init__(self) -> None:
        if not (math.isfinite(self.elo0) and math.isfinite(self.elo1) and self.elo0 < self.elo1):
            raise ValueError(f"need finite elo0 < elo1, got elo0={self.elo0!r}, elo1={self.elo1!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name}={value!r} must be in (0, 0.5)")

    @classmethod
    def parse(cls, text: str, alpha: float = 0.05, beta: float = 0.05) -> SPRT:
        """``"elo0,elo1"``, e.g. ``"0,10"``."""
        parts = text.split(",")
        try:
            elo0, elo1 = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"SPRT bounds {text!r} are not two numbers elo0,elo1 (e.g. 0,10)") from None
        return cls(elo0, elo1, alpha, beta)

    @property
    def bounds(self) -> tuple[float, float]:
        """``(log(beta / (1 - alpha)), log((1 - beta) / alpha))``: accept H0 at or below, H1 at or above."""
        return math.log(self.beta / (1.0 - self.alpha)), math.log((1.0 - self.beta) / self.alpha)

    def llr(self, pair_counts: Sequence[int]) -> float:
        """The pentanomial LLR of :func:`pentanomial` counts."""
        return llr(pair_counts, self.elo0, self.elo1, PENTANOMIAL)

    def decision(self, llr_value: float) -> str | None:
        """``"H1"`` at or above the upper bound, ``"H0"`` at or below the lower one, else ``None`` (play on)."""
        lower, upper = self.bounds
        if llr_value >= upper:
            return "H1"
        if llr_value <= lower:
            return "H0"
        return None
