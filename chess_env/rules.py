"""When a game ends, and what the result is worth to each side."""

from __future__ import annotations

from itertools import islice

import chess

DRAW_RULES = ("claim", "automatic")


def game_outcome(
    board: chess.Board, draw_rule: str = "claim", *, has_legal_moves: bool | None = None
) -> chess.Outcome | None:
    """Return the outcome of ``board`` under ``draw_rule``, or None while the game goes on.

    Checkmate, stalemate and insufficient material always end the game, and so do the fivefold
    repetition and the 75-move rule (FIDE makes those automatic). With ``draw_rule="claim"`` the
    draw is also taken as soon as it can be claimed for the position on the board: its third
    occurrence, or 50 moves (100 plies) without a capture or pawn move.

    ``has_legal_moves`` is whether ``board`` has a legal move, for a caller that generated them
    already (the env, for its mask); None finds out.

    Raises:
        ValueError: unknown ``draw_rule``.
    """
    if draw_rule not in DRAW_RULES:
        raise ValueError(f"unknown draw_rule {draw_rule!r}; expected one of {DRAW_RULES}")
    if type(board) is chess.Board:
        outcome = _automatic_outcome(board, has_legal_moves)
    else:  # a variant's own ends
        outcome = board.outcome(claim_draw=False)
    if outcome is None and draw_rule == "claim":
        if board.is_fifty_moves():
            outcome = chess.Outcome(chess.Termination.FIFTY_MOVES, None)
        elif is_repetition(board, 3):
            outcome = chess.Outcome(chess.Termination.THREEFOLD_REPETITION, None)
    return outcome


def is_repetition(board: chess.Board, count: int = 3) -> bool:
    """``board.is_repetition(count)``: whether the position on the board occurred ``count`` times.

    Only the plies since the last capture or pawn move can hold an earlier occurrence (neither can
    be undone), and a position cannot recur ``count`` times within fewer than ``4 (count - 1)`` of
    them, so the halfmove clock rules most plies out, and the rest are looked for among the clock's
    plies only; python-chess's own check, which scans the whole move stack, runs only when that many
    of them have the position's occupancy.
    """
    clock = board.halfmove_clock
    if clock < 4 * (count - 1):
        return False
    occupied, seen = board.occupied, 1
    for state in islice(reversed(board._stack), clock):
        if state.occupied == occupied:
            seen += 1
            if seen >= count:
                return board.is_repetition(count)
    return False


def _automatic_outcome(board: chess.Board, has_legal_moves: bool | None) -> chess.Outcome | None:
    """``board.outcome(claim_draw=False)`` of a standard board, legal moves generated at most once."""
    if has_legal_moves is None:
        has_legal_moves = any(board.generate_legal_moves())
    # python-chess's order of precedence: mate, insufficient material, stalemate, 75 moves, fivefold.
    if not has_legal_moves and board.is_check():
        return chess.Outcome(chess.Termination.CHECKMATE, not board.turn)
    # A pawn, rook or queen on the board is mating material for its side: python-chess's first test, inlined.
    if not (board.pawns | board.rooks | board.queens) and board.is_insufficient_material():
        return chess.Outcome(chess.Termination.INSUFFICIENT_MATERIAL, None)
    if not has_legal_moves:
        return chess.Outcome(chess.Termination.STALEMATE, None)
    if board.is_seventyfive_moves():
        return chess.Outcome(chess.Termination.SEVENTYFIVE_MOVES, None)
    if is_repetition(board, 5):
        return chess.Outcome(chess.Termination.FIVEFOLD_REPETITION, None)
    return None


def result_for(outcome: chess.Outcome, color: chess.Color) -> float:
    """Return +1 if ``color`` won, -1 if it lost and 0 for a draw."""
    if outcome.winner is None:
        return 0.0
    return 1.0 if outcome.winner == color else -1.0
