"""Tests for chess_env.engine: Stockfish discovery and StockfishPool.

python-chess's own UCI client is the oracle for scores; fault tolerance is tested with real signals
(SIGKILL, SIGSTOP) on real engine processes and with tiny fake "engines" written as shell scripts.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import chess
import chess.engine
import pytest

from chess_env.engine import EngineNotFoundError, EnginePoolError, Position, StockfishPool, find_stockfish
from chess_env.engine.pool import position
from conftest import STOCKFISH, alive, needs_stockfish, random_boards


@pytest.fixture(scope="module")
def pool():
    with StockfishPool(processes=2) as p:
        yield p


# -- discovery ---------------------------------------------------------------------------------------


def test_bad_path_is_named(tmp_path):
    bad = tmp_path / "no-such-stockfish"
    with pytest.raises(EngineNotFoundError, match="no-such-stockfish"):
        find_stockfish(bad)
    with pytest.raises(EngineNotFoundError, match="no-such-stockfish"):
        StockfishPool(processes=1, path=bad)


def test_missing_engine_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("STOCKFISH_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("chess_env.engine.discovery.DEBIAN_STOCKFISH", str(tmp_path / "stockfish"))
    with pytest.raises(EngineNotFoundError, match="apt-get install"):
        find_stockfish()


# -- scores ------------------------------------------------------------------------------------------


@needs_stockfish
@pytest.mark.parametrize("limit", [chess.engine.Limit(depth=6), chess.engine.Limit(nodes=3000)], ids=["depth", "nodes"])
def test_pool_matches_python_chess(pool, limit):
    boards = random_boards(12, seed=1)
    with chess.engine.SimpleEngine.popen_uci(STOCKFISH) as oracle:
        oracle.configure({"Threads": 1, "Hash": pool.hash_mb})
        # A fresh `game` makes python-chess send ucinewgame before each search, as the pool does.
        expected = [oracle.analyse(b, limit, game=object())["score"] for b in boards]
    assert pool.evaluate(boards, limit) == expected


@needs_stockfish
def test_deterministic_whatever_was_searched_before_and_wherever():
    limit = chess.engine.Limit(depth=9)
    boards = random_boards(16, seed=2)
    with StockfishPool(processes=1, cache_size=0) as single:
        reference = single.evaluate(boards, limit)
    with StockfishPool(processes=2, cache_size=0) as p:
        # Fill the processes' hash and history tables with other searches, then search in reverse order
        # so that each position most likely lands on a different process with a different past.
        p.evaluate(random_boards(8, seed=3), chess.engine.Limit(depth=10))
        assert p.evaluate(boards[::-1], limit)[::-1] == reference
        assert p.evaluate(boards, limit) == reference


@needs_stockfish
@pytest.mark.parametrize(
    ("fen", "expected"),
    [
        ("6k1/8/6K1/8/8/8/8/R7 w - - 0 1", chess.engine.PovScore(chess.engine.Mate(+1), chess.WHITE)),
        ("7K/8/6k1/8/8/8/8/r7 b - - 0 1", chess.engine.PovScore(chess.engine.Mate(+1), chess.BLACK)),
        ("7k/8/6K1/8/8/8/8/R7 b - - 0 1", chess.engine.PovScore(chess.engine.Mate(-1), chess.BLACK)),
    ],
    ids=["white-mates", "black-mates", "black-is-mated"],
)
def test_mate_scores_from_side_to_move(pool, fen, expected):
    score = pool.evaluate_one(chess.Board(fen), chess.engine.Limit(depth=6))
    assert score == expected
    assert score.white() == expected.white()  # PovScore equality compares the white view; be explicit


@needs_stockfish
def test_cache_key_separates_en_passant_and_castling_but_not_move_counters():
    limit = chess.engine.Limit(depth=1)
    with StockfishPool(processes=1) as p:
        # A legal en-passant capture (exd6) and castling rights change the position; the move counters
        # are not sent to the engine, so they share one entry.
        p.evaluate(
            [
                chess.Board("4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 1"),
                chess.Board("4k3/8/8/3pP3/8/8/8/4K3 w - - 0 1"),
                chess.Board("r3k3/8/8/8/8/8/8/4K2R w Kq - 0 1"),
                chess.Board("r3k3/8/8/8/8/8/8/4K2R w - - 0 1"),
                chess.Board("r3k3/8/8/8/8/8/8/4K2R w - - 37 60"),
            ],
            limit,
        )
        assert (p.cache_misses, p.cache_hits, p.engine_calls) == (4, 1, 4)


# -- every legal move: one MultiPV search ------------------------------------------------------------

KIWIPETE = "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1"
PROMOTION = "8/P6k/8/8/8/8/6K1/8 w - - 0 1"  # a8=Q/R/B/N are four of the moves


@needs_stockfish
@pytest.mark.parametrize("limit", [chess.engine.Limit(depth=3), chess.engine.Limit(nodes=20_000)], ids=["depth", "nodes"])
def test_evaluate_moves_scores_every_legal_move_from_the_movers_view(pool, limit):
    boards = [chess.Board(), chess.Board(KIWIPETE), chess.Board(PROMOTION), chess.Board(KIWIPETE.replace(" w ", " b "))]
    results = pool.evaluate_moves(boards, limit)
    for board, scores in zip(boards, results):
        assert set(scores) == set(board.legal_moves) and len(scores) == board.legal_moves.count()
        assert all(score.turn == board.turn for score in scores.values())
    assert {m.promotion for m in results[2] if m.promotion} == {chess.QUEEN, chess.ROOK, chess.BISHOP, chess.KNIGHT}


@needs_stockfish
@pytest.mark.parametrize(
    ("fen", "mate", "mover"),
    [("6k1/8/6K1/8/8/8/8/R7 w - - 0 1", "a1a8", chess.WHITE), ("7K/8/6k1/8/8/8/8/r7 b - - 0 1", "a1a8", chess.BLACK)],
    ids=["white-mates", "black-mates"],
)
def test_mate_in_one_move_wins_from_the_movers_view(pool, fen, mate, mover):
    scores = pool.evaluate_moves([chess.Board(fen)], chess.engine.Limit(depth=4))[0]
    assert scores[chess.Move.from_uci(mate)] == chess.engine.PovScore(chess.engine.Mate(+1), mover)
    assert scores[chess.Move.from_uci(mate)].relative == chess.engine.Mate(+1)
    others = [score.relative for move, score in scores.items() if move.uci() != mate]
    assert others and all(score != chess.engine.Mate(+1) for score in others)


@needs_stockfish
def test_evaluate_moves_is_deterministic_and_cached_apart_from_evaluate():
    boards = random_boards(6, seed=8)
    limit = chess.engine.Limit(depth=5)
    with StockfishPool(processes=1, cache_size=0) as single:
        reference = single.evaluate_moves(boards, limit)
    with StockfishPool(processes=2) as p:
        p.evaluate(random_boards(6, seed=9), chess.engine.Limit(depth=8))  # a different past per process
        scores = p.evaluate(boards[:1], limit)
        assert p.evaluate_moves(boards[::-1] + boards[:1], limit)[::-1][1:] == reference  # one duplicate
        assert (p.cache_misses, p.cache_hits, p.engine_calls) == (13, 1, 13)  # not the score's cache entry
        again = p.evaluate_moves(boards, limit)
        assert again == reference and (p.cache_hits, p.engine_calls) == (7, 13)
        again[0].clear()  # each caller gets its own dict: the cache is untouched
        assert p.evaluate_moves(boards[:1], limit) == reference[:1]
        assert p.evaluate(boards[:1], limit) == scores
        assert p.submit_moves([], limit).result() == []


@needs_stockfish
@pytest.mark.parametrize(("depth", "median_cp"), [(1, 2), (5, 60)])
def test_best_move_score_agrees_with_evaluate(pool, depth, median_cp):
    """MultiPV changes Stockfish's search, so the best line's score equals the single-line score only
    at depth 1; deeper it agrees up to tens of centipawns, and always in sign where the game is decided."""
    boards = random_boards(24, seed=10)
    limit = chess.engine.Limit(depth=depth)
    best = [max(scores.values(), key=lambda s: s.relative).relative for scores in pool.evaluate_moves(boards, limit)]
    single = [score.relative for score in pool.evaluate(boards, limit)]
    diffs = sorted(abs(b.score(mate_score=10_000) - s.score(mate_score=10_000)) for b, s in zip(best, single))
    assert diffs[len(diffs) // 2] <= median_cp, diffs
    decided = [(b, s) for b, s in zip(best, single) if abs(s.score(mate_score=10_000)) >= 300]
    assert decided and all((b > chess.engine.Cp(0)) == (s > chess.engine.Cp(0)) for b, s in decided)


@needs_stockfish
def test_evaluate_moves_rejects_positions_without_moves(pool):
    with pytest.raises(ValueError, match="no legal moves"):
        pool.submit_moves([chess.Board(), chess.Board("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1")], chess.engine.Limit(depth=1))


def _wrong_while_the_caller_uses_the_boards(method: str, rounds: int) -> int:
    """How many of ``rounds`` batches' results differ from a serial evaluation, while the caller keeps
    calling ``is_repetition()`` and popping and pushing moves on the submitted boards, with the GIL
    switching threads as often as it can."""
    boards = random_boards(240, seed=12, history=True)  # many boards: past the first requests written ahead
    limit = chess.engine.Limit(depth=1)
    with StockfishPool(processes=1, cache_size=0) as single:
        expected = getattr(single, method)(boards, limit)
    submit = "submit" if method == "evaluate" else "submit_moves"
    wrong = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with StockfishPool(processes=2, cache_size=0) as p:
            for _ in range(rounds):
                future = getattr(p, submit)(boards, limit)
                while not future.done():
                    for board in boards:
                        board.is_repetition()  # pops and pushes the move stack
                        board.push(board.pop())
                wrong += sum(got != want for got, want in zip(future.result(), expected))
    finally:
        sys.setswitchinterval(interval)
    return wrong


@needs_stockfish
@pytest.mark.parametrize("method", ["evaluate", "evaluate_moves"])
def test_boards_used_by_the_caller_during_a_batch_do_not_change_its_results(method):
    assert _wrong_while_the_caller_uses_the_boards(method, rounds=4) == 0


# -- cache -------------------------------------------------------------------------------------------


@needs_stockfish
def test_cache_hits_return_the_same_scores_and_counters_move():
    boards = random_boards(6, seed=4)
    limit = chess.engine.Limit(depth=4)
    with StockfishPool(processes=2, cache_size=100) as p:
        first = p.evaluate(boards + [boards[0].copy()], limit)  # a duplicate in the batch is searched once
        assert (p.cache_misses, p.cache_hits, p.engine_calls) == (6, 1, 6)
        assert first[-1] == first[0]
        assert p.evaluate(boards, limit) == first[:6]
        assert (p.cache_misses, p.cache_hits, p.engine_calls) == (6, 7, 6)
        assert p.cache_hit_rate == pytest.approx(7 / 13)
        # The limit is part of the key.
        p.evaluate(boards[:2], chess.engine.Limit(depth=5))
        assert (p.cache_misses, p.engine_calls) == (8, 8)
        p.clear_cache()
        assert p.evaluate(boards[:1], limit) == first[:1]
        assert (p.cache_misses, p.engine_calls) == (9, 9)


@needs_stockfish
def test_submit_returns_at_once_with_evaluates_results():
    boards = random_boards(6, seed=7)
    limit = chess.engine.Limit(nodes=40_000)  # ~40 ms a search: the batch is still running below
    with StockfishPool(processes=2, cache_size=0) as p:
        expected = p.evaluate(boards, limit)
        future = p.submit(boards, limit)
        assert not future.done()  # the caller is free while the engines search
        assert future.result(timeout=30) == expected
        assert p.engine_calls == 2 * len(boards)
        # Batches submitted back to back queue behind each other; each gets its own results.
        futures = [p.submit(boards[:3], limit), p.submit(boards[3:], limit)]
        assert [f.result(timeout=30) for f in futures] == [expected[:3], expected[3:]]
        assert p.submit([], limit).result() == []


@needs_stockfish
def test_positions_encoded_by_the_caller_score_and_cache_as_their_boards():
    boards = random_boards(8, seed=9, history=True)  # move stacks and counters: the key ignores them
    limit = chess.engine.Limit(depth=3)
    positions = [position(board) for board in boards]
    assert all(type(p) is Position and p.epd == b.epd() and p.turn == b.turn for p, b in zip(positions, boards))
    with StockfishPool(processes=2, cache_size=100) as p:
        expected = p.evaluate(boards, limit)
        assert p.evaluate(positions, limit) == expected and p.cache_hits == len(boards)  # the same cache keys
        p.clear_cache()
        assert p.submit(positions[::-1], limit).result(timeout=30) == expected[::-1]  # searched from the EPD
        assert p.engine_calls == 2 * len(boards)
        with pytest.raises(ValueError, match="needs boards"):
            p.submit_moves(positions[:1], limit)


@needs_stockfish
def test_submit_raises_bad_input_at_once():
    with StockfishPool(processes=1) as p:
        with pytest.raises(ValueError, match="no legal moves"):
            p.submit([chess.Board("7k/5QQ1/8/8/8/8/8/K7 b - - 0 1")], chess.engine.Limit(depth=1))
        p.close()
        with pytest.raises(RuntimeError, match="closed"):
            p.submit([chess.Board()], chess.engine.Limit(depth=1))


@needs_stockfish
def test_cache_is_lru_and_size_zero_disables_it():
    boards = random_boards(3, seed=5)
    limit = chess.engine.Limit(depth=2)
    with StockfishPool(processes=1, cache_size=2) as p:
        p.evaluate(boards[:2], limit)
        p.evaluate(boards[:1], limit)  # touch 0: 1 becomes the least recently used
        p.evaluate(boards[2:], limit)  # evicts 1
        calls = p.engine_calls
        p.evaluate(boards[:1] + boards[2:], limit)
        assert p.engine_calls == calls
        p.evaluate(boards[1:2], limit)
        assert p.engine_calls == calls + 1
    with StockfishPool(processes=1, cache_size=0) as p:
        p.evaluate(boards[:1] * 3, limit)
        p.evaluate(boards[:1], limit)
        assert (p.cache_hits, p.cache_misses, p.engine_calls) == (0, 4, 4)


# -- input validation --------------------------------------------------------------------------------


@needs_stockfish
@pytest.mark.parametrize(
    "fen",
    [
        "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3",  # checkmate
        "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1",  # stalemate
        "8/8/8/8/8/8/8/K7 w - - 0 1",  # no black king
    ],
    ids=["checkmate", "stalemate", "invalid"],
)
def test_unsearchable_positions_raise_naming_the_fen(pool, fen):
    calls = pool.engine_calls
    with pytest.raises(ValueError, match=fen.split()[0]):
        pool.evaluate([chess.Board(), chess.Board(fen)], chess.engine.Limit(depth=1))
    assert pool.engine_calls == calls  # validated before anything is sent


@needs_stockfish
def test_bad_limits_and_empty_batch(pool):
    assert pool.evaluate([], chess.engine.Limit(depth=1)) == []
    with pytest.raises(ValueError, match="time"):
        pool.evaluate([chess.Board()], chess.engine.Limit(time=0.1))
    with pytest.raises(ValueError, match="none of depth"):
        pool.evaluate([chess.Board()], chess.engine.Limit())
    with pytest.raises(ValueError, match="depth=0"):
        pool.evaluate([chess.Board()], chess.engine.Limit(depth=0))
    with pytest.raises(TypeError, match="Limit"):
        pool.evaluate([chess.Board()], {"depth": 1})
    with pytest.raises(ValueError, match="processes=0"):
        StockfishPool(processes=0)


@needs_stockfish
def test_not_picklable(pool):
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(pool)


# -- fault tolerance ---------------------------------------------------------------------------------


def _signal_mid_batch(sig: int, timeout: float, method: str = "evaluate") -> None:
    boards = random_boards(10, seed=6)
    limit = chess.engine.Limit(nodes=60_000)  # ~60 ms a search: the batch takes ~0.3 s on 2 processes
    with StockfishPool(processes=1, cache_size=0) as single:
        expected = getattr(single, method)(boards, limit)
    with StockfishPool(processes=2, cache_size=0, timeout=timeout) as p:
        victim = p.pids[0]
        timer = threading.Timer(0.08, os.kill, (victim, sig))
        timer.start()
        try:
            assert getattr(p, method)(boards, limit) == expected  # nothing lost, nothing wrong
        finally:
            timer.join()
            if sig == signal.SIGSTOP and alive(victim):
                os.kill(victim, signal.SIGKILL)
        assert p.engine_restarts == 1
        assert p.engine_calls == len(boards)
        assert victim not in p.pids and not alive(victim)  # replaced and reaped
        assert getattr(p, method)(boards[:2], limit) == expected[:2]  # the pool carries on


@needs_stockfish
@pytest.mark.parametrize("method", ["evaluate", "evaluate_moves"])
def test_killed_engine_is_replaced_and_request_retried(method):
    _signal_mid_batch(signal.SIGKILL, timeout=10.0, method=method)


@needs_stockfish
def test_stopped_engine_is_replaced_and_request_retried():
    _signal_mid_batch(signal.SIGSTOP, timeout=0.3)


def _fake_engine(tmp_path: Path, on_go: str) -> Path:
    """A shell-script 'engine' that passes the UCI handshake and then does ``on_go`` for every search."""
    script = tmp_path / "fake-engine"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            while read -r line; do
              case "$line" in
                uci) echo uciok ;;
                isready) echo readyok ;;
                go*) {on_go} ;;
                quit) exit 0 ;;
              esac
            done
            """
        )
    )
    script.chmod(0o755)
    return script


