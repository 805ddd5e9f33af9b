"""Honest evaluation: a Stockfish ladder with confidence intervals, ACPL, puzzles, PGN artefacts.

Three measurements, each on held-out material and each reported with what it means:

**Ladder games.** The policy plays ``games`` games against each opponent (a random mover, or
Stockfish at a ``Skill Level`` / ``UCI_Elo`` with a fixed depth, node or move-time limit), from
positions drawn from the held-out set ``chess_env.positions.load_positions("builtin:eval")``.
Each start position is played twice, the policy White then Black, so opening bias cancels. Games
end by the rules (checkmate, stalemate, insufficient material, threefold repetition and the
50-move rule, both applied as soon as they can be claimed) or, at ``max_plies`` plies, by
*adjudication*: with ``adjudicate="engine"`` full-strength Stockfish at ``adjudicate_depth``
scores the final position and a side at least ``adjudicate_cp`` centipawns (or a mate) ahead wins,
anything closer is a draw; with ``adjudicate="draw"`` the game is drawn. A policy move that is not
legal forfeits the game. Reported: W/D/L, the score ``s = (W + D/2) / N`` with a 95% Wilson
score interval (the score treated as a binomial proportion; exact without draws and conservative
with them), and the Elo difference ``-400 log10(1/s - 1)`` with its interval obtained by
transforming the score interval's ends (Elo is monotone in the score). A score of exactly 0 or 1
has an infinite Elo difference: it is clamped to half a game (``s = 1/(2N)`` or ``1 - 1/(2N)``),
flagged ``elo_clamped`` and shown as a bound (``<=`` / ``>=``). Game lengths (plies) and
termination reasons are counted.

**ACPL.** On held-out positions Stockfish at ``acpl_depth`` finds the best move and its score;
the policy's greedy move is then scored by a search restricted to that move from the same root
at the same depth (``root_moves``), so both numbers come from the same kind of search and the
engine's own best move loses exactly 0. Scores are clamped to +-1000 cp (mates included) as
Lichess does; the centipawn loss is ``max(0, best - played)``. Accuracy per move is Lichess's
``103.1668 * exp(-0.04354 * (wp_best - wp_played)) - 3.1669`` clipped to [0, 100], with win
percentages ``50 + 50 * (2 / (1 + exp(-0.00368208 * cp)) - 1)``; the reported accuracy is the
plain mean over positions (Lichess's game accuracy adds volatility weighting, which has no
meaning for independent positions).

**Puzzles.** The shipped ``chess_env/data/puzzles.csv`` (Lichess CSV layout, generated and
verified with Stockfish by ``scripts/make_puzzles.py``: mate in 1, mate in 2, win material) or
any Lichess puzzle CSV. A puzzle is solved when every solver move matches the solution, a
checkmating alternative being accepted as on Lichess. Accuracy is reported per theme.

Randomness is private: openings and random movers draw from ``np.random.default_rng`` streams
derived from ``seed``, never from the global NumPy or torch generators, so evaluating inside a
training run does not change the run. Stockfish's ``Skill Level`` handicap uses the engine's own
time-seeded generator, so games against weakened Stockfish are not bit-reproducible; everything
else is. Games, ACPL positions and puzzles run in parallel on a pool of worker threads, each
owning one single-threaded Stockfish process.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import re
import statistics
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chess
import chess.engine
import chess.pgn
import chess.svg
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from chess_env.encoding import decode_action, legal_action_mask, observation, observation_channels
from chess_env.engine import EngineNotFoundError, EnginePlayer, Strength, find_stockfish
from chess_env.opponents import MoveFn, RandomOpponent
from chess_env.puzzles import Puzzle, read_puzzles
from chess_env.rewards import LICHESS_WINPROB_SLOPE

Z_95 = 1.959963984540054
"""Two-sided 95% normal quantile."""
CP_CAP = 1000
"""Centipawn scores (mates included) are clamped to +-CP_CAP for ACPL and accuracy, as on Lichess."""
MATE_SCORE = 100_000
ADJUDICATIONS = ("engine", "draw")


# --------------------------------------------------------------------------------------------
# Statistics


def wilson_interval(score: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``score`` observed over ``n`` trials.

    Raises:
        ValueError: ``n < 1`` or ``score`` outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be in [0, 1], got {score!r}")
    z2 = z * z
    centre = (score + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(score * (1 - score) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def elo_from_score(score: float) -> float:
    """Elo difference implied by an expected score in (0, 1): ``-400 log10(1/score - 1)``.

    Raises:
        ValueError: ``score`` is not strictly between 0 and 1 (the difference is infinite).
    """
    if not 0.0 < score < 1.0:
        raise ValueError(f"score must be strictly between 0 and 1 for a finite Elo difference, got {score!r}")
    return -400.0 * math.log10(1.0 / score - 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class ScoreStats:
    """Match statistics of W/D/L counts (from the policy's point of view)."""

    wins: int
    draws: int
    losses: int
    score: float
    score_low: float
    score_high: float
    elo: float
    elo_low: float
    elo_high: float
    elo_clamped: bool
    """True when the score was 0 or 1 and the Elo numbers use the half-game clamp."""

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses


def score_stats(wins: int, draws: int, losses: int, z: float = Z_95) -> ScoreStats:
    """Score, its Wilson interval and the Elo difference with its interval, for W/D/L counts.

    The Elo interval transforms the ends of the score interval. A score of exactly 0 or 1 (and an
    interval end at 0 or 1) is clamped to ``1/(2N)`` or ``1 - 1/(2N)`` and ``elo_clamped`` is set.

    Raises:
        ValueError: a negative count or no games.
    """
    if min(wins, draws, losses) < 0:
        raise ValueError(f"counts must be >= 0, got W/D/L {wins}/{draws}/{losses}")
    n = wins + draws + losses
    if n == 0:
        raise ValueError("no games: W/D/L are all 0")
    score = (wins + 0.5 * draws) / n
    low, high = wilson_interval(score, n, z)
    eps = 0.5 / n

    def clamp(p: float) -> float:
        return min(max(p, eps), 1.0 - eps)

    clamped = score in (0.0, 1.0)
    if n == 1:  # eps = 0.5: every score clamps to 0.5, the only honest answer for one game
        return ScoreStats(wins, draws, losses, score, low, high, 0.0, -math.inf, math.inf, clamped)
    return ScoreStats(wins, draws, losses, score, low, high, elo_from_score(clamp(score)),
                      elo_from_score(clamp(low)), elo_from_score(clamp(high)), clamped)


def win_percent(cp: float) -> float:
    """Lichess win percentage (0-100) for a centipawn score, clamped to +-CP_CAP first."""
    cp = min(max(cp, -CP_CAP), CP_CAP)
    return 50.0 + 50.0 * (2.0 / (1.0 + math.exp(-LICHESS_WINPROB_SLOPE * cp)) - 1.0)


def move_accuracy(win_percent_before: float, win_percent_after: float) -> float:
    """Lichess move accuracy (0-100) from the mover's win percentage before and after the move."""
    raw = 103.1668 * math.exp(-0.04354 * (win_percent_before - win_percent_after)) - 3.1669
    return min(max(raw, 0.0), 100.0)


def _clamped_cp(score: chess.engine.Score) -> int:
    return min(max(score.score(mate_score=MATE_SCORE), -CP_CAP), CP_CAP)


# --------------------------------------------------------------------------------------------
# Policies


class RandomPolicy(RandomOpponent):
    """Plays a uniformly random legal move drawn from its own generator (the env's random opponent).

    :func:`as_move_fn` gives every game a fresh instance on the game's own stream, so results
    do not depend on which worker thread plays which game.
    """

    name = "random"


class _ThreadPlayers:
    """One :class:`~chess_env.engine.EnginePlayer` per calling thread, at ``strength``, started on first use.

    The players are configured at ``strength`` (full strength by default) and play other strengths
    per move: python-chess restores the configured options after such a move, so a full-strength
    player judges positions at full strength whatever opponent it played for.
    """

    def __init__(self, strength: Strength | None = None, path: str | None = None, hash_mb: int = 16) -> None:
        self.strength = strength
        self.path = find_stockfish(path)  # fail now, naming the path, not in a worker thread
        self.hash_mb = hash_mb
        self._players: dict[int, EnginePlayer] = {}
        self._lock = threading.Lock()

    def get(self) -> EnginePlayer:
        """This thread's player."""
        key = threading.get_ident()
        with self._lock:
            player = self._players.get(key)
            if player is None:
                player = self._players[key] = EnginePlayer(self.strength, self.path, self.hash_mb)
        return player

    def close(self) -> None:
        with self._lock:
            players, self._players = list(self._players.values()), {}
        for player in players:
            player.close()


@dataclass(frozen=True)
class Opponent:
    """A ladder opponent: the random mover (``strength`` None) or Stockfish at a :class:`Strength`.

    Specs (:meth:`parse`): ``random``, or any Stockfish strength spec of
    :class:`chess_env.engine.Strength`: ``sf<N>`` (``Skill Level`` N, 0-20; ``stockfish`` is
    ``sf20``), ``elo<N>`` / ``sf_elo<N>`` (``UCI_Elo`` N), ``sf:skill=3,depth=5``, ... An own limit
    (``@d<depth>``, ``@n<nodes>``, ``@t<seconds>``, e.g. ``sf3@d5``) overrides the evaluation's
    default engine limit.
    """

    strength: Strength | None = None

    @classmethod
    def parse(cls, spec: str) -> Opponent:
        """Parse an opponent spec; ``ValueError`` names a malformed one."""
        if spec.strip().lower() == "random":
            return cls()
        try:
            return cls(Strength.parse(spec))
        except ValueError as exc:
            raise ValueError(f"unknown opponent {spec!r}: expected random or a Stockfish strength ({exc})") from None

    @property
    def name(self) -> str:
        """Canonical name, used in metric keys (``eval/score_vs_<name>``) and file names."""
        return "random" if self.strength is None else self.strength.name

    @property
    def is_engine(self) -> bool:
        return self.strength is not None

    def limit(self, default: chess.engine.Limit) -> chess.engine.Limit | None:
        """The search limit: the opponent's own, else ``default``; None for the random mover."""
        return None if self.strength is None else self.strength.limit(default)

    def describe(self, engine_name: str, limit: chess.engine.Limit | None) -> str:
        """Human-readable player name for PGN headers, e.g. ``Stockfish 15.1 (skill 0, depth 5)``."""
        return "Random mover" if self.strength is None else self.strength.describe(engine_name, limit)


def _default_limit(depth: int | None, movetime: float | None) -> chess.engine.Limit:
    """The evaluation's engine limit: ``movetime`` seconds per move when set, else ``depth``."""
    return chess.engine.Limit(time=movetime) if movetime is not None else chess.engine.Limit(depth=depth)


class EnginePolicy:
    """Stockfish as a policy (a baseline): thread-safe, one engine process per calling thread.

    Args:
        opponent: the strength, as an :class:`Opponent` or its spec string (default ``stockfish``,
            full strength).
        depth: search depth when the spec carries no limit of its own.
        movetime: seconds per move instead of ``depth``.
        path: the Stockfish binary.
    """

    def __init__(self, opponent: Opponent | str = "stockfish", depth: int | None = 1,
                 movetime: float | None = None, path: str | None = None) -> None:
        self.opponent = Opponent.parse(opponent) if isinstance(opponent, str) else opponent
        if not self.opponent.is_engine:
            raise ValueError(f"EnginePolicy needs a Stockfish spec, got {self.opponent.name!r}")
        self.limit = self.opponent.limit(_default_limit(depth, movetime))
        self._players = _ThreadPlayers(self.opponent.strength, path)
        self.name = self.opponent.name

    def __call__(self, board: chess.Board) -> chess.Move:
        # A new "game" per move clears the hash: the move depends on the position alone, and at
        # full strength equals the ACPL judge's best move at the same depth.
        return self._players.get().play(board, self.limit, game=object())

    def close(self) -> None:
        """Stop the engine processes."""
        self._players.close()


# Model inference is serialised: forward passes are tiny next to engine searches, and a stochastic
# policy samples inside ``torch.random.fork_rng`` (process-global state) so it must not overlap.
_MODEL_LOCK = threading.Lock()


def infer_history(model: Any) -> int:
    """The number of history positions a model's observation space was built with.

    Raises:
        ValueError: the observation shape matches no ``observation_channels(history)``.
    """
    shape = tuple(model.observation_space.shape)
    for history in range(65):
        if shape == (observation_channels(history), 8, 8):
            return history
    raise ValueError(f"model observation shape {shape} matches no chess_env observation (C, 8, 8) "
                     f"with C = observation_channels(history)")


class _ModelMoveFn:
    """``board -> move`` for an SB3 model with masked ``predict``."""

    def __init__(self, model: Any, history: int, deterministic: bool, rng: np.random.Generator | None) -> None:
        self.model = model
        self.history = history
        self.deterministic = deterministic
        self.rng = rng if rng is not None else np.random.default_rng()

    def __call__(self, board: chess.Board) -> chess.Move:
        obs = observation(board, self.history)
        mask = legal_action_mask(board)
        with _MODEL_LOCK:
            if self.deterministic:
                action, _ = self.model.predict(obs, action_masks=mask, deterministic=True)
            else:
                import torch

                device = getattr(self.model, "device", None)
                devices = [] if device is None or device.type != "cuda" else [device.index or 0]
                # Sample from a private torch stream: fork_rng restores the global state after.
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(int(self.rng.integers(2**63)))
                    action, _ = self.model.predict(obs, action_masks=mask, deterministic=False)
        return decode_action(board, int(np.asarray(action).reshape(-1)[0]))


def as_move_fn(policy: Any, history: int | None = None, deterministic: bool = True,
               rng: np.random.Generator | None = None) -> MoveFn:
    """Turn a policy into a ``board -> chess.Move`` function.

    Args:
        policy: an SB3 model with ``predict(obs, action_masks=..., deterministic=...)`` (GRPO,
            MaskablePPO), a :class:`RandomPolicy`, or any callable ``board -> chess.Move`` (used
            as is; it must be thread-safe when evaluated with several workers).
        history: history positions in the observation; ``None`` infers it from the model's
            observation space. A value that contradicts the model is an error.
        deterministic: greedy (arg-max) moves; otherwise sample from the policy with ``rng``.
        rng: generator for random movers and stochastic models; never the global one.

    Raises:
        ValueError: ``policy`` is neither a model nor callable, or ``history`` does not fit it.
    """
    if isinstance(policy, RandomPolicy):
        return RandomPolicy(rng) if rng is not None else policy
    if hasattr(policy, "predict") and hasattr(policy, "observation_space"):
        inferred = infer_history(policy)
        if history is not None and history != inferred:
            raise ValueError(f"history={history!r} does not match the model's observation space "
                             f"{tuple(policy.observation_space.shape)} (history {inferred})")
        return _ModelMoveFn(policy, inferred, deterministic, rng)
    if callable(policy):
        return policy
    raise ValueError(f"cannot evaluate {policy!r}: expected an SB3 model with predict() or a callable board -> Move")


def _model_class_module(path: Path) -> str | None:
    """The module of the policy class recorded in an SB3 zip, or ``None`` if unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        return data["policy_class"]["__module__"]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def find_model_zip(run_dir: str | os.PathLike) -> Path:
    """The model of a run directory: ``best_model.zip`` (kept by :class:`EvalLadderCallback`), else
    ``final_model.zip``, else the newest zip; the shallowest wins among equal names.

    Raises:
        ValueError: the directory holds no ``.zip`` file.
    """
    run_dir = Path(run_dir)
    zips = sorted(run_dir.rglob("*.zip"))
    if not zips:
        raise ValueError(f"run directory {str(run_dir)!r} contains no model .zip")
    for preferred in ("best_model.zip", "final_model.zip"):
        named = [z for z in zips if z.name == preferred]
        if named:
            return min(named, key=lambda z: len(z.parts))
    return max(zips, key=lambda z: z.stat().st_mtime)


def load_model(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Load a GRPO or MaskablePPO model zip (the class is read from the zip, both are tried).

    Raises:
        ValueError: the file is missing or neither class can load it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    from sb3_contrib import MaskablePPO

    loaders: list[Any] = [MaskablePPO]
    try:
        from grpo_agent import GRPO  # absent until the GRPO algorithm is installed

        module = _model_class_module(path) or ""
        loaders = [GRPO, MaskablePPO] if module.startswith("grpo_agent") or not module else [MaskablePPO, GRPO]
    except ImportError:
        pass
    errors = []
    for cls in loaders:
        try:
            return cls.load(path, device=device)
        except Exception as exc:  # noqa: BLE001 - try the next class, report all failures below
            errors.append(f"{cls.__name__}: {exc}")
    raise ValueError(f"cannot load model {str(path)!r}: " + "; ".join(errors))


def load_policy(spec: str, device: str = "cpu", stockfish_path: str | None = None,
                engine_depth: int | None = 1, engine_movetime: float | None = None) -> tuple[Any, str]:
    """Resolve a ``RUN_OR_MODEL`` argument to ``(policy, name)``.

    ``random`` is the random mover; ``stockfish`` or any Stockfish opponent spec (``sf3``,
    ``elo1500@d6``) is Stockfish as the policy; a ``.zip`` is loaded with :func:`load_model`;
    a directory is a run whose model is found by :func:`find_model_zip`.
    """
    if spec == "random":
        return RandomPolicy(), "random"
    path = Path(spec)
    if path.is_dir():
        model_path = find_model_zip(path)
        return load_model(model_path, device), f"{path.name}/{model_path.stem}"
    if path.suffix == ".zip" or path.exists():
        return load_model(path, device), path.stem
    try:
        opponent = Opponent.parse(spec)
    except ValueError:
        raise ValueError(f"RUN_OR_MODEL {spec!r} is not a model .zip, a run directory, 'random' or a "
                         "Stockfish spec such as 'stockfish' or 'sf5'") from None
    return EnginePolicy(opponent, engine_depth, engine_movetime, stockfish_path), f"stockfish_{opponent.name}"


# --------------------------------------------------------------------------------------------
# Games


def rules_termination(board: chess.Board) -> tuple[str, chess.Color | None] | None:
    """``(reason, winner)`` if the game is over by the rules, else ``None``.

    Threefold repetition and the 50-move rule end the game as soon as they can be claimed (as
    engine tournaments do); fivefold/75-move are contained in them.
    """
    if board.is_checkmate():
        return "checkmate", not board.turn
    if board.is_stalemate():
        return "stalemate", None
    if board.is_insufficient_material():
        return "insufficient_material", None
    if board.is_repetition(3):
        return "threefold_repetition", None
    if board.is_fifty_moves():
        return "fifty_moves", None
    return None


@dataclass
class GameRecord:
    """One evaluation game, from the policy's point of view."""

    opponent: str
    index: int
    start_fen: str
    policy_color: str
    """``"white"`` or ``"black"``."""
    moves: list[str]
    """UCI moves from ``start_fen``."""
    result: str
    """PGN result: ``1-0``, ``0-1`` or ``1/2-1/2``."""
    termination: str
    """``checkmate``, ``stalemate``, ``insufficient_material``, ``threefold_repetition``,
    ``fifty_moves``, ``illegal_move`` (the policy forfeits), ``adjudication_win`` or
    ``adjudication_draw`` (at ``max_plies``)."""
    score: float
    """1 win, 0.5 draw, 0 loss for the policy."""
    plies: int
    illegal_move: str | None = None

    def board(self) -> chess.Board:
        """The final position, with the game's moves on the move stack."""
        board = chess.Board(self.start_fen)
        for uci in self.moves:
            board.push_uci(uci)
        return board

    def to_pgn(self, headers: dict[str, str]) -> chess.pgn.Game:
        """A PGN game (``FEN``/``SetUp`` for non-standard starts) with ``headers`` and the result."""
        game = chess.pgn.Game.from_board(self.board())
        game.headers.update(headers)
        game.headers["Result"] = self.result
        standard = {"checkmate": "normal", "stalemate": "normal", "insufficient_material": "normal",
                    "threefold_repetition": "normal", "fifty_moves": "normal", "illegal_move": "rules infraction"}
        game.headers["Termination"] = standard.get(self.termination, "adjudication")
        game.headers["TerminationDetail"] = self.termination
        game.headers["PlyCount"] = str(self.plies)
        if self.illegal_move is not None:
            game.comment = f"the policy played the illegal move {self.illegal_move} and forfeits"
        return game


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


# --------------------------------------------------------------------------------------------
# ACPL and puzzles


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


def solve_puzzle(puzzle: Puzzle, move_fn: MoveFn) -> bool:
    """Whether ``move_fn`` finds every solver move of ``puzzle`` (a checkmating alternative also solves,
    as on Lichess); an illegal move fails the puzzle."""
    board = puzzle.board()
    for i in range(1, len(puzzle.moves), 2):
        move = move_fn(board.copy())
        expected = chess.Move.from_uci(puzzle.moves[i])
        if move != expected:
            if move is None or move not in board.legal_moves:
                return False
            board.push(move)
            return board.is_checkmate()
        board.push(expected)
        if i + 1 < len(puzzle.moves):
            board.push_uci(puzzle.moves[i + 1])
    return True


def select_puzzles(puzzles: Sequence[Puzzle], n: int | None, rng: np.random.Generator) -> list[Puzzle]:
    """``n`` puzzles (all for ``None``), balanced over first themes: shuffled, then round-robin."""
    if n is None or n >= len(puzzles):
        return list(puzzles)
    by_theme: dict[str, list[Puzzle]] = {}
    for i in rng.permutation(len(puzzles)):
        by_theme.setdefault(puzzles[i].themes[0], []).append(puzzles[i])
    chosen: list[Puzzle] = []
    queues = [by_theme[t] for t in sorted(by_theme)]
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


@dataclass
class PuzzleResult:
    """Which puzzles the policy solved, with accuracy overall and per theme."""

    solved: dict[str, bool]
    themes: dict[str, tuple[str, ...]]

    @property
    def accuracy(self) -> float:
        return statistics.fmean(self.solved.values())

    @property
    def by_theme(self) -> dict[str, dict[str, float]]:
        counts: dict[str, list[bool]] = {}
        for pid, ok in self.solved.items():
            for theme in self.themes[pid]:
                counts.setdefault(theme, []).append(ok)
        return {t: {"n": len(v), "solved": sum(v), "accuracy": statistics.fmean(v)} for t, v in sorted(counts.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"n": len(self.solved), "accuracy": self.accuracy, "by_theme": self.by_theme, "solved": self.solved}


# --------------------------------------------------------------------------------------------
# Configuration and report


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
    # Reports: a ladder wide enough to place the policy, intervals of about +-0.1 in score.
    "full": EvalConfig(opponents=("random", "sf0", "sf1", "sf3", "sf5", "sf8", "sf12", "sf20"), games=100,
                       engine_depth=8, max_plies=300, adjudicate_depth=14, acpl_positions=None, acpl_depth=14,
                       puzzles=None),
}


@dataclass
class EvalReport:
    """Everything one evaluation measured."""

    policy: str
    config: EvalConfig
    engine: str | None
    matches: list[MatchResult] = field(default_factory=list)
    acpl: AcplResult | None = None
    puzzles: PuzzleResult | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """Flat ``eval/*`` metrics for the SB3 logger (names as in DESIGN.md)."""
        out: dict[str, float] = {}
        for match in self.matches:
            out[f"eval/score_vs_{match.opponent}"] = match.stats.score
            out[f"eval/elo_vs_{match.opponent}"] = match.stats.elo
        if self.acpl is not None:
            out["eval/acpl"] = self.acpl.acpl
            out["eval/accuracy"] = self.acpl.accuracy
        if self.puzzles is not None:
            out["eval/puzzle_accuracy"] = self.puzzles.accuracy
        return out

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        if not isinstance(config["positions"], str):
            config["positions"] = f"<{len(config['positions'])} positions>"
        return {"policy": self.policy, "engine": self.engine, "seconds": self.seconds, "config": config,
                "metrics": self.metrics(), "matches": [m.to_dict() for m in self.matches],
                "acpl": self.acpl.to_dict() if self.acpl else None,
                "puzzles": self.puzzles.to_dict() if self.puzzles else None}


# --------------------------------------------------------------------------------------------
# Evaluator


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
        self._players = _ThreadPlayers(None, stockfish_path, hash_mb)
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
        limit = opponent.limit(_default_limit(config.engine_depth, config.engine_movetime))
        fens = _draw_positions(positions, (games + 1) // 2, np.random.default_rng(config.seed))
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
        board = chess.Board(fen)
        random_opponent = RandomPolicy(rng)
        player = self._players.get()
        game_token = object()  # a new python-chess "game": Stockfish gets ucinewgame (clean hash)
        illegal = None
        winner: chess.Color | None
        while True:
            ended = rules_termination(board)
            if ended is not None:
                reason, winner = ended
                break
            if len(board.move_stack) >= config.max_plies:
                reason, winner = self._adjudicate(board, config)
                break
            if board.turn == policy_color:
                move = move_fn(board.copy())
                if move is None or move not in board.legal_moves:
                    illegal = str(move)
                    reason, winner = "illegal_move", not policy_color
                    break
            elif opponent.is_engine:
                move = player.play(board, limit, strength=opponent.strength, game=game_token)
            else:
                move = random_opponent(board)
            board.push(move)
        result = "1/2-1/2" if winner is None else ("1-0" if winner == chess.WHITE else "0-1")
        score = 0.5 if winner is None else float(winner == policy_color)
        return GameRecord(opponent.name, index, fen, "white" if policy_color == chess.WHITE else "black",
                          [m.uci() for m in board.move_stack], result, reason, score, len(board.move_stack), illegal)

    def _adjudicate(self, board: chess.Board, config: EvalConfig) -> tuple[str, chess.Color | None]:
        if config.adjudicate == "draw":
            return "adjudication_draw", None
        info = self._players.get().analyse(board, chess.engine.Limit(depth=config.adjudicate_depth), game=object())
        white = info["score"].white()
        cp = white.score(mate_score=MATE_SCORE)
        if white.is_mate() or abs(cp) >= config.adjudicate_cp:
            return "adjudication_win", chess.WHITE if cp > 0 else chess.BLACK
        return "adjudication_draw", None

    # -- ACPL -----------------------------------------------------------------------------------

    def acpl(self, policy: Any, positions: Sequence[str], depth: int = 10, deterministic: bool = True,
             seed: int = 0) -> AcplResult:
        """Judge the policy's move in each position with Stockfish at ``depth`` (see module doc)."""
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
        cp_best = _clamped_cp(info["score"].pov(board.turn))
        move = move_fn(board.copy())
        if move is None or move not in board.legal_moves:
            cp_played = -CP_CAP
        elif move == best_move:
            cp_played = cp_best
        else:
            played = judge.analyse(board, limit, root_moves=[move], game=token)
            cp_played = _clamped_cp(played["score"].pov(board.turn))
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
        positions = _resolve_positions(config.positions)
        if config.games:
            for spec in config.opponents:
                report.matches.append(self.play_match(policy, spec, config.games, positions, config))
        if config.acpl_positions != 0:
            n = len(positions) if config.acpl_positions is None else config.acpl_positions
            fens = _draw_positions(positions, n, np.random.default_rng([config.seed, 1]))
            report.acpl = self.acpl(policy, fens, config.acpl_depth, config.deterministic, config.seed)
        if config.puzzles != 0:
            chosen = select_puzzles(read_puzzles(config.puzzle_file), config.puzzles,
                                    np.random.default_rng([config.seed, 2]))
            report.puzzles = self.puzzles(policy, chosen, config.deterministic, config.seed)
        report.seconds = time.perf_counter() - started
        return report


def _resolve_positions(spec: Any) -> Sequence[str]:
    if isinstance(spec, (list, tuple)) and all(isinstance(f, str) for f in spec):
        return [chess.Board(f).fen() for f in spec]
    from chess_env.positions import load_positions

    return list(load_positions(spec))


def _draw_positions(positions: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` positions without replacement, reshuffling and cycling when ``n`` exceeds the set."""
    if not positions:
        raise ValueError("the position set is empty")
    out: list[str] = []
    while len(out) < n:
        order = rng.permutation(len(positions))[: n - len(out)]
        out.extend(positions[int(i)] for i in order)
    return out


# --------------------------------------------------------------------------------------------
# Artefacts and display


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def format_eval_rows(before: EvalReport, after: EvalReport) -> list[tuple[str, str, str]]:
    """``(metric, before, after)`` text rows comparing two reports of the same config (e.g. a run's start and end)."""
    rows = []
    for old, new in zip(before.matches, after.matches):
        def text(match: MatchResult) -> str:
            s = match.stats
            return f"{s.score:.2f} [{s.score_low:.2f}, {s.score_high:.2f}] ({s.wins}/{s.draws}/{s.losses})"

        rows.append((f"score vs {old.opponent} (W/D/L)", text(old), text(new)))
    if before.acpl is not None and after.acpl is not None:
        rows.append((f"ACPL (depth {after.acpl.depth}, lower is better)", f"{before.acpl.acpl:.1f}", f"{after.acpl.acpl:.1f}"))
        rows.append(("move accuracy %", f"{before.acpl.accuracy:.1f}", f"{after.acpl.accuracy:.1f}"))
        rows.append(("engine's best move %", f"{100 * before.acpl.best_move_rate:.1f}",
                     f"{100 * after.acpl.best_move_rate:.1f}"))
    if before.puzzles is not None and after.puzzles is not None:
        rows.append(("puzzles solved %", f"{100 * before.puzzles.accuracy:.1f}", f"{100 * after.puzzles.accuracy:.1f}"))
    return rows


def write_artifacts(report: EvalReport, out_dir: str | os.PathLike, svg: bool = True) -> Path:
    """Write ``eval.json``, ``games/<opponent>.pgn`` and (with ``svg``) ``svg/<opponent>_<i>.svg``.

    Returns the path of ``eval.json``.
    """
    out = Path(out_dir)
    (out / "games").mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y.%m.%d")
    for match in report.matches:
        pgn_path = out / "games" / f"{_safe_name(match.opponent)}.pgn"
        with open(pgn_path, "w") as fh:
            for game in match.games:
                policy_white = game.policy_color == "white"
                headers = {"Event": f"grpo-chess eval: {report.policy} vs {match.opponent}", "Site": "grpo-chess",
                           "Date": date, "Round": str(game.index + 1),
                           "White": report.policy if policy_white else match.opponent_description,
                           "Black": match.opponent_description if policy_white else report.policy,
                           "Opponent": match.opponent}
                print(game.to_pgn(headers), file=fh, end="\n\n")
        if svg:
            (out / "svg").mkdir(exist_ok=True)
            for game in match.games:
                board = game.board()
                image = chess.svg.board(board, lastmove=board.move_stack[-1] if board.move_stack else None,
                                        check=board.king(board.turn) if board.is_check() else None,
                                        orientation=chess.WHITE if game.policy_color == "white" else chess.BLACK,
                                        size=360)
                (out / "svg" / f"{_safe_name(match.opponent)}_{game.index:03d}.svg").write_text(image)
    json_path = out / "eval.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default))
    return json_path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


_SHORT_TERMINATIONS = {"checkmate": "mate", "stalemate": "stalemate", "insufficient_material": "material",
                       "threefold_repetition": "3-fold", "fifty_moves": "50-move", "illegal_move": "illegal",
                       "adjudication_win": "adj-win", "adjudication_draw": "adj-draw"}


def print_report(report: EvalReport, console: Any = None) -> None:
    """Print the report as rich tables: results, game lengths and endings, ACPL, puzzles."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.matches:
        results = Table(title=f"{report.policy}: ladder results (95% Wilson CI; Elo = policy - opponent)")
        games = Table(title="game lengths (plies) and endings")
        for column in ("opponent", "games", "W", "D", "L", "score", "score CI", "Elo diff", "Elo CI"):
            results.add_column(column, justify="left" if column == "opponent" else "right")
        for column in ("opponent", "mean", "median", "min", "max", "endings"):
            games.add_column(column, justify="left" if column in ("opponent", "endings") else "right")
        for match in report.matches:
            s = match.stats
            if s.games == 1:
                elo, elo_ci = "n/a", "n/a"
            else:
                bound = ("<=" if s.score == 0 else ">=") if s.elo_clamped else ""
                elo, elo_ci = f"{bound}{s.elo:+.0f}", f"[{s.elo_low:+.0f}, {s.elo_high:+.0f}]"
            results.add_row(match.opponent, str(s.games), str(s.wins), str(s.draws), str(s.losses), f"{s.score:.3f}",
                            f"{s.score_low:.2f}-{s.score_high:.2f}", elo, elo_ci)
            lengths = match.lengths
            games.add_row(match.opponent, f"{lengths['mean']:.0f}", f"{lengths['median']:.0f}", str(lengths["min"]),
                          str(lengths["max"]), ", ".join(f"{_SHORT_TERMINATIONS.get(k, k)} {v}"
                                                          for k, v in match.terminations.items()))
        console.print(results)
        for match in report.matches:
            console.print(f"  {match.opponent}: {match.opponent_description}")
        if any(m.stats.elo_clamped for m in report.matches):
            console.print("  Elo at a score of 0 or 1 is clamped to half a game: a bound, not an estimate.")
        console.print(games)
    if report.acpl is not None:
        a = report.acpl
        console.print(f"ACPL {a.acpl:.1f} cp, accuracy {a.accuracy:.1f}%, engine's best move {a.best_move_rate:.0%} "
                      f"on {len(a.positions)} held-out positions (Stockfish depth {a.depth})")
    if report.puzzles is not None:
        table = Table(title=f"puzzles: {report.puzzles.accuracy:.1%} solved of {len(report.puzzles.solved)}")
        for column in ("theme", "solved", "n", "accuracy"):
            table.add_column(column, justify="left" if column == "theme" else "right")
        for theme, row in report.puzzles.by_theme.items():
            table.add_row(theme, str(row["solved"]), str(row["n"]), f"{row['accuracy']:.1%}")
        console.print(table)
    console.print(f"evaluated in {report.seconds:.1f}s")


# --------------------------------------------------------------------------------------------
# Training callback


class EvalLadderCallback(BaseCallback):
    """Evaluate the model every ``eval_freq_rollouts`` rollouts; keep the best model by score.

    Logs :meth:`EvalReport.metrics` (``eval/score_vs_<opponent>``, ``eval/elo_vs_<opponent>``,
    ``eval/acpl``, ``eval/accuracy``, ``eval/puzzle_accuracy``) and ``eval/selection_score``, the
    number checkpoints are ranked by: the score against ``select_by`` (an opponent spec) or, by
    default, the mean score over the ladder. Every evaluation uses the same seed, so checkpoints
    meet the same openings (common random numbers make their difference less noisy). A new best
    is written to ``<save_path>/best_model.zip`` atomically (a temporary file, then ``os.replace``)
    with its report in ``best_eval.json``; the latest report is ``last_report``.

    Args:
        eval_freq_rollouts: evaluate after every this many rollouts (>= 1).
        config: the evaluation (default: the ``quick`` preset).
        save_path: directory for the best model; ``None`` keeps no checkpoint.
        select_by: opponent spec whose score ranks checkpoints; ``None`` for the ladder mean.
        workers, stockfish_path: passed to :class:`Evaluator`.
    """

    def __init__(self, eval_freq_rollouts: int, config: EvalConfig | None = None,
                 save_path: str | os.PathLike | None = None, select_by: str | None = None,
                 workers: int | None = None, stockfish_path: str | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if eval_freq_rollouts < 1:
            raise ValueError(f"eval_freq_rollouts must be >= 1, got {eval_freq_rollouts!r}")
        self.eval_freq_rollouts = eval_freq_rollouts
        self.config = config or EvalConfig.preset("quick")
        self.config.validate()
        if not self.config.games:
            raise ValueError("EvalLadderCallback ranks checkpoints by game score: config.games must be >= 1")
        self.select_by = Opponent.parse(select_by).name if select_by is not None else None
        if self.select_by is not None and self.select_by not in {Opponent.parse(o).name for o in self.config.opponents}:
            raise ValueError(f"select_by {select_by!r} is not among the opponents {self.config.opponents}")
        self.save_path = Path(save_path) if save_path is not None else None
        self.workers = workers
        self.stockfish_path = stockfish_path
        self.n_rollouts = 0
        self.best_score = -math.inf
        self.last_report: EvalReport | None = None
        self.history: list[dict[str, float]] = []
        self._evaluator: Evaluator | None = None

    def _on_training_start(self) -> None:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.workers, self.stockfish_path)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.n_rollouts += 1
        if self.n_rollouts % self.eval_freq_rollouts == 0:
            self.evaluate_now()

    def evaluate_now(self) -> EvalReport:
        """Evaluate the current model, log, and save it if it is the best so far."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.workers, self.stockfish_path)
        report = self._evaluator.evaluate(self.model, self.config, policy_name=f"step {self.num_timesteps}")
        metrics = report.metrics()
        scores = {m.opponent: m.stats.score for m in report.matches}
        selection = scores[self.select_by] if self.select_by is not None else statistics.fmean(scores.values())
        metrics["eval/selection_score"] = selection
        for key, value in metrics.items():
            self.logger.record(key, value)
        self.history.append({"timesteps": self.num_timesteps, **metrics})
        self.last_report = report
        if selection > self.best_score:
            self.best_score = selection
            if self.save_path is not None:
                self._save_best(report)
        if self.verbose:
            print(f"eval at {self.num_timesteps} steps: selection score {selection:.3f} (best {self.best_score:.3f})")
        return report

    def _save_best(self, report: EvalReport) -> None:
        assert self.save_path is not None
        self.save_path.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        self.model.save(buffer)
        _atomic_write(self.save_path / "best_model.zip", buffer.getvalue())
        summary = {"timesteps": self.num_timesteps, "selection_score": self.best_score, **report.to_dict()}
        _atomic_write(self.save_path / "best_eval.json", json.dumps(summary, indent=2, default=_json_default).encode())

    def _on_training_end(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# CLI


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess eval`` arguments to ``parser``."""
    parser.add_argument("model", metavar="RUN_OR_MODEL",
                        help="a model .zip, a run directory (its best_model.zip, else its newest zip), "
                             "'random', or a Stockfish spec such as 'stockfish' or 'sf5' (baselines)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="CI smoke test: 2 opponents x 4 games at depth 1, 8 ACPL positions, 15 puzzles")
    preset.add_argument("--full", dest="preset", action="store_const", const="full",
                        help="report: 8-rung ladder x 100 games at depth 8, all ACPL positions, all puzzles")
    parser.set_defaults(preset="default")
    parser.add_argument("--opponents", help="comma-separated opponent specs: random, sf<0-20>, elo<N>, "
                                            "optionally @d<depth>/@n<nodes>/@t<seconds> (e.g. random,sf0,sf3@d5)")
    parser.add_argument("--games", type=int, help="games per opponent (colours alternate)")
    parser.add_argument("--depth", type=int, dest="engine_depth", help="Stockfish opponents' search depth")
    parser.add_argument("--movetime", type=float, dest="engine_movetime", help="Stockfish seconds per move (instead of depth)")
    parser.add_argument("--max-plies", type=int, help="adjudicate games at this many plies")
    parser.add_argument("--adjudicate", choices=ADJUDICATIONS, help="at max plies: engine eval (default) or draw")
    parser.add_argument("--acpl-positions", type=int, help="held-out positions for ACPL (0 skips, -1 all)")
    parser.add_argument("--acpl-depth", type=int, help="Stockfish depth judging ACPL")
    parser.add_argument("--puzzles", type=int, help="number of puzzles (0 skips, -1 all)")
    parser.add_argument("--puzzle-file", help="a Lichess puzzle CSV instead of the shipped set")
    parser.add_argument("--positions", help="held-out start positions (chess_env.positions spec; default builtin:eval)")
    parser.add_argument("--seed", type=int, help="seed of the evaluation's own RNG")
    parser.add_argument("--stochastic", action="store_true", help="sample the policy instead of arg-max moves")
    parser.add_argument("--workers", type=int, default=None, help="parallel games = Stockfish processes (default: CPUs)")
    parser.add_argument("--stockfish", default=None, help="Stockfish binary (default: STOCKFISH_PATH, PATH, /usr/games)")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.add_argument("--out", default=None, help="output directory (default: RUN/eval for a run directory, "
                                                    "else eval_results/NAME)")
    parser.add_argument("--no-svg", dest="svg", action="store_false", help="skip the SVG final positions")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The preset named by ``args.preset`` with the explicitly given options applied."""
    overrides: dict[str, Any] = {}
    if args.opponents:
        overrides["opponents"] = tuple(s for s in (p.strip() for p in args.opponents.split(",")) if s)
    for name in ("games", "engine_depth", "max_plies", "adjudicate", "acpl_depth", "puzzle_file", "positions", "seed"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.engine_movetime is not None:
        overrides.update(engine_movetime=args.engine_movetime, engine_depth=None)
    for name in ("acpl_positions", "puzzles"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = None if value == -1 else value
    if args.stochastic:
        overrides["deterministic"] = False
    config = EvalConfig.preset(args.preset, **overrides)
    config.validate()
    return config


def run_eval(args: argparse.Namespace) -> int:
    """``grpo-chess eval``: evaluate, print the tables, write JSON/PGN/SVG. Returns the exit code."""
    try:
        config = config_from_args(args)
        policy, name = load_policy(args.model, args.device, args.stockfish, config.engine_depth or 1,
                                   config.engine_movetime)
    except (ValueError, EngineNotFoundError) as exc:
        print(f"grpo-chess eval: error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        out = Path(args.out)
    elif Path(args.model).is_dir():
        out = Path(args.model) / "eval"
    else:
        out = Path("eval_results") / _safe_name(name)
    try:
        with Evaluator(args.workers, args.stockfish) as evaluator:
            report = evaluator.evaluate(policy, config, policy_name=name)
    except (ValueError, EngineNotFoundError) as exc:
        print(f"grpo-chess eval: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if isinstance(policy, EnginePolicy):
            policy.close()
    json_path = write_artifacts(report, out, svg=args.svg)
    print_report(report)
    print(f"wrote {json_path} and the games under {out}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m grpo_agent.evaluation RUN_OR_MODEL [options]``."""
    parser = argparse.ArgumentParser(prog="grpo-chess eval", description="Evaluate a policy: Stockfish ladder, "
                                     "ACPL and puzzles, with confidence intervals.")
    add_eval_arguments(parser)
    return run_eval(parser.parse_args(None if argv is None else list(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
