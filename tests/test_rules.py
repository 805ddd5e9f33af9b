"""Episode end and results, with python-chess as the oracle."""

import chess
import pytest

from chess_env.rules import game_outcome, result_for


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
