"""``grpo-chess eval``: evaluate a policy (Stockfish ladder, ACPL, puzzles) and write its artefacts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess eval`` arguments to ``parser``."""
    parser.add_argument("model", metavar="RUN_OR_MODEL",
                        help="a model .zip, a run directory (its best_model.zip, else its newest zip), "
                             "'random', or a Stockfish spec such as 'stockfish' or 'sf5' (baselines)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="CI smoke test: 2 opponents x 4 games at depth 1, 8 ACPL positions, 15 puzzles")
    preset.add_argument("--heldout", dest="preset", action="store_const", const="heldout",
                        help="the report make train runs: 40 games per opponent, all 200 ACPL positions, all 240 puzzles")
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