_FAILURES = {
    "crashes": "exit 3",
    "no-score": "echo 'bestmove e2e4'",
    "bad-score": "echo 'info depth 1 multipv 1 score cp pv e2e4'; echo 'bestmove e2e4'",
}


@pytest.mark.parametrize(
    ("method", "on_go"),
    [pytest.param(m, on_go, id=f"{m}-{name}") for m in ("evaluate", "evaluate_moves") for name, on_go in _FAILURES.items()]
    # A well-formed line is a whole answer to a single-line search, but only one of a MultiPV search's.
    + [pytest.param("evaluate_moves", "echo 'info depth 1 multipv 1 score cp 20 pv e2e4'; echo 'bestmove e2e4'",
                    id="evaluate_moves-one-line")],
)
def test_persistent_failure_raises_engine_error_naming_the_position(tmp_path, method, on_go):
    board = chess.Board("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3")
    with StockfishPool(processes=1, path=_fake_engine(tmp_path, on_go), max_retries=2) as p:
        for _ in range(2):  # the failure is not cached: the second call searches (and fails) again
            with pytest.raises(EnginePoolError, match=board.epd().split()[0]):
                getattr(p, method)([board], chess.engine.Limit(depth=1))
        assert p.engine_calls == 0
        assert p.engine_restarts == 5  # 2 per failed call, plus re-creating the slot left empty


