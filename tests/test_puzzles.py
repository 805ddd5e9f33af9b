"""chess_env.puzzles: the Lichess convention, the reader's checks, the shipped set."""

from __future__ import annotations

import chess
import pytest

from chess_env.puzzles import PUZZLES_FILE, Puzzle, read_puzzles


def test_lichess_rows_keep_the_opponents_move_first(puzzle_csv):
    first, second = read_puzzles(puzzle_csv)
    assert first.puzzle_id == "00sHx" and first.rating == 1760
    assert first.fen.startswith("q3k1nr/") and first.moves[0] == "e8d7"
    assert first.solution == ("a2e6", "d7d8", "f7f8")
    assert first.themes == ("mate", "mateIn2", "middlegame", "short")
    board = first.board()  # Black's e8d7 played: White, the solver, to move
    assert board.turn == chess.WHITE and board.move_stack == [chess.Move.from_uci("e8d7")]
    for puzzle in (first, second):  # the whole solution replays legally from the solver's position
        board = puzzle.board()
        for uci in puzzle.solution:
            board.push_uci(uci)
    assert board.turn == chess.WHITE and len(second.solution) == 7


def test_missing_id_themes_and_rating_have_defaults(tmp_path):
    path = tmp_path / "bare.csv"
    path.write_text("FEN,Moves\n6k1/p4ppp/8/8/8/8/8/3RR1K1 b - - 0 1,a7a6 d1d8\n")
    assert read_puzzles(path) == [Puzzle("2", "6k1/p4ppp/8/8/8/8/8/3RR1K1 b - - 0 1", ("a7a6", "d1d8"))]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8e6 a2e6", r":2: move 1 'e8e6' is not legal"),
        ("x,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8d7 a2e6 d7d8 b1b2", r":2: move 4 'b1b2'"),
        ("x,not/a/fen w - - 0 1,e2e4 e7e5", r":2: invalid FEN 'not/a/fen"),
        ("x,4k3/8/8/8/8/8/8/K3K3 w - - 0 1,a1a2 e8e7", r":2: invalid position"),
        ("x,4k3/8/8/8/8/8/8/4K3 w - - 0 1,e1e2", r":2: a puzzle needs the opponent's move and a solution"),
        ("x,7k/8/5KQ1/8/8/8/8/8 w - - 0 1,g6g7 h8g7", r":2: the game is over after the opponent's move 'g6g7'"),
    ],
    ids=["illegal-first", "illegal-later", "bad-fen", "invalid", "one-move", "over"],
)
def test_bad_rows_are_named_with_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"PuzzleId,FEN,Moves\n{row}\n")
    with pytest.raises(ValueError, match=message) as info:
        read_puzzles(path)
    assert str(info.value).startswith(f"{path}:2:")


def test_bad_files_are_named(tmp_path):
    path = tmp_path / "no_moves.csv"
    path.write_text("PuzzleId,FEN\nx,8/8/8/8/8/8/8/8 w - - 0 1\n")
    with pytest.raises(ValueError, match=r"no_moves.csv:1: .*\['Moves'\]"):
        read_puzzles(path)
    path.write_text("PuzzleId,FEN,Moves\n")
    with pytest.raises(ValueError, match="no puzzles"):
        read_puzzles(path)


def test_the_shipped_set_is_read_by_default():
    puzzles = read_puzzles()
    assert puzzles == read_puzzles(PUZZLES_FILE) and len(puzzles) == 240
    assert all(p.board().turn != chess.Board(p.fen).turn for p in puzzles)
