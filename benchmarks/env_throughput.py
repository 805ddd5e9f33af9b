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
The load average (``os.getloadavg``) is recorded: the machine's other work slows every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
        self.batches.append([board.copy(stack=False) for board in boards])
        return self.pool.submit(boards, limit)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def run_vector(num_envs: int, plies: int, pool=None, seed: int = 0, **kwargs) -> dict:
    """Random self-play on a vector env for at least ``plies`` plies; plies/s and engine stats."""
    venv = ChessVectorEnv(num_envs, engine=pool, shaping=pool is not None, **kwargs)
    rng = np.random.default_rng(seed)
    venv.reset(seed=seed)
    venv.reset_engine_stats()
    start = time.perf_counter()
    while venv.engine_stats()["plies"] < plies:
        venv.step(random_actions(rng, venv.action_masks()))
    elapsed = time.perf_counter() - start
    stats = venv.engine_stats()
    venv.close()
    return {
        "plies_per_s": stats["plies"] / elapsed,
        "plies": stats["plies"],
        "seconds": elapsed,
        "engine_calls_per_ply": stats["engine_calls_per_ply"],
        "cache_hit_rate": stats["cache_hit_rate"],
    }


def run_engine_only(batches: list[list[chess.Board]], depth: int) -> dict:
    """Evaluate the recorded batches on a 2-process pool, cache off: positions/s."""
    with StockfishPool(processes=2, cache_size=0) as pool:
        limit = chess.engine.Limit(depth=depth)
        pool.evaluate([chess.Board()], limit)  # warm up
        n = sum(len(b) for b in batches)
        start = time.perf_counter()
        for batch in batches:
            pool.evaluate(batch, limit)
        elapsed = time.perf_counter() - start
    return {"plies_per_s": n / elapsed, "positions": n, "seconds": elapsed}


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
            mask = legal_action_mask(board)
            engine.analyse(board, limit)
            moves = list(board.legal_moves)
            board.push(moves[rng.integers(len(moves))])
            if not board.is_game_over(claim_draw=True):
                engine.analyse(board, limit)
            observation(board)
            del mask
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (a smoke test of the script)")
    parser.add_argument("--out", type=Path, default=RESULTS / "env_throughput.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "env_throughput.png")
    args = parser.parse_args(argv)

    depths, sizes = ((1,), (1, 16)) if args.quick else ((1, 4, 8), (1, 16, 64))
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

    for depth in depths:
        for n in sizes:
            row = run_engine_only(recorded[n][: max(1, len(recorded[n]) * plies_for(depth) // plies_for(1))], depth)
            results["engine_only"].append({"depth": depth, "num_envs": n, **row})
            for cache in (True, False):
                with StockfishPool(processes=2, cache_size=200_000 if cache else 0) as pool:
                    row = run_vector(n, plies_for(depth), pool=pool, reward_depth=depth)
                results["vector"].append({"depth": depth, "num_envs": n, "cache": cache, **row})
    for n in sizes:
        results["vector"].append({"depth": None, "num_envs": n, "cache": None, **run_vector(n, int(20_000 * scale))})
    results["pettingzoo"] = run_pettingzoo(int(5000 * scale))
    results["naive"] = {depth: run_naive(depth, plies_for(depth) // 3) for depth in depths}
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
    limit = {(r["depth"], r["num_envs"]): r["plies_per_s"] for r in results["engine_only"]}
    for row in results["vector"]:
        row["vs_pettingzoo"] = row["plies_per_s"] / results["pettingzoo"]["plies_per_s"]
        if row["depth"] is not None:
            row["vs_naive"] = row["plies_per_s"] / results["naive"][row["depth"]]["plies_per_s"]
            row["vs_engine_only"] = row["plies_per_s"] / limit[(row["depth"], row["num_envs"])]


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ChessVectorEnv throughput (random self-play, 2 Stockfish processes)")
    for column in ("depth", "N", "cache", "plies/s", "vs (a) PZ", "vs (b) naive", "vs (c) engine", "calls/ply", "hit rate"):
        table.add_column(column, justify="right")
    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    for r in results["vector"]:
        table.add_row(
            fmt(r["depth"], "{}") if r["depth"] else "no engine",
            str(r["num_envs"]),
            {True: "on", False: "off", None: "-"}[r["cache"]],
            f"{r['plies_per_s']:.0f}",
            fmt(r.get("vs_pettingzoo")),
            fmt(r.get("vs_naive")),
            fmt(r.get("vs_engine_only")),
            fmt(r["engine_calls_per_ply"]) if r["depth"] else "-",
            fmt(r["cache_hit_rate"]) if r["depth"] else "-",
        )
    console = Console()
    console.print(table)
    base = Table(title="Baselines (plies/s)")
    for column in ("baseline", "depth", "N", "plies/s"):
        base.add_column(column, justify="right")
    base.add_row("(a) PettingZoo chess_v6", "-", "1", f"{results['pettingzoo']['plies_per_s']:.0f}")
    for depth, r in results["naive"].items():
        base.add_row("(b) naive analyse x2", str(depth), "1", f"{r['plies_per_s']:.0f}")
    for r in results["engine_only"]:
        base.add_row("(c) engine only, 2 procs", str(r["depth"]), str(r["num_envs"]), f"{r['plies_per_s']:.0f}")
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
