"""``grpo-chess match A B``: a head-to-head match, optionally stopped by an SPRT (:mod:`grpo_agent.evaluation.match`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from chess_env.engine import EngineNotFoundError
from grpo_agent.evaluation.games import ADJUDICATIONS
from grpo_agent.evaluation.match import (
    Contestant,
    MatchConfig,
    MatchOutcome,
    print_match,
    progress_line,
    run_match,
    write_pgn,
)
from grpo_agent.evaluation.reports import safe_name
from grpo_agent.evaluation.sprt import SPRT

PLAYER_HELP = ("a model .zip, a run directory, 'random', or a Stockfish spec (sf:skill=0, sf:depth=1, sf:elo=1500, "
               "sf3@d5; see chess_env.engine.strength)")


def add_match_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess match`` arguments to ``parser``."""
    parser.add_argument("a", metavar="A", help=PLAYER_HELP)
    parser.add_argument("b", metavar="B", help="the other player, as A")
    parser.add_argument("--games", type=int, default=100,
                        help="games to play at most, an even number: each opening with both colours (default 100)")
    parser.add_argument("--openings", default="builtin:eval",
                        help="start positions: builtin:eval (held out, default) or a .fen/.epd/.pgn/.csv file")
    parser.add_argument("--sprt", metavar="ELO0,ELO1", help="stop as soon as the pentanomial GSPRT accepts "
                                                            "H0: Elo(A-B)=ELO0 or H1: Elo(A-B)=ELO1 (a negative "
                                                            "ELO0 needs the = form: --sprt=-5,0)")
    parser.add_argument("--alpha", type=float, default=0.05, help="SPRT false-positive rate (default 0.05)")
    parser.add_argument("--beta", type=float, default=0.05, help="SPRT false-negative rate (default 0.05)")
    parser.add_argument("--depth", type=int, default=5, help="depth of Stockfish specs without a limit (default 5)")
    parser.add_argument("--movetime", type=float, help="seconds per move of Stockfish specs without a limit")
    parser.add_argument("--max-plies", type=int, default=200, help="adjudicate games at this many plies (default 200)")
    parser.add_argument("--adjudicate", choices=ADJUDICATIONS, default="engine",
                        help="at max plies: Stockfish's evaluation (default) or a draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of the openings and of sampling players")
    parser.add_argument("--stochastic", action="store_true", help="models sample moves instead of arg-max")
    parser.add_argument("--workers", type=int, default=1, help="games played in parallel (default 1)")
    parser.add_argument("--stockfish", default=None, help="Stockfish binary (default: STOCKFISH_PATH, PATH, /usr/games)")
    parser.add_argument("--device", default="cpu", help="torch device for models")
    parser.add_argument("--pgn", default=None, help="PGN file of the games (default match_results/A_vs_B.pgn)")
    return parser


def _progress(total: int, stream: TextIO) -> tuple[Callable[[MatchOutcome], None], Callable[[], None]]:
    """``(update, close)``: a tqdm bar on a terminal, else a plain line about every tenth of the match."""
    if stream.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="game", file=stream)

        def update(outcome: MatchOutcome) -> None:
            bar.update(len(outcome.games) - bar.n)
            bar.set_postfix_str(progress_line(outcome).split("  ", 1)[1])

        return update, bar.close
    every = max(2, total // 10)

    def report(outcome: MatchOutcome) -> None:
        played = len(outcome.games)
        if played % every == 0 or played == total or outcome.decided_after == played:
            print(progress_line(outcome), file=stream, flush=True)

    return report, lambda: None


def run_match_command(args: argparse.Namespace) -> int:
    """``grpo-chess match``: play, print the table, write the PGN. Returns the exit code."""
    contestants: list[Contestant] = []
    try:
        sprt = SPRT.parse(args.sprt, args.alpha, args.beta) if args.sprt else None
        config = MatchConfig(games=args.games, openings=args.openings, max_plies=args.max_plies,
                             adjudicate=args.adjudicate, sprt=sprt, seed=args.seed, deterministic=not args.stochastic)
        config.validate()
        depth = None if args.movetime is not None else args.depth
        for spec in (args.a, args.b):
            contestants.append(Contestant.load(spec, args.device, args.stockfish, depth, args.movetime))
        a, b = contestants
        if a.name == b.name:
            a.name, b.name = f"{a.name}-A", f"{b.name}-B"
        update, close = _progress(config.games, sys.stderr)
        try:
            outcome = run_match(a, b, config, args.workers, args.stockfish, on_game=update)
        finally:
            close()
    except (ValueError, EngineNotFoundError) as exc:
        print(f"grpo-chess match: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for contestant in contestants:
            contestant.close()
    pgn = write_pgn(outcome, args.pgn or Path("match_results") / f"{safe_name(a.name)}_vs_{safe_name(b.name)}.pgn")
    print_match(outcome)
    print(f"wrote {pgn}")
    return 0
