"""Match and move statistics: Wilson intervals, Elo differences, Lichess win percentages and accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import chess.engine

from chess_env.rewards import LICHESS_WINPROB_SLOPE

Z_95 = 1.959963984540054
"""Two-sided 95% normal quantile."""
CP_CAP = 1000
"""Centipawn scores (mates included) are clamped to +-CP_CAP for ACPL and accuracy, as on Lichess."""
MATE_SCORE = 100_000




def wilson_interval(score: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``score`` observed over ``n`` trials.

    Raises:
        ValueError: ``n < 1`` or ``score`` outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be in [0, 1], got {score!r}")
    z2 = z * z
    centre = (score + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(score * (1 - score) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def elo_from_score(score: float) -> float:
    """Elo difference implied by an expected score in (0, 1): ``-400 log10(1/score - 1)``.

    Raises:
        ValueError: ``score`` is not strictly between 0 and 1 (the difference is infinite).
    """
    if not 0.0 < score < 1.0:
        raise ValueError(f"score must be strictly between 0 and 1 for a finite Elo difference, got {score!r}")
    return -400.0 * math.log10(1.0 / score - 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class ScoreStats:
    """Match statistics of W/D/L counts (from the policy's point of view)."""

    wins: int
    draws: int
    losses: int
    score: float
    score_low: float
    score_high: float
    elo: float
    elo_low: float
    elo_high: float
    elo_clamped: bool
    """True when the score was 0 or 1 and the Elo numbers use the half-game clamp."""

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses


def score_stats(wins: int, draws: int, losses: int, z: float = Z_95) -> ScoreStats:
    """Score, its Wilson interval and the Elo difference with its interval, for W/D/L counts.

    The Elo interval transforms the ends of the score interval. A score of exactly 0 or 1 (and an
    interval end at 0 or 1) is clamped to ``1/(2N)`` or ``1 - 1/(2N)`` and ``elo_clamped`` is set.

    Raises:
        ValueError: a negative count or no games.
    """
    if min(wins, draws, losses) < 0:
        raise ValueError(f"counts must be >= 0, got W/D/L {wins}/{draws}/{losses}")
    n = wins + draws + losses
    if n == 0:
        raise ValueError("no games: W/D/L are all 0")
    score = (wins + 0.5 * draws) / n
    low, high = wilson_interval(score, n, z)
    eps = 0.5 / n

    def clamp(p: float) -> float:
        return min(max(p, eps), 1.0 - eps)

    clamped = score in (0.0, 1.0)
    if n == 1:  # eps = 0.5: every score clamps to 0.5, the only honest answer for one game
        return ScoreStats(wins, draws, losses, score, low, high, 0.0, -math.inf, math.inf, clamped)
    return ScoreStats(wins, draws, losses, score, low, high, elo_from_score(clamp(score)),
                      elo_from_score(clamp(low)), elo_from_score(clamp(high)), clamped)


def win_percent(cp: float) -> float:
    """Lichess win percentage (0-100) for a centipawn score, clamped to +-CP_CAP first."""
    cp = min(max(cp, -CP_CAP), CP_CAP)
    return 50.0 + 50.0 * (2.0 / (1.0 + math.exp(-LICHESS_WINPROB_SLOPE * cp)) - 1.0)


def move_accuracy(win_percent_before: float, win_percent_after: float) -> float:
    """Lichess move accuracy (0-100) from the mover's win percentage before and after the move."""
    raw = 103.1668 * math.exp(-0.04354 * (win_percent_before - win_percent_after)) - 3.1669
    return min(max(raw, 0.0), 100.0)


def clamped_cp(score: chess.engine.Score) -> int:
    """A score in centipawns (mates as +-``MATE_SCORE``), clamped to +-:data:`CP_CAP`."""
    return min(max(score.score(mate_score=MATE_SCORE), -CP_CAP), CP_CAP)
