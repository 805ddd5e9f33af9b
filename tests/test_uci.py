"""``grpo-chess uci``: driven by python-chess's own UCI client, and by raw (malformed) input on stdin."""

from __future__ import annotations

import io
import subprocess
import sys

import chess
import chess.engine
import chess.pgn
import numpy as np
import pytest
from conftest import STOCKFISH, needs_stockfish, save_tiny_model

from grpo_agent.cli import main
from grpo_agent.evaluation import load_model
from grpo_agent.evaluation.players import policy_log_probs
from grpo_agent.uci import UciEngine

# A middlegame with both sides castled, and a position where White promotes (underpromotions included).
MIDDLEGAME = "r1bq1rk1/pp2bppp/2n1pn2/3p4/2PP4/2N1PN2/PP2BPPP/R2QKB1R w KQ - 0 8"
PROMOTION = "8/1P3k2/8/8/8/8/5K2/8 w - - 0 1"


def _popen(model_path: str) -> chess.engine.SimpleEngine:
    return chess.engine.SimpleEngine.popen_uci([sys.executable, "-m", "grpo_agent.cli", "uci", model_path], timeout=60)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return save_tiny_model(tmp_path_factory.mktemp("uci") / "tiny.zip")


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path)


@pytest.fixture(scope="module")
def engine(model_path):
    engine = _popen(model_path)
    yield engine
    engine.quit()


def _policy(model, board: chess.Board) -> dict[str, float]:
    moves, log_probs = policy_log_probs(model, board)
    return {m.uci(): float(p) for m, p in zip(moves, np.exp(log_probs))}


def _reported(info: dict) -> tuple[str, float, dict[str, float]]:
    """``(chosen move, its probability, top moves)`` from the ``info string policy ...`` line."""
    tokens = info["string"].split()
    assert tokens[:2] == ["policy", "bestmove"], info["string"]
    top = tokens[tokens.index("top") + 1:]
    return tokens[2], float(tokens[4]), {top[i]: float(top[i + 1]) for i in range(0, len(top), 2)}


def test_identifies_itself_and_its_options(engine):
    assert engine.id["name"] == "grpo-chess tiny"
    assert engine.options["Temperature"].type == "string" and engine.options["Temperature"].default == "0"
    assert (engine.options["MultiPV"].min, engine.options["MultiPV"].default) == (1, 1)
    assert {"Seed", "Threads"} <= set(engine.options)


@pytest.mark.parametrize("limit", [
    chess.engine.Limit(time=0.05),
    chess.engine.Limit(white_clock=30, black_clock=30, white_inc=0.1, black_inc=0.1),
    chess.engine.Limit(depth=4),
    chess.engine.Limit(nodes=1000),
], ids=["movetime", "clock", "depth", "nodes"])
def test_plays_the_policy_argmax_under_every_limit(engine, model, limit):
    engine.configure({"Temperature": 0})
    board = chess.Board()
    board.push_uci("e2e4")
    for position in (board, chess.Board(MIDDLEGAME), chess.Board(PROMOTION)):
        result = engine.play(position, limit)
        probs = _policy(model, position)
        assert result.move in position.legal_moves
        assert probs[result.move.uci()] == max(probs.values())


def test_analyse_reports_the_policy_probabilities_and_no_score(engine, model):
    board = chess.Board(MIDDLEGAME)
    infos = engine.analyse(board, chess.engine.Limit(depth=1), multipv=3)
    probs = _policy(model, board)
    ranked = sorted(probs, key=probs.get, reverse=True)
    assert [info["pv"][0].uci() for info in infos] == ranked[:3]
    assert all("score" not in info for info in infos)  # a probability is not an evaluation
    chosen, p, top = _reported(infos[0])
    assert chosen == ranked[0] and p == pytest.approx(probs[chosen], abs=1e-4)
    assert list(top) == ranked[:5] and all(top[m] == pytest.approx(probs[m], abs=1e-4) for m in top)


def test_searchmoves_restrict_and_renormalise(engine, model):
    board = chess.Board()
    root = [chess.Move.from_uci("a2a3"), chess.Move.from_uci("h2h4")]
    info = engine.analyse(board, chess.engine.Limit(depth=1), root_moves=root)
    chosen, p, top = _reported(info)
    probs = _policy(model, board)
    total = probs["a2a3"] + probs["h2h4"]
    assert set(top) == {"a2a3", "h2h4"} and sum(top.values()) == pytest.approx(1.0, abs=1e-3)
    assert p == pytest.approx(max(probs["a2a3"], probs["h2h4"]) / total, abs=1e-4)


def test_temperature_samples_and_the_seed_reproduces(engine, model):
    board = chess.Board()

    def sample(seed: int) -> list[str]:
        engine.configure({"Temperature": 1.0, "Seed": seed})
        return [engine.play(board, chess.engine.Limit(nodes=1)).move.uci() for _ in range(12)]

    first, other, again = sample(7), sample(8), sample(7)
    assert first == again and first != other
    assert len(set(first)) > 1  # the tiny policy is near uniform over 20 moves: twelve draws differ
    engine.configure({"Temperature": 0})
    probs = _policy(model, board)
    assert engine.play(board, chess.engine.Limit(nodes=1)).move.uci() == max(probs, key=probs.get)


