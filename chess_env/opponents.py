"""Opponents that reply inside the environment: random, Stockfish, or any ``board -> move`` callable."""

from __future__ import annotations

from typing import Any, Callable, Union

import chess
import chess.engine
import numpy as np

from chess_env.engine import find_stockfish

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


class StockfishOpponent:
    """Plays Stockfish's move at a skill level, an Elo, a depth, a node count or a move time.

    Args:
        skill: Stockfish ``Skill Level`` (0-20).
        elo: ``UCI_Elo`` with ``UCI_LimitStrength`` (Stockfish accepts about 1320-3190).
        depth: search depth limit.
        nodes: node limit.
        movetime: seconds per move. When no limit is given, depth 1 is used.
        path: the Stockfish binary; found with :func:`chess_env.engine.find_stockfish` by default.

    The engine process starts on the first move, is restarted once if it dies, and is not pickled
    (a copy in another process starts its own).
    """

    def __init__(
        self,
        skill: int | None = None,
        elo: int | None = None,
        depth: int | None = None,
        nodes: int | None = None,
        movetime: float | None = None,
        path: str | None = None,
    ) -> None:
        if skill is not None and not 0 <= skill <= 20:
            raise ValueError(f"opponent_skill {skill!r} is outside Stockfish's range 0-20")
        self.options: dict[str, Any] = {"Threads": 1, "Hash": 16}
        if skill is not None:
            self.options["Skill Level"] = skill
        if elo is not None:
            self.options.update({"UCI_LimitStrength": True, "UCI_Elo": elo})
        if depth is None and nodes is None and movetime is None:
            depth = 1
        self.limit = chess.engine.Limit(depth=depth, nodes=nodes, time=movetime)
        self.path = find_stockfish(path)
        self._engine: chess.engine.SimpleEngine | None = None

    def _start(self) -> chess.engine.SimpleEngine:
        engine = chess.engine.SimpleEngine.popen_uci(self.path)
        try:
            engine.configure(self.options)
        except chess.engine.EngineError as exc:
            engine.quit()
            raise ValueError(f"Stockfish at {self.path!r} rejected the opponent options {self.options}: {exc}") from exc
        return engine

    def __call__(self, board: chess.Board) -> chess.Move:
        for attempt in range(2):
            if self._engine is None:
                self._engine = self._start()
            try:
                move = self._engine.play(board, self.limit).move
                if move is not None:
                    return move
            except (chess.engine.EngineTerminatedError, chess.engine.EngineError):
                if attempt:
                    raise
            self.close()
        raise chess.engine.EngineError(f"Stockfish returned no move for {board.fen()!r}")

    def close(self) -> None:
        """Stop the engine process, if running."""
        if self._engine is not None:
            try:
                self._engine.quit()
            except (chess.engine.EngineTerminatedError, chess.engine.EngineError, TimeoutError):
                self._engine.close()
            self._engine = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = None
        return state

    def __del__(self) -> None:
        self.close()


def make_opponent(
    spec: OpponentSpec,
    rng: np.random.Generator | None = None,
    skill: int | None = None,
    elo: int | None = None,
    depth: int | None = None,
    engine_path: str | None = None,
) -> MoveFn | None:
    """Build the opponent named by ``spec``; ``None`` for ``"self"`` (self-play).

    Raises:
        ValueError: ``spec`` is neither a known name nor callable.
    """
    if callable(spec):
        return spec
    if spec == "self":
        return None
    if spec == "random":
        return RandomOpponent(rng)
    if spec == "stockfish":
        return StockfishOpponent(skill=skill, elo=elo, depth=depth, path=engine_path)
    raise ValueError(f"unknown opponent {spec!r}; expected one of {OPPONENTS} or a callable board -> chess.Move")
