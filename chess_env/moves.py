"""The value of every legal move of a position: what a move group (G candidate moves of one position) is judged by.

One MultiPV search per position scores all its legal moves (:meth:`~chess_env.engine.StockfishPool.submit_moves`,
far cheaper than one search per child), each from the mover's point of view, mapped to ``[-1, 1]`` with the
env's ``reward_transform`` and ``mate_band`` (:func:`~chess_env.rewards.score_value`: with a band, a shorter
mate is worth more than a longer one, so a group in a won position still tells the mating move from the
others; without one every mate is worth the bound and such a group has no spread). A move that ends the game
by a rule the engine cannot see (threefold or fivefold repetition, the 50- or 75-move rule, insufficient
material: the engine is sent the position without its history) is valued by the rules instead, +1 / 0 / -1.
Checkmate and stalemate need no special case: the engine scores them as mate in 1 (the bound) and 0, as the rules do.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

import chess
import chess.engine
import numpy as np

from chess_env.encoding import N_ACTIONS, encode_move
from chess_env.rewards import MATE_BAND, score_value
from chess_env.rules import game_outcome, result_for


def rules_value(board: chess.Board, move: chess.Move, draw_rule: str) -> float | None:
    """+1 / 0 / -1 for the mover when ``move`` ends the game by a rule the engine cannot see, else None.

    Only reversible moves can complete a repetition or reach the move-count rules, and only captures can leave
    insufficient material, so most moves are decided without playing them.
    """
    capture = board.is_capture(move)
    if not capture and board.piece_type_at(move.from_square) == chess.PAWN:
        return None
    if capture or board.halfmove_clock + 1 >= 8:
        board.push(move)
        try:
            outcome = game_outcome(board, draw_rule)
        finally:
            board.pop()
        if outcome is not None and outcome.termination not in (chess.Termination.CHECKMATE, chess.Termination.STALEMATE):
            return result_for(outcome, board.turn)
    return None


def after_move(score: chess.engine.Score) -> chess.engine.Score:
    """A root move's MultiPV score as the score of the position after it, from the same side.

    The engine counts the root move among the mover's moves to a mate (the mating move itself scores mate in 1),
    while the position after it has one move fewer to go (:data:`chess.engine.MateGiven` after the mating move):
    the shaping values of :class:`~chess_env.ChessEnv` score positions, so this keeps both on one scale.
    """
    mate = score.mate()
    if mate is not None and mate > 0:
        return chess.engine.Mate(mate - 1) if mate > 1 else chess.engine.MateGiven
    return score


def move_values(
    boards: Sequence[chess.Board],
    scores: Sequence[dict[chess.Move, chess.engine.PovScore]],
    reward_transform: str = "winprob",
    cp_clip: float = 1000.0,
    draw_rule: str = "claim",
    mate_band: float = MATE_BAND,
) -> np.ndarray:
    """``(len(boards), 4672)`` float32: the value of each legal move for its mover, ``nan`` elsewhere.

    :param boards: the positions (with their move stacks, for the repetition rules)
    :param scores: :meth:`~chess_env.engine.StockfishPool.evaluate_moves` of those positions
    """
    values = np.full((len(boards), N_ACTIONS), np.nan, dtype=np.float32)
    for i, (board, by_move) in enumerate(zip(boards, scores)):
        mover, ply = board.turn, board.ply() + 1
        for move, score in by_move.items():
            value = rules_value(board, move, draw_rule)
            if value is None:
                value = score_value(after_move(score.pov(mover)), reward_transform, cp_clip=cp_clip, ply=ply,
                                    mate_band=mate_band)
            values[i, encode_move(board, move)] = value
    return values


class PendingMoveValues:
    """The :func:`move_values` of positions whose searches are running; :meth:`result` waits for them.

    The rules part reads the boards' move stacks, so it runs in the thread that calls :meth:`result`, never in
    the pool's threads: the boards must not change between the submission and that call.
    """

    def __init__(self, searches: Future, boards: Sequence[chess.Board], reward_transform: str, cp_clip: float,
                 draw_rule: str, mate_band: float = MATE_BAND) -> None:
        self._searches, self._boards = searches, list(boards)
        self._options = (reward_transform, cp_clip, draw_rule, mate_band)

    def result(self) -> np.ndarray:
        """The ``(len(boards), 4672)`` values, once the engines are done."""
        return move_values(self._boards, self._searches.result(), *self._options)


def submit_move_values(
    pool: object,
    boards: Sequence[chess.Board],
    limit: chess.engine.Limit,
    reward_transform: str = "winprob",
    cp_clip: float = 1000.0,
    draw_rule: str = "claim",
    mate_band: float = MATE_BAND,
) -> PendingMoveValues:
    """Start the searches of :func:`move_values` on ``pool`` (a :class:`~chess_env.engine.StockfishPool`) and
    return at once, so the caller can work (e.g. the policy's forward pass) while the engines search."""
    searches = pool.submit_moves(list(boards), limit)  # type: ignore[attr-defined]
    return PendingMoveValues(searches, boards, reward_transform, cp_clip, draw_rule, mate_band)
