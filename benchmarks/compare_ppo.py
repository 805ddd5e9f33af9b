"""GRPO vs sb3-contrib MaskablePPO on one environment, the same network and the same ply budget.

Run: ``python -m benchmarks.compare_ppo --preset laptop`` (or ``grpo-chess bench compare --preset laptop``).

What is held equal (per preset):

* **Env**: one ``ChessVectorEnv`` config for both: self-play from the ``builtin`` start positions,
  Stockfish depth-1 win-probability shaping, ``max_plies = horizon`` (both see the same positions:
  the first ``horizon`` plies after a start position), one Stockfish process per job.
* **Network**: ``ChessResNet(n_blocks, channels)`` trunk and the AlphaZero conv policy head; MaskablePPO
  adds its critic (one hidden layer of ``value_hidden`` on the shared trunk).
* **Objective**: per-ply shaping reward, no bootstrapping: GRPO's ``advantage="step"`` (centered within
  the group at the same ply) vs MaskablePPO with ``gamma=0`` (``r - V(s)``). In self-play consecutive
  plies belong to opposite sides, so a discounted sum of mover-view rewards would mix the two players'
  objectives; ``gamma=0`` keeps both algorithms on the same per-ply objective and the comparison is
  group baseline vs learned critic. GRPO trains every ply (``train_plies="both"``) like PPO.
* **Update**: rollout size (``num_envs x horizon`` plies), ``n_epochs``, ``batch_size``, learning
  rate, ``ent_coef``, ``clip_range`` (no clip-higher), ``max_grad_norm``.
* **Budget**: env plies (``total_timesteps``); wall-clock is recorded and the curves are also drawn
  against seconds, so the equal-time comparison can be read off them.

Measured per run (``benchmarks/results/compare_<preset>/<algo>_seed<k>.json``): the curve (one row per
update: plies, seconds, mean step reward, entropy, KL, clip fraction, ACPL at a few points), learner
samples/s (plies x epochs over the time in ``train()``), env plies/s overall, wall-clock, and the final
evaluation (:mod:`grpo_agent.evaluation`: ACPL on ``builtin:eval`` positions, score vs ``random`` and
``sf0`` with Wilson intervals). The summary (``compare_<preset>.json``) has mean +- 95% t-interval over
seeds and the pooled match scores over all seeds' games; ``compare_<preset>_curves.png`` the curves.
Finished runs (JSON present, made with the same settings) are not rerun (``--force`` reruns them).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from grpo_agent.save_util import write_json

ALGOS = ("grpo", "maskable_ppo")

PRESETS: dict[str, dict[str, Any]] = {
    # A test of the code path (tests/test_benchmarks.py): seconds, numbers meaningless.
    "ci": {
        "env": {"start_positions": "builtin", "opponent": "self", "reward_depth": 1, "max_plies": 4},
        "net": {"n_blocks": 1, "channels": 8},
        "num_envs": 8, "group_size": 4, "horizon": 4,
        "shared": {"learning_rate": 3e-4, "ent_coef": 0.03, "n_epochs": 1, "batch_size": 32, "clip_range": 0.2,
                   "max_grad_norm": 1.0},
        "budget_plies": 64, "seeds": [0, 1], "workers": 2, "device": "cpu",
        "curve_points": [0.5, 1.0], "curve_acpl": {"positions": 2, "depth": 2},
        "eval": {"opponents": ("random", "sf0"), "games": 2, "engine_depth": 1, "max_plies": 16,
                 "adjudicate_depth": 2, "acpl_positions": 3, "acpl_depth": 3},
    },
    # The README numbers: about 6-9 minutes on 2 CPU cores (with ablation.py --preset laptop about 20-25).
    "laptop": {
        "env": {"start_positions": "builtin", "opponent": "self", "reward_depth": 1, "max_plies": 16},
        "net": {"n_blocks": 2, "channels": 32},
        "num_envs": 32, "group_size": 8, "horizon": 16,
        "shared": {"learning_rate": 3e-4, "ent_coef": 0.03, "n_epochs": 2, "batch_size": 128, "clip_range": 0.2,
                   "max_grad_norm": 1.0},
        "budget_plies": 49152, "seeds": [0, 1, 2], "workers": 2, "device": "cpu",
        "curve_points": [0.0, 0.25, 0.5, 0.75, 1.0], "curve_acpl": {"positions": 16, "depth": 6},
        "eval": {"opponents": ("random", "sf0"), "games": 20, "engine_depth": 1, "max_plies": 80,
                 "adjudicate_depth": 8, "acpl_positions": 50, "acpl_depth": 8},
    },
    # A GPU box (learner on the GPU via device="auto", 8+ cores for the env): hours.
    "full": {
        "env": {"start_positions": "builtin", "opponent": "self", "reward_depth": 1, "max_plies": 32},
        "net": {"n_blocks": 6, "channels": 96},
        "num_envs": 128, "group_size": 8, "horizon": 32,
        "shared": {"learning_rate": 1e-4, "ent_coef": 0.03, "n_epochs": 2, "batch_size": 512, "clip_range": 0.2,
                   "max_grad_norm": 1.0},
        "budget_plies": 1_000_000, "seeds": [0, 1, 2, 3, 4], "workers": 1, "device": "auto",
        "curve_points": [0.0, 0.1, 0.25, 0.5, 0.75, 1.0], "curve_acpl": {"positions": 50, "depth": 10},
        "eval": {"opponents": ("random", "sf0", "sf1", "sf3"), "games": 100, "engine_depth": 8, "max_plies": 200,
                 "adjudicate_depth": 12, "acpl_positions": None, "acpl_depth": 12},
    },
}


def algo_config(preset: dict[str, Any], algo: str) -> dict[str, Any]:
    """The constructor kwargs of ``algo`` (besides policy/env/seed/device) for ``preset``."""
    shared = dict(preset["shared"])
    if algo == "grpo":
        return {**shared, "group_size": preset["group_size"], "horizon": preset["horizon"],
                "advantage": "step", "advantage_scale": "rms", "train_plies": "both",
                "clip_range_high": shared["clip_range"], "kl_coef": 0.0}
    if algo == "maskable_ppo":
        return {**shared, "n_steps": preset["horizon"], "gamma": 0.0, "gae_lambda": 1.0, "vf_coef": 0.5,
                "value_hidden": 64}
    raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one (algo, seed); write and return its JSON record. Runs in a worker process."""
    common.limit_threads(1)
    preset, algo, seed = job["preset"], job["algo"], job["seed"]
    env = common.make_vector_env(preset["env"], preset["num_envs"])
    cfg = algo_config(preset, algo)
    build = common.build_grpo if algo == "grpo" else common.build_maskable_ppo
    fens = common.eval_fens(preset["curve_acpl"]["positions"])
    depth = preset["curve_acpl"]["depth"]
    try:
        model = build(env, cfg, preset["net"], seed, preset["device"])
        model.bench_setup(preset["budget_plies"], lambda m: common.quick_acpl(m, fens, depth),
                          [p for p in preset["curve_points"] if p > 0])
        initial = model.evaluate_for_curve() if 0.0 in preset["curve_points"] else {}
        model.learn(total_timesteps=preset["budget_plies"])
        wall = model.wall_seconds()
        final = common.final_evaluation(model, preset["eval"], seed)
    finally:
        env.close()
    record = {
        "algo": algo, "seed": seed, "preset": job["preset_name"], "config": cfg, "net": preset["net"],
        "env": preset["env"], "num_envs": preset["num_envs"], "budget_plies": preset["budget_plies"],
        "env_plies": model.env_plies, "wall_seconds": wall, "learner_seconds": model.learner_seconds,
        "learner_samples": model.learner_samples,
        "learner_samples_per_s": model.learner_samples / max(model.learner_seconds, 1e-9),
        "plies_per_s": model.env_plies / max(wall, 1e-9),
        "n_parameters": sum(p.numel() for p in model.policy.parameters()),
        "initial": initial, "final": final, "curve": model.curve, "machine": common.machine_info(),
    }
    write_json(Path(job["path"]), record)
    return record


