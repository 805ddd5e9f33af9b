"""The evaluator: ladder games with adjudication, ACPL against Stockfish, puzzles, on worker threads."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import chess
import chess.engine
import numpy as np

from chess_env.opponents import MoveFn
from chess_env.puzzles import Puzzle, read_puzzles
from grpo_agent.evaluation.games import (
    ADJUDICATIONS,
    GameRecord,
    adjudicate,
    draw_positions,
    play_game,
    resolve_positions,
)
from grpo_agent.evaluation.players import Opponent, RandomPolicy, ThreadPlayers, as_move_fn, engine_limit
from grpo_agent.evaluation.puzzles import PuzzleResult, select_puzzles, solve_puzzle
from grpo_agent.evaluation.reports import EvalReport
from grpo_agent.evaluation.stats import (
    CP_CAP,
    ScoreStats,
    clamped_cp,
    move_accuracy,
    score_stats,
    win_percent,
)

@dataclass
class MatchResult:
    """All games against one opponent and their statistics."""

    opponent: str
    opponent_description: str
    stats: ScoreStats
    games: list[GameRecord]

    @property
    def lengths(self) -> dict[str, float]:
        plies = [g.plies for g in self.games]
        return {"mean": statistics.fmean(plies), "median": statistics.median(plies),
                "min": min(plies), "max": max(plies)}

    @property
    def terminations(self) -> dict[str, int]:
        return dict(Counter(g.termination for g in self.games).most_common())

    def to_dict(self) -> dict[str, Any]:
        return {"opponent": self.opponent, "opponent_description": self.opponent_description,
                "games": self.stats.games, **dataclasses.asdict(self.stats),
                "plies": self.lengths, "terminations": self.terminations,
                "color_scores": {c: statistics.fmean([g.score for g in self.games if g.policy_color == c])
                                 for c in ("white", "black") if any(g.policy_color == c for g in self.games)}}


@dataclass(frozen=True)
class PositionJudgement:
    """The policy's move in one held-out position, judged by Stockfish."""

    fen: str
    move: str
    best_move: str
    cp_best: int
    cp_played: int
    """Both clamped to +-CP_CAP, from the mover's point of view; an illegal move counts -CP_CAP."""
    cp_loss: int
    accuracy: float


@dataclass
class AcplResult:
    """Average centipawn loss and Lichess-style accuracy over a position set."""

    depth: int
    positions: list[PositionJudgement]

    @property
    def acpl(self) -> float:
        return statistics.fmean(p.cp_loss for p in self.positions)

    @property
    def accuracy(self) -> float:
        return statistics.fmean(p.accuracy for p in self.positions)

    @property
    def best_move_rate(self) -> float:
        return statistics.fmean(p.move == p.best_move for p in self.positions)

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "n": len(self.positions), "acpl": self.acpl, "accuracy": self.accuracy,
                "best_move_rate": self.best_move_rate,
                "positions": [dataclasses.asdict(p) for p in self.positions]}


