"""Move groups vs trajectory groups vs MaskablePPO at equal training wall-clock, judged on held-out chess.

Every method trains the same network on the same env for the same wall-clock seconds on this machine (one
torch thread, the env's Stockfish processes beside it), then is evaluated alike: ACPL, Lichess accuracy and the
engine's-best-move rate on held-out ``builtin:eval`` positions (Stockfish depth 10), the shipped tactics
puzzles, and games against the random mover. Baselines without training (uniform random, material-greedy)
are evaluated the same way.

    python -m benchmarks.move_groups --seconds 180 --seeds 0 1 2 [--methods moves games ppo]

One JSON per (method, seed) under ``benchmarks/results/move_groups/`` (a rerun skips finished ones), the summary
in ``benchmarks/results/move_groups.json``, per-seed dots in ``move_groups.png``, and a table (mean +- 95%
t-interval over seeds; pooled W/D/L with a Wilson interval for the games).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import chess
import numpy as np

from benchmarks.common import RESULTS_DIR, limit_threads, machine_info, mean_ci
from grpo_agent.save_util import write_json

NET = {"features_extractor_kwargs": {"n_blocks": 4, "channels": 64}}
#: ``--planes``: the same trunk reading the attack and check planes, as ``make train``'s network does.
PLANES = {"attack_planes": True, "check_planes": True}
ENV = {"start_positions": "builtin", "reward_transform": "winprob", "max_plies": 200}
#: method -> (env overrides, algorithm, constructor kwargs)
METHODS: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    # Move groups: 8 sampled candidates per position, valued at depth 4 (one MultiPV search per position).
    # lr 1e-3 over 3e-4: regret on the training positions it played 0.285 vs 0.342 after 2 minutes (seed 0).
    "moves": ({"reward_depth": 4}, "grpo", dict(
        group_mode="moves", group_size=8, horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-3,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0))),
    "moves_all": ({"reward_depth": 4}, "grpo", dict(
        group_mode="moves", group_size="all", horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-3,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0))),
    "moves_d1": ({"reward_depth": 1}, "grpo", dict(
        group_mode="moves", group_size=8, horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-3,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0))),
    # Every legal move, valued by the same one depth-1 MultiPV search per position: the full-information group
    # (the advantage of each move against the policy's expected value), weighted by the policy or uniformly.
    "moves_all_d1": ({"reward_depth": 1}, "grpo", dict(
        group_mode="moves", group_size="all", horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-3,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0))),
    "moves_all_d1_uniform": ({"reward_depth": 1}, "grpo", dict(
        group_mode="moves", group_size="all", horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-3,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0),
        all_moves_weighting="uniform")),
    # The same, candidates drawn without replacement (the ablation's move-group cells that kept their entropy).
    "moves_d1_wor": ({"reward_depth": 1}, "grpo", dict(
        group_mode="moves", group_size=8, horizon=8, n_epochs=1, batch_size=256, learning_rate=1e-3,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0),
        sample_without_replacement=True)),
    # moves_d1 at the learning rate where the ablation's move-group cells (training positions) kept their entropy.
    "moves_d1_lr3e-4": ({"reward_depth": 1}, "grpo", dict(
        group_mode="moves", group_size=8, horizon=8, n_epochs=1, batch_size=256, learning_rate=3e-4,
        advantage_scale="std", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.005, 1.0))),
    # Today's trajectory-group default recipe (configs/default.yaml before move groups).
    "games": ({"reward_depth": 1}, "grpo", dict(
        group_mode="games", group_size=8, horizon=16, n_epochs=2, batch_size=256, learning_rate=1e-3,
        advantage_scale="rms", ent_coef=0.02, target_entropy=0.5, ent_coef_bounds=(0.01, 1.0))),
    # sb3-contrib's MaskablePPO on the same env and network (the compare_ppo benchmark's settings).
    "ppo": ({"reward_depth": 1}, "ppo", dict(
        n_steps=16, batch_size=256, n_epochs=2, learning_rate=3e-4, ent_coef=0.03, gamma=0.0, gae_lambda=1.0)),
}
#: The judge: every ``builtin:eval`` position and every shipped puzzle, and the same openings and random-mover
#: seeds for every run (``seed`` 0), so runs differ only by their training. (Drawing 50 positions and 100 puzzles
#: per training seed, as before, put ~30 ACPL of spread into even the untrained material-greedy mover.)
EVAL = dict(opponents=("random",), games=40, engine_depth=1, max_plies=200, acpl_positions=200, acpl_depth=10,
            puzzles=240, positions="builtin:eval", seed=0)
NUM_ENVS = 64


class _WallClock:
    """An SB3 callback that ends ``learn()`` after ``seconds`` of training."""

    def __new__(cls, seconds: float) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class WallClock(BaseCallback):
            def _on_training_start(self) -> None:
                self.deadline = time.perf_counter() + seconds

            def _on_step(self) -> bool:
                return time.perf_counter() < self.deadline

        return WallClock()


def material_greedy(board: chess.Board, rng: np.random.Generator = np.random.default_rng(0)) -> chess.Move:
    """Take the most valuable piece on offer, else a random legal move (the one-line heuristic)."""
    values = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9}
    moves = list(board.legal_moves)
    captures = [(values.get(board.piece_type_at(m.to_square), 1 if board.is_en_passant(m) else 0), m)
                for m in moves if board.is_capture(m)]
    if captures:
        best = max(v for v, _ in captures)
        moves = [m for v, m in captures if v == best]
    return moves[int(rng.integers(len(moves)))]


def evaluate(policy: Any) -> dict[str, Any]:
    from grpo_agent.evaluation import EvalConfig, Evaluator

    with Evaluator(workers=1) as evaluator:
        report = evaluator.evaluate(policy, EvalConfig(**EVAL), policy_name="policy")
    out: dict[str, Any] = {"acpl": report.acpl.acpl, "accuracy": report.acpl.accuracy,
                           "best_move_rate": report.acpl.best_move_rate, "puzzles": report.puzzles.accuracy}
    match = report.matches[0].stats
    out.update(score_vs_random=match.score, wdl_vs_random=[match.wins, match.draws, match.losses])
    return out


def train(method: str, seed: int, seconds: float, update_threads: bool = False,
          planes: bool = False) -> tuple[Any, dict[str, Any]]:
    from chess_env import ChessVectorEnv
    from chess_env.sb3 import ChessVecEnv
    from grpo_agent import GRPO

    env_overrides, algo, kwargs = METHODS[method]
    net = {**NET["features_extractor_kwargs"], **(PLANES if planes else {})}
    env = ChessVectorEnv(NUM_ENVS, engine_processes=2, **{**ENV, **env_overrides})
    if algo == "grpo":
        model = GRPO("ChessResNetPolicy", env, policy_kwargs={"features_extractor_kwargs": net}, seed=seed, **kwargs)
    else:
        from sb3_contrib import MaskablePPO

        from benchmarks.common import _maskable_policy_class
        from grpo_agent.policies import ChessResNet

        policy_kwargs = {"features_extractor_class": ChessResNet, "features_extractor_kwargs": net,
                         "net_arch": {"pi": [], "vf": [64]}, "ortho_init": False, "normalize_images": False}
        model = MaskablePPO(_maskable_policy_class(), ChessVecEnv(env), policy_kwargs=policy_kwargs, seed=seed, **kwargs)
    start = time.perf_counter()
    callbacks = [_WallClock(seconds)]
    if update_threads:  # as grpo-chess train does: each update on every core, the rollouts on one thread
        from grpo_agent.threads import UpdateThreads

        callbacks.append(UpdateThreads())
    model.learn(10**9, callback=callbacks)
    info = {"train_seconds": time.perf_counter() - start, "plies": int(model.num_timesteps)}
    if algo == "grpo":
        info.update({f"final_{k}": v for k, v in model.last_rollout_stats.items()
                     if k in ("entropy_norm", "step_reward_mean", "engine_evals", "plies_per_s")})
    env.close()
    return model, info


def run_one(method: str, seed: int, seconds: float, out_dir: Path, update_threads: bool = False,
            planes: bool = False) -> dict[str, Any]:
    path = out_dir / f"{method}_seed{seed}.json"
    if path.is_file():
        import json

        record = json.loads(path.read_text())
        same_eval = record.get("eval") == json.loads(json.dumps(EVAL))  # tuples: lists
        if (record.get("seconds") == seconds and record.get("update_threads", False) == update_threads
                and record.get("planes", False) == planes and same_eval):
            return record
    limit_threads(1)
    if method in ("random", "material_greedy"):
        from grpo_agent.evaluation import RandomPolicy

        policy: Any = RandomPolicy(np.random.default_rng(seed)) if method == "random" else material_greedy
        info: dict[str, Any] = {}
    else:
        policy, info = train(method, seed, seconds, update_threads, planes)
    record = {"method": method, "seed": seed, "seconds": seconds, "update_threads": update_threads, "planes": planes,
              **info, **evaluate(policy), "eval": EVAL, "config": METHODS.get(method), "machine": machine_info()}
    write_json(path, record)
    return record


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    from grpo_agent.evaluation import score_stats

    summary: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == method]
        row = {key: {**mean_ci([r[key] for r in rs]), "range": [min(r[key] for r in rs), max(r[key] for r in rs)]}
               for key in ("acpl", "best_move_rate", "accuracy", "puzzles", "plies") if all(key in r for r in rs)}
        w, d, l = (sum(r["wdl_vs_random"][i] for r in rs) for i in range(3))
        stats = score_stats(w, d, l)
        row["vs_random"] = {"score": stats.score, "low": stats.score_low, "high": stats.score_high, "wdl": [w, d, l]}
        row["seeds"] = [r["seed"] for r in rs]
        summary[method] = row
    return summary


def print_table(summary: dict[str, Any], seconds: float) -> None:
    print(f"\nMove groups vs trajectory groups vs MaskablePPO: {seconds:.0f} s of training each, held-out judge")
    print(f"{'method':<16}{'ACPL':>16}{'best move':>16}{'puzzles':>16}{'vs random (W/D/L)':>32}{'plies':>12}")
    for method, row in summary.items():
        def cell(key: str, pct: bool = False) -> str:
            if key not in row:
                return f"{'-':>16}"
            m, ci = row[key]["mean"], row[key]["ci"]
            return f"{m:>9.1%} +-{ci:>4.1%}" if pct else f"{m:>9.1f} +-{ci:>5.1f}"
        v = row["vs_random"]
        games = f"{v['score']:.2f} [{v['low']:.2f},{v['high']:.2f}] {v['wdl'][0]}/{v['wdl'][1]}/{v['wdl'][2]}"
        plies = f"{row['plies']['mean']:>12.0f}" if "plies" in row else f"{'-':>12}"
        print(f"{method:<16}{cell('acpl')}{cell('best_move_rate', True)}{cell('puzzles', True)}{games:>32}{plies}")


def plot(records: list[dict[str, Any]], seconds: float, path: Path) -> None:
    """One panel per held-out metric: each seed a dot, the mean a bar, per method (the seeds' spread at a glance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in records))
    metrics = (("acpl", "ACPL (depth 10, lower is better)", 1.0), ("best_move_rate", "engine's best move (%)", 100.0),
               ("puzzles", "puzzles solved (%)", 100.0), ("score_vs_random", "score vs random mover", 1.0))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.8))
    for ax, (key, label, scale) in zip(axes, metrics):
        for i, method in enumerate(methods):
            values = [r[key] * scale for r in records if r["method"] == method and key in r]
            if not values:
                continue
            ax.bar(i, float(np.mean(values)), color="lightgray", width=0.6)
            ax.plot([i] * len(values), values, "o", color="tab:blue", ms=5)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_title(label, fontsize=10)
    fig.suptitle(f"{seconds:.0f} s of training each, held-out judge; dots = seeds, bars = mean")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="training wall-clock per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["random", "material_greedy", "moves", "games", "ppo"],
                        choices=[*METHODS, "random", "material_greedy"])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "move_groups")
    parser.add_argument("--update-threads", action="store_true",
                        help="each update on every core (UpdateThreads, as grpo-chess train); default: one thread")
    parser.add_argument("--planes", action="store_true",
                        help="the network reads the attack and check planes (make train's); default: the plain trunk")
    args = parser.parse_args(argv)
    # Seed-major, so load from other work on the machine falls on every method alike.
    records = [run_one(m, s, args.seconds, args.out, args.update_threads, args.planes)
               for s in args.seeds for m in args.methods]
    summary = summarize(records)
    print_table(summary, args.seconds)
    plot([r for r in records if "acpl" in r], args.seconds, RESULTS_DIR / f"{args.out.name}.png")
    write_json(RESULTS_DIR / f"{args.out.name}.json", {
        "seconds": args.seconds, "update_threads": args.update_threads, "planes": args.planes, "summary": summary,
        "eval": EVAL, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
