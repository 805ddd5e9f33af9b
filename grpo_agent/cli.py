"""``grpo-chess``: train GRPO from a YAML config, plot a run, (when installed) evaluate and play, and (from a
source checkout) run the learning benchmarks (``bench compare``, ``sweep``).

Config schema (strict: an unknown section or key is an error naming it)::

    env:    # keyword arguments of chess_env.ChessVectorEnv (num_envs + any ChessEnv argument)
      num_envs: 64
      reward_depth: 1
    algo:   # keyword arguments of grpo_agent.GRPO (policy, learning_rate, group_size, ...)
      policy: ChessResNetPolicy
      learning_rate: 3.0e-4       # or "linear:3e-4:1e-5" (start:end over the run)
    train:  # the run itself, see TRAIN_DEFAULTS
      total_timesteps: 100000

``learning_rate``, ``clip_range``, ``clip_range_high``, ``ent_coef`` and ``kl_coef`` accept a number or
``"linear:START:END"`` (SB3 ``LinearSchedule`` over the whole run).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import inspect
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.logger import KVWriter

from chess_env.engine import EngineNotFoundError
from grpo_agent.evaluation import (
    ADJUDICATIONS,
    EnginePolicy,
    EvalConfig,
    Evaluator,
    load_policy,
    print_report,
    write_artifacts,
)
from grpo_agent.evaluation.reports import safe_name

TRAIN_DEFAULTS: dict[str, Any] = {
    "total_timesteps": 100_000,  # env steps (each rollout is num_envs * horizon of them)
    "name": "grpo",  # run folder prefix: <runs_dir>/<name>-<timestamp>
    "runs_dir": "runs",
    "checkpoint_every": 10,  # rollouts between checkpoints (0 = only the final model)
    "log_interval": 1,  # rollouts between log rows
    "progress_bar": True,
    "verbose": 0,  # 1 also prints SB3's log table to stdout
    "torch_threads": 1,  # torch intra-op threads; 1 leaves the other cores to the Stockfish pool
    "evaluate": "none",  # evaluation preset run on the initial and the final policy (none, quick, default, full)
    "eval_opponents": ["random", "sf0"],  # opponents of that evaluation
}
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_high", "ent_coef", "kl_coef")
SUMMARY_KEYS = (
    "rollout/step_reward_mean",
    "rollout/step_reward_std",
    "rollout/group_reward_std",
    "rollout/action_agreement_mean",
    "rollout/finished_frac",
    "rollout/plies_per_s",
    "rollout/engine_cache_hit_rate",
    "train/entropy",
    "train/entropy_norm",
    "train/kl_ref",
    "train/approx_kl",
    "train/clip_fraction_high",
    "train/advantage_std",
)


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""


# ----------------------------------------------------------------------------------------------
# Config


def _allowed_keys() -> dict[str, set[str]]:
    from chess_env import ChessVectorEnv
    from chess_env.env import ChessEnv
    from grpo_agent.grpo import GRPO

    def params(fn: Any) -> set[str]:
        return {
            name
            for name, p in inspect.signature(fn).parameters.items()
            if name != "self" and not name.startswith("_") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    env_keys = params(ChessEnv.__init__) | params(ChessVectorEnv.__init__)
    algo_keys = params(GRPO.__init__) - {"env", "n_envs", "env_kwargs"}
    return {"env": env_keys, "algo": algo_keys, "train": set(TRAIN_DEFAULTS)}


def _numbers(value: Any) -> Any:
    """PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string: read such strings as floats."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` (value parsed as YAML) -> ``(["section", "key"], value)``."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if len(keys) < 2:
        raise ConfigError(f"--set key must be section.key (e.g. algo.learning_rate), got {path!r}")
    return keys, _numbers(yaml.safe_load(raw))


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Read a YAML config, apply ``--set`` overrides, check every key, fill the train defaults."""
    config: dict[str, Any] = {}
    if path is not None:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ConfigError(f"config {str(path)!r} must be a mapping with sections env, algo, train")
    config = _numbers(copy.deepcopy(config))
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {key!r} is not a section")
        node[keys[-1]] = value
    allowed = _allowed_keys()
    for section, values in config.items():
        if section not in allowed:
            raise ConfigError(f"unknown config section {section!r} (expected one of {sorted(allowed)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        for key in values:
            if key not in allowed[section]:
                raise ConfigError(f"unknown config key {section}.{key} (allowed: {', '.join(sorted(allowed[section]))})")
    out = {section: dict(config.get(section) or {}) for section in allowed}
    out["train"] = {**TRAIN_DEFAULTS, **out["train"]}
    return out


def parse_schedule(value: Any) -> Any:
    """A number, or ``"linear:START:END"`` -> SB3 ``LinearSchedule`` from START (progress 1) to END."""
    if isinstance(value, str) and value.startswith("linear:"):
        from stable_baselines3.common.utils import LinearSchedule

        parts = value.split(":")
        try:
            start, end = float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ConfigError(f"schedule must be 'linear:START:END', got {value!r}") from None
        return LinearSchedule(start, end, end_fraction=1.0)
    return value


# ----------------------------------------------------------------------------------------------
# Training


def _make_env(env_cfg: dict[str, Any]) -> Any:
    from chess_env import ChessVectorEnv

    cfg = dict(env_cfg)
    num_envs = cfg.pop("num_envs", 64)
    return ChessVectorEnv(num_envs, **cfg)


def _make_logger(run_dir: Path, verbose: int, wandb_run: Any) -> Any:
    from stable_baselines3.common.logger import Logger, make_output_format

    formats = ["csv"] + (["stdout"] if verbose else [])
    try:
        import tensorboard  # noqa: F401

        formats.append("tensorboard")
    except ImportError:
        print("note: tensorboard is not installed; writing csv logs only (pip install tensorboard)")
    outputs = [make_output_format(f, str(run_dir)) for f in formats]
    if wandb_run is not None:
        outputs.append(_WandbOutput(wandb_run))
    return Logger(str(run_dir), outputs)


class _WandbOutput(KVWriter):
    """SB3 KVWriter that forwards every numeric logger value to a wandb run."""

    def __init__(self, run: Any):
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        data = {k: v for k, v in key_values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.run.log(data, step=step)

    def close(self) -> None:
        self.run.finish()


def _init_wandb(mode: str, run_dir: Path, config: dict[str, Any]) -> Any:
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        print("note: wandb is not installed, so wandb logging is disabled (pip install 'grpo-chess[wandb]')")
        return None
    return wandb.init(project="grpo-chess", name=run_dir.name, dir=str(run_dir), mode=mode, config=config)


def _checkpoint_callback(save_freq: int, save_path: Path) -> Any:
    from stable_baselines3.common.callbacks import CheckpointCallback

    class AtomicCheckpointCallback(CheckpointCallback):
        """SB3 CheckpointCallback that writes to a temporary file and renames it, so a checkpoint on disk is
        never half-written (a run killed mid-save leaves the previous one intact)."""

        def _on_step(self) -> bool:
            if self.n_calls % self.save_freq == 0:
                path = self._checkpoint_path(extension="zip")
                _atomic_save(self.model, path)
                if self.verbose >= 2:
                    print(f"Saving model checkpoint to {path}")
            return True

    return AtomicCheckpointCallback(save_freq=save_freq, save_path=str(save_path), name_prefix="grpo")


def _atomic_save(model: Any, path: str | os.PathLike) -> None:
    tmp = f"{path}.tmp"
    model.save(tmp)
    os.replace(tmp, path)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most timesteps in ``run_dir/checkpoints`` (``final_model.zip`` wins)."""
    final = run_dir / "final_model.zip"
    if final.is_file():
        return final
    best: tuple[int, Path] | None = None
    for path in (run_dir / "checkpoints").glob("grpo_*_steps.zip"):
        match = re.fullmatch(r"grpo_(\d+)_steps\.zip", path.name)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), path)
    return None if best is None else best[1]


