"""Measure the Stockfish pool: reset cost, raw-pipe fast path vs python-chess, process scaling.

Run: ``python -m benchmarks.engine_fastpath [--positions 64] [--out benchmarks/results/engine_fastpath.json]``.
Every number is wall-clock milliseconds per evaluation on distinct, non-terminal positions from
seeded random games (the cache is off, so every evaluation is a search): the best of ``--rounds``
interleaved rounds, and the median. The fast-path comparison
and the pool use the pool's default ``Hash`` (1 MB); the reset-cost rows also show 16 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import chess
import chess.engine

from chess_env.engine import StockfishPool, find_stockfish
from chess_env.engine.uci import UciProcess, go_command, limit_key


def random_positions(n: int, seed: int = 0) -> list[chess.Board]:
    """``n`` distinct non-terminal positions reached by random play (4 to 40 plies)."""
    rng = random.Random(seed)
    seen: set = set()
    boards: list[chess.Board] = []
    while len(boards) < n:
        board = chess.Board()
        for _ in range(rng.randint(4, 40)):
            moves = list(board.legal_moves)
            if not moves:
                break
            board.push(rng.choice(moves))
        key = board._transposition_key()
        if not board.is_game_over() and key not in seen:
            seen.add(key)
            boards.append(chess.Board(board.fen()))  # no move stack: python-chess sends just the FEN
    return boards


def interleaved_ms(fns: dict[str, Callable[[list[chess.Board]], object]], boards: list[chess.Board], rounds: int) -> dict:
    """Time each ``fn(boards)`` in alternation, ``rounds`` times; ms per board, best round and median.

    Alternating the contenders round by round, and reporting the best round as ``timeit`` does, keeps
    a machine shared with other jobs from favouring whichever ran during a quiet moment.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(boards[:2])  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(boards)
            times[name].append(1000 * (time.perf_counter() - start) / len(boards))
    return {name: {"best_ms": min(t), "median_ms": statistics.median(t)} for name, t in times.items()}


def raw_pipe(depth: int, reset: bytes, hash_mb: int, stack: ExitStack) -> Callable[[list[chess.Board]], object]:
    engine = UciProcess(find_stockfish(), hash_mb, reset=reset)
    stack.callback(engine.close)
    engine.handshake(10.0)
    go = go_command(limit_key(chess.engine.Limit(depth=depth)))

    def search(board: chess.Board) -> tuple[bool, int]:
        engine.send(board.epd() + " 0 1", go)
        return engine.receive(60.0)

    return lambda boards: [search(b) for b in boards]


def python_chess(depth: int, hash_mb: int, stack: ExitStack) -> Callable[[list[chess.Board]], object]:
    engine = stack.enter_context(chess.engine.SimpleEngine.popen_uci(find_stockfish()))
    engine.configure({"Threads": 1, "Hash": hash_mb})
    limit = chess.engine.Limit(depth=depth)
    # A fresh `game` object makes python-chess send ucinewgame before each search, like the pool.
    return lambda boards: [engine.analyse(b, limit, game=object()) for b in boards]


def pool(depth: int, processes: int, stack: ExitStack) -> Callable[[list[chess.Board]], object]:
    p = stack.enter_context(StockfishPool(processes=processes, cache_size=0))
    limit = chess.engine.Limit(depth=depth)
    return lambda boards: p.evaluate(boards, limit)


def show(title: str, row: dict) -> None:
    print(f"{title}: " + "  ".join(f"{name} {v['best_ms']:.3f} (median {v['median_ms']:.3f})" for name, v in row.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    boards = random_positions(args.positions)
    report: dict[str, dict] = {"reset_cost": {}, "fast_path": {}, "scaling": {}}

    for depth in (1, 8):
        for hash_mb in (1, 16):
            with ExitStack() as stack:
                fns = {
                    "no_reset": raw_pipe(depth, b"", hash_mb, stack),
                    "ucinewgame": raw_pipe(depth, b"ucinewgame\n", hash_mb, stack),
                    "clear_hash": raw_pipe(depth, b"setoption name Clear Hash\n", hash_mb, stack),
                }
                row = report["reset_cost"][f"depth{depth}_hash{hash_mb}"] = interleaved_ms(fns, boards, args.rounds)
            show(f"reset cost, depth {depth}, Hash {hash_mb:>2} MB", row)

    for depth in (1, 4, 8):
        with ExitStack() as stack:
            fns = {"raw_pipe": raw_pipe(depth, b"ucinewgame\n", 1, stack), "python_chess": python_chess(depth, 1, stack)}
            row = report["fast_path"][f"depth{depth}"] = interleaved_ms(fns, boards, args.rounds)
        show(f"fast path vs analyse, depth {depth}", row)

    for depth in (1, 4, 8):
        with ExitStack() as stack:
            fns = {"1_process": pool(depth, 1, stack), "2_processes": pool(depth, 2, stack)}
            row = report["scaling"][f"depth{depth}"] = interleaved_ms(fns, boards, args.rounds)
        show(f"pool batch of {len(boards)}, depth {depth}", row)

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