@dataclass
class EvalConfig:
    """What :meth:`Evaluator.evaluate` measures. Presets: :data:`PRESETS` via :meth:`preset`."""

    opponents: tuple[str, ...] = ("random", "sf0", "sf3")
    games: int = 20
    """Games per opponent; colours alternate, so an even number pairs every start position."""
    engine_depth: int | None = 5
    engine_movetime: float | None = None
    """Seconds per engine move; replaces ``engine_depth`` when set."""
    max_plies: int = 200
    adjudicate: str = "engine"
    adjudicate_cp: int = 400
    adjudicate_depth: int = 10
    acpl_positions: int | None = 50
    """Number of held-out positions for ACPL; ``None`` for all, 0 to skip."""
    acpl_depth: int = 10
    puzzles: int | None = 100
    """Number of puzzles; ``None`` for all, 0 to skip."""
    puzzle_file: str | None = None
    positions: Any = "builtin:eval"
    seed: int = 0
    deterministic: bool = True

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EvalConfig:
        """A named preset (``quick``, ``default``, ``full``) with ``overrides`` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.games < 0 or (self.games and not self.opponents):
            raise ValueError(f"games must be >= 0 with at least one opponent, got games={self.games!r}, "
                             f"opponents={self.opponents!r}")
        for spec in self.opponents:
            Opponent.parse(spec)
        if self.engine_depth is None and self.engine_movetime is None:
            raise ValueError("set engine_depth or engine_movetime")
        for name in ("engine_depth", "acpl_depth", "adjudicate_depth", "max_plies"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if self.adjudicate not in ADJUDICATIONS:
            raise ValueError(f"adjudicate must be one of {ADJUDICATIONS}, got {self.adjudicate!r}")
        for name in ("acpl_positions", "puzzles"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None (all), got {value!r}")


PRESETS: dict[str, EvalConfig] = {
    # CI: seconds. A smoke test of the whole pipeline; its numbers are far too noisy to compare.
    "quick": EvalConfig(opponents=("random", "sf0"), games=4, engine_depth=1, max_plies=80, adjudicate_depth=6,
                        acpl_positions=8, acpl_depth=6, puzzles=15),
    "default": EvalConfig(),
    # make train's report of its three stages: every held-out position and puzzle, 40 games per opponent (50
    # ACPL positions put the standard error of an ACPL near 25, more than most differences worth reporting).
    "heldout": EvalConfig(games=40, acpl_positions=None, puzzles=None),
    # Reports: a ladder wide enough to place the policy, intervals of about +-0.1 in score.
    "full": EvalConfig(opponents=("random", "sf0", "sf1", "sf3", "sf5", "sf8", "sf12", "sf20"), games=100,
                       engine_depth=8, max_plies=300, adjudicate_depth=14, acpl_positions=None, acpl_depth=14,
                       puzzles=None),
}


class Evaluator:
    """Runs evaluations on a pool of worker threads, each owning one Stockfish process.

    Args:
        workers: worker threads (= engine processes); default ``os.cpu_count()``.
        stockfish_path: the Stockfish binary (default :func:`chess_env.engine.find_stockfish`).
        hash_mb: Stockfish hash per process.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, workers: int | None = None, stockfish_path: str | None = None, hash_mb: int = 16) -> None:
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.workers = workers
        self._players = ThreadPlayers(None, stockfish_path, hash_mb)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval")

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and their engines."""
        self._pool.shutdown(wait=True)
        self._players.close()

    @property
    def engine_name(self) -> str:
        """The UCI name of the engine the workers play and judge with (starts one on a worker thread)."""
        return self._pool.submit(lambda: self._players.get().name).result()

    # -- games --------------------------------------------------------------------------------

    def play_match(self, policy: Any, opponent: str | Opponent, games: int, positions: Sequence[str],
                   config: EvalConfig | None = None) -> MatchResult:
        """Play ``games`` games of ``policy`` against ``opponent``, colours alternating.

        Start positions are drawn without replacement (cycling if ``games/2`` exceeds the set)
        with ``np.random.default_rng(config.seed)``, so every opponent of a ladder sees the same
        openings. Game ``i`` uses position ``i // 2`` with the policy White when ``i`` is even.
        """
        config = config or EvalConfig()
        opponent = Opponent.parse(opponent) if isinstance(opponent, str) else opponent
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games!r}")
        if opponent.is_engine:  # a UCI_Elo out of the engine's range fails here, not in a worker
            self._pool.submit(lambda: self._players.get().check(opponent.strength)).result()
        limit = opponent.limit(engine_limit(config.engine_depth, config.engine_movetime))
        fens = draw_positions(positions, (games + 1) // 2, np.random.default_rng(config.seed))
        # One seed stream per game, split between the policy and a random opponent, so results do
        # not depend on which worker plays which game.
        streams = np.random.SeedSequence(config.seed).spawn(games)
        tasks = [(i, fens[i // 2], chess.WHITE if i % 2 == 0 else chess.BLACK, streams[i]) for i in range(games)]

        def play(task: tuple[int, str, chess.Color, np.random.SeedSequence]) -> GameRecord:
            index, fen, color, stream = task
            policy_stream, opponent_stream = stream.spawn(2)
            move_fn = as_move_fn(policy, deterministic=config.deterministic, rng=np.random.default_rng(policy_stream))
            return self._play_game(move_fn, opponent, limit, np.random.default_rng(opponent_stream), fen, color,
                                   index, config)

        records = list(self._pool.map(play, tasks))
        description = opponent.describe(self.engine_name, limit)
        wins = sum(r.score == 1.0 for r in records)
        draws = sum(r.score == 0.5 for r in records)
        stats = score_stats(wins, draws, len(records) - wins - draws)
        return MatchResult(opponent.name, description, stats, records)

    def _play_game(self, move_fn: MoveFn, opponent: Opponent, limit: chess.engine.Limit | None,
                   rng: np.random.Generator, fen: str, policy_color: chess.Color, index: int,
                   config: EvalConfig) -> GameRecord:
        player = self._players.get()
        if opponent.is_engine:
            game_token = object()  # a new python-chess "game": Stockfish gets ucinewgame (clean hash)

            def opponent_move(board: chess.Board) -> chess.Move:
                return player.play(board, limit, strength=opponent.strength, game=game_token)
        else:
            opponent_move = RandomPolicy(rng)
        judge = player if config.adjudicate == "engine" else None
        game = play_game(fen, {policy_color: move_fn, not policy_color: opponent_move}, config.max_plies,
                         lambda board: adjudicate(board, judge, config.adjudicate_cp, config.adjudicate_depth))
        return GameRecord.from_game(game, opponent.name, index, fen, policy_color)

    # -- ACPL -----------------------------------------------------------------------------------

    def acpl(self, policy: Any, positions: Sequence[str], depth: int = 10, deterministic: bool = True,
             seed: int = 0) -> AcplResult:
        """Judge the policy's move in each position with Stockfish at ``depth`` (see :mod:`grpo_agent.evaluation`)."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        if not positions:
            raise ValueError("acpl needs at least one position")
        streams = np.random.SeedSequence(seed).spawn(len(positions))

        def judge(task: tuple[str, np.random.SeedSequence]) -> PositionJudgement:
            fen, stream = task
            move_fn = as_move_fn(policy, deterministic=deterministic, rng=np.random.default_rng(stream))
            return self._judge(move_fn, fen, depth)

        return AcplResult(depth, list(self._pool.map(judge, zip(positions, streams))))

    def _judge(self, move_fn: MoveFn, fen: str, depth: int) -> PositionJudgement:
        board = chess.Board(fen)
        limit = chess.engine.Limit(depth=depth)
        token = object()
        judge = self._players.get()
        info = judge.analyse(board, limit, game=token)
        best_move = info["pv"][0]
        cp_best = clamped_cp(info["score"].pov(board.turn))
        move = move_fn(board.copy())
        if move is None or move not in board.legal_moves:
            cp_played = -CP_CAP
        elif move == best_move:
            cp_played = cp_best
        else:
            played = judge.analyse(board, limit, root_moves=[move], game=token)
            cp_played = clamped_cp(played["score"].pov(board.turn))
        return PositionJudgement(fen, str(move), best_move.uci(), cp_best, cp_played, max(0, cp_best - cp_played),
                                 move_accuracy(win_percent(cp_best), win_percent(cp_played)))

    # -- puzzles --------------------------------------------------------------------------------

    def puzzles(self, policy: Any, puzzles: Sequence[Puzzle], deterministic: bool = True, seed: int = 0) -> PuzzleResult:
        """Solve each puzzle with the policy; accuracy overall and per theme."""
        if not puzzles:
            raise ValueError("no puzzles to solve")
        streams = np.random.SeedSequence(seed).spawn(len(puzzles))

        def solve(task: tuple[Puzzle, np.random.SeedSequence]) -> bool:
            puzzle, stream = task
            return solve_puzzle(puzzle, as_move_fn(policy, deterministic=deterministic, rng=np.random.default_rng(stream)))

        solved = list(self._pool.map(solve, zip(puzzles, streams)))
        return PuzzleResult({p.puzzle_id: ok for p, ok in zip(puzzles, solved)}, {p.puzzle_id: p.themes for p in puzzles})

    # -- everything -----------------------------------------------------------------------------

    def evaluate(self, policy: Any, config: EvalConfig | None = None, policy_name: str = "policy") -> EvalReport:
        """Run the ladder, ACPL and puzzles that ``config`` asks for."""
        config = config or EvalConfig()
        config.validate()
        started = time.perf_counter()
        report = EvalReport(policy_name, config, self.engine_name)
        positions = resolve_positions(config.positions)
        if config.games:
            for spec in config.opponents:
                report.matches.append(self.play_match(policy, spec, config.games, positions, config))
        if config.acpl_positions != 0:
            n = len(positions) if config.acpl_positions is None else config.acpl_positions
            fens = draw_positions(positions, n, np.random.default_rng([config.seed, 1]))
            report.acpl = self.acpl(policy, fens, config.acpl_depth, config.deterministic, config.seed)
        if config.puzzles != 0:
            chosen = select_puzzles(read_puzzles(config.puzzle_file), config.puzzles,
                                    np.random.default_rng([config.seed, 2]))
            report.puzzles = self.puzzles(policy, chosen, config.deterministic, config.seed)
        report.seconds = time.perf_counter() - started
        return report
