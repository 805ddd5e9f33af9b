#!/usr/bin/env python
"""Generate the shipped tactical puzzle set ``chess_env/data/puzzles.csv`` with Stockfish.

Positions come from games in which both sides play Stockfish's depth-2 move, or with
probability ``--p-random`` a uniformly random legal move: the random moves are blunders, and the
positions right after them are where tactics appear. Every candidate is verified before it is
written:

* ``mateIn1``: exactly one legal move mates (checked exhaustively with python-chess) and
  Stockfish at ``--verify-depth`` agrees (score ``#1``, same move).
* ``mateIn2``: Stockfish at ``--verify-depth`` (MultiPV 2) finds ``#2`` with no second move
  mating in two or fewer, *and* an exhaustive python-chess search confirms that the first move
  forces mate in two against every defence, that no other first move does, and that no mate in
  one exists. The defence stored is Stockfish's; a solver may mate with any mating move.
* ``winMaterial``: no mate; at ``--verify-depth`` (MultiPV 2) the best move scores at least
  ``--min-cp`` centipawns, every other move at most ``--max-second-cp`` (so the answer is
  unique), and along Stockfish's principal variation the solver gains at least two pawns of
  material (P=1, N=B=3, R=5, Q=9), so the advantage is material, not positional.

The output uses the Lichess puzzle CSV layout: ``FEN`` is the position *before* the opponent's
last move and ``Moves`` starts with that move, followed by the solution in UCI (the solver's
moves at odd indices, the opponent's replies in between). Extra columns record the
verification: ``Score`` (Stockfish's score of the best move, e.g. ``#2`` or ``+412``) and
``Depth``. The output is reproducible for a given seed and Stockfish version.

Usage::

    python scripts/make_puzzles.py --out chess_env/data/puzzles.csv --seed 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from pathlib import Path

import chess
import chess.engine
import numpy as np

from chess_env.engine import EnginePlayer

THEMES = ("mateIn1", "mateIn2", "winMaterial")
PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}
MIN_MATERIAL_GAIN = 2
MATE_SCORE = 100_000


def material(board: chess.Board, color: chess.Color) -> int:
    """``color``'s material minus the opponent's, in pawn units."""
    return sum(PIECE_VALUES[p.piece_type] * (1 if p.color == color else -1) for p in board.piece_map().values())


def mating_moves(board: chess.Board) -> list[chess.Move]:
    """All legal moves of ``board`` that checkmate."""
    found = []
    for move in board.legal_moves:
        board.push(move)
        if board.is_checkmate():
            found.append(move)
        board.pop()
    return found


def forces_mate_in_2(board: chess.Board, move: chess.Move) -> bool:
    """Whether ``move`` mates at once or mates next move against every legal defence."""
    board.push(move)
    try:
        if board.is_checkmate():
            return True
        if board.is_game_over():
            return False
        for defence in board.legal_moves:
            board.push(defence)
            mated = bool(mating_moves(board))
            board.pop()
            if not mated:
                return False
        return True
    finally:
        board.pop()


def is_unique_mate_in_2(board: chess.Board, first: chess.Move) -> bool:
    """Exhaustive check: no mate in one, ``first`` forces mate in two, no other move does."""
    if mating_moves(board) or not forces_mate_in_2(board, first):
        return False
    return not any(forces_mate_in_2(board, m) for m in board.legal_moves if m != first)


def score_text(score: chess.engine.Score) -> str:
    """``#n`` for mates, ``+cp``/``-cp`` otherwise."""
    return f"#{score.mate()}" if score.is_mate() else f"{score.score():+d}"


def classify(engine: EnginePlayer, board: chess.Board, depth: int, args: argparse.Namespace,
             wanted: set[str]) -> tuple[str, list[chess.Move], chess.engine.Score] | None:
    """The theme and solution of ``board`` (solver to move) if it is a verified puzzle, else ``None``."""
    if board.legal_moves.count() < 2:
        return None
    mates = mating_moves(board)
    if mates:
        if "mateIn1" not in wanted or len(mates) != 1:
            return None
        info = engine.analyse(board, chess.engine.Limit(depth=depth), game=object())
        score = info["score"].pov(board.turn)
        if score.mate() == 1 and info["pv"][0] == mates[0]:
            return "mateIn1", mates, score
        return None
    infos = engine.analyse(board, chess.engine.Limit(depth=depth), multipv=2, game=object())
    if len(infos) < 2:
        return None
    best, second = (i["score"].pov(board.turn) for i in infos)
    pv = infos[0]["pv"]
    if best.is_mate():
        second_mate = second.mate()
        if ("mateIn2" not in wanted or best.mate() != 2 or len(pv) < 3
                or (second_mate is not None and 0 < second_mate <= 2)):
            return None
        if not is_unique_mate_in_2(board, pv[0]):
            return None
        # The stored defence is Stockfish's; the final move must mate (any mate is accepted).
        after = board.copy()
        after.push(pv[0])
        after.push(pv[1])
        if not after.is_legal(pv[2]) or not after.gives_check(pv[2]):
            return None
        after.push(pv[2])
        return ("mateIn2", pv[:3], best) if after.is_checkmate() else None
    if "winMaterial" not in wanted:
        return None
    best_cp, second_cp = best.score(), second.score(mate_score=MATE_SCORE)
    if best_cp < args.min_cp or second_cp > args.max_second_cp:
        return None
    # Material along the principal variation, after an even number of plies so that the
    # opponent's recapture is counted; the largest gain within four plies must reach two pawns.
    line = board.copy()
    start = material(board, board.turn)
    gains = []
    for ply, move in enumerate(pv[:4], start=1):
        line.push(move)
        if ply % 2 == 0:
            gains.append(material(line, board.turn) - start)
    if not gains or max(gains) < MIN_MATERIAL_GAIN:
        return None
    return "winMaterial", pv[:1], best


