#!/usr/bin/env python
"""Generate the shipped start positions: ``chess_env/data/start_positions.epd`` and ``eval_positions.epd``.

Candidates come from semi-random games played from the initial position. Each ply is, with
probability ``--p-random-opening`` (first 12 plies, for variety) or ``--p-random`` (later), a
uniformly random legal move; otherwise Stockfish searches at a random depth in ``--move-depths``
with MultiPV 3 and one of its top moves is drawn with weights ``exp(-|score| / T)``
(``T = --temperature-cp``): moves that keep the game level are likelier, so games stay realistic
(every such move is one of the engine's top 3) and many reach a balanced endgame. Every game is snapshot
once in the opening (ply 6-16), once in the middlegame (ply 20-50) and twice after the material
first falls to endgame level (see ``chess_env.positions.classify_phase``, which also names the
phase stored with each position).

Every candidate is scored by Stockfish at ``--depth`` and kept only if
``chess_env.positions.is_balanced`` holds (no mate, ``|cp| <= --max-cp``). Duplicates (same
EPD) are dropped. From the kept positions of each phase, a seeded draw takes the held-out eval
set and then the training set, so the two are disjoint. The summary table shows per phase how
many candidates the balance filter rejected and the score distribution before and after it.

Deterministic for a given ``--seed`` and Stockfish build: each game has its own RNG stream and
starts with ``ucinewgame`` (cleared hash), and Stockfish runs single-threaded with depth limits,
so the split of games over ``--workers`` processes does not change the result.

    python scripts/make_start_positions.py --seed 0
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.engine
import numpy as np

from chess_env.engine import EnginePlayer, find_stockfish
from chess_env.positions import DATA_DIR, PHASES, classify_phase, is_balanced

OPENING_PLIES = (6, 16)
MIDDLEGAME_PLIES = (20, 50)
MAX_PLIES = 200
RANDOM_OPENING_PLIES = 12
ENGINE_HASH_MB = 16
# Upper bounds (cp) of the |score| histogram buckets in the summary; mates are counted apart.
HIST_UPPER = (50, 100, 150, 300, 600, 1000)


@dataclass(frozen=True)
class Candidate:
    """One snapshot of a generated game, with its Stockfish score from the side to move."""

    game: int
    ply: int
    fen: str
    phase: str
    score: chess.engine.Score

    @property
    def cp(self) -> int | None:
        """Centipawns from the side to move, None for a mate score."""
        return self.score.score()


@dataclass(frozen=True)
class GenConfig:
    seed: int
    depth: int
    p_random_opening: float
    p_random: float
    temperature_cp: float
    move_depths: tuple[int, int]
    stockfish: str


def _choose_move(engine: EnginePlayer, board: chess.Board, rng: np.random.Generator,
                 cfg: GenConfig, game: int) -> chess.Move:
    """A random legal move with probability ``p_random`` (``p_random_opening`` before ply
    :data:`RANDOM_OPENING_PLIES`), else a draw over Stockfish's top 3 moves weighted towards balance."""
    p_random = cfg.p_random_opening if board.ply() < RANDOM_OPENING_PLIES else cfg.p_random
    if rng.random() < p_random:
        legal = list(board.legal_moves)
        return legal[rng.integers(len(legal))]
    depth = int(rng.integers(cfg.move_depths[0], cfg.move_depths[1] + 1))
    infos = engine.analyse(board, chess.engine.Limit(depth=depth), multipv=3, game=game)
    moves = [info["pv"][0] for info in infos if info.get("pv")]
    scores = np.array([info["score"].relative.score(mate_score=10_000) for info in infos if info.get("pv")],
                      dtype=np.float64)
    # Balance-seeking draw: moves whose score is closer to 0 are likelier, so the side behind
    # mostly plays its best move and the side ahead sometimes a lesser top move. Without this,
    # low-depth play drifts into decided games long before the endgame.
    closeness = -np.abs(scores)
    weights = np.exp((closeness - closeness.max()) / cfg.temperature_cp)
    return moves[rng.choice(len(moves), p=weights / weights.sum())]


