"""Rollout throughput on Ray workers vs the local path, the object-store transfer, and a scaling model.

Run: ``python -m benchmarks.ray_rollouts [--quick] [--rollouts 4] [--out benchmarks/results/ray_rollouts.json]``.

The default recipe's rollouts (``configs/default.yaml``: move groups, 64 positions x 8 candidates valued by a
depth-4 MultiPV search, 8 steps = 512 positions per rollout, a 4 x 64 ResNet) played three ways on the same
CPUs: the local path (one process, a 2-engine pool), one Ray worker (2 CPUs, 2 engines) and two Ray workers
(1 CPU and 1 engine each). Each run plays one warm-up rollout (worker start-up, engine caches), then
``--rollouts`` timed ones with their updates; a row reports rollout positions/s (mean over the timed rollouts,
wall clock of ``collect_rollouts``: for Ray, weights out, play, shares back and the merge), the learner's
``train()`` seconds per rollout, and per rollout the bytes of weights put in the object store and of played
shares that came back. ``--quick``: depth 1, 16 positions, 4 steps (a smoke run).

The scaling model (printed, and in the JSON) extrapolates to 8-64 worker machines from the measured per-worker
rate and transfer sizes; the README's "Past one machine: Ray" section explains it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

RECIPE = {
    "env": dict(reward_depth=4, reward_transform="winprob", max_plies=16, start_positions="builtin"),
    "num_envs": 64,
    "algo": dict(group_mode="moves", group_size=8, horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-4,
                 advantage_scale="std", ent_coef=0.01, kl_coef=0.3, seed=0,
                 policy_kwargs=dict(features_extractor_kwargs=dict(n_blocks=4, channels=64))),
}
QUICK = {"env": {"reward_depth": 1}, "num_envs": 16, "algo": {"horizon": 4}}
#: (name, backend, workers, rollout_options): the same 2 CPUs and 2 engine processes each way
SETUPS = [
    ("local", "local", 1, {}),
    ("ray_1_worker", "ray", 1, {"cpus_per_worker": 2, "engines_per_worker": 2}),
    ("ray_2_workers", "ray", 2, {"cpus_per_worker": 1, "engines_per_worker": 1}),
]
#: scaling-model assumptions: CPUs (= workers) per machine, the head's network bandwidth
CPUS_PER_MACHINE = 16
BANDWIDTH_BYTES_S = 1.25e9  # 10 Gbit/s


def run_setup(name: str, backend: str, workers: int, options: dict[str, Any], recipe: dict[str, Any],
              rollouts: int) -> dict[str, Any]:
    """Play 1 + ``rollouts`` rollouts (with their updates) and time the timed ones."""
    from stable_baselines3.common.callbacks import BaseCallback

    from chess_env import ChessVectorEnv
    from grpo_agent import GRPO

    env = ChessVectorEnv(recipe["num_envs"], engine_processes=2 if backend == "local" else 1, **recipe["env"])
    model = GRPO("ChessResNetPolicy", env, rollout_backend=backend, num_rollout_workers=workers,
                 rollout_options=options, **recipe["algo"])
    timings: dict[str, list[float]] = {"rollout_s": [], "train_s": [], "weights_bytes": [], "shares_bytes": []}
    train = model.train

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        timings["train_s"].append(time.perf_counter() - start)

    model.train = timed_train  # type: ignore[method-assign]

    class RolloutTimer(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            self.start = time.perf_counter()

        def _on_rollout_end(self) -> None:
            timings["rollout_s"].append(time.perf_counter() - self.start)
            remote = model._ray_rollouts
            timings["weights_bytes"].append(remote.weights_bytes if remote else 0)
            timings["shares_bytes"].append(remote.shares_bytes if remote else 0)

    positions = recipe["num_envs"] * recipe["algo"]["horizon"]
    model.learn((rollouts + 1) * positions, callback=RolloutTimer())
    model.close_rollout_workers()
    env.close()
    timed = {key: values[1:] for key, values in timings.items()}  # the first is the warm-up
    mean = {key: sum(values) / len(values) for key, values in timed.items()}
    return {
        "name": name, "backend": backend, "workers": workers, "options": options, "positions_per_rollout": positions,
        "positions_per_s": positions / mean["rollout_s"], "rollout_s": mean["rollout_s"],
        "rollout_s_each": timed["rollout_s"], "train_s": mean["train_s"],
        "weights_bytes": mean["weights_bytes"], "shares_bytes": mean["shares_bytes"],
    }


def scaling_model(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Synchronous rollout-then-update at 8-64 machines: each worker keeps the measured share size and per-CPU
    rate, so a rollout takes one share's play time plus the transfer, and the update grows with the rollout."""
    two = next(row for row in rows if row["name"] == "ray_2_workers")
    per_worker = two["positions_per_s"] / two["workers"]  # positions/s of one 1-CPU worker, transfer included
    share = two["positions_per_rollout"] / two["workers"]
    learner_s_per_position = two["train_s"] / two["positions_per_rollout"]
    shares_bytes_per_position = two["shares_bytes"] / two["positions_per_rollout"]
    table = []
    for machines in (8, 16, 32, 64):
        workers = machines * CPUS_PER_MACHINE
        positions = workers * share
        # The head sends the weights once per machine (its workers share the node's object store) and takes
        # every share back; both go through its one network interface.
        transfer_s = (machines * two["weights_bytes"] + positions * shares_bytes_per_position) / BANDWIDTH_BYTES_S
        rollout_s = share / per_worker + transfer_s
        learner_s = positions * learner_s_per_position
        table.append({
            "machines": machines, "workers": workers, "positions_per_rollout": positions,
            "rollout_s": rollout_s, "transfer_s": transfer_s, "learner_s": learner_s,
            "positions_per_s": positions / (rollout_s + learner_s),
            "learner_share_of_time": learner_s / (rollout_s + learner_s),
        })
    return {
        "per_worker_positions_per_s": per_worker, "share_positions": share,
        "learner_s_per_position_cpu": learner_s_per_position, "shares_bytes_per_position": shares_bytes_per_position,
        "weights_bytes": two["weights_bytes"], "cpus_per_machine": CPUS_PER_MACHINE,
        "bandwidth_bytes_s": BANDWIDTH_BYTES_S,
        # Where the update's time equals the rollout's: more workers make the learner the bottleneck.
        "learner_bound_at_workers": (share / per_worker) / (share * learner_s_per_position),
        "table": table,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rows = result["rows"]
    left.bar([r["name"] for r in rows], [r["positions_per_s"] for r in rows], color=["grey", "tab:blue", "tab:green"])
    left.set_ylabel("rollout positions / s")
    left.set_title(f"same {os.cpu_count()} CPUs, 2 engines")
    model = result["scaling_model"]["table"]
    right.plot([t["machines"] for t in model], [t["rollout_s"] for t in model], "o-", label="rollout (play + transfer)")
    right.plot([t["machines"] for t in model], [t["learner_s"] for t in model], "s-", label="update (1 CPU learner)")
    right.set_xlabel(f"worker machines ({CPUS_PER_MACHINE} workers each)")
    right.set_ylabel("seconds per rollout")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.legend()
    right.set_title("scaling model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="depth 1, 16 positions, 4 steps")
    parser.add_argument("--rollouts", type=int, default=4, help="timed rollouts per setup (after one warm-up)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_rollouts.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    from grpo_agent.distributed import init_ray

    torch.set_num_threads(1)
    init_ray(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    recipe = {key: (dict(value) if isinstance(value, dict) else value) for key, value in RECIPE.items()}
    if args.quick:
        for key, value in QUICK.items():
            recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    rows = [run_setup(*setup, recipe, args.rollouts) for setup in SETUPS]
    result = {"recipe": "quick" if args.quick else "default", "rollouts": args.rollouts, "cpus": os.cpu_count(),
              "load_avg": os.getloadavg(), "rows": rows}
    result["scaling_model"] = scaling_model(rows)
    print(f"{'setup':<15} {'positions/s':>12} {'rollout s':>10} {'train s':>8} {'weights MB':>11} {'shares MB':>10}")
    for r in rows:
        print(f"{r['name']:<15} {r['positions_per_s']:>12.1f} {r['rollout_s']:>10.2f} {r['train_s']:>8.2f} "
              f"{r['weights_bytes'] / 1e6:>11.2f} {r['shares_bytes'] / 1e6:>10.2f}")
    model = result["scaling_model"]
    print(f"\nscaling model: {model['per_worker_positions_per_s']:.1f} positions/s per 1-CPU worker, shares of "
          f"{model['share_positions']:.0f} positions, learner {1e3 * model['learner_s_per_position_cpu']:.2f} ms "
          f"per position (this CPU); learner-bound past {model['learner_bound_at_workers']:.0f} workers")
    print(f"{'machines':>8} {'workers':>8} {'positions':>10} {'rollout s':>10} {'transfer s':>11} {'learner s':>10} "
          f"{'positions/s':>12} {'learner %':>10}")
    for t in model["table"]:
        print(f"{t['machines']:>8} {t['workers']:>8} {t['positions_per_rollout']:>10.0f} {t['rollout_s']:>10.2f} "
              f"{t['transfer_s']:>11.3f} {t['learner_s']:>10.1f} {t['positions_per_s']:>12.0f} "
              f"{100 * t['learner_share_of_time']:>9.0f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
