"""``grpo-chess plot``: a run's learning curves and its collapse dashboard with the guards' actions."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from grpo_agent.cli.config import ConfigError
from grpo_agent.guards import GuardEvent


def read_progress(run_dir: str | os.PathLike) -> pd.DataFrame | None:
    """All of a run's log rows (``progress.N.csv`` from earlier sessions, then ``progress.csv``) or None."""
    run_dir = Path(run_dir)
    parts = sorted(run_dir.glob("progress.*.csv"), key=lambda p: int(p.suffixes[0][1:]))
    parts += [run_dir / "progress.csv"] if (run_dir / "progress.csv").is_file() else []
    frames = [pd.read_csv(p) for p in parts if p.stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else None


PLOT_KEYS = (
    "rollout/step_reward_mean",
    "train/entropy",
    "train/entropy_norm",
    "train/kl_ref",
    "train/approx_kl",
    "train/clip_fraction_low",
    "train/clip_fraction_high",
    "train/advantage_std",
    "train/grad_norm",
    "train/loss",
    "rollout/finished_frac",
    "rollout/plies_per_s",
)


#: collapse dashboard panels: title -> the series drawn in it (those the run logged)
DASHBOARD_PANELS: dict[str, tuple[str, ...]] = {
    "entropy (nats)": ("rollout/entropy", "train/entropy"),
    "entropy / log #legal": ("rollout/entropy_norm", "train/entropy_norm", "train/entropy_norm_target"),
    "action agreement in the group": ("rollout/action_agreement_mean", "rollout/action_agreement_p90"),
    "within-board reward std": ("rollout/group_reward_std", "rollout/group_step_reward_std"),
    "zero-spread groups": ("rollout/frac_reward_zero_std", "rollout/dropped_groups"),
    "policy diversity (KL to group mean)": ("rollout/policy_diversity_kl",),
    "KL": ("train/kl_ref", "train/approx_kl", "train/kl_target"),
    "clip fractions": ("train/clip_fraction_low", "train/clip_fraction_high"),
    "coefficients": ("train/ent_coef", "train/kl_coef", "rollout/temperature", "train/learning_rate"),
}
#: colour of the dashboard marker of each guard event (logged as its int in ``guard/<name>_action``)
GUARD_COLOURS: dict[GuardEvent, str] = {
    GuardEvent.WARN: "tab:orange",
    GuardEvent.BOOST: "tab:green",
    GuardEvent.STOP: "tab:red",
    GuardEvent.ROLLBACK: "tab:purple",
    GuardEvent.RECOVERED: "tab:cyan",
}


def guard_events(frame: pd.DataFrame) -> list[tuple[float, str, str]]:
    """``(timesteps, label, colour)`` of every guard action in a run's log rows: the collapse guards'
    ``guard/<name>_action`` events and the updates where the non-finite guard skipped minibatches."""
    events: list[tuple[float, str, str]] = []
    x = frame["time/total_timesteps"]
    for column in frame.columns:
        match = re.fullmatch(r"guard/(.+)_action", column)
        if match is None:
            continue
        for step, value in zip(x, frame[column]):
            if value == value and int(value) in GUARD_COLOURS:  # value == value: not NaN
                event = GuardEvent(int(value))
                events.append((float(step), f"{match.group(1)} {event.name.lower()}", GUARD_COLOURS[event]))
    if "guard/nonfinite_skipped_update" in frame:
        for step, value in zip(x, frame["guard/nonfinite_skipped_update"]):
            if value == value and value > 0:
                events.append((float(step), "non-finite skip", "black"))
    return events


def plot_dashboard(frame: pd.DataFrame, out: str | os.PathLike, title: str = "") -> bool:
    """Write the collapse dashboard (entropy, agreement, within-board spread, KL, clip fractions, coefficients,
    guard actions as vertical markers on every panel) of a run's log rows to ``out``.

    :return: False (and no file) when the run logged none of the dashboard's series.
    """
    plt = _pyplot()
    panels = {
        name: [k for k in keys if k in frame and frame[k].notna().any()] for name, keys in DASHBOARD_PANELS.items()
    }
    panels = {name: keys for name, keys in panels.items() if keys}
    if not panels:
        return False
    events = guard_events(frame)
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.1 * rows), squeeze=False)
    x = frame["time/total_timesteps"]
    for ax, (name, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            col = frame[key]
            ax.plot(x[col.notna()], col.dropna(), lw=1.2, label=key)
        if name == "coefficients":
            ax.set_yscale("log")
        seen: set[str] = set()
        for step, label, colour in events:
            ax.axvline(step, color=colour, lw=1.0, ls="--", alpha=0.8, label=None if label in seen else label)
            seen.add(label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{title}: collapse dashboard" if title else "collapse dashboard")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_curves(frame: pd.DataFrame, out: str | os.PathLike, title: str = "") -> None:
    """Write the learning curves (:data:`PLOT_KEYS` that the run logged) of a run's log rows to ``out``."""
    plt = _pyplot()
    keys = [k for k in PLOT_KEYS if k in frame and frame[k].notna().any()]
    cols = 3
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    x = frame["time/total_timesteps"]
    for ax, key in zip(axes.flat, keys):
        ax.plot(x, frame[key], lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
             dashboard: str | os.PathLike | None = None) -> None:
    """Learning curves into ``out`` (default ``RUN_DIR/learning_curves.png``) and the collapse dashboard
    into ``dashboard`` (default ``RUN_DIR/collapse_dashboard.png``), from the run's csv logs.

    Raises:
        ConfigError: the run has no logged rollouts.
    """
    run_dir = Path(run_dir)
    frame = read_progress(run_dir)
    if frame is None or "time/total_timesteps" not in frame:
        raise ConfigError(f"{str(run_dir)!r} has no progress.csv with logged rollouts")
    out = Path(out) if out else run_dir / "learning_curves.png"
    plot_curves(frame, out, run_dir.name)
    print(f"wrote {out}")
    dashboard = Path(dashboard) if dashboard else run_dir / "collapse_dashboard.png"
    if plot_dashboard(frame, dashboard, run_dir.name):
        print(f"wrote {dashboard}")


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: plots are files, and a run may have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def add_plot_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``grpo-chess plot`` arguments to ``parser``."""
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--out", default=None, help="output PNG (default RUN_DIR/learning_curves.png)")
    parser.add_argument("--dashboard", default=None,
                        help="collapse dashboard PNG (default RUN_DIR/collapse_dashboard.png)")
    return parser


def run_plot(args: argparse.Namespace) -> int:
    """``grpo-chess plot RUN_DIR``: see :func:`plot_run`."""
    plot_run(args.run_dir, args.out, args.dashboard)
    return 0