def test_failure_in_a_submitted_batch_surfaces_from_result(tmp_path):
    boards = [chess.Board(), chess.Board("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3")]
    with StockfishPool(processes=2, path=_fake_engine(tmp_path, "exit 3"), max_retries=1) as p:
        future = p.submit(boards, chess.engine.Limit(depth=1))
        with pytest.raises(EnginePoolError, match="failed on position"):
            future.result(timeout=30)
        assert isinstance(future.exception(), EnginePoolError)
        assert p.engine_calls == 0 and p.cache_misses == 2  # nothing scored, nothing cached
        with pytest.raises(EnginePoolError):  # the next batch searches (and fails) again
            p.submit(boards[:1], chess.engine.Limit(depth=1)).result(timeout=30)


# -- process hygiene ---------------------------------------------------------------------------------


@needs_stockfish
def test_close_leaves_no_process_and_is_idempotent():
    p = StockfishPool(processes=2)
    pids = p.pids
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    p.close()
    p.close()
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        p.evaluate([chess.Board()], chess.engine.Limit(depth=1))


@needs_stockfish
def test_no_process_left_after_exception_or_garbage_collection():
    with pytest.raises(ZeroDivisionError):
        with StockfishPool(processes=2) as p:
            pids = p.pids
            1 / 0
    assert not any(alive(pid) for pid in pids)
    p = StockfishPool(processes=1)
    pids = p.pids
    del p
    gc.collect()
    assert not any(alive(pid) for pid in pids)


@needs_stockfish
def test_no_process_left_at_interpreter_exit():
    code = (
        "import chess, chess.engine\n"
        "from chess_env.engine import StockfishPool\n"
        "pool = StockfishPool(processes=2)\n"
        "pool.evaluate([chess.Board()], chess.engine.Limit(depth=2))\n"
        "print(*pool.pids)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    pids = [int(pid) for pid in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)
