"""``grpo-chess train``: build the env and GRPO from a config, train into a run folder, evaluate, summarise."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.logger import KVWriter, Logger, make_output_format

from chess_env import ChessVectorEnv
from chess_env.engine import EnginePoolError
from grpo_agent.cli.config import SCHEDULE_KEYS, ConfigError, load_config, parse_schedule
from grpo_agent.cli.plotting import plot_run, read_progress
from grpo_agent.evaluation import PRESETS, EvalConfig, EvalReport, Evaluator, format_eval_rows, load_model, write_artifacts
from grpo_agent.grpo import GRPO
from grpo_agent.pretrain import STARTS_FILE, run_pretrain, warm_start
from grpo_agent.progress import ProgressCallback
from grpo_agent.resume import ProgressCSV, RolloutCheckpointCallback, checkpoint_timesteps
from grpo_agent.save_util import atomic_write, save_model
from grpo_agent.threads import UpdateThreads

#: ``env.start_positions`` value: the GRPO games start from the pretrain stage's ``grpo_starts.epd``
PRETRAIN_STARTS = "pretrain"

SUMMARY_KEYS = (
    "rollout/step_reward_mean",
    "rollout/regret",
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


def _make_env(env_cfg: dict[str, Any], ray_backend: bool = False) -> ChessVectorEnv:
    """The config's env; a value it refuses (a bad FEN, size, opponent, engine path) is a :class:`ConfigError`.

    With the Ray backend this env only describes the games (the workers build their own, with their own pools),
    so it gets one engine process instead of one per core."""
    cfg = dict(env_cfg)
    num_envs = cfg.pop("num_envs", 64)
    if ray_backend:
        cfg["engine_processes"] = 1
    try:
        return ChessVectorEnv(num_envs, **cfg)
    except (ValueError, OSError, EnginePoolError) as exc:  # EngineNotFoundError is an OSError
        raise ConfigError(f"env: {exc}") from exc


def _make_logger(run_dir: Path, verbose: int, wandb_run: Any, resume_at: int | None = None) -> Logger:
    """The run's logger: ``progress.csv`` (continued after ``resume_at`` timesteps when resuming), tensorboard,
    stdout with ``verbose``, wandb."""
    outputs: list[KVWriter] = [ProgressCSV(run_dir / "progress.csv", resume_at)]
    if verbose:
        outputs.append(make_output_format("stdout", str(run_dir)))
    if importlib.util.find_spec("tensorboard") is not None:
        tensorboard = make_output_format("tensorboard", str(run_dir))
        if resume_at is not None:
            from torch.utils.tensorboard import SummaryWriter

            # Hide what the interrupted session logged past the checkpoint, which this one logs again.
            tensorboard.writer.close()
            tensorboard.writer = SummaryWriter(log_dir=str(run_dir), purge_step=resume_at + 1)
        outputs.append(tensorboard)
    else:
        print("note: tensorboard is not installed; writing csv logs only (pip install tensorboard)")
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


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The model of ``run_dir`` with the most timesteps: ``checkpoints/grpo_<timesteps>_steps.zip`` by its name,
    ``final_model.zip`` by the timesteps saved in it (it wins a tie; a run resumed after it finished has newer
    checkpoints)."""
    best: tuple[int, int, Path] | None = None
    for path in (run_dir / "checkpoints").glob("grpo_*_steps.zip"):
        match = re.fullmatch(r"grpo_(\d+)_steps\.zip", path.name)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), 0, path)
    final = run_dir / "final_model.zip"
    if final.is_file():
        candidate = (checkpoint_timesteps(final), 1, final)
        best = candidate if best is None else max(best, candidate)
    return None if best is None else best[2]


def _build_model(config: dict[str, Any], env: ChessVectorEnv, resume_from: Path | None) -> GRPO:
    """GRPO from the config's algo section, or loaded from ``resume_from``; a refused value or checkpoint is a
    :class:`ConfigError`."""
    algo = {k: parse_schedule(v) if k in SCHEDULE_KEYS else v for k, v in config["algo"].items()}
    try:
        if resume_from is not None:
            # Where rollouts run is the session's choice (this machine, this cluster), not the checkpoint's.
            backend = {key: algo[key] for key in ("rollout_backend", "num_rollout_workers", "rollout_options") if key in algo}
            return GRPO.load(resume_from, env=env, device=algo.get("device", "auto"), **backend)
        policy = algo.pop("policy", "ChessResNetPolicy")
        return GRPO(policy, env, **algo)
    except ValueError as exc:
        raise ConfigError(f"--resume {str(resume_from)!r}: {exc}" if resume_from else f"algo: {exc}") from exc


