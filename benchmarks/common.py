"""Shared code of the learning benchmarks (``compare_ppo.py``, ``ablation.py``).

* :func:`make_vector_env`: the one env configuration both algorithms train on.
* :class:`ChessMaskablePolicy`: sb3-contrib's ``MaskableActorCriticPolicy`` with the same trunk
  (:class:`grpo_agent.policies.ChessResNet`) and the same AlphaZero conv policy head as GRPO's
  ``ChessResNetPolicy``, plus a small value head: the networks differ only by the critic.
* :class:`BenchGRPO` / :class:`BenchMaskablePPO`: the algorithms, instrumented to time their learner
  (``train()``), count env plies and learner samples, and record one curve row per update.
* :func:`final_evaluation`: the evaluation module's ACPL and matches, flattened to JSON numbers.
* :func:`run_jobs`: a process pool (one torch thread per worker) that skips finished jobs.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from grpo_agent.save_util import json_default

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: 95% two-sided normal quantile; Student t quantiles for small seed counts below.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def limit_threads(n: int = 1) -> None:
    """One torch thread per worker process: the pool supplies the parallelism (and Stockfish the rest)."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set in this process
        pass


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% Student-t half-width over ``values`` (seeds); half-width ``nan`` for one value."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"mean": math.nan, "ci": math.nan, "n": 0}
    if len(vals) == 1:
        return {"mean": vals[0], "ci": math.nan, "n": 1}
    sd = statistics.stdev(vals)
    t = _T95.get(len(vals) - 1, 1.96)
    return {"mean": statistics.fmean(vals), "ci": t * sd / math.sqrt(len(vals)), "n": len(vals)}


