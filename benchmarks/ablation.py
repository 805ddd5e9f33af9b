"""GRPO ablation grid: learning rate x entropy coefficient x advantage scaling x kind of group, with collapse
metrics.

Run: ``python -m benchmarks.ablation --preset laptop`` (or ``grpo-chess sweep --preset laptop``);
``--preset moves`` puts the kinds of group side by side (:data:`GROUPS`: trajectory groups, and move groups of
G = 4 or 8 candidates with or without replacement, or of every legal move).

Each cell is one short GRPO run (the env and network of ``compare_ppo.py``'s preset, the GRPO defaults
otherwise: ``advantage="step"``, ``train_plies="mover"``, clip 0.2/0.28, no KL penalty) with one
``(learning_rate, ent_coef, advantage_scale, group)``; ``budget_plies`` counts plies played in either kind of
group (a move-group position also values every legal move with one MultiPV search). A cell reports, averaged
over the last quarter of its updates: ``entropy``, ``entropy_norm`` (entropy / log #legal), ``agreement`` (share of a group that played
the group's most common move at the same ply; ``rollout/action_agreement_mean`` when GRPO logs it,
otherwise measured on the rollout buffer), ``approx_kl``, ``kl_ref`` (k3 KL to the initial policy: the
drift), ``clip_fraction`` (low + high), ``group_step_reward_std`` (within-board spread of the per-ply
reward: the learning signal); the ``entropy_slope`` (least-squares slope of ``entropy_norm`` per 10k env
plies over the whole run); and the final ACPL on held-out ``builtin:eval`` positions.

A cell is **collapsed** when its final ``entropy_norm`` is below ``--entropy-threshold`` or its final
agreement above ``--agreement-threshold``.

Cells run in parallel (one process per core, one torch thread each); a cell whose JSON exists under
``benchmarks/results/ablation_<preset>/`` and was made with the same settings is not rerun (``--force``
reruns). Outputs: the summary
``ablation_<preset>.json``, ``ablation_<preset>_collapse.png`` (entropy_norm and agreement heatmaps, one
column per scaling) and ``ablation_<preset>_acpl.png``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from grpo_agent.save_util import write_json
from benchmarks.compare_ppo import PRESETS as COMPARE_PRESETS

SCALES = ("none", "std", "rms")
#: group -> GRPO kwargs on top of the preset's (``"games"``: its trajectory groups, ``group_size`` games per start)
GROUPS: dict[str, dict[str, Any]] = {
    "games": {},
    "moves_g4": {"group_mode": "moves", "group_size": 4},
    "moves_g4_wor": {"group_mode": "moves", "group_size": 4, "sample_without_replacement": True},
    "moves_g8": {"group_mode": "moves", "group_size": 8},
    "moves_g8_wor": {"group_mode": "moves", "group_size": 8, "sample_without_replacement": True},
    "moves_all": {"group_mode": "moves", "group_size": "all"},
}
METRICS = ("entropy", "entropy_norm", "agreement", "approx_kl", "kl_ref", "clip_fraction", "group_step_reward_std")

PRESETS: dict[str, dict[str, Any]] = {
    "ci": {
        "base": "ci", "learning_rates": [3e-5, 3e-4], "ent_coefs": [0.03, 0.3], "scales": ["rms"],
        "budget_plies": 64, "shared": {"n_epochs": 1, "batch_size": 32},
        "acpl": {"positions": 3, "depth": 3}, "seed": 0,
    },
    "laptop": {
        "base": "laptop", "learning_rates": [3e-5, 1e-4, 3e-4], "ent_coefs": [0.03, 0.1, 0.3], "scales": list(SCALES),
        "budget_plies": 16384, "shared": {"n_epochs": 2, "batch_size": 64},
        "acpl": {"positions": 24, "depth": 6}, "seed": 0,
    },
    "full": {
        "base": "full", "learning_rates": [3e-5, 1e-4, 3e-4], "ent_coefs": [0.03, 0.1, 0.3], "scales": list(SCALES),
        "budget_plies": 200_000, "shared": {"n_epochs": 2, "batch_size": 512},
        "acpl": {"positions": 100, "depth": 10}, "seed": 0,
    },
    # The kinds of group at two learning rates (the laptop preset's env, network and budget).
    "moves": {
        "base": "laptop", "learning_rates": [3e-4, 1e-3], "ent_coefs": [0.03], "scales": ["std"],
        "groups": list(GROUPS),
        "budget_plies": 16384, "shared": {"n_epochs": 2, "batch_size": 64},
        "acpl": {"positions": 24, "depth": 6}, "seed": 0,
    },
}


def cell_name(lr: float, ent_coef: float, scale: str, group: str = "games") -> str:
    """File-name-safe id of a grid cell."""
    return f"lr{lr:g}_ent{ent_coef:g}_{scale}" + ("" if group == "games" else f"_{group}")


def slope_per_10k(plies: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` against ``plies``, per 10,000 plies (``nan`` with < 2 points)."""
    pts = [(x, y) for x, y in zip(plies, values) if not math.isnan(y)]
    if len(pts) < 2:
        return math.nan
    xs, ys = np.array(pts, dtype=float).T
    if np.ptp(xs) == 0:
        return math.nan
    return float(np.polyfit(xs, ys, 1)[0] * 10_000)


