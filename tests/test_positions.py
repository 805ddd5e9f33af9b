"""Start-position sets: shipped data, loaders, validation, sampling, the balance filter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chess
import chess.engine
import numpy as np
import pytest

from chess_env.positions import (
    PHASES,
    PositionSet,
    classify_phase,
    is_balanced,
    load_pgn,
    load_positions,
)
from conftest import STOCKFISH, needs_stockfish

REPO = Path(__file__).resolve().parents[1]

# Fool's mate (White is mated) and a stalemate (Black to move, no legal moves).
MATED_FEN = "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"
STALEMATE_FEN = "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1"
# Two white kings: parses, but Board.is_valid() is False.
INVALID_FEN = "4k3/8/8/8/8/8/8/K3K3 w - - 0 1"
# White is a full queen up in an otherwise quiet position.
QUEEN_UP_FEN = "rnb1kbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"

def epd_key(fen: str) -> str:
    return " ".join(fen.split()[:4])


@pytest.fixture(scope="module")
def builtin() -> PositionSet:
    return load_positions("builtin")


# --- shipped data ------------------------------------------------------------------------


def test_builtin_has_thousands_of_unique_valid_positions(builtin):
    assert 3000 <= len(builtin) <= 6000
    assert len({epd_key(f) for f in builtin}) == len(builtin)
    for fen in builtin:
        board = chess.Board(fen)
        assert board.is_valid() and board.outcome() is None, fen


def test_builtin_phase_subsets_partition_the_set_and_match_classify_phase(builtin):
    subsets = {phase: load_positions(f"builtin:{phase}") for phase in PHASES}
    assert sum(len(s) for s in subsets.values()) == len(builtin)
    for phase, subset in subsets.items():
        # Roughly balanced across phases: each at least a fifth of the set.
        assert len(subset) >= len(builtin) / 5, phase
        assert all(classify_phase(fen) == phase for fen in subset), phase


def test_builtin_eval_is_held_out(builtin):
    held_out = load_positions("builtin:eval")
    assert 150 <= len(held_out) <= 300
    assert {classify_phase(f) for f in held_out} == set(PHASES)
    assert not {epd_key(f) for f in held_out} & {epd_key(f) for f in builtin}


def test_builtin_scores_are_within_the_balance_bound():
    lines = (REPO / "chess_env" / "data" / "start_positions.epd").read_text().splitlines()
    scores = [chess.Board.from_epd(line)[1]["ce"] for line in lines if line and not line.startswith("#")]
    assert len(scores) > 3000
    assert max(abs(s) for s in scores) <= 150


def test_builtin_is_cached_and_standard_is_the_initial_position():
    assert load_positions("builtin") is load_positions("builtin")
    assert list(load_positions("standard")) == [chess.STARTING_FEN]


# --- text, PGN and CSV loaders -----------------------------------------------------------


def test_fen_and_epd_lines_with_comments_and_blanks(tmp_path):
    path = tmp_path / "mixed.epd"
    path.write_text(
        "# a comment line\n"
        "\n"
        f"{chess.STARTING_FEN}\n"
        "   \n"
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq -\n"
        'r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - bm Bb5; id "ruy"; hmvc 2; fmvn 3;\n'
    )
    positions = load_positions(path)
    assert len(positions) == 3
    assert positions[0] == chess.STARTING_FEN
    assert chess.Board(positions[1]).turn == chess.BLACK
    # EPD move counters are honoured.
    assert positions[2].endswith(" w KQkq - 2 3")
    assert load_positions(str(path)) == positions


@pytest.mark.parametrize("suffix", [".fen", ".txt"])
def test_invalid_fen_line_names_file_line_and_text(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_text(f"# header\n{chess.STARTING_FEN}\nrnbqkbnr/pppppppp/9/8 w KQkq - 0 1\n")
    with pytest.raises(ValueError) as info:
        load_positions(path)
    message = str(info.value)
    assert f"{path}:3" in message and "rnbqkbnr/pppppppp/9/8" in message


@pytest.mark.parametrize("fen, why", [(MATED_FEN, "checkmate"), (STALEMATE_FEN, "stalemate"),
                                      (INVALID_FEN, "invalid")])
def test_finished_or_invalid_position_rejected(tmp_path, fen, why):
    path = tmp_path / "over.fen"
    path.write_text(f"{chess.STARTING_FEN}\n{fen}\n")
    with pytest.raises(ValueError, match=why) as info:
        load_positions(path)
    assert f"{path}:2" in str(info.value) and fen in str(info.value)
    with pytest.raises(ValueError, match=r"fens\[1\]"):
        load_positions([chess.STARTING_FEN, fen])


def test_pgn_positions_from_min_ply(tmp_path):
    path = tmp_path / "games.pgn"
    path.write_text(
        '[Event "one"]\n[Result "0-1"]\n\n1. f3 e5 2. g4 Qh4# 0-1\n\n'
        '[Event "two"]\n[Result "*"]\n\n1. e4 e5 2. Nf3 Nc6 3. Bb5 *\n'
    )
    positions = load_pgn(path, min_ply=2)
    game_one = chess.Board()
    for san in ["f3", "e5"]:
        game_one.push_san(san)
    # Game one: plies 2 and 3 (the mated final position is skipped); game two: plies 2..5.
    assert len(positions) == 2 + 4
    assert positions[0] == game_one.fen()
    assert positions[-1] == "r1bqkbnr/pppp1ppp/2n5/1B2p3/4P3/5N2/PPPP1PPP/RNBQK2R b KQkq - 3 3"
    assert len(load_pgn(path, min_ply=2, every=2)) == 1 + 2
    with pytest.raises(ValueError, match="no positions at ply >= 8"):
        load_positions(path)  # the default min_ply=8 is past both games


def test_pgn_default_min_ply_and_empty_result(tmp_path):
    path = tmp_path / "short.pgn"
    path.write_text('[Event "short"]\n[Result "*"]\n\n1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. Ba4 Nf6 5. O-O *\n')
    positions = load_positions(path)  # default min_ply=8: positions after ply 8 and 9
    assert len(positions) == 2
    assert chess.Board(positions[0]).fullmove_number == 5
    with pytest.raises(ValueError, match="no positions at ply >= 20"):
        load_pgn(path, min_ply=20)


def test_pgn_illegal_move_names_the_game_line(tmp_path):
    path = tmp_path / "bad.pgn"
    path.write_text('[Event "ok"]\n\n1. e4 e5 *\n\n\n[Event "bad"]\n\n1. d4 d5 2. Qxh5 e6 *\n')
    with pytest.raises(ValueError, match="Qxh5") as info:
        load_positions(path)
    assert f"{path}:6 (game 2)" in str(info.value)


def test_lichess_puzzle_csv_gives_the_position_the_solver_faces(puzzle_csv):
    positions = load_positions(puzzle_csv)
    assert len(positions) == 2
    first = chess.Board(positions[0])
    # The CSV FEN has Black to move; after Black's e8d7 it is White, the solver, to move.
    assert first.turn == chess.WHITE
    assert first.piece_at(chess.D7) == chess.Piece(chess.KING, chess.BLACK)
    assert chess.Move.from_uci("a2e6") in first.legal_moves
    second = chess.Board(positions[1])
    assert second.turn == chess.BLACK and second.piece_at(chess.G3) == chess.Piece(chess.ROOK, chess.WHITE)


# --- PositionSet -------------------------------------------------------------------------


def test_sample_is_reproducible_and_uniform_over_the_set(builtin):
    a = builtin.sample(np.random.default_rng(7), 50)
    b = builtin.sample(np.random.default_rng(7), 50)
    c = builtin.sample(np.random.default_rng(8), 50)
    assert a == b and a != c
    assert set(a) <= set(builtin)
    assert builtin.sample(np.random.default_rng(0), 0) == []
    small = PositionSet([chess.STARTING_FEN, STALEMATE_FEN.replace(" b ", " w ")])
    draws = small.sample(np.random.default_rng(0), 2000)
    assert 850 < draws.count(chess.STARTING_FEN) < 1150
    with pytest.raises(ValueError, match="-1"):
        builtin.sample(np.random.default_rng(0), -1)


def test_sequence_behaviour_and_normalisation():
    ps = PositionSet(["rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -", MATED_FEN.replace("Pq", "P1")])
    assert ps[0] == chess.STARTING_FEN  # move counters filled in
    assert len(ps) == 2 and list(ps)[1] == ps[-1]
    assert isinstance(ps[:1], PositionSet) and len(ps[:1]) == 1
    assert load_positions(ps) is ps
    with pytest.raises(ValueError, match="no positions"):
        PositionSet([])
    with pytest.raises(ValueError, match="single string"):
        PositionSet(chess.STARTING_FEN)


def test_split_is_disjoint_deterministic_and_keeps_duplicates_together(builtin):
    train, test = builtin.split(0.9, seed=3)
    assert len(train) + len(test) == len(builtin)
    assert not {epd_key(f) for f in train} & {epd_key(f) for f in test}
    assert builtin.split(0.9, seed=3) == (train, test)
    assert builtin.split(0.9, seed=4)[1] != test
    dup = PositionSet([chess.STARTING_FEN, chess.STARTING_FEN.replace(" 0 1", " 0 5"), MATED_FEN.replace("Pq", "P1")])
    first, second = dup.split(0.5, seed=0)
    assert {len(first), len(second)} == {1, 2}
    with pytest.raises(ValueError, match="1.5"):
        builtin.split(1.5)


def test_filter_by_phase(builtin):
    endgames = builtin.filter(lambda board: classify_phase(board) == "endgame")
    assert endgames == load_positions("builtin:endgame")
    with pytest.raises(ValueError, match="no positions"):
        builtin.filter(lambda board: False)


def test_classify_phase():
    assert classify_phase(chess.STARTING_FEN) == "opening"
    assert classify_phase(chess.STARTING_FEN.replace(" 0 1", " 0 30")) == "middlegame"
    assert classify_phase("8/5pk1/6p1/8/8/6P1/5PK1/3R4 w - - 0 40") == "endgame"
    # Both sides with a queen and a rook (28 pawn units) and all pawns: still middlegame.
    assert classify_phase("3qk2r/pppppppp/8/8/8/8/PPPPPPPP/3QK2R w - - 0 30") == "middlegame"


@pytest.mark.parametrize("spec", ["builtin:nope", "openings", "positions.json", 42, None])
def test_unknown_spec_is_named(spec):
    with pytest.raises(ValueError, match="unknown start-position spec") as info:
        load_positions(spec)
    assert repr(spec) in str(info.value) or str(spec) in str(info.value)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "missing.epd"
    with pytest.raises(ValueError, match="missing.epd.*does not exist"):
        load_positions(path)


# --- balance filter ----------------------------------------------------------------------


def test_is_balanced_on_scores():
    assert is_balanced(chess.engine.Cp(0))
    assert is_balanced(chess.engine.Cp(-150)) and is_balanced(chess.engine.Cp(150))
    assert not is_balanced(chess.engine.Cp(151))
    assert not is_balanced(chess.engine.Cp(-900))  # a queen down
    assert not is_balanced(chess.engine.Mate(12)) and not is_balanced(chess.engine.Mate(-3))
    assert not is_balanced(chess.engine.PovScore(chess.engine.Cp(-900), chess.BLACK))
    assert is_balanced(chess.engine.Cp(60), max_cp=60) and not is_balanced(chess.engine.Cp(61), max_cp=60)


@needs_stockfish
@pytest.mark.slow
def test_stockfish_balance_filter_rejects_queen_up_position():
    with chess.engine.SimpleEngine.popen_uci(STOCKFISH) as engine:
        engine.configure({"Threads": 1, "Hash": 16})

        def score(fen: str) -> chess.engine.PovScore:
            return engine.analyse(chess.Board(fen), chess.engine.Limit(depth=10))["score"]

        assert not is_balanced(score(QUEEN_UP_FEN))
        assert is_balanced(score(chess.STARTING_FEN))


@needs_stockfish
@pytest.mark.slow
def test_generator_script_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_start_positions.py"), "--seed", "1", "--games", "12",
         "--per-phase", "3", "--eval-size", "3", "--depth", "6", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "rejected" in result.stdout and "before filter" in result.stdout
    train = load_positions(tmp_path / "start_positions.epd")
    held_out = load_positions(tmp_path / "eval_positions.epd")
    assert 0 < len(train) <= 9 and 0 < len(held_out) <= 3
    assert not {epd_key(f) for f in train} & {epd_key(f) for f in held_out}
    # Same seed, same files.
    first = (tmp_path / "start_positions.epd").read_text()
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_start_positions.py"), "--seed", "1", "--games", "12",
         "--per-phase", "3", "--eval-size", "3", "--depth", "6", "--out-dir", str(tmp_path), "--workers", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert (tmp_path / "start_positions.epd").read_text() == first
