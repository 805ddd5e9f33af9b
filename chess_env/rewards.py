"""Bounded values of engine scores, the currency of reward shaping.

Every transform maps a :class:`chess.engine.Score` (from the point of view it is given in) to a value
in ``[-1, 1]``: +1 is a certain win, -1 a certain loss. Mate scores map to the bound, never to 0.
"""

from __future__ import annotations

import math

import chess.engine

REWARD_TRANSFORMS = ("winprob", "cp", "wdl")

LICHESS_WINPROB_SLOPE = 0.00368208
"""Slope of Lichess's centipawn -> win-probability logistic (lichess-org/lila, ``WinPercent``)."""


def score_value(score: chess.engine.Score, transform: str = "winprob", *, cp_clip: float = 1000.0, ply: int = 30) -> float:
    """Return the value of ``score`` in ``[-1, 1]``.

    Args:
        score: an engine score, relative to the side it is seen from.
        transform: ``"winprob"``: Lichess's logistic ``2 / (1 + exp(-0.00368208 cp)) - 1``;
            ``"cp"``: centipawns clipped to ``[-cp_clip, cp_clip]`` and divided by ``cp_clip``;
            ``"wdl"``: the expectation ``2 E - 1`` of Stockfish's win/draw/loss model at ``ply``.
        cp_clip: the centipawn bound of ``"cp"``.
        ply: the game ply the ``"wdl"`` model is evaluated at (it depends on material left,
            approximated by python-chess with the ply).

    Raises:
        ValueError: unknown ``transform``.
    """
    if score.is_mate():
        return 1.0 if score > chess.engine.Cp(0) else -1.0
    if transform == "winprob":
        return 2.0 / (1.0 + math.exp(-LICHESS_WINPROB_SLOPE * score.score())) - 1.0
    if transform == "cp":
        return max(-cp_clip, min(cp_clip, score.score())) / cp_clip
    if transform == "wdl":
        return 2.0 * score.wdl(model="sf", ply=ply).expectation() - 1.0
    raise ValueError(f"unknown reward_transform {transform!r}; expected one of {REWARD_TRANSFORMS}")