def play_game(engine: EnginePlayer, cfg: GenConfig, game: int) -> list[Candidate]:
    """Play one semi-random game and return its scored snapshots."""
    rng = np.random.default_rng([cfg.seed, game])
    snap_plies = {int(rng.integers(OPENING_PLIES[0], OPENING_PLIES[1] + 1)),
                  int(rng.integers(MIDDLEGAME_PLIES[0], MIDDLEGAME_PLIES[1] + 1))}
    endgame_offsets = (int(rng.integers(0, 5)), int(rng.integers(8, 25)))
    endgame_start: int | None = None
    board = chess.Board()
    snapshots = []
    while board.outcome() is None and board.ply() < MAX_PLIES:
        ply = board.ply()
        if endgame_start is None and classify_phase(board) == "endgame":
            endgame_start = ply
            snap_plies.update(ply + off for off in endgame_offsets)
        if ply in snap_plies:
            snapshots.append(board.copy(stack=False))
        if endgame_start is not None and ply >= endgame_start + max(endgame_offsets):
            break
        board.push(_choose_move(engine, board, rng, cfg, game))
    candidates = []
    for snap in snapshots:
        score = engine.analyse(snap, chess.engine.Limit(depth=cfg.depth), game=game)["score"].relative
        candidates.append(Candidate(game, snap.ply(), snap.fen(), classify_phase(snap), score))
    return candidates


def run_shard(args: tuple[GenConfig, list[int]]) -> list[Candidate]:
    """Play the given games with one single-threaded engine (one worker process)."""
    cfg, games = args
    with EnginePlayer(path=cfg.stockfish, hash_mb=ENGINE_HASH_MB) as engine:
        return [c for game in games for c in play_game(engine, cfg, game)]


def histogram(cands: list[Candidate]) -> str:
    """Counts of ``|cp|`` per bucket of :data:`HIST_UPPER` (the last bucket open), then mates."""
    cps = np.array([abs(c.cp) for c in cands if c.cp is not None], dtype=np.int64)
    counts = np.bincount(np.searchsorted(HIST_UPPER, cps, side="left"), minlength=len(HIST_UPPER) + 1)
    mates = sum(c.cp is None for c in cands)
    return " ".join(f"{n:>6d}" for n in counts) + f" {mates:>6d}"


def histogram_header() -> str:
    labels = [f"<={hi}" for hi in HIST_UPPER] + [f">{HIST_UPPER[-1]}", "mate"]
    return " ".join(f"{label:>6}" for label in labels)


