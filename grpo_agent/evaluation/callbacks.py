"""Evaluation during training: the ladder as an SB3 callback that keeps the best model."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from grpo_agent.evaluation.evaluator import EvalConfig, Evaluator
from grpo_agent.evaluation.players import Opponent
from grpo_agent.evaluation.reports import EvalReport
from grpo_agent.save_util import save_model, write_json


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
        save_model(self.model, self.save_path / "best_model.zip")
        write_json(self.save_path / "best_eval.json",
                   {"timesteps": self.num_timesteps, "selection_score": self.best_score, **report.to_dict()})

    def _on_training_end(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