STAGES = ("initial", "pretrained", "final")
STAGE_TITLES = {"initial": "initial", "pretrained": "after pretrain", "final": "after GRPO"}


def _summary(run_dir: Path, wall_s: float, model: GRPO, evaluation: dict[str, EvalReport] | None = None) -> None:
    console = Console(width=None if sys.stdout.isatty() else 120)
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
    table.add_row("timesteps", "", f"{model.num_timesteps:,}")
    table.add_row("wall-clock of GRPO (s)", "", f"{wall_s:.1f}")
    table.add_row("run folder", "", str(run_dir))
    console.print(table)
    if evaluation:
        held_out = Table(title="held-out evaluation (builtin:eval positions, puzzles, games)")
        held_out.add_column("metric")
        for stage in evaluation:
            held_out.add_column(STAGE_TITLES[stage], justify="right")
        for row in format_eval_rows(*evaluation.values()):
            held_out.add_row(*row)
        console.print(held_out)


def _evaluate_stages(run_dir: Path, train_cfg: dict[str, Any]) -> dict[str, EvalReport] | None:
    """Evaluate ``initial_model.zip``, ``pretrained_model.zip`` (when the run has one) and ``final_model.zip``
    alike; reports go to ``RUN_DIR/eval/<stage>/``."""
    if train_cfg["evaluate"] == "none" or not (run_dir / "initial_model.zip").is_file():
        return None
    config = EvalConfig.preset(train_cfg["evaluate"], opponents=tuple(train_cfg["eval_opponents"]))
    reports = {}
    with Evaluator() as evaluator:
        for stage in STAGES:
            path = run_dir / f"{stage}_model.zip"
            if not path.is_file():
                continue
            print(f"evaluating the {STAGE_TITLES[stage]} policy ({train_cfg['evaluate']} preset) ...", flush=True)
            reports[stage] = evaluator.evaluate(load_model(path), config, policy_name=f"{run_dir.name}/{stage}")
            write_artifacts(reports[stage], run_dir / "eval" / stage, svg=False)
    return reports


def _pretrain_stage(config: dict[str, Any], run_dir: Path) -> str:
    """Run the config's pretrain stage into ``run_dir/pretrain``; return the path of ``pretrained.zip``."""
    section = {"policy": config["algo"].get("policy", "ChessResNetPolicy"),
               "policy_kwargs": config["algo"].get("policy_kwargs"), **config["pretrain"]}
    try:
        return str(run_pretrain(section, run_dir / "pretrain"))
    except ValueError as exc:
        raise ConfigError(f"pretrain: {exc}") from exc


def _pretrain_starts(config: dict[str, Any], run_dir: Path, init: str | None) -> str | None:
    """``env.start_positions: pretrain``: run the pretrain stage first and start the GRPO games from its
    ``grpo_starts.epd`` (the config is changed to that file, so ``config.yaml`` and a resume name it). Returns the
    pretrained model's path, or ``init`` when the config asks nothing of the kind."""
    if config["env"].get("start_positions") != PRETRAIN_STARTS:
        return init
    if init is not None or not config["pretrain"]:
        raise ConfigError(f"env.start_positions {PRETRAIN_STARTS!r} names the positions of the config's own pretrain "
                          "stage: it needs a pretrain: section and no --init / train.init")
    _make_env({**config["env"], "start_positions": "standard"}).close()  # a bad env value fails before pretraining
    pretrained = _pretrain_stage(config, run_dir)
    config["env"]["start_positions"] = str(run_dir / "pretrain" / STARTS_FILE)
    return pretrained


def _warm_start(config: dict[str, Any], model: GRPO, run_dir: Path, init: str | None) -> None:
    """Start ``model`` from ``init``, or from the run's own pretrain stage when the config has one; the warm start
    is also the KL reference. Saves it as ``pretrained_model.zip`` for the evaluation."""
    if init is None and config["pretrain"]:
        init = _pretrain_stage(config, run_dir)
    if init is None:
        return
    try:
        warm_start(model, init)
    except ValueError as exc:
        raise ConfigError(f"--init: {exc}") from exc
    print(f"GRPO starts from {init} (also the KL reference)", flush=True)
    save_model(model, run_dir / "pretrained_model.zip")


