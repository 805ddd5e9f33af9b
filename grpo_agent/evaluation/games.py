"""One game between two move functions, the way every evaluation plays it, and its record.

:func:`play_game` is the only game loop of the evaluation: the ladder
(:meth:`~grpo_agent.evaluation.Evaluator.play_match`) and head-to-head matches
(:func:`~grpo_agent.evaluation.match.run_match`) both call it. A game ends by the rules
(:func:`rules_termination`), by an illegal move (its mover forfeits), or at ``max_plies`` by
:func:`adjudicate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import chess
import chess.engine
import chess.pgn
import numpy as np

from chess_env.engine import EnginePlayer
from chess_env.opponents import MoveFn
from chess_env.rules import game_outcome
from grpo_agent.evaluation.stats import MATE_SCORE

ADJUDICATIONS = ("engine", "draw")
Ending = tuple[str, "chess.Color | None"]
"""``(reason, winner)``: how a game ended and who won it (``None``: a draw)."""


def rules_termination(board: chess.Board) -> Ending | None:
    """``(reason, winner)`` if the game is over by the rules, else ``None``.

    ``reason`` is the lower-case :class:`chess.Termination` name (``"checkmate"``,
    ``"threefold_repetition"``, ...). Threefold repetition and the 50-move rule end the game as
    soon as they can be claimed, as engine tournaments do (:func:`chess_env.rules.game_outcome`
    with ``draw_rule="claim"``).
    """
    outcome = game_outcome(board, "claim")
    return None if outcome is None else (outcome.termination.name.lower(), outcome.winner)


def adjudicate(board: chess.Board, judge: EnginePlayer | None, cp: int = 400, depth: int = 10) -> Ending:
    """The result of a game stopped at its ply limit.

    With a ``judge`` (full-strength Stockfish), a side at least ``cp`` centipawns (or a mate) ahead
    after a ``depth`` search wins (``adjudication_win``), anything closer is ``adjudication_draw``;
    without one, the game is drawn.
    """
    if judge is None:
        return "adjudication_draw", None
    info = judge.analyse(board, chess.engine.Limit(depth=depth), game=object())
    white = info["score"].white()
    score = white.score(mate_score=MATE_SCORE)
    if white.is_mate() or abs(score) >= cp:
        return "adjudication_win", chess.WHITE if score > 0 else chess.BLACK
    return "adjudication_draw", None


@dataclass(frozen=True)
class PlayedGame:
    """A finished game: the final board (the moves on its stack), how it ended, an illegal move if any."""

    board: chess.Board
    reason: str
    winner: chess.Color | None
    illegal_move: str | None = None


def play_game(fen: str, players: Mapping[chess.Color, MoveFn], max_plies: int,
              adjudicate_at_limit: Callable[[chess.Board], Ending]) -> PlayedGame:
    """Play one game from ``fen``, ``players[colour]`` choosing that colour's moves.

    Each player gets a copy of the board (with the game's moves on its stack, so observation history
    is available). A move that is ``None`` or not legal forfeits the game for its mover; after
    ``max_plies`` plies without an ending by the rules, ``adjudicate_at_limit(board)`` decides.
    """
    board = chess.Board(fen)
    while True:
        ended = rules_termination(board)
        if ended is not None:
            return PlayedGame(board, *ended)
        if len(board.move_stack) >= max_plies:
            return PlayedGame(board, *adjudicate_at_limit(board))
        move = players[board.turn](board.copy())
        if move is None or move not in board.legal_moves:
            return PlayedGame(board, "illegal_move", not board.turn, str(move))
        board.push(move)


@dataclass
class GameRecord:
    """One evaluation game, from the policy's point of view (in a match, player A's)."""

    opponent: str
    index: int
    start_fen: str
    policy_color: str
    """``"white"`` or ``"black"``."""
    moves: list[str]
    """UCI moves from ``start_fen``."""
    result: str
    """PGN result: ``1-0``, ``0-1`` or ``1/2-1/2``."""
    termination: str
    """``checkmate``, ``stalemate``, ``insufficient_material``, ``threefold_repetition``,
    ``fifty_moves`` (or, from a start position already past them, ``fivefold_repetition`` and
    ``seventyfive_moves``), ``illegal_move`` (its mover forfeits), ``adjudication_win`` or
    ``adjudication_draw`` (at ``max_plies``)."""
    score: float
    """1 win, 0.5 draw, 0 loss for the policy."""
    plies: int
    illegal_move: str | None = None

    @classmethod
    def from_game(cls, game: PlayedGame, opponent: str, index: int, start_fen: str,
                  policy_color: chess.Color) -> GameRecord:
        """The record of ``game``, scored for the side playing ``policy_color``."""
        winner = game.winner
        result = "1/2-1/2" if winner is None else ("1-0" if winner == chess.WHITE else "0-1")
        score = 0.5 if winner is None else float(winner == policy_color)
        moves = [m.uci() for m in game.board.move_stack]
        return cls(opponent, index, start_fen, "white" if policy_color == chess.WHITE else "black", moves,
                   result, game.reason, score, len(moves), game.illegal_move)

    def board(self) -> chess.Board:
        """The final position, with the game's moves on the move stack."""
        board = chess.Board(self.start_fen)
        for uci in self.moves:
            board.push_uci(uci)
        return board

    def to_pgn(self, headers: dict[str, str]) -> chess.pgn.Game:
        """A PGN game (``FEN``/``SetUp`` for non-standard starts) with ``headers`` and the result."""
        game = chess.pgn.Game.from_board(self.board())
        game.headers.update(headers)
        game.headers["Result"] = self.result
        if self.termination == "illegal_move":
            game.headers["Termination"] = "rules infraction"
        else:
            game.headers["Termination"] = "adjudication" if self.termination.startswith("adjudication") else "normal"
        game.headers["TerminationDetail"] = self.termination
        game.headers["PlyCount"] = str(self.plies)
        if self.illegal_move is not None:
            mover = "White" if game.end().board().turn == chess.WHITE else "Black"
            game.comment = f"{mover} played the illegal move {self.illegal_move} and forfeits"
        return game


def resolve_positions(spec: Any) -> list[str]:
    """The FENs of a start-position spec: a list of FENs, or any :func:`chess_env.positions.load_positions` spec."""
    if isinstance(spec, (list, tuple)) and all(isinstance(f, str) for f in spec):
        return [chess.Board(f).fen() for f in spec]
    from chess_env.positions import load_positions

    return list(load_positions(spec))


def draw_positions(positions: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` positions without replacement, reshuffling and cycling when ``n`` exceeds the set."""
    if not positions:
        raise ValueError("the position set is empty")
    out: list[str] = []
    while len(out) < n:
        order = rng.permutation(len(positions))[: n - len(out)]
        out.extend(positions[int(i)] for i in order)
    return out
