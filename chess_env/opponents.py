"""Opponents that reply inside the environment: random, Stockfish, or any ``board -> move`` callable."""

from __future__ import annotations

from typing import Callable, Union

import chess
import numpy as np

from chess_env.engine import EnginePlayer, Strength

MoveFn = Callable[[chess.Board], chess.Move]
OpponentSpec = Union[str, MoveFn]
OPPONENTS = ("self", "random", "stockfish")


class RandomOpponent:
    """Plays a uniformly random legal move, drawn from the generator it is given."""

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self.rng = rng if rng is not None else np.random.default_rng()

    def __call__(self, board: chess.Board) -> chess.Move:
        moves = list(board.legal_moves)
        return moves[int(self.rng.integers(len(moves)))]


def make_opponent(
    spec: OpponentSpec,
    rng: np.random.Generator | None = None,
    skill: int | None = None,
    elo: int | None = None,
    depth: int | None = None,
    engine_path: str | None = None,
) -> MoveFn | None:
    """Build the opponent named by ``spec``; ``None`` for ``"self"`` (self-play).

    ``spec`` is ``"self"``, ``"random"``, ``"stockfish"`` (at ``skill`` / ``elo`` / ``depth``, default
    full strength at depth 1), a Stockfish strength spec such as ``"sf:skill=0"`` or ``"elo=1500"``
    (see :class:`chess_env.engine.Strength`), or a callable ``board -> chess.Move``. Stockfish
    opponents are :class:`chess_env.engine.EnginePlayer` instances.

    Raises:
        ValueError: ``spec`` is none of these, a strength is out of range, or ``skill`` / ``elo`` /
            ``depth`` are given with a spec other than ``"stockfish"``.
    """
    if callable(spec):
        return spec
    if spec == "self":
        return None
    if spec == "random":
        return RandomOpponent(rng)
    if spec == "stockfish":
        return EnginePlayer(Strength(skill=skill, elo=elo, depth=depth), engine_path)
    expected = (f"expected one of {OPPONENTS}, a Stockfish strength spec such as 'sf:skill=0' or 'elo=1500', "
                "or a callable board -> chess.Move")
    if not isinstance(spec, str):
        raise ValueError(f"unknown opponent {spec!r}: {expected}")
    try:
        strength = Strength.parse(spec)
    except ValueError as exc:
        raise ValueError(f"unknown opponent {spec!r}: {expected} ({exc})") from None
    if (skill, elo, depth) != (None, None, None):
        raise ValueError(f"opponent {spec!r} sets its own strength: opponent_skill/elo/depth go with 'stockfish'")
    return EnginePlayer(strength, engine_path)