def _build_model(config: dict[str, Any], env: Any, run_dir: Path, resume_from: Path | None) -> Any:
    from grpo_agent.grpo import GRPO

    algo = {k: parse_schedule(v) if k in SCHEDULE_KEYS else v for k, v in config["algo"].items()}
    if resume_from is not None:
        return GRPO.load(resume_from, env=env, device=algo.get("device", "auto"))
    policy = algo.pop("policy", "ChessResNetPolicy")
    return GRPO(policy, env, **algo)


def _summary(run_dir: Path, wall_s: float, model: Any, evaluation: dict[str, Any] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    frame = read_progress(run_dir)
    table = Table(title=f"GRPO run {run_dir.name}")
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    if frame is not None and len(frame):
        k = max(1, min(3, len(frame) // 3))  # average a few rows at each end: single rollouts are noisy
        for key in SUMMARY_KEYS:
            if key in frame:
                col = frame[key].dropna()
                if len(col):
                    table.add_row(key, f"{col.iloc[:k].mean():.4g}", f"{col.iloc[-k:].mean():.4g}")
    if evaluation:
        from grpo_agent.evaluation import format_eval_rows

        for name, before, after in format_eval_rows(evaluation["initial"], evaluation["final"]):
            table.add_row(name, before, after)
    table.add_row("timesteps", "", f"{model.num_timesteps:,}")
    table.add_row("wall-clock (s)", "", f"{wall_s:.1f}")
    table.add_row("run folder", "", str(run_dir))
    Console(width=None if sys.stdout.isatty() else 120).print(table)


def _evaluate_initial_and_final(run_dir: Path, train_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Evaluate ``initial_model.zip`` and ``final_model.zip`` alike; reports go to ``RUN_DIR/eval/``."""
    if train_cfg["evaluate"] == "none" or not (run_dir / "initial_model.zip").is_file():
        return None
    from grpo_agent.evaluation import EvalConfig, Evaluator, load_model, write_artifacts

    config = EvalConfig.preset(train_cfg["evaluate"], opponents=tuple(train_cfg["eval_opponents"]))
    reports = {}
    with Evaluator() as evaluator:
        for name in ("initial", "final"):
            model = load_model(run_dir / f"{name}_model.zip")
            print(f"evaluating the {name} policy ({train_cfg['evaluate']} preset) ...")
            reports[name] = evaluator.evaluate(model, config, policy_name=f"{run_dir.name}/{name}")
            write_artifacts(reports[name], run_dir / "eval" / name, svg=False)
    return reports


def run_train(args: argparse.Namespace) -> int:
    """``grpo-chess train``: build the env and GRPO from the config and train, logging into a run folder."""
    import torch as th

    if args.resume is not None:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {str(run_dir)!r} is not a run folder (no config.yaml)")
        config = load_config(run_dir / "config.yaml", args.set or [])
        resume_from = latest_checkpoint(run_dir)
        if resume_from is None:
            raise ConfigError(f"--resume {str(run_dir)!r} has no checkpoint to resume from")
        # SB3's csv writer truncates progress.csv: keep the earlier rows as progress.N.csv for `plot`.
        if (run_dir / "progress.csv").is_file():
            n = len(list(run_dir.glob("progress.*.csv")))
            os.replace(run_dir / "progress.csv", run_dir / f"progress.{n}.csv")
    else:
        config = load_config(args.config, args.set or [])
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(config["train"]["runs_dir"]) / f"{config['train']['name']}-{stamp}"
        run_dir.mkdir(parents=True, exist_ok=False)
        resume_from = None
    with open(run_dir / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)

    train_cfg = config["train"]
    from grpo_agent.evaluation import PRESETS

    if train_cfg["evaluate"] not in ("none", *PRESETS):
        raise ConfigError(f"train.evaluate {train_cfg['evaluate']!r} is not 'none' or one of {sorted(PRESETS)}")
    th.set_num_threads(int(train_cfg["torch_threads"]))
    wandb_run = _init_wandb(args.wandb, run_dir, config)
    env = _make_env(config["env"])
    try:
        model = _build_model(config, env, run_dir, resume_from)
        model.set_logger(_make_logger(run_dir, int(train_cfg["verbose"]), wandb_run))
        callbacks = []
        if train_cfg["checkpoint_every"] > 0:
            callbacks.append(_checkpoint_callback(train_cfg["checkpoint_every"] * model.horizon, run_dir / "checkpoints"))
        remaining = int(train_cfg["total_timesteps"]) - (model.num_timesteps if resume_from else 0)
        if resume_from is None and train_cfg["evaluate"] != "none":
            _atomic_save(model, run_dir / "initial_model.zip")  # the "before" of the final evaluation
        start = time.perf_counter()
        if remaining > 0:
            model.learn(
                total_timesteps=remaining,
                callback=callbacks,
                log_interval=train_cfg["log_interval"],
                reset_num_timesteps=resume_from is None,
                progress_bar=bool(train_cfg["progress_bar"]),
            )
        wall = time.perf_counter() - start
        _atomic_save(model, run_dir / "final_model.zip")
        model.logger.close()
    finally:
        env.close()
    run_plot(argparse.Namespace(run_dir=str(run_dir), out=None, dashboard=None))
    _summary(run_dir, wall, model, _evaluate_initial_and_final(run_dir, train_cfg))
    return 0


# ----------------------------------------------------------------------------------------------
# Plot


def read_progress(run_dir: str | os.PathLike) -> Any:
    """All of a run's log rows (``progress.N.csv`` from earlier sessions, then ``progress.csv``) or None."""
    import pandas as pd

    run_dir = Path(run_dir)
    parts = sorted(run_dir.glob("progress.*.csv"), key=lambda p: int(p.suffixes[0][1:]))
    parts += [run_dir / "progress.csv"] if (run_dir / "progress.csv").is_file() else []
    frames = [pd.read_csv(p) for p in parts if p.stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else None


PLOT_KEYS = (
    "rollout/step_reward_mean",
    "train/entropy",
    "train/entropy_norm",
    "train/kl_ref",
    "train/approx_kl",
    "train/clip_fraction_low",
    "train/clip_fraction_high",
    "train/advantage_std",
    "train/grad_norm",
    "train/loss",
    "rollout/finished_frac",
    "rollout/plies_per_s",
)


#: collapse dashboard panels: title -> the series drawn in it (those the run logged)
DASHBOARD_PANELS: dict[str, tuple[str, ...]] = {
    "entropy (nats)": ("rollout/entropy", "train/entropy"),
    "entropy / log #legal": ("rollout/entropy_norm", "train/entropy_norm", "train/entropy_norm_target"),
    "action agreement in the group": ("rollout/action_agreement_mean", "rollout/action_agreement_p90"),
    "within-board reward std": ("rollout/group_reward_std", "rollout/group_step_reward_std"),
    "zero-spread groups": ("rollout/frac_reward_zero_std", "rollout/dropped_groups"),
    "policy diversity (KL to group mean)": ("rollout/policy_diversity_kl",),
    "KL": ("train/kl_ref", "train/approx_kl", "train/kl_target"),
    "clip fractions": ("train/clip_fraction_low", "train/clip_fraction_high"),
    "coefficients": ("train/ent_coef", "train/kl_coef", "rollout/temperature", "train/learning_rate"),
}
#: guard event (``guard/<name>_action`` value, see grpo_agent.control.GuardEvent) -> marker label and colour
GUARD_MARKERS: dict[int, tuple[str, str]] = {
    1: ("warn", "tab:orange"),
    2: ("boost", "tab:green"),
    3: ("stop", "tab:red"),
    4: ("rollback", "tab:purple"),
    5: ("recovered", "tab:cyan"),
}


def guard_events(frame: Any) -> list[tuple[float, str, str]]:
    """``(timesteps, label, colour)`` of every guard action in a run's log rows: the collapse guards'
    ``guard/<name>_action`` events and the updates where the non-finite guard skipped minibatches."""
    events: list[tuple[float, str, str]] = []
    x = frame["time/total_timesteps"]
    for column in frame.columns:
        match = re.fullmatch(r"guard/(.+)_action", column)
        if match is None:
            continue
        for step, value in zip(x, frame[column]):
            if value == value and int(value) in GUARD_MARKERS:  # value == value: not NaN
                label, colour = GUARD_MARKERS[int(value)]
                events.append((float(step), f"{match.group(1)} {label}", colour))
    if "guard/nonfinite_skipped_update" in frame:
        for step, value in zip(x, frame["guard/nonfinite_skipped_update"]):
            if value == value and value > 0:
                events.append((float(step), "non-finite skip", "black"))
    return events


def plot_dashboard(frame: Any, out: str | os.PathLike, title: str = "") -> bool:
    """Write the collapse dashboard (entropy, agreement, within-board spread, KL, clip fractions, coefficients,
    guard actions as vertical markers on every panel) of a run's log rows to ``out``.

    :return: False (and no file) when the run logged none of the dashboard's series.
    """
    import matplotlib.pyplot as plt

    panels = {
        name: [k for k in keys if k in frame and frame[k].notna().any()] for name, keys in DASHBOARD_PANELS.items()
    }
    panels = {name: keys for name, keys in panels.items() if keys}
    if not panels:
        return False
    events = guard_events(frame)
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.1 * rows), squeeze=False)
    x = frame["time/total_timesteps"]
    for ax, (name, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            col = frame[key]
            ax.plot(x[col.notna()], col.dropna(), lw=1.2, label=key)
        if name == "coefficients":
            ax.set_yscale("log")
        seen: set[str] = set()
        for step, label, colour in events:
            ax.axvline(step, color=colour, lw=1.0, ls="--", alpha=0.8, label=None if label in seen else label)
            seen.add(label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{title}: collapse dashboard" if title else "collapse dashboard")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def run_plot(args: argparse.Namespace) -> int:
    """``grpo-chess plot RUN_DIR``: learning curves from the run's csv logs into RUN_DIR/learning_curves.png,
    and the collapse dashboard (:func:`plot_dashboard`) into RUN_DIR/collapse_dashboard.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(args.run_dir)
    frame = read_progress(run_dir)
    if frame is None or "time/total_timesteps" not in frame:
        raise ConfigError(f"{str(run_dir)!r} has no progress.csv with logged rollouts")
    keys = [k for k in PLOT_KEYS if k in frame and frame[k].notna().any()]
    cols = 3
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    x = frame["time/total_timesteps"]
    for ax, key in zip(axes.flat, keys):
        ax.plot(x, frame[key], lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(args.out) if args.out else run_dir / "learning_curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    dashboard = Path(args.dashboard) if args.dashboard else run_dir / "collapse_dashboard.png"
    if plot_dashboard(frame, dashboard, run_dir.name):
        print(f"wrote {dashboard}")
    return 0


# ----------------------------------------------------------------------------------------------
# Evaluate


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


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
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
        config = eval_config_from_args(args)
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
        out = Path("eval_results") / safe_name(name)
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


# ----------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpo-chess", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train GRPO from a YAML config")
    train.add_argument("--config", default=None, help="YAML config (sections env, algo, train)")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    train.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a run from its latest checkpoint")
    train.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    train.set_defaults(func=run_train)

    plot = sub.add_parser("plot", help="write PNG learning curves of a run")
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", default=None, help="output PNG (default RUN_DIR/learning_curves.png)")
    plot.add_argument(
        "--dashboard", default=None, help="collapse dashboard PNG (default RUN_DIR/collapse_dashboard.png)"
    )
    plot.set_defaults(func=run_plot)

    evaluate = sub.add_parser("eval", help="evaluate a policy (Stockfish ladder, ACPL, puzzles)")
    add_eval_arguments(evaluate).set_defaults(func=run_eval)

    # play lives in its own module; train and plot work without it.
    for command, module, help_text in (("play", "grpo_agent.play", "play against a policy"),):
        try:
            mod = __import__(module, fromlist=["_"])
            add_arguments = getattr(mod, f"add_{command}_arguments")
            run = getattr(mod, f"run_{command}")
        except (ImportError, AttributeError):
            continue
        sub_parser = sub.add_parser(command, help=help_text)
        add_arguments(sub_parser)
        sub_parser.set_defaults(func=run)

    # The learning benchmarks live in benchmarks/ of a source checkout, not in the installed package.
    try:
        compare_ppo, ablation = _benchmark_module("compare_ppo"), _benchmark_module("ablation")
    except ImportError:
        return parser
    bench = sub.add_parser("bench", help="learning benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    compare = bench_sub.add_parser("compare", help="GRPO vs MaskablePPO: same env, network and ply budget")
    compare_ppo.build_parser(compare).set_defaults(func=compare_ppo.run_from_args)
    sweep = sub.add_parser("sweep", help="GRPO ablation grid: lr x ent_coef x advantage scaling")
    ablation.build_parser(sweep).set_defaults(func=ablation.run_from_args)
    return parser


def _benchmark_module(name: str) -> Any:
    """``benchmarks.<name>`` from the source checkout this package is installed from (editable installs)."""
    import importlib

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / f"{name}.py").is_file():
        raise ImportError(f"no benchmarks/{name}.py next to {Path(__file__).parent}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        parser.exit(2, f"grpo-chess {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
