"""``grpo-chess uci MODEL``: serve a trained policy as a UCI engine on stdin/stdout (:mod:`grpo_agent.uci`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpo_agent.evaluation import find_model_zip, load_model
from grpo_agent.uci import serve


def add_uci_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess uci`` arguments to ``parser``."""
    parser.add_argument("model", metavar="MODEL", help="a model .zip, or a run directory (its best_model.zip, "
                                                       "else final_model.zip, else its newest zip)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    return parser


def run_uci(args: argparse.Namespace) -> int:
    """``grpo-chess uci``: load the model (exit 2 with a message on stderr if it cannot), then speak UCI."""
    try:
        path = find_model_zip(args.model) if Path(args.model).is_dir() else Path(args.model)
        model = load_model(path, args.device)
    except ValueError as exc:
        # Before the first UCI line: a GUI sees an engine that failed to start, and its log has the reason.
        print(f"grpo-chess uci: error: {exc}", file=sys.stderr)
        return 2
    serve(model, path.stem)
    return 0
