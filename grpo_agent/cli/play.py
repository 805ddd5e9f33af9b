"""``grpo-chess play MODEL``: play against a policy in the terminal (the game itself is :mod:`grpo_agent.play`)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import chess
import numpy as np

from grpo_agent.evaluation import EnginePolicy, as_move_fn, load_policy
from grpo_agent.play import play_interactive

COLORS = ("white", "black", "random")


def add_play_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess play`` arguments to ``parser``."""
    parser.add_argument("model", metavar="MODEL", help="a model .zip, a run directory, 'random', or a Stockfish "
                                                       "spec such as 'stockfish' or 'sf3'")
    parser.add_argument("--color", choices=COLORS, default="white", help="your colour (default white)")
    parser.add_argument("--fen", default=chess.STARTING_FEN, help="start position (default: the initial position)")
    parser.add_argument("--depth", type=int, default=5, help="search depth when MODEL is Stockfish")
    parser.add_argument("--stochastic", action="store_true", help="the agent samples moves instead of arg-max")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random colour and a sampling agent")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.add_argument("--stockfish", default=None, help="Stockfish binary")
    parser.add_argument("--ascii", dest="unicode", action="store_false", help="letters instead of Unicode pieces")
    return parser


def run_play(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``grpo-chess play``: returns 0 after a finished, resigned or abandoned game, 2 on bad arguments."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    try:
        board = chess.Board(args.fen)
        if not board.is_valid() or board.is_game_over():
            raise ValueError(f"--fen {args.fen!r} is not a playable position")
        policy, name = load_policy(args.model, args.device, args.stockfish, args.depth)
    except ValueError as exc:
        print(f"grpo-chess play: error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    color = args.color if args.color != "random" else ("white", "black")[int(rng.integers(2))]
    try:
        move_fn = as_move_fn(policy, deterministic=not args.stochastic, rng=rng)
        play_interactive(move_fn, chess.WHITE if color == "white" else chess.BLACK, stdin, stdout,
                         board.fen(), name, args.unicode)
    finally:
        if isinstance(policy, EnginePolicy):
            policy.close()
    return 0