def test_go_infinite_answers_after_stop(engine):
    board = chess.Board(MIDDLEGAME)
    with engine.analysis(board) as analysis:  # no limit: python-chess sends "go infinite"
        assert analysis.get()["pv"][0] in board.legal_moves
    best = analysis.wait()  # leaving the block sent "stop"; the raw-input test checks nothing came before it
    assert best.move in board.legal_moves


def test_history_planes_are_honoured(tmp_path):
    # A sharpened head: the history planes move the probabilities by far more than their printed precision.
    model = load_model(save_tiny_model(tmp_path / "tiny_h2.zip", history=2, sharpen=30.0))
    with_moves = chess.Board()
    for uci in ("e2e4", "e7e5", "g1f3"):
        with_moves.push_uci(uci)
    without = chess.Board(with_moves.fen())  # the same position, no moves behind it
    reported = []
    for command in ("position startpos moves e2e4 e7e5 g1f3", f"position fen {without.fen()}"):
        out = io.StringIO()
        engine = UciEngine(model, "tiny_h2", out)
        assert engine.history == 2
        engine.handle(command)
        engine.handle("go nodes 1")
        reported.append(_reported({"string": out.getvalue().split("info string ")[-1].split("\n")[0]})[2])
    for board, top in zip((with_moves, without), reported):
        probs = _policy(model, board)
        assert all(top[m] == pytest.approx(probs[m], abs=1e-4) for m in top)
    assert reported[0] != reported[1]  # the history planes changed the policy


@needs_stockfish
@pytest.mark.parametrize("grpo_color", [chess.WHITE, chess.BLACK], ids=["white", "black"])
def test_full_game_against_stockfish(engine, tmp_path, grpo_color):
    engine.configure({"Temperature": 0})
    stockfish = chess.engine.SimpleEngine.popen_uci(STOCKFISH)
    board = chess.Board()
    try:
        while not board.is_game_over(claim_draw=True):
            player = engine if board.turn == grpo_color else stockfish
            move = player.play(board, chess.engine.Limit(depth=1, time=1.0)).move
            assert move in board.legal_moves
            board.push(move)
        names = {grpo_color: engine.id["name"], not grpo_color: stockfish.id["name"]}
    finally:
        stockfish.quit()
    game = chess.pgn.Game.from_board(board)
    game.headers.update(White=names[chess.WHITE], Black=names[chess.BLACK],
                        Result=board.result(claim_draw=True))
    path = tmp_path / "game.pgn"
    path.write_text(str(game) + "\n")
    parsed = chess.pgn.read_game(io.StringIO(path.read_text()))
    assert parsed.errors == [] and parsed.end().board() == board
    assert parsed.headers["White"] == names[chess.WHITE] and parsed.headers["Result"] != "*"


def test_malformed_input_is_reported_and_the_engine_stays_alive(model_path):
    bad = [b"xyzzy", b"\xff\xfe\x00\x01garbage", b"position", b"position fen not/a/fen w - - 0 1",
           b"position fen 8/8/8/8/8/8/8/8 w - - 0 1", b"position startpos moves e2e4 e2e4",
           b"position startpos moves 0000", b"setoption", b"setoption name Nope value 1",
           b"setoption name Temperature value -1", b"setoption name Temperature value nan",
           b"setoption name MultiPV value 0", b"setoption name Seed value x", b"x" * 5000]
    script = [b"uci"]
    for line in bad:
        script += [line, b"isready"]
    script += [b"go depth x searchmoves a1a1 wtime", b"isready"]  # bad parameters: reported, the move still played
    # "joho" is skipped as the UCI specification asks; the infinite search answers only after stop.
    script += [b"joho position startpos moves e2e4", b"go infinite", b"isready", b"stop", b"quit"]
    proc = subprocess.run([sys.executable, "-m", "grpo_agent.cli", "uci", model_path],
                          input=b"\n".join(script) + b"\n", capture_output=True, timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr.decode()
    out = proc.stdout.decode()
    segments = out.split("readyok\n")
    assert len(segments) == len(bad) + 3
    for line, segment in zip(bad, segments):
        reply = [r for r in segment.splitlines() if not r.startswith(("id ", "option ", "uciok"))]
        assert reply and all(r.startswith("info string ") and len(r) < 300 for r in reply), (line, segment)
    go, waiting, stopped = segments[-3:]
    assert "info string go: ignored: depth needs an integer, got 'x'; searchmove a1a1" in go
    assert chess.Move.from_uci(go.split("bestmove ")[1].split()[0]) in chess.Board().legal_moves
    assert "ignored unknown token(s) before 'position': joho" in waiting
    assert not any(line.startswith("bestmove") for line in waiting.splitlines())
    best = stopped.split("bestmove ")[1].split()[0]
    board = chess.Board()
    board.push_uci("e2e4")  # the skipped-token command set this position
    assert chess.Move.from_uci(best) in board.legal_moves


def test_in_process_engine_reports_a_finished_game(model):
    out = io.StringIO()
    engine = UciEngine(model, "tiny", out)
    for line in ("position fen 7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", "go movetime 10"):
        assert engine.handle(line)
    assert out.getvalue().splitlines()[-1] == "bestmove (none)"  # stalemate: no legal move
    assert engine.handle("quit") is False


def test_cli_refuses_a_missing_model(tmp_path, capsys):
    assert main(["uci", str(tmp_path / "missing.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
