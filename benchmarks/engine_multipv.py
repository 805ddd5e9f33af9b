"""Score every legal move: one MultiPV search per position vs one search per child position.

Run: ``python -m benchmarks.engine_multipv [--positions 32] [--rounds 5] [--out benchmarks/results/engine_multipv.json]``.

For distinct, non-terminal positions from seeded random games (the cache is off, so every call searches),
at depth 1, 2 and 4 on 1 and 2 engine processes:

* ``multipv``: ``StockfishPool.evaluate_moves(boards, limit)``, one search per position with
  ``MultiPV`` = its number of legal moves;
* ``children``: ``StockfishPool.evaluate(children, limit)`` on every position reached by a legal move,
  the same limit (checkmates and stalemates among the children are scored by the rules, not searched).

Reported: positions/s and scored moves/s (legal moves of the positions over the wall-clock), the best of
``--rounds`` interleaved rounds (as ``timeit`` reports: a shared machine slows some rounds, never speeds
one up), and the ``multipv`` / ``children`` speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import chess
import chess.engine

from benchmarks.engine_fastpath import random_positions
from chess_env.engine import StockfishPool

DEPTHS = (1, 2, 4)
PROCESSES = (1, 2)


def children(boards: list[chess.Board]) -> list[chess.Board]:
    """Every non-terminal position one legal move away from ``boards``."""
    out = []
    for board in boards:
        for move in board.legal_moves:
            child = board.copy(stack=False)
            child.push(move)
            if not child.is_checkmate() and not child.is_stalemate():
                out.append(child)
    return out


def best_seconds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall-clock seconds of each ``fn()`` over ``rounds`` rounds, the contenders alternating."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def measure(boards: list[chess.Board], rounds: int) -> list[dict]:
    kids = children(boards)
    moves = sum(board.legal_moves.count() for board in boards)
    rows = []
    for processes in PROCESSES:
        with StockfishPool(processes=processes, cache_size=0) as pool:
            for depth in DEPTHS:
                limit = chess.engine.Limit(depth=depth)
                pool.evaluate_moves(boards[:2], limit)  # warm-up
                seconds = best_seconds(
                    {"multipv": lambda: pool.evaluate_moves(boards, limit), "children": lambda: pool.evaluate(kids, limit)},
                    rounds,
                )
                row = {"processes": processes, "depth": depth, "positions": len(boards), "moves": moves,
                       "searched_children": len(kids)}
                for name, s in seconds.items():
                    row[name] = {"seconds": s, "positions_per_s": len(boards) / s, "moves_per_s": moves / s}
                row["speedup"] = seconds["children"] / seconds["multipv"]
                rows.append(row)
    return rows


def show(rows: list[dict]) -> None:
    print("| processes | depth | multipv positions/s | multipv moves/s | children positions/s | children moves/s | "
          "multipv speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        m, c = r["multipv"], r["children"]
        print(f"| {r['processes']} | {r['depth']} | {m['positions_per_s']:.0f} | {m['moves_per_s']:.0f} | "
              f"{c['positions_per_s']:.0f} | {c['moves_per_s']:.0f} | {r['speedup']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--positions", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "engine_multipv.json")
    args = parser.parse_args()
    boards = random_positions(args.positions)
    rows = measure(boards, args.rounds)
    show(rows)
    report = {"cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "rounds": args.rounds, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
