"""Episode end and results, with python-chess as the oracle."""

import random

import chess
import pytest

from chess_env.rules import game_outcome, is_repetition, result_for


def play(board: chess.Board, *ucis: str) -> chess.Board:
    for uci in ucis:
        board.push_uci(uci)
    return board


def test_checkmate_stalemate_insufficient_material():
    mate = play(chess.Board(), "f2f3", "e7e5", "g2g4", "d8h4")
    outcome = game_outcome(mate)
    assert outcome.termination == chess.Termination.CHECKMATE and outcome.winner == chess.BLACK
    assert result_for(outcome, chess.BLACK) == 1 and result_for(outcome, chess.WHITE) == -1
    stalemate = chess.Board("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1")
    assert game_outcome(stalemate).termination == chess.Termination.STALEMATE
    assert result_for(game_outcome(stalemate), chess.WHITE) == 0
    bare_kings = chess.Board("8/8/4k3/8/8/3K4/8/8 w - - 0 1")
    assert game_outcome(bare_kings, "automatic").termination == chess.Termination.INSUFFICIENT_MATERIAL
    assert game_outcome(chess.Board()) is None


SHUFFLE = ("g1f3", "g8f6", "f3g1", "f6g8")


def test_threefold_ends_the_game_only_under_claim():
    board = play(chess.Board(), *SHUFFLE, *SHUFFLE)  # start position for the third time
    assert game_outcome(board, "claim").termination == chess.Termination.THREEFOLD_REPETITION
    assert game_outcome(board, "automatic") is None
    play(board, *SHUFFLE, *SHUFFLE)  # fifth time
    assert game_outcome(board, "automatic").termination == chess.Termination.FIVEFOLD_REPETITION


def test_twofold_does_not_end_the_game():
    assert game_outcome(play(chess.Board(), *SHUFFLE), "claim") is None


def test_fifty_and_seventy_five_move_rules():
    board = chess.Board("8/8/4k3/8/8/3K4/8/R7 w - - 99 80")
    play(board, "a1a2")
    assert board.halfmove_clock == 100
    assert game_outcome(board, "claim").termination == chess.Termination.FIFTY_MOVES
    assert game_outcome(board, "automatic") is None
    board = chess.Board("8/8/4k3/8/8/3K4/8/R7 w - - 149 80")
    play(board, "a1a2")
    assert game_outcome(board, "automatic").termination == chess.Termination.SEVENTYFIVE_MOVES


def test_checkmate_beats_the_fifty_move_rule():
    board = chess.Board("7k/8/6K1/8/8/8/8/R7 w - - 99 80")
    play(board, "a1a8")
    assert game_outcome(board, "claim").termination == chess.Termination.CHECKMATE


def test_unknown_draw_rule():
    with pytest.raises(ValueError, match="'sometimes'"):
        game_outcome(chess.Board(), "sometimes")


def shuffling_games(n_games: int, seed: int):
    """Positions of random games that mostly play the mover's last move backwards (repetitions,
    fivefold ones too) and now and then a random move (captures and pawn moves reset the clock)."""
    rng = random.Random(seed)
    for _ in range(n_games):
        board = chess.Board()
        for _ in range(rng.randint(20, 160)):
            moves = list(board.legal_moves)
            if not moves:
                break
            last = board.move_stack[-2] if len(board.move_stack) >= 2 else None
            back = chess.Move(last.to_square, last.from_square) if last else None
            board.push(back if back in moves and rng.random() < 0.8 else rng.choice(moves))
            yield board


def test_is_repetition_agrees_with_python_chess():
    counts = {2: 0, 3: 0, 5: 0}
    for board in shuffling_games(60, seed=0):
        for count in counts:
            expected = board.is_repetition(count)
            assert is_repetition(board, count) == expected, (board.fen(), count)
            counts[count] += expected
    assert all(counts.values()), counts  # every count was seen true somewhere


def test_outcome_agrees_with_python_chess_whether_or_not_the_moves_are_known():
    seen = set()
    for board in shuffling_games(60, seed=1):
        expected = board.outcome(claim_draw=False)
        for known in (None, any(board.generate_legal_moves())):
            assert game_outcome(board, "automatic", has_legal_moves=known) == expected, board.fen()
        seen.add(expected.termination if expected else None)
    assert chess.Termination.FIVEFOLD_REPETITION in seen
    for fen in ("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", "7k/6Q1/6K1/8/8/8/8/8 b - - 0 1", "8/8/4k3/8/8/3K4/8/8 w - - 0 1"):
        board = chess.Board(fen)  # stalemate, checkmate, bare kings
        assert game_outcome(board, "automatic", has_legal_moves=any(board.legal_moves)) == board.outcome()
