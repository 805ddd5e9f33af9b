"""``grpo-chess bench NAME`` and ``grpo-chess sweep``: the benchmarks of a source checkout.

The benchmarks live in ``benchmarks/`` next to the package, not in it (a ``pip install`` has none).
Each runs as ``python -m benchmarks.<module>`` in its own process, with every argument after the
benchmark's name passed on to the benchmark's own parser (``grpo-chess bench compare --help`` lists
them), from the current directory, so relative paths mean what they say.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from grpo_agent.cli.config import ConfigError

#: ``grpo-chess bench NAME`` -> (module of ``benchmarks/``, what it measures)
BENCHMARKS = {
    "compare": ("compare_ppo", "GRPO vs MaskablePPO: same env, network and ply budget"),
    "throughput": ("env_throughput", "env plies/s with and without Stockfish shaping"),
    "engine": ("engine_fastpath", "the Stockfish pool: reset cost, raw pipe vs python-chess, scaling"),
    "multipv": ("engine_multipv", "scoring every legal move: one MultiPV search vs one search per child"),
    "ray": ("ray_rollouts", "rollouts on 1 and 2 Ray workers vs the local path, transfer, a scaling model"),
}
SWEEP = "ablation"
# The checkout's root: grpo_agent/cli/bench.py -> grpo_agent/cli -> grpo_agent -> root.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def benchmark_command(module: str, argv: list[str], root: Path = SOURCE_ROOT) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``benchmarks.<module>`` with ``argv``.

    ``root`` goes first on the child's ``PYTHONPATH``, so ``benchmarks`` and the package are the
    checkout's whatever the current directory.

    Raises:
        ConfigError: ``root`` has no ``benchmarks/<module>.py`` (an installed package, not a checkout).
    """
    if not (root / "benchmarks" / f"{module}.py").is_file():
        raise ConfigError(f"no benchmarks/{module}.py in {root}: the benchmarks ship with the source "
                          "repository, not the installed package; run this from a clone (pip install -e .)")
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", f"benchmarks.{module}", *argv], {**os.environ, "PYTHONPATH": path}


def run_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark that ``args`` names (``bench NAME`` or ``sweep``); its exit status is the command's."""
    module = SWEEP if args.command == "sweep" else BENCHMARKS[args.benchmark][0]
    command, env = benchmark_command(module, args.benchmark_args)
    return subprocess.run(command, env=env).returncode


def add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench NAME ...`` and ``sweep ...`` to the ``grpo-chess`` subcommands ``sub``."""
    bench = sub.add_parser("bench", help="benchmarks of a source checkout (benchmarks/)")
    names = bench.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    for name, (module, measures) in BENCHMARKS.items():
        _add_forwarding(names, name, f"{measures} (benchmarks/{module}.py)")
    _add_forwarding(sub, "sweep", f"GRPO ablation grid: lr x ent_coef x advantage scaling (benchmarks/{SWEEP}.py)")


def _add_forwarding(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    # No option of its own, not even -h (no prefix character can start one): every argument after the
    # name belongs to the benchmark's parser.
    parser = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
    parser.add_argument("benchmark_args", nargs=argparse.REMAINDER, metavar="ARGS")
    parser.set_defaults(func=run_benchmark)
