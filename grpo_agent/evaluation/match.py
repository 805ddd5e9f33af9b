"""Head-to-head matches: two players, paired openings, W/D/L with intervals, and an optional SPRT.

A player is anything :func:`~grpo_agent.evaluation.load_policy` resolves: a model zip or run
directory, ``random``, or a Stockfish strength spec (``sf:skill=0``, ``sf:depth=1``, ``elo=1500``;
see :class:`chess_env.engine.Strength`). Openings are drawn from a position set (held-out
``builtin:eval`` by default) and each is played twice, A White then A Black, so an opening's bias
cancels within the pair. Games are played by :func:`~grpo_agent.evaluation.games.play_game`, the
ladder's own game loop, on ``workers`` threads. Results are from A's point of view: the score with
its Wilson interval and the Elo difference A - B (:func:`~grpo_agent.evaluation.stats.score_stats`).

With an :class:`~grpo_agent.evaluation.sprt.SPRT` the match stops as soon as the pentanomial GSPRT
decides (checked after every completed pair); games already running when it decides are finished and
counted in W/D/L, and the LLR reported is the one that decided. With more than one worker, which game
completes first, and so the stopping point, depends on timing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chess
import numpy as np

from chess_env.opponents import MoveFn
from grpo_agent.evaluation.games import (
    ADJUDICATIONS,
    GameRecord,
    adjudicate,
    draw_positions,
    play_game,
    resolve_positions,
)
from grpo_agent.evaluation.players import EnginePolicy, ThreadPlayers, as_move_fn, load_policy
from grpo_agent.evaluation.reports import SHORT_TERMINATIONS
from grpo_agent.evaluation.sprt import SPRT, pentanomial
from grpo_agent.evaluation.stats import ScoreStats, score_stats


@dataclass(frozen=True)
class MatchConfig:
    """How a match is played. ``games`` is the most it plays; an SPRT may stop it earlier."""

    games: int = 100
    """An even number: each opening is played with both colours."""
    openings: Any = "builtin:eval"
    max_plies: int = 200
    adjudicate: str = "engine"
    adjudicate_cp: int = 400
    adjudicate_depth: int = 10
    sprt: SPRT | None = None
    seed: int = 0
    deterministic: bool = True
    """Models play their arg-max move; otherwise they sample from the policy."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.games < 2 or self.games % 2:
            raise ValueError(f"games must be an even number >= 2 (each opening with both colours), got {self.games!r}")
        for name in ("max_plies", "adjudicate_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.adjudicate not in ADJUDICATIONS:
            raise ValueError(f"adjudicate must be one of {ADJUDICATIONS}, got {self.adjudicate!r}")


@dataclass
class Contestant:
    """One side of a match: a policy, a short ``name`` (file names, tables) and a ``description`` (PGN)."""

    policy: Any
    name: str
    description: str

    @classmethod
    def load(cls, spec: str, device: str = "cpu", stockfish_path: str | None = None, depth: int | None = 5,
             movetime: float | None = None) -> Contestant:
        """Resolve ``spec`` with :func:`~grpo_agent.evaluation.load_policy`; Stockfish specs without a limit
        of their own search to ``depth`` (or ``movetime`` seconds).

        Raises:
            ValueError: an unknown spec or an unloadable model.
        """
        policy, name = load_policy(spec, device, stockfish_path, depth, movetime)
        if isinstance(policy, EnginePolicy):
            try:
                description = policy.describe()
            except BaseException:
                policy.close()
                raise
            return cls(policy, name, description)
        return cls(policy, name, "Random mover" if name == "random" else name)

    def move_fn(self, rng: np.random.Generator, deterministic: bool) -> MoveFn:
        """A ``board -> move`` function for one game, drawing any randomness from ``rng``."""
        return as_move_fn(self.policy, deterministic=deterministic, rng=rng)

    def close(self) -> None:
        """Stop the engine processes of a Stockfish contestant."""
        if isinstance(self.policy, EnginePolicy):
            self.policy.close()


@dataclass
class MatchOutcome:
    """A finished match, from A's point of view."""

    a: str
    b: str
    a_description: str
    b_description: str
    config: MatchConfig
    games: list[GameRecord] = field(default_factory=list)
    """In game order; game ``2k`` (A White) and ``2k + 1`` (A Black) share opening ``k``."""
    llr: float | None = None
    """With an SPRT: the LLR that decided, else the last one."""
    decision: str | None = None
    """``"H0"`` or ``"H1"`` when the SPRT decided, else ``None``."""
    decided_after: int | None = None
    """Games completed when the SPRT decided."""
    seconds: float = 0.0

    @property
    def stats(self) -> ScoreStats:
        wins = sum(g.score == 1.0 for g in self.games)
        draws = sum(g.score == 0.5 for g in self.games)
        return score_stats(wins, draws, len(self.games) - wins - draws)

    @property
    def pairs(self) -> tuple[int, int, int, int, int]:
        """Completed opening pairs by A's points (0, 0.5, 1, 1.5, 2)."""
        return pentanomial(pair_points(self.games))


def pair_points(games: list[GameRecord]) -> list[float]:
    """A's points in each opening pair both of whose games are in ``games``."""
    by_index = {g.index: g.score for g in games}
    return [by_index[i] + by_index[i + 1] for i in sorted(by_index) if i % 2 == 0 and i + 1 in by_index]


def run_match(a: Contestant, b: Contestant, config: MatchConfig | None = None, workers: int = 1,
              stockfish_path: str | None = None,
              on_game: Callable[[MatchOutcome], None] | None = None) -> MatchOutcome:
    """Play ``a`` against ``b`` (see the module docstring); ``on_game(outcome so far)`` after each game.

    Raises:
        ValueError: a bad config, or no openings.
        EngineNotFoundError: engine adjudication without a Stockfish binary.
    """
    config = config or MatchConfig()
    config.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    fens = draw_positions(resolve_positions(config.openings), config.games // 2, np.random.default_rng(config.seed))
    judges = ThreadPlayers(None, stockfish_path) if config.adjudicate == "engine" else None
    streams = np.random.SeedSequence(config.seed).spawn(config.games)
    outcome = MatchOutcome(a.name, b.name, a.description, b.description, config)
    started = time.perf_counter()

    def play(index: int) -> GameRecord:
        a_color = chess.WHITE if index % 2 == 0 else chess.BLACK
        a_stream, b_stream = streams[index].spawn(2)
        players = {a_color: a.move_fn(np.random.default_rng(a_stream), config.deterministic),
                   not a_color: b.move_fn(np.random.default_rng(b_stream), config.deterministic)}
        judge = judges.get() if judges is not None else None
        game = play_game(fens[index // 2], players, config.max_plies,
                         lambda board: adjudicate(board, judge, config.adjudicate_cp, config.adjudicate_depth))
        return GameRecord.from_game(game, b.name, index, fens[index // 2], a_color)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="match") as pool:
            running: set[Future[GameRecord]] = set()
            next_index = 0
            while running or (next_index < config.games and outcome.decision is None):
                while outcome.decision is None and next_index < config.games and len(running) < workers:
                    running.add(pool.submit(play, next_index))
                    next_index += 1
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome.games.append(future.result())
                    outcome.games.sort(key=lambda g: g.index)
                    if config.sprt is not None and outcome.decision is None:
                        outcome.llr = config.sprt.llr(outcome.pairs)
                        outcome.decision = config.sprt.decision(outcome.llr)
                        if outcome.decision is not None:
                            outcome.decided_after = len(outcome.games)
                    outcome.seconds = time.perf_counter() - started
                    if on_game is not None:
                        on_game(outcome)
    finally:
        if judges is not None:
            judges.close()
    return outcome


def write_pgn(outcome: MatchOutcome, path: str | Path) -> Path:
    """Write every game of ``outcome`` to ``path`` with both players' names in the headers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y.%m.%d")
    with open(path, "w") as fh:
        for game in outcome.games:
            a_white = game.policy_color == "white"
            headers = {"Event": f"grpo-chess match: {outcome.a} vs {outcome.b}", "Site": "grpo-chess", "Date": date,
                       "Round": f"{game.index // 2 + 1}.{game.index % 2 + 1}",
                       "White": outcome.a_description if a_white else outcome.b_description,
                       "Black": outcome.b_description if a_white else outcome.a_description}
            print(game.to_pgn(headers), file=fh, end="\n\n")
    return path


def _elo_text(stats: ScoreStats) -> tuple[str, str]:
    if stats.games == 1:
        return "n/a", "n/a"
    bound = ("<=" if stats.score == 0 else ">=") if stats.elo_clamped else ""
    return f"{bound}{stats.elo:+.0f}", f"[{stats.elo_low:+.0f}, {stats.elo_high:+.0f}]"


def progress_line(outcome: MatchOutcome) -> str:
    """One line of the match so far: games, W/D/L, score, Elo and, with an SPRT, the LLR and its bounds."""
    s = outcome.stats
    line = (f"games {s.games}/{outcome.config.games}  W/D/L {s.wins}/{s.draws}/{s.losses}  "
            f"score {s.score:.3f}  Elo {_elo_text(s)[0]}")
    if outcome.config.sprt is not None and outcome.llr is not None:
        lower, upper = outcome.config.sprt.bounds
        line += f"  LLR {outcome.llr:+.2f} [{lower:+.2f}, {upper:+.2f}]"
    return line


def print_match(outcome: MatchOutcome, console: Any = None) -> None:
    """Print the summary table, the opening pairs, the endings and the SPRT verdict."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = outcome.stats
    table = Table(title=f"A {outcome.a} vs B {outcome.b} (95% Wilson CI; Elo = A - B)")
    for column in ("games", "W", "D", "L", "score", "score CI", "Elo", "Elo CI"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(str(s.games), str(s.wins), str(s.draws), str(s.losses), f"{s.score:.3f}",
                  f"{s.score_low:.2f}-{s.score_high:.2f}", *_elo_text(s))
    console.print(table)
    console.print(f"  A: {outcome.a_description}\n  B: {outcome.b_description}")
    if s.elo_clamped:
        console.print("  Elo at a score of 0 or 1 is clamped to half a game: a bound, not an estimate.")
    endings = Counter(SHORT_TERMINATIONS.get(g.termination, g.termination) for g in outcome.games)
    console.print(f"  opening pairs by A's points 0/0.5/1/1.5/2: {'/'.join(map(str, outcome.pairs))}")
    console.print(f"  endings: {', '.join(f'{k} {v}' for k, v in endings.most_common())}")
    sprt = outcome.config.sprt
    if sprt is not None:
        lower, upper = sprt.bounds
        llr = 0.0 if outcome.llr is None else outcome.llr
        verdict = (f"no decision after {s.games} games" if outcome.decision is None
                   else f"{outcome.decision} accepted after {outcome.decided_after} games")
        console.print(f"  SPRT (pentanomial GSPRT) H0: Elo {sprt.elo0:+g}, H1: Elo {sprt.elo1:+g}, alpha {sprt.alpha:g}, "
                      f"beta {sprt.beta:g}")
        console.print(f"  LLR {llr:+.2f} in [{lower:+.2f}, {upper:+.2f}]: {verdict}")
    console.print(f"  played in {outcome.seconds:.1f}s")
