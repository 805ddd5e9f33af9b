"""Env throughput: plies/s of ChessVectorEnv with Stockfish shaping, beside three baselines.

Run: ``python -m benchmarks.env_throughput [--quick] [--out benchmarks/results/env_throughput.json]``
(``make bench``). Every run plays uniformly random legal moves (self-play, from the initial
position, ``max_plies=200``, NEXT_STEP autoreset), picking the moves included in the time:

* ``vector``: :class:`ChessVectorEnv` with a 2-process :class:`StockfishPool`, depth 1 / 4 / 8,
  ``num_envs`` 1 / 16 / 64, cache on (200k positions) and off; and without shaping (no engine).
* (a) ``pettingzoo``: PettingZoo ``chess_v6`` (AEC API), random masked play.
* (b) ``naive``: one game calling python-chess ``engine.analyse`` twice per ply (before and after the
  move; one Stockfish, Threads=1, default Hash), building the same observation and mask.
* (c) ``engine_only``: the positions the cache-off vector env sent to the engine (recorded in a
  separate run, same seeds), evaluated in the same batches by a 2-process pool with the cache off
  and nothing else to do: the engine's limit, in positions/s (one evaluation per ply). The env
  builds its observations, masks and infos while its batch is searched; on 2 cores that Python work
  still competes with the 2 engine processes for CPU time.

Plus the GRPO case: group resets (``groups x 8``, builtin start positions), 10-ply rollouts with
autoreset DISABLED, for a random policy and for one that plays a fixed move of the position 90% of
the time (a collapsing policy): engine calls per ply and cache hit rate.

The two sides of every ratio are measured in alternation, ``--rounds`` times, each keeping its best
round. The rows record CPU time per ply: the process's (``getrusage``), the calling thread's, and the
Stockfish processes' (``/proc``); ``vs_engine_only_cpu`` is the ratio to (c) of all that CPU per ply,
the rate ratio two otherwise idle cores would give if both were bound by CPU alone (the env's serial
part, when the engines wait for its next batch, keeps the wall-clock ratio below it). The load average
(``os.getloadavg``) is recorded: the machine's other work slows every number.

``--before REF`` instead compares this checkout's ``chess_env`` with git ``REF``'s on the same harness
(depth 1 at N = 16 and 64, no engine at N = 16; fresh processes, alternating rounds): plies/s and
CPU per ply before and after, in ``results/env_before_after.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import chess
import chess.engine
import numpy as np
from gymnasium.vector import AutoresetMode

from chess_env import ChessVectorEnv
from chess_env.encoding import legal_action_mask, observation
from chess_env.engine import StockfishPool, find_stockfish

RESULTS = Path(__file__).resolve().parent / "results"


def random_actions(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """A uniformly random legal action per row (0 for an all-False row)."""
    out = np.zeros(len(masks), dtype=np.int64)
    for i, row in enumerate(masks):
        legal = np.flatnonzero(row)
        if len(legal):
            out[i] = legal[rng.integers(len(legal))]
    return out


class RecordingPool:
    """Passes submit() to a pool and keeps a copy of every batch (for the engine-only baseline)."""

    def __init__(self, pool: StockfishPool) -> None:
        self.pool, self.batches = pool, []

    def submit(self, boards, limit):
        # The env submits Positions (immutable, already encoded): the baseline replays them as they are.
        self.batches.append([b.copy(stack=False) if isinstance(b, chess.Board) else b for b in boards])
        return self.pool.submit(boards, limit)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def run_vector(num_envs: int, plies: int, pool=None, seed: int = 0, **kwargs) -> dict:
    """Random self-play on a vector env for at least ``plies`` plies; plies/s, CPU per ply and engine stats.

    ``cpu_us_per_ply`` is this process's CPU time (``getrusage``: the env, the move picking, and the
    pool's threads reading the engines' answers); ``main_thread_us_per_ply`` the caller's thread alone;
    ``engine_cpu_us_per_ply`` the Stockfish processes' (from ``/proc``).
    """
    venv = ChessVectorEnv(num_envs, engine=pool, shaping=pool is not None, **kwargs)
    rng = np.random.default_rng(seed)
    venv.reset(seed=seed)
    venv.reset_engine_stats()
    pids = pool.pids if pool is not None else []
    before, thread_before, engines_before = resource.getrusage(resource.RUSAGE_SELF), time.thread_time(), cpu_of(pids)
    start = time.perf_counter()
    while venv.engine_stats()["plies"] < plies:
        venv.step(random_actions(rng, venv.action_masks()))
    elapsed = time.perf_counter() - start
    thread, after, engines = time.thread_time() - thread_before, resource.getrusage(resource.RUSAGE_SELF), cpu_of(pids)
    stats = venv.engine_stats()
    venv.close()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "plies_per_s": stats["plies"] / elapsed,
        "plies": stats["plies"],
        "seconds": elapsed,
        "cpu_us_per_ply": 1e6 * cpu / stats["plies"],
        "main_thread_us_per_ply": 1e6 * thread / stats["plies"],
        "engine_cpu_us_per_ply": 1e6 * (engines - engines_before) / stats["plies"],
        "engine_calls_per_ply": stats["engine_calls_per_ply"],
        "cache_hit_rate": stats["cache_hit_rate"],
    }


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far (Linux ``/proc``; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_pooled(num_envs: int, depth: int, cache: bool, plies: int) -> dict:
    """:func:`run_vector` with shaping at ``depth`` on a fresh 2-process pool, its cache on or off."""
    with StockfishPool(processes=2, cache_size=200_000 if cache else 0) as pool:
        return run_vector(num_envs, plies, pool=pool, reward_depth=depth)


def best_of(rounds: int, contenders: dict[tuple, Callable[[], dict]]) -> dict[tuple, dict]:
    """Run every contender once a round, in turn, for ``rounds`` rounds; keep each one's fastest run."""
    best: dict[tuple, dict] = {}
    for _ in range(rounds):
        for key, run in contenders.items():
            row = run()
            if key not in best or row["plies_per_s"] > best[key]["plies_per_s"]:
                best[key] = row
    return best