def generate(args: argparse.Namespace) -> list[dict[str, str]]:
    """Play generator games until every theme quota is filled (or ``--max-games``)."""
    rng = np.random.default_rng(args.seed)
    quota = {"mateIn1": args.mate1, "mateIn2": args.mate2, "winMaterial": args.material}
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    started = time.monotonic()
    with EnginePlayer(path=args.stockfish, hash_mb=16) as engine:
        for game_index in range(args.max_games):
            wanted = {t for t, n in quota.items() if n > 0}
            if not wanted:
                break
            board = chess.Board()
            from_this_game = 0
            while from_this_game < args.per_game and not board.is_game_over(claim_draw=True) and board.ply() < args.max_plies:
                moves = list(board.legal_moves)
                if rng.random() < args.p_random:
                    move = moves[int(rng.integers(len(moves)))]
                else:
                    move = engine.play(board, chess.engine.Limit(depth=2), game=game_index)
                before = board.fen()
                board.push(move)
                key = board.epd()
                if board.ply() < 8 or board.is_game_over() or key in seen:
                    continue
                seen.add(key)
                wanted = {t for t, n in quota.items() if n > 0}
                # Scan cheaply, then confirm the survivors at the verification depth.
                found = classify(engine, board, args.scan_depth, args, wanted)
                if found is None:
                    continue
                found = classify(engine, board, args.verify_depth, args, {found[0]})
                if found is None:
                    continue
                theme, solution, score = found
                moves_text = " ".join(m.uci() for m in [move, *solution])
                puzzle_id = hashlib.sha1(f"{before} {moves_text}".encode()).hexdigest()[:8]
                rows.append({"PuzzleId": puzzle_id, "FEN": before, "Moves": moves_text, "Themes": theme,
                             "Score": score_text(score), "Depth": str(args.verify_depth)})
                quota[theme] -= 1
                from_this_game += 1
                print(f"game {game_index}: {theme:<11} {len(rows):>3} puzzles, "
                      f"{time.monotonic() - started:.0f}s", file=sys.stderr)
    short = {t: n for t, n in quota.items() if n > 0}
    if short:
        print(f"warning: quotas not filled after {args.max_games} games, missing {short}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("chess_env/data/puzzles.csv"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mate1", type=int, default=90, help="number of mate-in-1 puzzles")
    parser.add_argument("--mate2", type=int, default=60, help="number of mate-in-2 puzzles")
    parser.add_argument("--material", type=int, default=90, help="number of win-material puzzles")
    parser.add_argument("--scan-depth", type=int, default=8)
    parser.add_argument("--verify-depth", type=int, default=16)
    parser.add_argument("--min-cp", type=int, default=300, help="winMaterial: best move scores at least this")
    parser.add_argument("--max-second-cp", type=int, default=100,
                        help="winMaterial: every other move scores at most this")
    parser.add_argument("--p-random", type=float, default=0.2, help="chance of a random move in generator games")
    parser.add_argument("--max-plies", type=int, default=160)
    parser.add_argument("--max-games", type=int, default=2000)
    parser.add_argument("--per-game", type=int, default=2,
                        help="at most this many puzzles from one generator game (variety)")
    parser.add_argument("--stockfish", default=None, help="Stockfish binary (default: find_stockfish())")
    args = parser.parse_args(argv)
    if not 0.0 <= args.p_random <= 1.0:
        raise ValueError(f"--p-random must be in [0, 1], got {args.p_random!r}")
    rows = generate(args)
    rows.sort(key=lambda r: (THEMES.index(r["Themes"]), r["PuzzleId"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["PuzzleId", "FEN", "Moves", "Themes", "Score", "Depth"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} puzzles to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
