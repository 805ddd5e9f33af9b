"""``grpo-chess play``: the terminal game driven through stdin."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys

import chess
import pytest

from grpo_agent.cli.play import add_play_arguments, run_play
from grpo_agent.play import parse_move, play_interactive, render_board


def _scripted(*ucis: str):
    """An agent that plays the given moves in order."""
    moves = iter(ucis)
    return lambda board: chess.Move.from_uci(next(moves))


def _play(agent, lines: str, color=chess.WHITE, fen=chess.STARTING_FEN) -> tuple[str, str]:
    out = io.StringIO()
    result = play_interactive(agent, color, io.StringIO(lines), out, fen, "bot")
    return result, out.getvalue()


def test_malformed_and_illegal_input_is_answered_with_the_legal_moves():
    result, text = _play(_scripted("e7e5"), "xyz\ne5\ne2e5\nNd2\ne4\nquit\n")
    assert result == "*"
    assert "'xyz' is neither a move in SAN" in text
    assert "'e5' is not a legal move here" in text
    assert "'e2e5' is not a legal move here" in text
    assert text.count("Legal moves: Na3 Nc3 Nf3 Nh3 a3 a4") == 4  # Nd2 is illegal at the start too
    assert "bot plays e5 (e7e5)" in text


def test_ambiguous_san_is_explained():
    fen = "4k3/8/8/8/8/8/8/1N2KN2 w - - 0 1"  # both knights reach d2
    _, text = _play(_scripted(), "Nd2\nquit\n", fen=fen)
    assert "'Nd2' is ambiguous" in text and "Nbd2" in text and "Nfd2" in text


def test_checkmate_as_black_with_san_and_uci():
    result, text = _play(_scripted("f2f3", "g2g4"), "e5\nd8h4\n", color=chess.BLACK)
    assert result == "0-1"
    assert "Game over: checkmate. You win (0-1)." in text
    assert text.splitlines()[2].startswith("1 ")  # Black's view: rank 1 on top


def test_undo_takes_back_a_full_move_and_resign_ends_the_game():
    result, text = _play(_scripted("e7e5", "d7d5", "c7c5"), "e4\nundo\nd4\nresign\n")
    assert result == "0-1" and "You resign. bot wins (0-1)." in text
    assert "Took back 2 plies." in text
    assert "bot plays d5 (d7d5)" in text  # the game went on from the undone position
    _, text = _play(_scripted("e2e4"), "undo\nquit\n", color=chess.BLACK)
    assert "Nothing to undo." in text  # the agent's first move is not yours to take back


def test_end_of_input_abandons_and_the_agent_forfeits_an_illegal_move():
    assert _play(_scripted(), "")[0] == "*"
    result, text = _play(_scripted("e2e5"), "", color=chess.BLACK)
    assert result == "0-1" and "illegal move e2e5 and forfeits" in text


def test_parse_move_accepts_san_and_uci():
    board = chess.Board()
    assert parse_move(board, "Nf3") == parse_move(board, "g1f3") == chess.Move.from_uci("g1f3")
    with pytest.raises(ValueError, match="'e2e5'"):
        parse_move(board, "e2e5")


def test_render_board_labels_and_pieces():
    text = render_board(chess.Board())
    assert text.splitlines()[0] == "8 ♜ ♞ ♝ ♛ ♚ ♝ ♞ ♜"
    assert text.splitlines()[-1] == "  a b c d e f g h"
    assert render_board(chess.Board(), chess.BLACK, unicode=False).splitlines()[0] == "1 R N B K Q B N R"


def test_run_play_against_the_random_mover_through_stdin():
    args = add_play_arguments(argparse.ArgumentParser()).parse_args(["random", "--seed", "0"])
    out = io.StringIO()
    assert run_play(args, io.StringIO("e4\nbogus\nresign\n"), out) == 0
    text = out.getvalue()
    assert "You play White against random" in text and "random plays" in text
    assert "'bogus' is neither" in text and "You resign" in text


def test_run_play_rejects_a_bad_fen(capsys):
    args = add_play_arguments(argparse.ArgumentParser()).parse_args(["random", "--fen", "8/8/8/8/8/8/8/8 w - - 0 1"])
    assert run_play(args, io.StringIO(""), io.StringIO()) == 2
    assert "not a playable position" in capsys.readouterr().err


def test_grpo_chess_play_runs_as_a_program_on_piped_stdin():
    proc = subprocess.run([sys.executable, "-m", "grpo_agent.cli", "play", "random", "--color", "black", "--seed", "1"],
                          input="zz9\nresign\n", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    assert "'zz9' is neither" in proc.stdout and "You resign. random wins (1-0)." in proc.stdout
