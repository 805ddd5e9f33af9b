"""``grpo-chess pretrain``: a Stockfish-distilled starting policy from a config's ``pretrain:`` section."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from grpo_agent.cli.config import ConfigError, load_config
from grpo_agent.evaluation import PRESETS, EvalConfig, Evaluator, format_eval_rows, load_model, write_artifacts
from grpo_agent.pretrain import STARTS_FILE, run_pretrain


def run_pretrain_command(args: argparse.Namespace) -> int:
    """Label positions, train the network of the config's ``algo`` section on them, save ``pretrained.zip``
    (which ``grpo-chess train --init``, ``eval``, ``uci`` and ``match`` take), and evaluate it with the
    ``train.evaluate`` preset."""
    config = load_config(args.config, args.set or [])
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path(config["train"]["runs_dir"]) / f"{config['train']['name']}-pretrain-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "config.yaml", "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    section = {"policy": config["algo"].get("policy", "ChessResNetPolicy"),
               "policy_kwargs": config["algo"].get("policy_kwargs"), **config["pretrain"]}
    try:
        path = run_pretrain(section, run_dir)
    except ValueError as exc:
        raise ConfigError(f"pretrain: {exc}") from exc
    preset = config["train"]["evaluate"]
    if preset != "none":
        if preset not in PRESETS:
            raise ConfigError(f"train.evaluate {preset!r} is not 'none' or one of {sorted(PRESETS)}")
        eval_config = EvalConfig.preset(preset, opponents=tuple(config["train"]["eval_opponents"]))
        with Evaluator() as evaluator:
            report = evaluator.evaluate(load_model(path), eval_config, policy_name=f"{run_dir.name}/pretrained")
        write_artifacts(report, run_dir / "eval", svg=False)
        table = Table(title=f"pretrained policy {path}")
        table.add_column("metric")
        table.add_column("pretrained", justify="right")
        for row in format_eval_rows(report):
            table.add_row(*row)
        Console(width=None if sys.stdout.isatty() else 120).print(table)
    print(f"pretrained model: {path}  (grpo-chess train --config ... --init {path}; its GRPO start positions, "
          f"for a config whose env.start_positions is 'pretrain': --set env.start_positions={run_dir / STARTS_FILE})")
    return 0


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess pretrain`` arguments to ``parser``."""
    parser.add_argument("--config", default=None, help="YAML config: its pretrain section, algo.policy_kwargs, train.evaluate")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="run folder (default runs/<name>-pretrain-<time>); its labelled dataset is reused")
    return parser