def write_epd(path: Path, cands: list[Candidate], depth: int, header: list[str]) -> None:
    """Write candidates as EPD lines with hmvc/fmvn/ce/acd/c0 opcodes."""
    lines = [f"# {h}" for h in header]
    for c in cands:
        board = chess.Board(c.fen)
        lines.append(board.epd(hmvc=board.halfmove_clock, fmvn=board.fullmove_number,
                               ce=c.cp, acd=depth, c0=c.phase))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--games", type=int, default=2600, help="semi-random games to play")
    parser.add_argument("--depth", type=int, default=10, help="Stockfish depth for the balance score")
    parser.add_argument("--max-cp", type=int, default=150, help="keep |score| <= this many centipawns")
    parser.add_argument("--per-phase", type=int, default=1334, help="training positions per phase")
    parser.add_argument("--eval-size", type=int, default=200, help="held-out positions, split over phases")
    parser.add_argument("--p-random-opening", type=float, default=0.3,
                        help=f"probability of a random legal move before ply {RANDOM_OPENING_PLIES}")
    parser.add_argument("--p-random", type=float, default=0.02, help="probability of a random legal move later")
    parser.add_argument("--temperature-cp", type=float, default=25.0,
                        help="T in the top-move weights exp(-|score| / T)")
    parser.add_argument("--move-depths", type=int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"),
                        help="Stockfish depth range for the moves played")
    parser.add_argument("--workers", type=int, default=2, help="engine processes")
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--stockfish", default=None, help="Stockfish binary (default: find_stockfish())")
    args = parser.parse_args(argv)

    cfg = GenConfig(args.seed, args.depth, args.p_random_opening, args.p_random, args.temperature_cp,
                    tuple(args.move_depths), find_stockfish(args.stockfish))
    t0 = time.perf_counter()
    # Interleaved shards balance the load; each game's result is independent of its shard.
    n_shards = args.workers * 8
    shards = [(cfg, list(range(i, args.games, n_shards))) for i in range(n_shards)]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(run_shard, shards)
    candidates = sorted((c for shard in results for c in shard), key=lambda c: (c.game, c.ply))
    elapsed = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    eval_quota = {p: args.eval_size // len(PHASES) + (i < args.eval_size % len(PHASES)) for i, p in enumerate(PHASES)}
    train: list[Candidate] = []
    held_out: list[Candidate] = []
    rows = []
    for phase in PHASES:
        cands = [c for c in candidates if c.phase == phase]
        balanced = [c for c in cands if is_balanced(c.score, args.max_cp)]
        unique = list({" ".join(c.fen.split()[:4]): c for c in reversed(balanced)}.values())[::-1]
        order = rng.permutation(len(unique))
        chosen = [unique[i] for i in order]
        held_out += chosen[:eval_quota[phase]]
        train += chosen[eval_quota[phase]:eval_quota[phase] + args.per_phase]
        rows.append((phase, cands, balanced, unique))

    print(f"Generated {len(candidates)} candidates from {args.games} games in {elapsed:.0f} s "
          f"({args.workers} engine processes); balance filter: Stockfish depth {args.depth}, "
          f"no mate and |cp| <= {args.max_cp}.\n")
    print(f"{'phase':<11} {'candidates':>10} {'rejected':>9} {'dupes':>6} {'kept':>6} {'train':>6} {'eval':>5}")
    for phase, cands, balanced, unique in rows:
        n_train = sum(c.phase == phase for c in train)
        n_eval = sum(c.phase == phase for c in held_out)
        print(f"{phase:<11} {len(cands):>10} {len(cands) - len(balanced):>9} {len(balanced) - len(unique):>6} "
              f"{len(unique):>6} {n_train:>6} {n_eval:>5}")
    print(f"{'total':<11} {len(candidates):>10} {sum(len(r[1]) - len(r[2]) for r in rows):>9} "
          f"{sum(len(r[2]) - len(r[3]) for r in rows):>6} {sum(len(r[3]) for r in rows):>6} "
          f"{len(train):>6} {len(held_out):>5}\n")
    print(f"|score| distribution (cp, side to move)   {histogram_header()}")
    for phase, cands, balanced, _ in rows:
        print(f"{phase:<11} before filter              {histogram(cands)}")
        print(f"{phase:<11} after filter               {histogram(balanced)}")
    for phase, _, _, unique in rows:
        if len(unique) < eval_quota[phase] + args.per_phase:
            print(f"warning: only {len(unique)} balanced {phase} positions for "
                  f"{eval_quota[phase]} eval + {args.per_phase} train; play more --games", file=sys.stderr)

    header = [f"generated by scripts/make_start_positions.py --seed {args.seed} --games {args.games} "
              f"--depth {args.depth} --max-cp {args.max_cp} --p-random-opening {args.p_random_opening} "
              f"--p-random {args.p_random} --temperature-cp {args.temperature_cp} "
              f"--move-depths {args.move_depths[0]} {args.move_depths[1]}",
              "EPD opcodes: hmvc/fmvn move counters, ce Stockfish centipawns (side to move), "
              "acd search depth, c0 phase"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    by_phase = {p: i for i, p in enumerate(PHASES)}
    write_epd(args.out_dir / "start_positions.epd", sorted(train, key=lambda c: by_phase[c.phase]), args.depth, header)
    write_epd(args.out_dir / "eval_positions.epd", sorted(held_out, key=lambda c: by_phase[c.phase]), args.depth,
              header + ["held-out evaluation set, disjoint (by EPD) from start_positions.epd"])
    print(f"\nwrote {len(train)} training positions to {args.out_dir / 'start_positions.epd'} and "
          f"{len(held_out)} eval positions to {args.out_dir / 'eval_positions.epd'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