def tail_mean(curve: list[dict[str, float]], key: str, fraction: float = 0.25) -> float:
    """Mean of ``key`` over the last ``fraction`` of the curve rows (at least one row)."""
    values = [row[key] for row in curve if key in row and not math.isnan(row[key])]
    if not values:
        return math.nan
    n = max(1, int(round(len(values) * fraction)))
    return float(np.mean(values[-n:]))


def cell_config(base: dict[str, Any], grid: dict[str, Any], lr: float, ent_coef: float, scale: str,
                group: str = "games") -> dict[str, Any]:
    """GRPO constructor kwargs of one cell: the grid's shared settings plus its four coordinates."""
    return {**grid["shared"], "group_size": base["group_size"], "horizon": base["horizon"], "learning_rate": lr,
            "ent_coef": ent_coef, "advantage_scale": scale, **GROUPS[group]}


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Train one grid cell and measure it; write and return its JSON record. Runs in a worker process."""
    common.limit_threads(1)
    base, grid = job["base"], job["grid"]
    algo_cfg = cell_config(base, grid, job["learning_rate"], job["ent_coef"], job["scale"], job["group"])
    env = common.make_vector_env(base["env"], base["num_envs"])
    try:
        model = common.build_grpo(env, algo_cfg, base["net"], grid["seed"], base["device"])
        model.bench_setup(grid["budget_plies"])
        model.learn(total_timesteps=grid["budget_plies"])
        wall = model.wall_seconds()
        start = time.perf_counter()
        acpl = common.quick_acpl(model, common.eval_fens(grid["acpl"]["positions"]), grid["acpl"]["depth"])["acpl"]
        acpl_seconds = time.perf_counter() - start
    finally:
        env.close()
    curve = model.curve
    final = {key: tail_mean(curve, key) for key in METRICS}
    record = {
        "cell": cell_name(job["learning_rate"], job["ent_coef"], job["scale"], job["group"]),
        "learning_rate": job["learning_rate"], "ent_coef": job["ent_coef"], "advantage_scale": job["scale"],
        "group": job["group"],
        "config": algo_cfg, "net": base["net"], "env": base["env"], "num_envs": base["num_envs"],
        "budget_plies": grid["budget_plies"], "env_plies": model.env_plies, "wall_seconds": wall,
        "learner_samples_per_s": model.learner_samples / max(model.learner_seconds, 1e-9),
        "final": final,
        "entropy_norm_initial": curve[0].get("entropy_norm", math.nan) if curve else math.nan,
        "agreement_initial": curve[0].get("agreement", math.nan) if curve else math.nan,
        "entropy_slope_per_10k": slope_per_10k([r["plies"] for r in curve],
                                               [r.get("entropy_norm", math.nan) for r in curve]),
        "acpl": acpl, "acpl_positions": grid["acpl"]["positions"], "acpl_depth": grid["acpl"]["depth"],
        "acpl_seconds": acpl_seconds, "curve": curve,
    }
    write_json(Path(job["path"]), record)
    return record


def plot_heatmaps(cells: list[dict[str, Any]], grid: dict[str, Any],
                  rows: list[tuple[str, str, str, float | None, float | None]], path: Path, title: str) -> None:
    """One heatmap per (metric row, (group, scaling) column) over learning rate (y) x ent_coef (x); C marks
    collapse.

    ``rows`` holds ``(key, label, colormap, vmin, vmax)``; ``None`` limits span the values.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs, ents, groups = grid["learning_rates"], grid["ent_coefs"], grid.get("groups", ["games"])
    columns = list(itertools.product(groups, grid["scales"]))
    index = {(c["learning_rate"], c["ent_coef"], c["advantage_scale"], c.get("group", "games")): c for c in cells}
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.6 * len(columns) + 1, 3.4 * len(rows)),
                             squeeze=False, layout="constrained")
    for r, (key, label, cmap, lo, hi) in enumerate(rows):
        values = np.full((len(columns), len(lrs), len(ents)), np.nan)
        for s, column in enumerate(columns):
            for i, lr in enumerate(lrs):
                for j, ent in enumerate(ents):
                    cell = index.get((lr, ent, column[1], column[0]))
                    if cell is not None:
                        values[s, i, j] = cell["final"][key] if key in cell["final"] else cell.get(key, np.nan)
        finite = values[np.isfinite(values)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        vmin, vmax = vmin if lo is None else lo, vmax if hi is None else hi
        for s, (group, scale) in enumerate(columns):
            ax = axes[r][s]
            im = ax.imshow(values[s], cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
            for i, lr in enumerate(lrs):
                for j, ent in enumerate(ents):
                    v = values[s, i, j]
                    cell = index.get((lr, ent, scale, group))
                    mark = " C" if cell is not None and cell.get("collapsed") else ""
                    ax.text(j, i, "-" if math.isnan(v) else f"{v:.3g}{mark}", ha="center", va="center", fontsize=9,
                            color="black", bbox={"facecolor": "white", "alpha": 0.6, "lw": 0, "pad": 1})
            ax.set_xticks(range(len(ents)), [f"{e:g}" for e in ents])
            ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
            ax.set_xlabel("ent_coef")
            ax.set_ylabel("learning rate")
            ax.set_title(f"{label}\n{group + ', ' if len(groups) > 1 else ''}advantage_scale={scale}", fontsize=10)
        fig.colorbar(im, ax=list(axes[r]), shrink=0.8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(cells: list[dict[str, Any]], title: str) -> None:
    """The grid as a rich table, one row per cell."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("group", "lr", "ent_coef", "scale", "H_norm", "H slope/10k", "agree", "approx_kl", "kl_ref", "clip",
                "grp r std", "ACPL", "collapsed"):
        table.add_column(col, justify="right")
    for c in cells:
        f = c["final"]
        table.add_row(c.get("group", "games"), f"{c['learning_rate']:g}", f"{c['ent_coef']:g}", c["advantage_scale"],
                      f"{f['entropy_norm']:.3f}", f"{c['entropy_slope_per_10k']:+.3f}", f"{f['agreement']:.3f}",
                      f"{f['approx_kl']:.4f}", f"{f['kl_ref']:.3f}", f"{f['clip_fraction']:.3f}",
                      f"{f['group_step_reward_std']:.4f}", f"{c['acpl']:.0f}", "YES" if c["collapsed"] else "")
    Console(width=170).print(table)


def run(preset_name: str, out_dir: Path, workers: int | None = None, budget_plies: int | None = None,
        learning_rates: list[float] | None = None, ent_coefs: list[float] | None = None,
        scales: list[str] | None = None, groups: list[str] | None = None, entropy_threshold: float = 0.5,
        agreement_threshold: float = 0.7, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the grid; write per-cell JSON, the summary JSON and the heatmap PNGs under ``out_dir``."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; expected one of {sorted(PRESETS)}")
    grid = copy.deepcopy(PRESETS[preset_name])
    grid.setdefault("groups", ["games"])
    for key, value in (("learning_rates", learning_rates), ("ent_coefs", ent_coefs), ("scales", scales),
                       ("groups", groups)):
        if value is not None:
            if not value:
                raise ValueError(f"{key} must not be empty")
            grid[key] = list(value)
    for scale in grid["scales"]:
        if scale not in SCALES:
            raise ValueError(f"advantage scale must be one of {SCALES}, got {scale!r}")
    for group in grid["groups"]:
        if group not in GROUPS:
            raise ValueError(f"group must be one of {tuple(GROUPS)}, got {group!r}")
    if any(not lr > 0 for lr in grid["learning_rates"]):
        raise ValueError(f"learning rates must be > 0, got {grid['learning_rates']}")
    if any(not ent >= 0 for ent in grid["ent_coefs"]):
        raise ValueError(f"ent_coefs must be >= 0, got {grid['ent_coefs']}")
    if budget_plies is not None:
        if budget_plies <= 0:
            raise ValueError(f"budget_plies must be > 0, got {budget_plies}")
        grid["budget_plies"] = budget_plies
    base = copy.deepcopy(COMPARE_PRESETS[grid["base"]])
    n_workers = workers if workers is not None else (1 if base["device"] != "cpu" else (os.cpu_count() or 1))
    cell_dir = out_dir / f"ablation_{preset_name}"
    cells, jobs = [], []
    for group, scale, lr, ent in itertools.product(grid["groups"], grid["scales"], grid["learning_rates"],
                                                   grid["ent_coefs"]):
        path = cell_dir / f"{cell_name(lr, ent, scale, group)}.json"
        settings = {"config": cell_config(base, grid, lr, ent, scale, group), "net": base["net"], "env": base["env"],
                    "num_envs": base["num_envs"], "budget_plies": grid["budget_plies"]}
        finished = None if force else common.load_finished(path, settings)
        if finished is not None:
            cells.append(finished)
        else:
            jobs.append({"base": base, "grid": grid, "learning_rate": lr, "ent_coef": ent, "scale": scale,
                         "group": group, "path": str(path)})
    started = time.perf_counter()

    def done(job: dict[str, Any], record: dict[str, Any]) -> None:
        if not quiet:
            f = record["final"]
            print(f"[{time.perf_counter() - started:6.0f}s] {record['cell']}: H_norm {f['entropy_norm']:.3f}, "
                  f"agreement {f['agreement']:.3f}, ACPL {record['acpl']:.0f} ({record['wall_seconds']:.0f}s)",
                  flush=True)

    cells += common.run_jobs(run_cell, jobs, n_workers, done)
    for c in cells:
        # Thresholds are applied here, not in the cell, so they can change without rerunning the grid.
        c["collapsed"] = bool(c["final"]["entropy_norm"] < entropy_threshold
                              or c["final"]["agreement"] > agreement_threshold)
    order = {s: i for i, s in enumerate(grid["scales"])}
    group_order = {g: i for i, g in enumerate(grid["groups"])}
    cells.sort(key=lambda c: (group_order[c.get("group", "games")], order[c["advantage_scale"]], c["learning_rate"],
                              c["ent_coef"]))
    summary = {
        "preset": preset_name, "grid": grid, "env": base["env"], "net": base["net"], "num_envs": base["num_envs"],
        "entropy_threshold": entropy_threshold, "agreement_threshold": agreement_threshold,
        "machine": common.machine_info(),
        "collapsed": [c["cell"] for c in cells if c["collapsed"]],
        "cells": [{k: v for k, v in c.items() if k != "curve"} for c in cells],
    }
    write_json(out_dir / f"ablation_{preset_name}.json", summary)
    plot_heatmaps(cells, grid, [("entropy_norm", "final entropy_norm", "viridis", 0.0, 1.0),
                                ("agreement", "final group action agreement", "magma_r", 0.0, 1.0)],
                  out_dir / f"ablation_{preset_name}_collapse.png",
                  f"GRPO collapse over the grid ({preset_name} preset; C = collapsed)")
    plot_heatmaps(cells, grid, [("acpl", "final ACPL (lower is better)", "viridis_r", None, None)],
                  out_dir / f"ablation_{preset_name}_acpl.png", f"GRPO ACPL over the grid ({preset_name} preset)")
    if not quiet:
        print_table(cells, f"GRPO ablation ({preset_name} preset, {grid['budget_plies']} plies per cell)")
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the grid."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="laptop")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results folder")
    parser.add_argument("--workers", type=int, default=None, help="parallel cells (default: the core count)")
    parser.add_argument("--budget-plies", type=int, default=None, help="override the preset's plies per cell")
    parser.add_argument("--lr", type=float, nargs="+", default=None, dest="learning_rates")
    parser.add_argument("--ent-coef", type=float, nargs="+", default=None, dest="ent_coefs")
    parser.add_argument("--scales", nargs="+", choices=SCALES, default=None)
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), default=None,
                        help="kinds of group (default: the preset's; laptop: games)")
    parser.add_argument("--entropy-threshold", type=float, default=0.5, help="collapsed below this entropy_norm")
    parser.add_argument("--agreement-threshold", type=float, default=0.7, help="collapsed above this agreement")
    parser.add_argument("--force", action="store_true", help="rerun cells whose JSON exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(args.preset, args.out, args.workers, args.budget_plies, args.learning_rates, args.ent_coefs, args.scales,
        args.groups, args.entropy_threshold, args.agreement_threshold, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