SUMMARY_KEYS = ("acpl", "accuracy", "score_vs_random", "score_vs_sf0", "learner_samples_per_s", "plies_per_s",
                "wall_seconds", "learner_seconds", "env_plies", "final_entropy", "final_step_reward")


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per algo: mean +- 95% t-interval over seeds; pooled W/D/L with a Wilson interval; the samples/s ratio."""
    from grpo_agent.evaluation import score_stats

    out: dict[str, Any] = {"algos": {}}
    for algo in ALGOS:
        runs = [r for r in records if r["algo"] == algo]
        if not runs:
            continue
        values: dict[str, list[float]] = {k: [] for k in SUMMARY_KEYS}
        pooled: dict[str, list[int]] = {}
        for r in runs:
            flat = {**r, **r["final"], "final_entropy": r["curve"][-1].get("entropy", math.nan) if r["curve"] else math.nan,
                    "final_step_reward": r["curve"][-1].get("step_reward_mean", math.nan) if r["curve"] else math.nan}
            for k in SUMMARY_KEYS:
                if k in flat:
                    values[k].append(flat[k])
            for key, wdl in r["final"].items():
                if key.startswith("wdl_vs_"):
                    total = pooled.setdefault(key[len("wdl_vs_"):], [0, 0, 0])
                    for i in range(3):
                        total[i] += wdl[i]
        entry = {k: common.mean_ci(v) for k, v in values.items() if v}
        entry["seeds"] = [r["seed"] for r in runs]
        for opponent, (w, d, l) in pooled.items():
            s = score_stats(w, d, l)
            entry[f"pooled_vs_{opponent}"] = {"wdl": [w, d, l], "score": s.score, "low": s.score_low,
                                             "high": s.score_high}
        out["algos"][algo] = entry
    algos = out["algos"]
    if "grpo" in algos and "maskable_ppo" in algos:
        g, p = algos["grpo"], algos["maskable_ppo"]
        out["learner_samples_per_s_ratio_grpo_over_ppo"] = (g["learner_samples_per_s"]["mean"]
                                                           / p["learner_samples_per_s"]["mean"])
        out["wall_seconds_ratio_grpo_over_ppo"] = g["wall_seconds"]["mean"] / p["wall_seconds"]["mean"]
        # Per seed the two runs shared the machine at the same time: their ratio cancels the load of the moment.
        by_seed = {(r["algo"], r["seed"]): r["learner_samples_per_s"] for r in records}
        paired = [by_seed[("grpo", s)] / by_seed[("maskable_ppo", s)] for s in g["seeds"]
                  if ("maskable_ppo", s) in by_seed]
        out["learner_samples_per_s_ratio_paired"] = common.mean_ci(paired)
    return out


def print_table(summary: dict[str, Any], title: str) -> None:
    """The summary as a rich table (mean +- CI over seeds; pooled scores with Wilson CI)."""
    from rich.console import Console
    from rich.table import Table

    def fmt(entry: dict[str, float] | None, digits: int = 3) -> str:
        if not entry or math.isnan(entry["mean"]):
            return "-"
        ci = "" if math.isnan(entry["ci"]) else f" ± {entry['ci']:.{digits}g}"
        return f"{entry['mean']:.{digits}g}{ci}"

    table = Table(title=title)
    table.add_column("metric")
    algos = list(summary["algos"])
    for algo in algos:
        table.add_column(algo, justify="right")
    for key in SUMMARY_KEYS:
        table.add_row(key, *(fmt(summary["algos"][a].get(key)) for a in algos))
    for opponent in ("random", "sf0"):
        cells = []
        for a in algos:
            p = summary["algos"][a].get(f"pooled_vs_{opponent}")
            cells.append("-" if p is None else f"{p['score']:.2f} [{p['low']:.2f}, {p['high']:.2f}] "
                                               f"({p['wdl'][0]}/{p['wdl'][1]}/{p['wdl'][2]})")
        table.add_row(f"pooled score vs {opponent}", *cells)
    console = Console(width=120)
    console.print(table)
    if "learner_samples_per_s_ratio_grpo_over_ppo" in summary:
        paired = summary["learner_samples_per_s_ratio_paired"]
        console.print(f"learner samples/s ratio GRPO/MaskablePPO: "
                      f"{summary['learner_samples_per_s_ratio_grpo_over_ppo']:.2f} (paired by seed: "
                      f"{paired['mean']:.2f} ± {paired['ci']:.2f}); wall-clock ratio: "
                      f"{summary['wall_seconds_ratio_grpo_over_ppo']:.2f}")


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Step reward, entropy and ACPL vs env plies (top) and vs training seconds (bottom); thin = one seed,
    thick = mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("step_reward_mean", "mean step reward (mover view)"), ("entropy", "policy entropy (nats)"),
               ("acpl", "ACPL (held-out, quick)"))
    colors = {"grpo": "tab:blue", "maskable_ppo": "tab:orange"}
    fig, axes = plt.subplots(2, len(metrics), figsize=(5 * len(metrics), 7.5), squeeze=False)
    for r in records:
        rows = list(r["curve"])
        if r.get("initial"):
            rows = [{"plies": 0, "seconds": 0.0, **r["initial"]}] + rows
        for row_i, xkey in enumerate(("plies", "seconds")):
            for col, (key, label) in enumerate(metrics):
                pts = [(row[xkey], row[key]) for row in rows if key in row and not math.isnan(row[key])]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax = axes[row_i][col]
                ax.plot(xs, ys, color=colors[r["algo"]], alpha=0.35 if key != "acpl" else 0.8, lw=1, marker="o" if key == "acpl" else None,
                        ms=3, label=r["algo"] if r["seed"] == records[0]["seed"] else None)
                ax.set_xlabel("env plies" if xkey == "plies" else "training wall-clock (s)")
                ax.set_ylabel(label)
    # Thick line: the mean over seeds, row by row (every seed of an algorithm has the same update schedule).
    for algo in ALGOS:
        runs = [r["curve"] for r in records if r["algo"] == algo and r["curve"]]
        if len(runs) < 2:
            continue
        n = min(len(c) for c in runs)
        for row_i, xkey in enumerate(("plies", "seconds")):
            for col, (key, _) in enumerate(metrics):
                idx = [i for i in range(n) if all(key in c[i] and not math.isnan(c[i][key]) for c in runs)]
                if key == "acpl" or not idx:
                    continue  # few, noisy points: the per-seed markers say more
                xs = [sum(c[i][xkey] for c in runs) / len(runs) for i in idx]
                ys = [sum(c[i][key] for c in runs) / len(runs) for i in idx]
                axes[row_i][col].plot(xs, ys, color=colors[algo], lw=2.5)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(preset_name: str, out_dir: Path, seeds: list[int] | None = None, workers: int | None = None,
        budget_plies: int | None = None, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the comparison; write per-run JSON, the summary JSON and the curves PNG under ``out_dir``."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; expected one of {sorted(PRESETS)}")
    preset = copy.deepcopy(PRESETS[preset_name])
    if seeds is not None:
        preset["seeds"] = list(seeds)
    if budget_plies is not None:
        if budget_plies <= 0:
            raise ValueError(f"budget_plies must be > 0, got {budget_plies}")
        preset["budget_plies"] = budget_plies
    n_workers = workers if workers is not None else preset["workers"]
    run_dir = out_dir / f"compare_{preset_name}"
    jobs, records = [], []
    # Interleave the algorithms so that, two at a time, GRPO and MaskablePPO share the machine's load.
    for seed in preset["seeds"]:
        for algo in ALGOS:
            path = run_dir / f"{algo}_seed{seed}.json"
            settings = {"config": algo_config(preset, algo), "net": preset["net"], "env": preset["env"],
                        "num_envs": preset["num_envs"], "budget_plies": preset["budget_plies"]}
            finished = None if force else common.load_finished(path, settings)
            if finished is not None:
                records.append(finished)
            else:
                jobs.append({"preset": preset, "preset_name": preset_name, "algo": algo, "seed": seed,
                             "path": str(path)})
    started = time.perf_counter()

    def done(job: dict[str, Any], record: dict[str, Any]) -> None:
        if not quiet:
            f = record["final"]
            print(f"[{time.perf_counter() - started:6.0f}s] {job['algo']} seed {job['seed']}: "
                  f"{record['wall_seconds']:.0f}s train, ACPL {f.get('acpl', math.nan):.0f}, "
                  f"learner {record['learner_samples_per_s']:.0f} samples/s", flush=True)

    records += common.run_jobs(run_one, jobs, n_workers, done)
    records.sort(key=lambda r: (r["seed"], ALGOS.index(r["algo"])))
    summary = {"preset": preset_name, "settings": preset, "machine": common.machine_info(), **summarize(records)}
    write_json(out_dir / f"compare_{preset_name}.json", summary)
    plot_curves(records, out_dir / f"compare_{preset_name}_curves.png")
    if not quiet:
        print_table(summary, f"GRPO vs MaskablePPO ({preset_name} preset, {len(preset['seeds'])} seeds)")
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="laptop")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: the preset's)")
    parser.add_argument("--budget-plies", type=int, default=None, help="override the preset's ply budget")
    parser.add_argument("--force", action="store_true", help="rerun runs whose JSON exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(args.preset, args.out, args.seeds, args.workers, args.budget_plies, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
