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

Modules: :mod:`~grpo_agent.evaluation.stats` (intervals, Elo, accuracy),
:mod:`~grpo_agent.evaluation.players` (models, the random mover and Stockfish as players),
:mod:`~grpo_agent.evaluation.games` (the one game loop, adjudication, :class:`GameRecord`),
:mod:`~grpo_agent.evaluation.puzzles`, :mod:`~grpo_agent.evaluation.evaluator` (the ladder, ACPL, the
:class:`Evaluator`), :mod:`~grpo_agent.evaluation.match` (head-to-head matches of any two players) with
:mod:`~grpo_agent.evaluation.sprt` (the pentanomial GSPRT), :mod:`~grpo_agent.evaluation.reports`
(:class:`EvalReport`, artefacts, tables) and :mod:`~grpo_agent.evaluation.callbacks`
(:class:`EvalLadderCallback`). The ``grpo-chess eval`` and ``grpo-chess match`` commands are part of
:mod:`grpo_agent.cli`.
"""

from chess_env.puzzles import Puzzle
from grpo_agent.evaluation.callbacks import EvalLadderCallback
from grpo_agent.evaluation.evaluator import PRESETS, AcplResult, EvalConfig, Evaluator, MatchResult, PositionJudgement
from grpo_agent.evaluation.games import ADJUDICATIONS, GameRecord, PlayedGame, play_game, rules_termination
from grpo_agent.evaluation.match import Contestant, MatchConfig, MatchOutcome, run_match
from grpo_agent.evaluation.players import (
    EnginePolicy,
    Opponent,
    RandomPolicy,
    as_move_fn,
    find_model_zip,
    infer_history,
    load_model,
    load_policy,
    policy_log_probs,
)
from grpo_agent.evaluation.puzzles import PuzzleResult, select_puzzles, solve_puzzle
from grpo_agent.evaluation.reports import EvalReport, format_eval_rows, print_report, write_artifacts
from grpo_agent.evaluation.sprt import SPRT
from grpo_agent.evaluation.stats import (
    CP_CAP,
    MATE_SCORE,
    Z_95,
    ScoreStats,
    elo_from_score,
    move_accuracy,
    score_stats,
    wilson_interval,
    win_percent,
)

__all__ = [
    "ADJUDICATIONS",
    "CP_CAP",
    "MATE_SCORE",
    "PRESETS",
    "Z_95",
    "AcplResult",
    "Contestant",
    "EnginePolicy",
    "EvalConfig",
    "EvalLadderCallback",
    "EvalReport",
    "Evaluator",
    "GameRecord",
    "MatchConfig",
    "MatchOutcome",
    "MatchResult",
    "Opponent",
    "PlayedGame",
    "PositionJudgement",
    "Puzzle",
    "PuzzleResult",
    "RandomPolicy",
    "SPRT",
    "ScoreStats",
    "as_move_fn",
    "elo_from_score",
    "find_model_zip",
    "format_eval_rows",
    "infer_history",
    "load_model",
    "load_policy",
    "move_accuracy",
    "play_game",
    "policy_log_probs",
    "print_report",
    "rules_termination",
    "run_match",
    "score_stats",
    "select_puzzles",
    "solve_puzzle",
    "wilson_interval",
    "win_percent",
    "write_artifacts",
]
