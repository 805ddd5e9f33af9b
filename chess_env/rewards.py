"""Bounded values of engine scores, the currency of reward shaping.

Every transform maps a :class:`chess.engine.Score` (from the point of view it is given in) to a value
in ``[-1, 1]``: +1 is a certain win, -1 a certain loss. Mate scores map to the bound, never to 0; with a
``mate_band`` they fill the top (and bottom) of the range by their length instead, above every other score.
"""

from __future__ import annotations

import math

import chess.engine

REWARD_TRANSFORMS = ("winprob", "cp", "wdl")

#: The env's default ``mate_band`` (:class:`~chess_env.ChessEnv`, :mod:`chess_env.moves`): mates fill the top and
#: bottom 5% of the range, and every other score keeps its order, scaled into +-0.95 below them.
MATE_BAND = 0.05

LICHESS_WINPROB_SLOPE = 0.00368208
"""Slope of Lichess's centipawn -> win-probability logistic (lichess-org/lila, ``WinPercent``)."""


def score_value(score: chess.engine.Score, transform: str = "winprob", *, cp_clip: float = 1000.0, ply: int = 30,
                mate_band: float = 0.0) -> float:
    """Return the value of ``score`` in ``[-1, 1]``.

    Args:
        score: an engine score, relative to the side it is seen from.
        transform: ``"winprob"``: Lichess's logistic ``2 / (1 + exp(-0.00368208 cp)) - 1``;
            ``"cp"``: centipawns clipped to ``[-cp_clip, cp_clip]`` and divided by ``cp_clip``;
            ``"wdl"``: the expectation ``2 E - 1`` of Stockfish's win/draw/loss model at ``ply``.
        cp_clip: the centipawn bound of ``"cp"``.
        ply: the game ply the ``"wdl"`` model is evaluated at (it depends on material left,
            approximated by python-chess with the ply).
        mate_band: 0 (default): every mate is worth the bound, +-1. ``b`` in ``(0, 1)``: a mate ``n`` moves of
            the mating side away (``Mate(n)`` of a position; 0: given, :data:`chess.engine.MateGiven`) is worth
            ``+-(1 - b n / (n + 1))`` (given: +-1, in 1: +-(1 - b/2), long mates towards +-(1 - b)) and every
            other score is scaled by ``1 - b``. So a shorter win ranks above a longer one, a later loss above an
            earlier one, and both above every centipawn score, in one ordering.

    Raises:
        ValueError: unknown ``transform``, or ``mate_band`` outside ``[0, 1)``.
    """
    if not 0.0 <= mate_band < 1.0:
        raise ValueError(f"mate_band must be in [0, 1), got {mate_band!r}")
    if score.is_mate():
        moves = abs(score.mate())
        return (1.0 if score > chess.engine.Cp(0) else -1.0) * (1.0 - mate_band * moves / (moves + 1))
    return (1.0 - mate_band) * _value(score, transform, cp_clip, ply)


def _value(score: chess.engine.Score, transform: str, cp_clip: float, ply: int) -> float:
    if transform == "winprob":
        return 2.0 / (1.0 + math.exp(-LICHESS_WINPROB_SLOPE * score.score())) - 1.0
    if transform == "cp":
        return max(-cp_clip, min(cp_clip, score.score())) / cp_clip
    if transform == "wdl":
        return 2.0 * score.wdl(model="sf", ply=ply).expectation() - 1.0
    raise ValueError(f"unknown reward_transform {transform!r}; expected one of {REWARD_TRANSFORMS}")
