"""The labelled positions of :mod:`grpo_agent.pretrain`: engine-guided walks, a MultiPV score for every legal
move, and one compressed file per dataset, reused while its settings do not change.

**Positions.** Walks of ``walk_plies`` plies from start positions drawn (a seeded permutation, cycled) from
``positions`` (any :func:`chess_env.positions.load_positions` spec: ``"builtin"``, FEN/EPD/PGN files). Every
position on a walk is labelled; the next move is uniformly random with probability ``walk_random`` (the
random moves are blunders, and the positions right after them are where tactics are), otherwise drawn from
``softmax(values / walk_temperature)`` of the engine's move values (a plausible game). The walker is this
engine-guided mover, not the policy being trained (whose initial moves are uniformly random anyway).
Positions repeated (same EPD), finished, or with a single legal move are not kept.

**Conversion walks.** A share ``conversion`` of the walks are games of ``conversion_plies`` plies at most
between the engine-guided mover (the strong side, either colour) and a uniformly random one, and only the
strong side's positions are labelled (the random side's move is played straight after, unsearched); with
``conversion_keep="mates"`` only those where it has a forced mate are kept. Such a
game ends in mate far more often than a short walk: the positions before the mate are the mate-in-one and
mate-in-two positions that short walks almost never reach (0.4% of their positions have a forced mate), and
they are what a policy meets when it has to win, not draw, a won game against a weak mover.

**Won endings, searched deeper.** With ``conversion_depth`` set, a conversion game's position where the
random side has nothing left but its king and pawns, the engine side is winning (its best move valued above
:data:`WON_VALUE`) and ``depth`` sees no forced mate is searched again, every legal move at
``conversion_depth``; it is kept whatever ``conversion_keep`` says, labelled with the deeper values, marked
``deep``, and the engine side plays the deeper search's best move. At depth 2 such a position's safe moves all
look alike (king and queen against king: 25 moves at win probabilities 0.73-0.84), so its soft targets are
flat and a policy trained on them shuffles its pieces until the position repeats; the deeper search sees the
mate or the progress towards it, and the games it plays reach the mate.

**Labels.** :meth:`chess_env.engine.StockfishPool.submit_moves` scores every legal move with one MultiPV
search at ``depth``; each score, from the mover's point of view, becomes a value ``v`` in ``[-1, 1]`` with
:func:`chess_env.rewards.score_value` (``"winprob"``) and is kept with its mate distance ``m`` (``+n``: the
mover mates in ``n``, ``-n``: is mated, 0: no mate). The engine's best move maximises the rank
``(m > 0, -m) > v > (m < 0, -m)``: the shortest mate first, being mated as late as possible last.

**File.** ``pretrain_dataset.npz`` (``np.savez_compressed``): ``fens``, a CSR layout of the moves
(``offsets``; ``actions``, ``values``, ``mates`` per move), ``walks`` (the walk of each position), ``deep``
(per position: labelled at ``conversion_depth``), the settings and their ``key``, and ``label_seconds``.
Observations are not stored: rebuilding them from the FENs costs about 0.25 ms a position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import chess
import chess.engine
import numpy as np

from chess_env.encoding import encode_move
from chess_env.positions import load_positions
from chess_env.rewards import score_value
from chess_env.rules import game_outcome
from grpo_agent.progress import Progress

if TYPE_CHECKING:
    from grpo_agent.pretrain import PretrainConfig

DATASET_FILE = "pretrain_dataset.npz"
#: the GRPO stage's start positions (:func:`grpo_starts`), written beside the dataset
STARTS_FILE = "grpo_starts.epd"
#: bumped when the labelling changes, so older dataset files are rebuilt
DATASET_VERSION = 1
#: a won position: the engine side's best move is valued above this (Lichess win chance 95%, about +800 cp)
WON_VALUE = 0.9
#: walks labelled per engine batch; two batches are kept in flight so the engines never wait for Python
WALKS_PER_BATCH = 64


def move_ranks(values: np.ndarray, mates: np.ndarray) -> np.ndarray:
    """Per move: a float that orders the moves as the engine does, ``(m > 0, -m) > v > (m < 0, -m)``."""
    m = mates.astype(np.float64)
    return np.where(mates > 0, 3.0 - 1e-3 * m, np.where(mates < 0, -3.0 - 1e-3 * m, values))


@dataclass
class LabelledPositions:
    """Labelled positions in a CSR layout: position ``i``'s legal moves are ``offsets[i]:offsets[i + 1]`` of
    ``actions`` (action indices), ``values`` (``score_value``, mover's view) and ``mates`` (signed mate
    distance, 0 for none). ``walks[i]`` numbers the walk position ``i`` came from; ``deep[i]`` says it was
    labelled at ``conversion_depth`` (all False in a file written before that setting existed)."""

    fens: np.ndarray
    offsets: np.ndarray
    actions: np.ndarray
    values: np.ndarray
    mates: np.ndarray
    walks: np.ndarray
    deep: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.deep is None:
            self.deep = np.zeros(len(self.fens), dtype=bool)

    def __len__(self) -> int:
        return len(self.fens)

    @property
    def counts(self) -> np.ndarray:
        """Legal moves per position."""
        return np.diff(self.offsets)

    def row_max(self, per_move: np.ndarray) -> np.ndarray:
        """Per move: the maximum of ``per_move`` over the moves of its position."""
        return np.repeat(np.maximum.reduceat(per_move, self.offsets[:-1]), self.counts)

    def mating(self) -> np.ndarray:
        """Per position: True where the mover has a forced mate."""
        return np.maximum.reduceat(self.mates, self.offsets[:-1]) > 0

    def ranks(self) -> np.ndarray:
        """Per move: a float that orders the moves as the engine does (see the module docstring)."""
        return move_ranks(self.values, self.mates)

    def top(self) -> np.ndarray:
        """Per move: True where it has its position's best rank (several moves may tie)."""
        ranks = self.ranks()
        return ranks == self.row_max(ranks)

    def best(self) -> np.ndarray:
        """Per move: True for the engine's best move of its position (the first of equally ranked ones)."""
        top = np.flatnonzero(self.top())
        rows = np.repeat(np.arange(len(self)), self.counts)[top]
        best = np.zeros(len(self.actions), dtype=bool)
        best[top[np.unique(rows, return_index=True)[1]]] = True
        return best

    def head(self, n: int) -> LabelledPositions:
        """The first ``n`` positions."""
        end = int(self.offsets[n])
        return LabelledPositions(self.fens[:n], self.offsets[: n + 1], self.actions[:end], self.values[:end],
                                 self.mates[:end], self.walks[:n], self.deep[:n])

    def save(self, path: Path, key: str, settings: dict[str, Any], seconds: float) -> None:
        """Write one compressed ``.npz`` atomically (a temporary file, then ``os.replace``)."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, key=np.array(key), settings=np.array(json.dumps(settings)),
                                label_seconds=np.array(seconds), **dataclasses.asdict(self))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelledPositions:
        """Read a dataset written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def dataset_key(config: PretrainConfig, starts: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The settings a dataset depends on (the start positions by content) and their 16-hex-digit key."""
    settings = {
        "version": DATASET_VERSION,
        "positions": config.positions if isinstance(config.positions, list) else [str(config.positions)],
        "positions_sha256": hashlib.sha256("\n".join(starts).encode()).hexdigest(),
        **{name: getattr(config, name) for name in
           ("n_positions", "walk_plies", "walk_random", "walk_temperature", "depth", "seed")},
        # Only when used, so the keys of the datasets built before conversion walks existed still match.
        **{name: getattr(config, name) for name in ("conversion", "conversion_plies") if config.conversion > 0},
        **({"conversion_keep": config.conversion_keep}
           if config.conversion > 0 and config.conversion_keep != "all" else {}),
        **({"conversion_depth": config.conversion_depth}
           if config.conversion > 0 and config.conversion_depth is not None else {}),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16], settings


def stored_key(path: str | os.PathLike) -> str | None:
    """The settings key of a dataset file, or None if there is no readable one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["key"])
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class _Walk:
    """One walk: its board, number, plies played and positions kept."""

    board: chess.Board
    id: int
    conversion: bool = False
    plies: int = 0
    kept: int = 0
    best: chess.Move | None = None  # the engine side's next move, where a deeper search chose it