def run_engine_only(batches: list[list[chess.Board]], depth: int) -> dict:
    """Evaluate the recorded batches on a 2-process pool, cache off: positions/s."""
    with StockfishPool(processes=2, cache_size=0) as pool:
        limit = chess.engine.Limit(depth=depth)
        pool.evaluate([chess.Board()], limit)  # warm up
        n = sum(len(b) for b in batches)
        before, engines_before = resource.getrusage(resource.RUSAGE_SELF), cpu_of(pool.pids)
        start = time.perf_counter()
        for batch in batches:
            pool.evaluate(batch, limit)
        elapsed = time.perf_counter() - start
        after, engines = resource.getrusage(resource.RUSAGE_SELF), cpu_of(pool.pids)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"plies_per_s": n / elapsed, "positions": n, "seconds": elapsed, "cpu_us_per_ply": 1e6 * cpu / n,
            "engine_cpu_us_per_ply": 1e6 * (engines - engines_before) / n}


def run_naive(depth: int, plies: int, seed: int = 0) -> dict:
    """One game, python-chess ``analyse`` before and after every ply, same encoding work."""
    rng = np.random.default_rng(seed)
    with chess.engine.SimpleEngine.popen_uci(find_stockfish()) as engine:
        engine.configure({"Threads": 1})
        limit = chess.engine.Limit(depth=depth)
        board, done = chess.Board(), 0
        start = time.perf_counter()
        while done < plies:
            if board.is_game_over(claim_draw=True) or board.ply() >= 200:
                board = chess.Board()
            legal_action_mask(board)  # built as an env would, then dropped
            engine.analyse(board, limit)
            moves = list(board.legal_moves)
            board.push(moves[rng.integers(len(moves))])
            if not board.is_game_over(claim_draw=True):
                engine.analyse(board, limit)
            observation(board)
            done += 1
        elapsed = time.perf_counter() - start
    return {"plies_per_s": plies / elapsed, "plies": plies, "seconds": elapsed}


def run_pettingzoo(plies: int, seed: int = 0) -> dict:
    """PettingZoo chess_v6, AEC loop, random masked actions."""
    from pettingzoo.classic import chess_v6

    env = chess_v6.env()
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    done = 0
    start = time.perf_counter()
    while done < plies:
        for _agent in env.agent_iter():
            obs, _, terminated, truncated, _ = env.last()
            if terminated or truncated:
                env.step(None)
                continue
            legal = np.flatnonzero(obs["action_mask"])
            env.step(int(legal[rng.integers(len(legal))]))
            done += 1
            if done >= plies:
                break
        env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return {"plies_per_s": done / elapsed, "plies": done, "seconds": elapsed}


