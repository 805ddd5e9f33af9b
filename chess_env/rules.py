"""When a game ends, and what the result is worth to each side."""

from __future__ import annotations

import chess

DRAW_RULES = ("claim", "automatic")


def game_outcome(board: chess.Board, draw_rule: str = "claim") -> chess.Outcome | None:
    """Return the outcome of ``board`` under ``draw_rule``, or None while the game goes on.

    Checkmate, stalemate and insufficient material always end the game, and so do the fivefold
    repetition and the 75-move rule (FIDE makes those automatic). With ``draw_rule="claim"`` the
    draw is also taken as soon as it can be claimed for the position on the board: its third
    occurrence, or 50 moves (100 plies) without a capture or pawn move.

    Raises:
        ValueError: unknown ``draw_rule``.
    """
    if draw_rule not in DRAW_RULES:
        raise ValueError(f"unknown draw_rule {draw_rule!r}; expected one of {DRAW_RULES}")
    outcome = board.outcome(claim_draw=False)
    # A position cannot recur n times within fewer than 4 (n - 1) reversible plies; checking the
    # clock first skips python-chess's scan of the whole move stack on almost every ply.
    if outcome is None and draw_rule == "claim":
        if board.is_fifty_moves():
            outcome = chess.Outcome(chess.Termination.FIFTY_MOVES, None)
        elif board.halfmove_clock >= 8 and board.is_repetition(3):
            outcome = chess.Outcome(chess.Termination.THREEFOLD_REPETITION, None)
    return outcome


def result_for(outcome: chess.Outcome, color: chess.Color) -> float:
    """Return +1 if ``color`` won, -1 if it lost and 0 for a draw."""
    if outcome.winner is None:
        return 0.0
    return 1.0 if outcome.winner == color else -1.0
