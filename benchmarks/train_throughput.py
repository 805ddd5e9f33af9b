"""``make train``'s GRPO stage: env steps/s of ``GRPO.learn`` on a config, this checkout against a git ref.

Run: ``python -m benchmarks.train_throughput --before REF [--configs configs/default.yaml configs/games.yaml]
[--timesteps N] [--rounds 2] [--out benchmarks/results/train_throughput.json]``.

For each config, both trees build the config's ``env`` and ``algo`` sections as ``grpo-chess train`` does
(``ChessVectorEnv(**env)``, ``GRPO(policy, env, **algo)``, ``torch.set_num_threads(train.torch_threads)``, the
updates on ``train.update_threads`` where the tree has :class:`~grpo_agent.threads.UpdateThreads`) and
run ``learn(N)`` from the untrained network: no warm start (pretraining is a separate stage with its own
loop), no evaluation, no checkpoints or logs. The first rollout and update are a warm-up; the timed
rollouts follow, so ``N`` is the timed steps plus one rollout. Each measurement runs in a fresh process, the
two trees alternating round by round (the machine's other work then weighs on both alike); each keeps its
best round. Reported: env steps/s (``num_timesteps`` over the wall clock of ``learn``), the share of it spent
in ``train()`` (the learner) and the rest (rollouts: the env, Stockfish and the policy's sampling).

``REF``'s ``chess_env`` and ``grpo_agent`` come from ``git archive``; the config file and this harness are
this checkout's for both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("chess_env", "grpo_agent")


def measure(config_path: str, timesteps: int) -> dict[str, Any]:
    """One measurement in this process: ``learn`` on the config, timed after a one-rollout warm-up."""
    import torch
    import yaml

    import grpo_agent
    from chess_env import ChessVectorEnv
    from grpo_agent import GRPO

    config = yaml.safe_load(Path(config_path).read_text())
    torch.set_num_threads(int(config.get("train", {}).get("torch_threads", 1)))
    env_cfg = dict(config["env"])
    if env_cfg.get("start_positions") == "pretrain":  # a run folder's pretrain stage: the built-in starts here
        env_cfg["start_positions"] = "builtin"
    env = ChessVectorEnv(env_cfg.pop("num_envs", 64), **env_cfg)
    algo = dict(config["algo"])
    model = GRPO(algo.pop("policy", "ChessResNetPolicy"), env, **algo)
    per_rollout = model.n_envs * model.horizon
    learner = {"seconds": 0.0}
    train = model.train

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        learner["seconds"] += time.perf_counter() - start

    model.train = timed_train  # type: ignore[method-assign]
    callbacks = []
    # A tree from before UpdateThreads ran its updates on the rollouts' threads. (Not an ImportError test: an
    # editable install's finder would import the module from the checkout when the tree lacks it.)
    if (Path(grpo_agent.__file__).parent / "threads.py").is_file():
        from grpo_agent.threads import UpdateThreads

        callbacks.append(UpdateThreads(config.get("train", {}).get("update_threads")))
    try:
        model.learn(per_rollout, callback=callbacks)  # warm-up: engines started, first allocations, first update
        learner["seconds"] = 0.0
        before = model.num_timesteps
        start = time.perf_counter()
        model.learn(timesteps, callback=callbacks, reset_num_timesteps=False)
        wall = time.perf_counter() - start
    finally:
        env.close()
    steps = model.num_timesteps - before
    return {"env_steps": steps, "seconds": wall, "env_steps_per_s": steps / wall,
            "learner_seconds": learner["seconds"], "learner_frac": learner["seconds"] / wall}


def compare(ref: str, configs: list[str], timesteps: int, rounds: int) -> dict[str, Any]:
    """Both trees on every config, alternating, in fresh processes; best round each."""
    rows = []
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "archive", ref, *PACKAGES], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        trees = {"before": old, "after": str(ROOT)}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        probe = "import chess_env, grpo_agent; print(chess_env.__file__); print(grpo_agent.__file__)"
        for name, tree in trees.items():
            # -m and -c put the working directory first on the path: the tree's packages, this harness.
            found = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=env, capture_output=True, text=True,
                                   check=True).stdout.split()
            assert all(path.startswith(tree) for path in found), (name, found)
        for config in configs:
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(rounds):
                for name, tree in trees.items():
                    command = [sys.executable, "-m", "benchmarks.train_throughput", "--measure",
                               str(Path(config).resolve()), str(timesteps)]
                    out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True)
                    runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"{config} {name}: {runs[name][-1]['env_steps_per_s']:.0f} env steps/s", flush=True)
            row: dict[str, Any] = {"config": config}
            for name, measured in runs.items():
                row[name] = max(measured, key=lambda r: r["env_steps_per_s"])
            row["speedup"] = row["after"]["env_steps_per_s"] / row["before"]["env_steps_per_s"]
            rows.append(row)
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    return {"ref": ref, "ref_commit": commit, "rounds": rounds, "timesteps": timesteps, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", metavar="REF", help="the git ref to compare with")
    parser.add_argument("--configs", nargs="+", default=["configs/default.yaml", "configs/games.yaml"])
    parser.add_argument("--timesteps", type=int, default=2048, help="timed env steps per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # one measurement (internal)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return 0
    if not args.before:
        parser.error("--before REF is required")
    from benchmarks.common import machine_info

    load_before = os.getloadavg()
    report = {"machine": machine_info(), "command": "python -m benchmarks.train_throughput "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              **compare(args.before, args.configs, args.timesteps, args.rounds)}
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["rows"]:
        b, a = row["before"], row["after"]
        print(f"{row['config']}: {b['env_steps_per_s']:.0f} -> {a['env_steps_per_s']:.0f} env steps/s "
              f"(x{row['speedup']:.2f}); learner share {b['learner_frac']:.0%} -> {a['learner_frac']:.0%}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
