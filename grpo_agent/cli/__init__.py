"""``grpo-chess``: pretrain and train GRPO from a YAML config, plot a run, evaluate, match and play a policy, serve it over UCI, run the benchmarks.

One module per command: :mod:`~grpo_agent.cli.train` (with :mod:`~grpo_agent.cli.config`, the config
schema), :mod:`~grpo_agent.cli.pretrain`, :mod:`~grpo_agent.cli.plotting`, :mod:`~grpo_agent.cli.evaluate`,
:mod:`~grpo_agent.cli.match`, :mod:`~grpo_agent.cli.play`, :mod:`~grpo_agent.cli.uci` and
:mod:`~grpo_agent.cli.bench` (``bench NAME`` and ``sweep``, from a source checkout). This module
only dispatches; every command is imported here, so a broken one fails loudly instead of vanishing.
"""

from __future__ import annotations

import argparse

from grpo_agent.cli.bench import add_bench_parsers
from grpo_agent.cli.config import ConfigError
from grpo_agent.cli.evaluate import add_eval_arguments, run_eval
from grpo_agent.cli.match import add_match_arguments, run_match_command
from grpo_agent.cli.play import add_play_arguments, run_play
from grpo_agent.cli.plotting import add_plot_arguments, run_plot
from grpo_agent.cli.pretrain import add_pretrain_arguments, run_pretrain_command
from grpo_agent.cli.train import add_train_arguments, run_train
from grpo_agent.cli.uci import add_uci_arguments, run_uci

__all__ = ["ConfigError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``grpo-chess`` parser; each subcommand's ``func`` runs it."""
    parser = argparse.ArgumentParser(prog="grpo-chess", description=__doc__.split("\n")[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (
        ("train", "train GRPO from a YAML config", add_train_arguments, run_train),
        ("pretrain", "distil Stockfish into a starting policy (the config's pretrain section)", add_pretrain_arguments,
         run_pretrain_command),
        ("plot", "write PNG learning curves and the collapse dashboard of a run", add_plot_arguments, run_plot),
        ("eval", "evaluate a policy (Stockfish ladder, ACPL, puzzles)", add_eval_arguments, run_eval),
        ("match", "a head-to-head match of two players, optionally stopped by an SPRT", add_match_arguments,
         run_match_command),
        ("play", "play against a policy in the terminal", add_play_arguments, run_play),
        ("uci", "serve a model as a UCI engine on stdin/stdout (GUIs, lichess-bot, cutechess-cli)", add_uci_arguments,
         run_uci),
    )
    for name, help_text, add_arguments, run in commands:
        add_arguments(sub.add_parser(name, help=help_text)).set_defaults(func=run)
    add_bench_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``grpo-chess`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        parser.exit(2, f"grpo-chess {args.command}: error: {exc}\n")