class _Walks:
    """Starts, advances and records walks (see the module docstring); collects the kept positions."""

    def __init__(self, config: PretrainConfig, starts: Sequence[str], rng: np.random.Generator) -> None:
        self.config, self.starts, self.rng = config, starts, rng
        self.order: list[int] = []
        self.n_walks = 0
        self.barren = 0  # walks in a row that ended keeping no position
        self.seen: set[str] = set()
        self.rows: dict[str, list] = {name: [] for name in ("fens", "actions", "values", "mates", "walks", "deep")}

    def __len__(self) -> int:
        return len(self.rows["fens"])

    def new(self) -> _Walk:
        """A fresh walk; the starts cycle through seeded permutations."""
        if not self.order:
            self.order = list(self.rng.permutation(len(self.starts)))
        self.n_walks += 1
        walk = _Walk(chess.Board(self.starts[self.order.pop()]), self.n_walks - 1)
        # The draw only when conversion walks are asked for, so the walks of conversion=0 are unchanged.
        if self.config.conversion > 0 and self.rng.random() < self.config.conversion:
            walk.conversion = True
            if self.rng.random() < 0.5:  # the random side moves first: the strong side is the other colour
                self._random_move(walk)
                if game_outcome(walk.board) is not None:  # that move ended the game: the strong side starts
                    walk.board.pop()
                    walk.plies -= 1
        return walk

    def _uniform(self, moves: list[chess.Move]) -> chess.Move:
        return moves[int(self.rng.integers(len(moves)))]

    def _random_move(self, walk: _Walk) -> None:
        walk.board.push(self._uniform(list(walk.board.legal_moves)))
        walk.plies += 1

    def won_ending(self, walk: _Walk, scores: dict[chess.Move, chess.engine.PovScore]) -> bool:
        """Whether the walk's position, scored at ``depth``, is a won ending to search at ``conversion_depth``
        (see the module docstring)."""
        board = walk.board
        if not walk.conversion or self.config.conversion_depth is None:
            return False
        if board.occupied_co[not board.turn] & ~(board.kings | board.pawns):
            return False
        relative = [score.pov(board.turn) for score in scores.values()]
        return (not any((s.mate() or 0) > 0 for s in relative)
                and max(score_value(s, "winprob") for s in relative) > WON_VALUE)

    def record(self, walk: _Walk, scores: dict[chess.Move, chess.engine.PovScore], deep: bool = False) -> np.ndarray:
        """Keep the labels of the walk's position unless it was seen before or has a single legal move;
        return the move values in ``board.legal_moves`` order. ``deep``: the scores are the deeper search of a
        won ending, whose best move the walk plays next."""
        board = walk.board
        moves = list(board.legal_moves)
        relative = [scores[move].pov(board.turn) for move in moves]
        values = np.array([score_value(s, "winprob") for s in relative], dtype=np.float32)
        mates = np.array([s.mate() or 0 for s in relative], dtype=np.int16)
        if deep:
            walk.best = moves[int(np.argmax(move_ranks(values, mates)))]
        epd = board.epd()
        wanted = deep or not walk.conversion or self.config.conversion_keep == "all" or mates.max() > 0
        if wanted and len(moves) > 1 and epd not in self.seen:
            self.seen.add(epd)
            self.rows["fens"].append(board.fen())
            self.rows["actions"].append(np.array([encode_move(board, m) for m in moves], dtype=np.int16))
            self.rows["values"].append(values)
            self.rows["mates"].append(mates)
            self.rows["walks"].append(walk.id)
            self.rows["deep"].append(deep)
            walk.kept += 1
        return values

    def step(self, board: chess.Board, values: np.ndarray, guided: bool = False) -> chess.Move:
        """The walk's next move: uniformly random with probability ``walk_random`` (never when ``guided``),
        else engine-guided."""
        moves = list(board.legal_moves)
        if not guided and self.rng.random() < self.config.walk_random:
            return self._uniform(moves)
        weights = np.exp((values - values.max()) / self.config.walk_temperature)
        return moves[int(self.rng.choice(len(moves), p=weights / weights.sum()))]

    def advance(self, walk: _Walk, values: np.ndarray) -> _Walk:
        """Play one move of ``walk`` (and, in a conversion walk, the random reply), or start a new walk when it
        is long enough or its game is over.

        Raises:
            ValueError: so many walks in a row kept nothing that the starts cannot give ``n_positions``.
        """
        plies = self.config.conversion_plies if walk.conversion else self.config.walk_plies
        if walk.plies < plies:
            walk.board.push(walk.best or self.step(walk.board, values, guided=walk.conversion))
            walk.best = None
            walk.plies += 1
            if walk.conversion and game_outcome(walk.board) is None:
                self._random_move(walk)
            if game_outcome(walk.board) is None:
                return walk
        self.barren = 0 if walk.kept else self.barren + 1
        if self.barren > 2 * max(len(self.starts), 2 * WALKS_PER_BATCH):
            raise ValueError(f"the start positions ({len(self.starts)}) and walks of {self.config.walk_plies} plies "
                             f"gave only {len(self)} distinct positions, not n_positions={self.config.n_positions}")
        return self.new()

    def dataset(self) -> LabelledPositions:
        counts = [len(a) for a in self.rows["actions"]]
        return LabelledPositions(
            fens=np.array(self.rows["fens"], dtype=str),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            actions=np.concatenate(self.rows["actions"]),
            values=np.concatenate(self.rows["values"]),
            mates=np.concatenate(self.rows["mates"]),
            walks=np.array(self.rows["walks"], dtype=np.int32),
            deep=np.array(self.rows["deep"], dtype=bool),
        )