def machine_info() -> dict[str, Any]:
    """What the numbers ran on: cores, CPU model, torch device, load average at the time."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": list(os.getloadavg())}


# ----------------------------------------------------------------------------------------------
# Env and networks


def make_vector_env(env_cfg: dict[str, Any], num_envs: int, engine_processes: int = 1) -> Any:
    """The benchmark env: a :class:`chess_env.ChessVectorEnv` with ``env_cfg`` (ChessEnv kwargs).

    ``engine_processes`` defaults to 1: the benchmark runs one job per core, so each job's Stockfish
    pool gets one process rather than one per core.
    """
    from chess_env import ChessVectorEnv

    return ChessVectorEnv(num_envs, engine_processes=engine_processes, **env_cfg)


def _maskable_policy_class() -> type:
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    from grpo_agent.policies import ConvPolicyHead

    class ChessMaskablePolicy(MaskableActorCriticPolicy):
        """MaskablePPO's actor-critic with GRPO's conv policy head on the ``(channels, 8, 8)`` features.

        Use with ``features_extractor_class=ChessResNet`` and ``net_arch=dict(pi=[], vf=[...])`` so the
        actor is exactly GRPO's network; only the value MLP is extra.
        """

        def _build(self, lr_schedule: Any) -> None:
            super()._build(lr_schedule)
            channels = getattr(self.features_extractor, "channels", None)
            if channels is None or self.mlp_extractor.latent_dim_pi != channels * 64:
                raise ValueError("ChessMaskablePolicy needs ChessResNet features and net_arch pi=[] "
                                 f"(got latent_dim_pi={self.mlp_extractor.latent_dim_pi}, channels={channels})")
            self.action_net = ConvPolicyHead(channels)
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    return ChessMaskablePolicy


# ----------------------------------------------------------------------------------------------
# Instrumented algorithms


class _BenchMixin:
    """Times ``train()`` (the learner), counts env plies and learner samples, records a curve row per update.

    ``curve_eval`` (optional) is called with the model at ``curve_points`` fractions of the budget; its
    time is excluded from the wall-clock ``seconds`` of the curve.
    """

    def bench_setup(self, budget_plies: int, curve_eval: Callable[[Any], dict[str, float]] | None = None,
                    curve_points: Sequence[float] = ()) -> None:
        self.learner_seconds = 0.0
        self.learner_samples = 0
        self.env_plies = 0
        self.eval_seconds = 0.0
        self.curve: list[dict[str, float]] = []
        self._budget = budget_plies
        self._curve_eval = curve_eval
        self._curve_targets = sorted(f * budget_plies for f in curve_points)
        self._t0 = time.perf_counter()

    def wall_seconds(self) -> float:
        """Training wall-clock so far (rollouts + updates), without the in-training evaluations."""
        return time.perf_counter() - self._t0 - self.eval_seconds

    def train(self) -> None:
        start = time.perf_counter()
        super().train()  # type: ignore[misc]
        self.learner_seconds += time.perf_counter() - start
        plies, samples, metrics = self._update_metrics()
        self.env_plies += plies
        self.learner_samples += samples
        row = {"plies": self.env_plies, "seconds": self.wall_seconds(), **metrics}
        # Budget points follow num_timesteps (what learn() stops on): GRPO's padded plies of finished games
        # count there but not in env_plies, which could then never reach the last point.
        steps = self.num_timesteps  # type: ignore[attr-defined]
        if self._curve_eval is not None and self._curve_targets and steps >= self._curve_targets[0]:
            while self._curve_targets and steps >= self._curve_targets[0]:
                self._curve_targets.pop(0)
            row.update(self.evaluate_for_curve())
        self.curve.append(row)

    def evaluate_for_curve(self) -> dict[str, float]:
        """Run ``curve_eval`` now, off the training clock."""
        start = time.perf_counter()
        out = self._curve_eval(self) if self._curve_eval is not None else {}
        self.eval_seconds += time.perf_counter() - start
        return out

    def _update_metrics(self) -> tuple[int, int, dict[str, float]]:
        raise NotImplementedError


def _grpo_class() -> type:
    from grpo_agent import diagnostics
    from grpo_agent.grpo import GRPO

    class BenchGRPO(_BenchMixin, GRPO):
        """GRPO instrumented for the benchmarks (see :class:`_BenchMixin`)."""

        def _update_metrics(self) -> tuple[int, int, dict[str, float]]:
            buf = self.rollout_buffer
            rollout, train = self.last_rollout_stats, self.last_train_stats
            if getattr(self, "group_mode", "games") == "moves":  # one position per ply played, all logged
                played = buf.pos * buf.n_envs
                plies, trained_plies = played, int(buf.trained[:played].sum())
                agreement = rollout.get("action_agreement_mean", math.nan)  # none in groups of every move
                group_std = rollout["group_step_reward_std"]
            else:
                trained = buf.trained & buf.valid
                plies, trained_plies = int(buf.valid.sum()), int(trained.sum())
                agreement = rollout.get("action_agreement_mean")
                if agreement is None:  # not logged by this GRPO version: measure it on the rollout
                    agreement, _ = diagnostics.action_agreement(buf.actions, trained)
                group_std = rollout.get("group_step_reward_std")
                if group_std is None:
                    group_std = diagnostics.within_group_step_reward_std(buf.rewards, trained)
            metrics = {
                "step_reward_mean": rollout.get("step_reward_mean", math.nan),
                "entropy": train.get("entropy", math.nan),
                "entropy_norm": train.get("entropy_norm", math.nan),
                "approx_kl": train.get("approx_kl", math.nan),
                "kl_ref": train.get("kl_ref", math.nan),
                "clip_fraction": train.get("clip_fraction_low", 0.0) + train.get("clip_fraction_high", 0.0),
                "agreement": float(agreement),
                "group_step_reward_std": float(group_std),
            }
            return plies, trained_plies * self.n_epochs, metrics

    return BenchGRPO


def _ppo_class() -> type:
    from sb3_contrib import MaskablePPO

    class BenchMaskablePPO(_BenchMixin, MaskablePPO):
        """MaskablePPO instrumented for the benchmarks (see :class:`_BenchMixin`)."""

        def _update_metrics(self) -> tuple[int, int, dict[str, float]]:
            buf = self.rollout_buffer
            logged = self.logger.name_to_value
            plies = buf.buffer_size * buf.n_envs
            metrics = {
                "step_reward_mean": float(buf.rewards.mean()),
                "entropy": -float(logged.get("train/entropy_loss", math.nan)),
                "approx_kl": float(logged.get("train/approx_kl", math.nan)),
                "clip_fraction": float(logged.get("train/clip_fraction", math.nan)),
                "explained_variance": float(logged.get("train/explained_variance", math.nan)),
            }
            return plies, plies * self.n_epochs, metrics

    return BenchMaskablePPO


def build_grpo(env: Any, algo_cfg: dict[str, Any], net: dict[str, int], seed: int, device: str) -> Any:
    """A :class:`BenchGRPO` on ``env`` with ``ChessResNetPolicy(n_blocks, channels)``."""
    cls = _grpo_class()
    return cls("ChessResNetPolicy", env, policy_kwargs={"features_extractor_kwargs": dict(net)}, seed=seed,
               device=device, **algo_cfg)


def build_maskable_ppo(env: Any, algo_cfg: dict[str, Any], net: dict[str, int], seed: int, device: str) -> Any:
    """A :class:`BenchMaskablePPO` on ``env`` (wrapped in ``ChessVecEnv``) with the same trunk and head."""
    from chess_env.sb3 import ChessVecEnv
    from grpo_agent.policies import ChessResNet

    cfg = dict(algo_cfg)
    value_hidden = cfg.pop("value_hidden", 64)
    policy_kwargs = {
        "features_extractor_class": ChessResNet,
        "features_extractor_kwargs": dict(net),
        "net_arch": {"pi": [], "vf": [value_hidden]},
        # GRPO's policy uses PyTorch's default init; orthogonal init would make the trunks differ.
        "ortho_init": False,
        "normalize_images": False,
    }
    cls = _ppo_class()
    return cls(_maskable_policy_class(), ChessVecEnv(env), policy_kwargs=policy_kwargs, seed=seed, device=device,
               **cfg)


# ----------------------------------------------------------------------------------------------
# Evaluation


def final_evaluation(model: Any, eval_cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """ACPL on ``builtin:eval`` positions and matches (score with Wilson CI) via :mod:`grpo_agent.evaluation`.

    ``eval_cfg`` holds :class:`~grpo_agent.evaluation.EvalConfig` fields. Returns flat numbers: ``acpl``,
    ``acpl_ci`` (95% normal half-width over positions), ``accuracy``, ``best_move_rate`` and per opponent
    ``score_vs_X``, ``score_vs_X_low``/``_high``, ``wdl_vs_X``; plus ``eval_seconds``.
    """
    from grpo_agent.evaluation import EvalConfig, Evaluator

    config = EvalConfig(**{"puzzles": 0, "positions": "builtin:eval", **eval_cfg, "seed": seed})
    start = time.perf_counter()
    with Evaluator(workers=1) as evaluator:
        report = evaluator.evaluate(model, config, policy_name=type(model).__name__)
    out: dict[str, Any] = {"eval_seconds": time.perf_counter() - start}
    if report.acpl is not None:
        losses = [p.cp_loss for p in report.acpl.positions]
        out.update(acpl=report.acpl.acpl, accuracy=report.acpl.accuracy, best_move_rate=report.acpl.best_move_rate,
                   acpl_ci=1.96 * statistics.stdev(losses) / math.sqrt(len(losses)) if len(losses) > 1 else math.nan,
                   acpl_positions=len(losses), acpl_depth=report.acpl.depth)
    for match in report.matches:
        s = match.stats
        out[f"score_vs_{match.opponent}"] = s.score
        out[f"score_vs_{match.opponent}_low"] = s.score_low
        out[f"score_vs_{match.opponent}_high"] = s.score_high
        out[f"wdl_vs_{match.opponent}"] = [s.wins, s.draws, s.losses]
    return out


def quick_acpl(model: Any, fens: Sequence[str], depth: int) -> dict[str, float]:
    """ACPL of ``model`` on ``fens`` at ``depth`` (one engine): the in-training curve point."""
    from grpo_agent.evaluation import Evaluator

    with Evaluator(workers=1) as evaluator:
        return {"acpl": evaluator.acpl(model, list(fens), depth=depth).acpl}


def eval_fens(n: int, seed: int = 0) -> list[str]:
    """``n`` held-out ``builtin:eval`` positions (the same for every run of a benchmark)."""
    from chess_env.positions import load_positions

    positions = list(load_positions("builtin:eval"))
    rng = np.random.default_rng(seed)
    return [positions[int(i)] for i in rng.permutation(len(positions))[:n]]


# ----------------------------------------------------------------------------------------------
# Jobs


def load_finished(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The record at ``path`` if it exists and was made with ``settings`` (its keys compared), else ``None``.

    A record from other settings (e.g. an older budget) is stale: the job reruns and overwrites it.
    """
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    same = all(json.loads(json.dumps(value, default=json_default)) == record.get(key)
               for key, value in settings.items())
    return record if same else None


def run_jobs(fn: Callable[[dict[str, Any]], Any], jobs: Sequence[dict[str, Any]], workers: int,
             on_done: Callable[[dict[str, Any], Any], None] | None = None) -> list[Any]:
    """Run ``fn(job)`` for each job on ``workers`` processes (inline when ``workers == 1``).

    ``fn`` must be a module-level function (it is pickled). Results come back in ``jobs`` order;
    ``on_done(job, result)`` is called as each finishes (progress printing).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    results: list[Any] = [None] * len(jobs)
    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            results[i] = fn(job)
            if on_done is not None:
                on_done(job, results[i])
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_done is not None:
                on_done(jobs[i], results[i])
    return results