def run_grpo_case(pool: StockfishPool, repeat: float, plies: int, seed: int = 0, group_size: int = 8) -> dict:
    """Group rollouts (DISABLED autoreset, 10 plies): engine calls per ply with a policy that plays
    the position's fixed move (its first legal action) with probability ``repeat``, else a random one."""
    venv = ChessVectorEnv(64, engine=pool, reward_depth=1, start_positions="builtin", autoreset_mode=AutoresetMode.DISABLED)
    rng = np.random.default_rng(seed)
    venv.reset(seed=seed, options={"groups": 64 // group_size, "group_size": group_size})
    venv.reset_engine_stats()
    start = time.perf_counter()
    while venv.engine_stats()["plies"] < plies:
        venv.reset(options={"groups": 64 // group_size, "group_size": group_size})
        for _ in range(10):
            masks = venv.action_masks()
            actions = random_actions(rng, masks)
            fixed = rng.random(len(masks)) < repeat
            actions[fixed] = masks[fixed].argmax(axis=1)
            venv.step(actions)
    elapsed = time.perf_counter() - start
    stats = venv.engine_stats()
    venv.close()
    return {
        "repeat": repeat,
        "plies_per_s": stats["plies"] / elapsed,
        "engine_calls_per_ply": stats["engine_calls_per_ply"],
        "cache_hit_rate": stats["cache_hit_rate"],
    }


# Before/after rows: (depth or None for no engine, num_envs).
BEFORE_AFTER_ROWS = ((1, 16), (1, 64), (None, 16))


def run_tree_row(depth: int | None, num_envs: int, plies: int) -> dict:
    """One before/after measurement, in a fresh process: a 2-process pool (cache on) or no engine."""
    if depth is None:
        return run_vector(num_envs, plies)
    with StockfishPool(processes=2) as pool:
        return run_vector(num_envs, plies, pool=pool, reward_depth=depth)


def compare_trees(ref: str, rounds: int, plies: int) -> dict:
    """Plies/s and CPU per ply of this checkout's ``chess_env`` and of ``ref``'s (``git archive``), each
    row in fresh processes, alternating the two trees round by round so that the machine's other work
    weighs on both alike; best plies/s and least CPU per ply over the rounds."""
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parent.parent
    rows = []
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "archive", ref, "chess_env"], cwd=root, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        # The harness (this module) is the same for both; only the chess_env it imports differs (``-m`` puts
        # the working directory first on the path).
        trees = {"before": old, "after": str(root)}
        for depth, n in BEFORE_AFTER_ROWS:
            probe = "import chess_env, sys; print(chess_env.__file__)"
            for name, tree in trees.items():
                where = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=dict(os.environ, PYTHONPATH=str(root)),
                                       capture_output=True, text=True, check=True).stdout.strip()
                assert where.startswith(tree), (name, where)
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(rounds):
                for name, tree in trees.items():
                    command = [sys.executable, "-m", "benchmarks.env_throughput", "--tree-row", str(depth), str(n), str(plies)]
                    env = dict(os.environ, PYTHONPATH=str(root))
                    out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True)
                    runs[name].append(json.loads(out.stdout))
            row = {"depth": depth, "num_envs": n}
            for name, measured in runs.items():
                row[name] = {
                    "plies_per_s": max(r["plies_per_s"] for r in measured),
                    "cpu_us_per_ply": min(r["cpu_us_per_ply"] for r in measured),
                    "main_thread_us_per_ply": min(r["main_thread_us_per_ply"] for r in measured),
                }
            row["speedup"] = row["after"]["plies_per_s"] / row["before"]["plies_per_s"]
            rows.append(row)
    return {"ref": ref, "rounds": rounds, "plies": plies, "rows": rows}


def print_before_after(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Before ({report['ref']}) / after, random self-play, best of {report['rounds']} alternating rounds")
    for column in ("depth", "N", "plies/s before", "after", "x", "CPU us/ply before", "after", "main thread before", "after"):
        table.add_column(column, justify="right")
    for r in report["rows"]:
        b, a = r["before"], r["after"]
        table.add_row(
            str(r["depth"]) if r["depth"] else "no engine", str(r["num_envs"]),
            f"{b['plies_per_s']:.0f}", f"{a['plies_per_s']:.0f}", f"{r['speedup']:.2f}",
            f"{b['cpu_us_per_ply']:.0f}", f"{a['cpu_us_per_ply']:.0f}",
            f"{b['main_thread_us_per_ply']:.0f}", f"{a['main_thread_us_per_ply']:.0f}",
        )  # fmt: skip
    Console(width=160).print(table)
    print(f"load average before/after: {report['load_average']['before']} / {report['load_average']['after']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (a smoke test of the script)")
    parser.add_argument("--out", type=Path, default=None, help="default: results/env_throughput.json (--before: env_before_after.json)")
    parser.add_argument("--plot", type=Path, default=RESULTS / "env_throughput.png")
    parser.add_argument("--before", metavar="REF", help="compare this checkout's chess_env with git REF's instead")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each measurement keeps its best")
    parser.add_argument("--depths", type=int, nargs="+", help="shaping depths (default 1 4 8; --quick: 1)")
    parser.add_argument("--sizes", type=int, nargs="+", help="num_envs (default 1 16 64; --quick: 1 16)")
    parser.add_argument("--no-grpo", action="store_true", help="skip the GRPO-rollout rows")
    parser.add_argument("--tree-row", nargs=3, help=argparse.SUPPRESS)  # one --before measurement (internal)
    args = parser.parse_args(argv)
    if args.tree_row:
        depth, n, plies = args.tree_row
        print(json.dumps(run_tree_row(None if depth == "None" else int(depth), int(n), int(plies))))
        return 0
    if args.before:
        load_before = os.getloadavg()
        report = compare_trees(args.before, args.rounds, 300 if args.quick else 3000)
        report["load_average"] = {"before": load_before, "after": os.getloadavg()}
        out = args.out or RESULTS / "env_before_after.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print_before_after(report)
        print(f"wrote {out}")
        return 0
    args.out = args.out or RESULTS / "env_throughput.json"

    depths, sizes = ((1,), (1, 16)) if args.quick else ((1, 4, 8), (1, 16, 64))
    depths, sizes = tuple(args.depths or depths), tuple(args.sizes or sizes)
    budget = {1: 3000, 4: 1500, 8: 600}  # plies per measurement
    scale = 0.05 if args.quick else 1.0
    plies_for: Callable[[int], int] = lambda depth: max(50, int(budget[depth] * scale))
    load_before = os.getloadavg()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "vector": [], "engine_only": []}

    # Positions the engine sees: recorded once per size (random play does not depend on the depth).
    recorded: dict[int, list[list[chess.Board]]] = {}
    with StockfishPool(processes=2, cache_size=0) as pool:
        for n in sizes:
            recorder = RecordingPool(pool)
            run_vector(n, plies_for(1), pool=recorder, reward_depth=1)
            recorded[n] = recorder.batches[1:]  # the first batch is the untimed reset

    # Each ratio's two sides are measured in alternation, round after round, and each keeps its best round:
    # the machine's other work then weighs on both alike instead of on whichever ran during a busy spell.
    rounds = 1 if args.quick else args.rounds
    results["rounds"] = rounds
    naive: dict[int, dict] = {}
    for depth in depths:
        contenders: dict[tuple, Callable[[], dict]] = {("naive",): lambda d=depth: run_naive(d, plies_for(d) // 3)}
        for n in sizes:
            batches = recorded[n][: max(1, len(recorded[n]) * plies_for(depth) // plies_for(1))]
            contenders[("engine_only", n)] = lambda b=batches, d=depth: run_engine_only(b, d)
            for cache in (True, False):
                contenders[("vector", n, cache)] = lambda n=n, d=depth, c=cache: run_pooled(n, d, c, plies_for(d))
        best = best_of(rounds, contenders)
        naive[depth] = best[("naive",)]
        for n in sizes:
            results["engine_only"].append({"depth": depth, "num_envs": n, **best[("engine_only", n)]})
            for cache in (True, False):
                results["vector"].append({"depth": depth, "num_envs": n, "cache": cache, **best[("vector", n, cache)]})
    contenders = {("pettingzoo",): lambda: run_pettingzoo(int(5000 * scale))}
    for n in sizes:
        contenders[("vector", n)] = lambda n=n: run_vector(n, int(20_000 * scale))
    best = best_of(rounds, contenders)
    for n in sizes:
        results["vector"].append({"depth": None, "num_envs": n, "cache": None, **best[("vector", n)]})
    results["pettingzoo"] = best[("pettingzoo",)]
    results["naive"] = naive
    results["grpo_case"] = []
    if not args.no_grpo:
        with StockfishPool(processes=2) as pool:
            results["grpo_case"] = [run_grpo_case(pool, repeat, int(4000 * scale)) for repeat in (0.0, 0.9)]
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    add_ratios(results)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    if not args.quick:
        plot(results, args.plot)
    print(f"wrote {args.out}")
    return 0


def add_ratios(results: dict) -> None:
    """Ratios of every vector row to (a) PettingZoo, (b) the naive env and (c) the engine limit."""
    limit = {(r["depth"], r["num_envs"]): r for r in results["engine_only"]}
    for row in results["vector"]:
        row["vs_pettingzoo"] = row["plies_per_s"] / results["pettingzoo"]["plies_per_s"]
        if row["depth"] is not None:
            alone = limit[(row["depth"], row["num_envs"])]
            row["vs_naive"] = row["plies_per_s"] / results["naive"][row["depth"]]["plies_per_s"]
            row["vs_engine_only"] = row["plies_per_s"] / alone["plies_per_s"]
            # What the ratio would be if both were bound by CPU alone (all their processes' CPU per ply): the
            # machine's other work moves it less than it moves wall-clock rates.
            total = row["cpu_us_per_ply"] + row["engine_cpu_us_per_ply"]
            row["vs_engine_only_cpu"] = (alone["cpu_us_per_ply"] + alone["engine_cpu_us_per_ply"]) / total


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ChessVectorEnv throughput (random self-play, 2 Stockfish processes)")
    columns = ("depth", "N", "cache", "plies/s", "CPU us/ply", "engine CPU us/ply", "vs (a) PZ", "vs (b) naive",
               "vs (c) engine", "(c) by CPU", "calls/ply", "hit rate")
    for column in columns:
        table.add_column(column, justify="right")
    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    for r in results["vector"]:
        table.add_row(
            fmt(r["depth"], "{}") if r["depth"] else "no engine",
            str(r["num_envs"]),
            {True: "on", False: "off", None: "-"}[r["cache"]],
            f"{r['plies_per_s']:.0f}",
            f"{r['cpu_us_per_ply']:.0f}",
            f"{r['engine_cpu_us_per_ply']:.0f}" if r["depth"] else "-",
            fmt(r.get("vs_pettingzoo")),
            fmt(r.get("vs_naive")),
            fmt(r.get("vs_engine_only")),
            fmt(r.get("vs_engine_only_cpu")),
            fmt(r["engine_calls_per_ply"]) if r["depth"] else "-",
            fmt(r["cache_hit_rate"]) if r["depth"] else "-",
        )
    console = Console(width=160)
    console.print(table)
    base = Table(title="Baselines (plies/s)")
    for column in ("baseline", "depth", "N", "plies/s", "CPU us/ply (process + engines)"):
        base.add_column(column, justify="right")
    base.add_row("(a) PettingZoo chess_v6", "-", "1", f"{results['pettingzoo']['plies_per_s']:.0f}")
    for depth, r in results["naive"].items():
        base.add_row("(b) naive analyse x2", str(depth), "1", f"{r['plies_per_s']:.0f}")
    for r in results["engine_only"]:
        base.add_row("(c) engine only, 2 procs", str(r["depth"]), str(r["num_envs"]), f"{r['plies_per_s']:.0f}",
                     f"{r['cpu_us_per_ply']:.0f} + {r['engine_cpu_us_per_ply']:.0f}")
    console.print(base)
    grpo = Table(title="GRPO rollouts: 8 groups x 8, 10 plies, depth 1, cache on")
    for column in ("policy", "plies/s", "engine calls/ply", "cache hit rate"):
        grpo.add_column(column, justify="right")
    for r in results["grpo_case"]:
        name = "random" if r["repeat"] == 0 else f"same move {r['repeat']:.0%}"
        grpo.add_row(name, f"{r['plies_per_s']:.0f}", f"{r['engine_calls_per_ply']:.2f}", f"{r['cache_hit_rate']:.2f}")
    console.print(grpo)
    console.print(f"load average before/after: {results['load_average']['before']} / {results['load_average']['after']}")


def plot(results: dict, path: Path) -> None:
    """Bar chart: plies/s per configuration, with the baselines (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, colors = [], [], []
    for r in results["vector"]:
        if r["depth"] is None:
            labels.append(f"no engine N={r['num_envs']}")
            colors.append("tab:green")
        else:
            labels.append(f"d{r['depth']} N={r['num_envs']} cache {'on' if r['cache'] else 'off'}")
            colors.append("tab:blue" if r["cache"] else "tab:cyan")
        values.append(r["plies_per_s"])
    labels.append("(a) PettingZoo")
    values.append(results["pettingzoo"]["plies_per_s"])
    colors.append("tab:gray")
    for depth, r in results["naive"].items():
        labels.append(f"(b) naive d{depth}")
        values.append(r["plies_per_s"])
        colors.append("tab:red")
    for r in results["engine_only"]:
        if r["num_envs"] == max(x["num_envs"] for x in results["engine_only"]):
            labels.append(f"(c) engine d{r['depth']}")
            values.append(r["plies_per_s"])
            colors.append("tab:orange")
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(labels) + 1))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("plies / s")
    ax.set_title("Env throughput (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