def label_positions(config: PretrainConfig, starts: Sequence[str], pool: Any) -> LabelledPositions:
    """Walk from ``starts`` and label every position with ``pool.submit_moves`` until ``n_positions`` are kept
    (the won endings of conversion games again at ``conversion_depth``, see the module docstring).

    Two batches of ``WALKS_PER_BATCH`` walks alternate: while Python records one batch's answers and
    advances its walks, the engines search the other's positions.
    """
    walks = _Walks(config, starts, np.random.default_rng(config.seed))
    limit = chess.engine.Limit(depth=config.depth)
    deep_limit = chess.engine.Limit(depth=config.conversion_depth or config.depth)
    size = min(WALKS_PER_BATCH, -(-config.n_positions // 2))  # a tiny dataset needs no more than it keeps
    batches = [[walks.new() for _ in range(size)] for _ in range(2)]
    futures = [pool.submit_moves([walk.board for walk in batch], limit) for batch in batches]
    progress = Progress(config.n_positions, "labelling", "positions")
    try:
        while True:
            for i, batch in enumerate(batches):
                kept = len(walks)
                scores = futures[i].result()
                deep = [walks.won_ending(walk, s) for walk, s in zip(batch, scores)]
                if any(deep):
                    again = iter(pool.evaluate_moves([walk.board for walk, d in zip(batch, deep) if d], deep_limit))
                    scores = [next(again) if d else s for s, d in zip(scores, deep)]
                values = [walks.record(walk, s, d) for walk, s, d in zip(batch, scores, deep)]
                progress.update(min(len(walks), config.n_positions) - min(kept, config.n_positions))
                if len(walks) >= config.n_positions:
                    futures[1 - i].result()  # leave no search running in the pool
                    return walks.dataset().head(config.n_positions)
                batches[i] = [walks.advance(walk, v) for walk, v in zip(batch, values)]
                futures[i] = pool.submit_moves([walk.board for walk in batches[i]], limit)
    finally:
        progress.close()


def grpo_starts(data: LabelledPositions, seed: int, others: int = 1000) -> list[str]:
    """Start positions for the GRPO stage that follows the warm start: every position of ``data`` where the
    mover has a forced mate or that was searched deeper as a won ending (``deep``), then as many of the others
    (at least ``others``, all of them if fewer), drawn without replacement with ``seed``.

    The warm start learnt to mate from a few percent of such positions; GRPO games that start only from the
    opening walks almost never reach one, and forget it (measured in ``benchmarks/results/finetune.md``).
    """
    won = data.mating() | data.deep
    rest = np.flatnonzero(~won)
    drawn = np.random.default_rng([seed, 3]).choice(rest, min(len(rest), max(others, int(won.sum()))), replace=False)
    return [str(fen) for fen in data.fens[np.concatenate([np.flatnonzero(won), np.sort(drawn)])]]


def start_positions(positions: str | os.PathLike | list[str]) -> list[str]:
    """The start FENs of one spec or several (concatenated, duplicates dropped, order kept)."""
    specs = positions if isinstance(positions, list) else [positions]
    return list(dict.fromkeys(fen for spec in specs for fen in load_positions(spec)))


def build_dataset(config: PretrainConfig, pool: Any, run_dir: str | os.PathLike,
                  engine_path: str | os.PathLike | None = None) -> Path:
    """Label the positions of ``config`` into ``run_dir/pretrain_dataset.npz`` and return its path.

    A file there with the same settings key (:func:`dataset_key`) is reused without any engine call; any
    other file is replaced. ``pool`` is a :class:`~chess_env.engine.StockfishPool` with ``submit_moves``, or
    None to start one (``config.engine_processes`` processes of ``engine_path``) only if labelling is needed.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    starts = start_positions(config.positions)
    key, settings = dataset_key(config, starts)
    path = run_dir / DATASET_FILE
    if stored_key(path) == key:
        print(f"pretrain: reusing {path} (settings key {key})")
        return path
    own_pool = pool is None
    if own_pool:
        from chess_env.engine import StockfishPool

        pool = StockfishPool(processes=config.engine_processes, path=engine_path)
    try:
        started = time.perf_counter()
        data = label_positions(config, starts, pool)
        seconds = time.perf_counter() - started
    finally:
        if own_pool:
            pool.close()
    data.save(path, key, settings, seconds)
    print(f"pretrain: labelled {len(data)} positions from {int(data.walks.max()) + 1} walks at depth "
          f"{config.depth} in {seconds:.1f} s ({len(data) / seconds:.0f}/s) -> {path}")
    return path