def _run_folder(args: argparse.Namespace) -> tuple[Path, dict[str, Any], Path | None]:
    """``(run folder, config, checkpoint to resume from)``: the ``--resume`` folder and its newest checkpoint, or
    a new folder's path (created once the config has built an env and a model) and no checkpoint."""
    if args.resume is None:
        config = load_config(args.config, args.set or [])
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(config["train"]["runs_dir"]) / f"{config['train']['name']}-{stamp}", config, None
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r} is not a run folder (no config.yaml)")
    config = load_config(run_dir / "config.yaml", args.set or [])
    resume_from = latest_checkpoint(run_dir)
    if resume_from is None:
        raise ConfigError(f"--resume {str(run_dir)!r} has no checkpoint to resume from")
    for stale in [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]:  # writes a kill cut short
        stale.unlink()
    return run_dir, config, resume_from


def run_train(args: argparse.Namespace) -> int:
    """``grpo-chess train``: build the env and GRPO from the config and train, logging into a run folder."""
    run_dir, config, resume_from = _run_folder(args)
    train_cfg = config["train"]
    if train_cfg["evaluate"] not in ("none", *PRESETS):
        raise ConfigError(f"train.evaluate {train_cfg['evaluate']!r} is not 'none' or one of {sorted(PRESETS)}")
    torch.set_num_threads(int(train_cfg["torch_threads"]))
    try:
        update_threads = UpdateThreads(train_cfg["update_threads"])
    except ValueError as error:
        raise ConfigError(f"train.update_threads: {error}") from None
    if args.backend is not None:
        config["algo"]["rollout_backend"] = args.backend
    if args.workers is not None:
        config["algo"]["num_rollout_workers"] = args.workers
    ray_backend = config["algo"].get("rollout_backend") == "ray"
    if ray_backend:
        from grpo_agent.distributed import init_ray

        init_ray(args.address)
    init = None if resume_from else _pretrain_starts(config, run_dir, args.init or train_cfg["init"])
    env = _make_env(config["env"], ray_backend)
    model = None
    try:
        model = _build_model(config, env, resume_from)
        # now: a refused config leaves no folder (but a pretrain stage run first has made it)
        run_dir.mkdir(parents=True, exist_ok=resume_from is not None or (run_dir / "pretrain").is_dir())
        # Atomic: a kill while a resumed session rewrites it must not leave a run folder that cannot be resumed.
        atomic_write(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
        wandb_run = _init_wandb(args.wandb, run_dir, config)
        model.set_logger(_make_logger(run_dir, int(train_cfg["verbose"]), wandb_run,
                                      model.num_timesteps if resume_from else None))
        if resume_from is None and train_cfg["evaluate"] != "none":
            save_model(model, run_dir / "initial_model.zip")  # the "before" of the final evaluation
        if resume_from is None:
            _warm_start(config, model, run_dir, init)
        callbacks: list[Any] = [update_threads]
        if train_cfg["checkpoint_every"] > 0:
            callbacks.append(RolloutCheckpointCallback(int(train_cfg["checkpoint_every"]), run_dir / "checkpoints"))
        remaining = int(train_cfg["total_timesteps"]) - (model.num_timesteps if resume_from else 0)
        terminal = sys.stdout.isatty()
        if train_cfg["progress_bar"] and not terminal:
            callbacks.append(ProgressCallback(remaining, "GRPO"))  # a plain line every few seconds in a log
        start = time.perf_counter()
        if remaining > 0:
            model.learn(
                total_timesteps=remaining,
                callback=callbacks,
                log_interval=train_cfg["log_interval"],
                reset_num_timesteps=resume_from is None,
                progress_bar=bool(train_cfg["progress_bar"]) and terminal,
            )
        wall = time.perf_counter() - start
        save_model(model, run_dir / "final_model.zip")
        model.logger.close()
    finally:
        if model is not None:
            model.close_rollout_workers()
        env.close()
    plot_run(run_dir)
    _summary(run_dir, wall, model, _evaluate_stages(run_dir, train_cfg))
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess train`` arguments to ``parser``."""
    parser.add_argument("--config", default=None, help="YAML config (sections env, algo, train)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a run from its latest checkpoint")
    parser.add_argument("--init", metavar="MODEL.zip", default=None,
                        help="start from a pretrained model (grpo-chess pretrain); it is also the KL reference")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    parser.add_argument("--backend", choices=("local", "ray"), default=None,
                        help="where rollouts are played (default: the config's algo.rollout_backend, else local)")
    parser.add_argument("--address", default=None, metavar="HOST:PORT",
                        help="with --backend ray: the Ray cluster to join ('auto': the one this machine belongs to; "
                             "default: start a local Ray)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="with --backend ray: rollout workers (the config's algo.num_rollout_workers)")
    return parser
